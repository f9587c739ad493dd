//! Helpers shared by the fuzz targets: a few peer ids, so the fuzzer's choices hit the same peers
//! again (a fuzzer drawing 16-byte ids would almost never repeat one).

use huddle_protocol::PeerId;

/// Peer `i` of a small set (`i` taken modulo 8).
pub fn peer(i: u8) -> PeerId {
    PeerId(uuid::Uuid::from_u128(1 + u128::from(i % 8)))
}
