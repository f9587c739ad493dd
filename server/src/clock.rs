//! The wall clock as numbers: what join-order stamps, held places and Redis entries count in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 before it, `u64::MAX` past what fits).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch (0 before it, `u64::MAX` past what fits).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
