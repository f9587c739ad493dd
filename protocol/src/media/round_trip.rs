//! The round trip from an RTCP receiver report (RFC 3550 §6.4.1): a report block about one of our
//! streams carries the middle 32 bits of the NTP time of our last sender report (LSR) and how
//! long the peer held it (DLSR, 1/65536 s); arriving at NTP time A, the round trip is
//! `A − LSR − DLSR`.
//!
//! Both numbers come from the peer: the arithmetic wraps as RFC 3550 says, a block without a
//! sender report (LSR 0) gives nothing, and a result that is not a plausible round trip (over
//! [`MAX_ROUND_TRIP`]: a lie or a wrap) is dropped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest round trip believed.
pub const MAX_ROUND_TRIP: Duration = Duration::from_secs(10);

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The middle 32 bits of the NTP time of `now` (16.16 fixed point seconds).
pub fn ntp_middle(now: SystemTime) -> u32 {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let fraction = (u64::from(since.subsec_nanos()) << 16) / 1_000_000_000;
    ((seconds << 16) | fraction) as u32
}

/// The round trip a report block gives, arriving at `arrived` (middle 32 bits of NTP), with the
/// block's `last_sender_report` and `delay` (both from the peer).
pub fn round_trip(arrived: u32, last_sender_report: u32, delay: u32) -> Option<Duration> {
    if last_sender_report == 0 {
        return None;
    }
    let units = arrived.wrapping_sub(last_sender_report).wrapping_sub(delay);
    let rtt = Duration::from_micros(u64::from(units) * 1_000_000 / 65_536);
    (rtt <= MAX_ROUND_TRIP).then_some(rtt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_gives_its_round_trip() {
        let sent = SystemTime::now();
        let lsr = ntp_middle(sent);
        // Held 250 ms by the peer, back 40 ms after it was sent.
        let delay = 65_536 / 4;
        let arrived = ntp_middle(sent + Duration::from_millis(290));
        let rtt = round_trip(arrived, lsr, delay).expect("a round trip");
        assert!(
            rtt.abs_diff(Duration::from_millis(40)) < Duration::from_millis(1),
            "{rtt:?}"
        );
    }

    #[test]
    fn lies_give_nothing_and_nothing_overflows() {
        let now = ntp_middle(SystemTime::now());
        assert_eq!(round_trip(now, 0, 0), None, "no sender report yet");
        // A delay longer than the time since our report: the wrap is no round trip.
        assert_eq!(round_trip(now, now.wrapping_sub(100), 200), None);
        for (lsr, delay) in [(u32::MAX, u32::MAX), (1, u32::MAX), (u32::MAX, 0), (now, 0)] {
            if let Some(rtt) = round_trip(now, lsr, delay) {
                assert!(rtt <= MAX_ROUND_TRIP);
            }
        }
        assert_eq!(
            ntp_middle(UNIX_EPOCH - Duration::from_secs(1)),
            ntp_middle(UNIX_EPOCH)
        );
    }
}
