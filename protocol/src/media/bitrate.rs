//! Send-side bitrate control from receiver reports: webrtc-rs has no bandwidth estimation, so
//! huddle drives its encoders' bitrates from the loss and round-trip time that RTCP receiver
//! reports carry (the loss-based half of Google Congestion Control, plus a delay guard).
//!
//! - loss above 10 %: the bitrate drops by half the loss (`rate × (1 − loss / 2)`);
//! - loss below 2 % and the round trip near its best: it grows 8 % a second;
//! - the round trip more than [`QUEUE_RTT`] above its best (a queue builds up): it drops 15 %.
//!
//! All within the configured bounds. The reports come from the receiver and may be lies: loss is
//! clamped to 0..=1, a non-finite number is ignored, and a lie can at worst move the rate within
//! the bounds the sender chose.

use std::time::Duration;

/// A round trip this much above the best seen means a queue is building up.
pub const QUEUE_RTT: Duration = Duration::from_millis(150);
/// Changes upward at most this often.
const GROW_EVERY: Duration = Duration::from_secs(1);

/// A sender's bitrate, adapted to what its receivers report. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct BitrateController {
    min: u32,
    max: u32,
    rate: u32,
    best_rtt: Option<Duration>,
    last_change: Option<Duration>,
}

impl BitrateController {
    /// Starts at `start` bits per second, kept within `min..=max`.
    pub fn new(start: u32, min: u32, max: u32) -> Self {
        let (min, max) = (min.min(max), max.max(min));
        Self {
            min,
            max,
            rate: start.clamp(min, max),
            best_rtt: None,
            last_change: None,
        }
    }

    /// The bitrate to encode at now, in bits per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// A receiver report at `now`: the fraction of packets lost since the last one and the
    /// round-trip time (if measured). Returns the new rate if it changed.
    pub fn report(&mut self, loss: f64, rtt: Option<Duration>, now: Duration) -> Option<u32> {
        if !loss.is_finite() {
            return None;
        }
        let loss = loss.clamp(0.0, 1.0);
        let queued = rtt.is_some_and(|rtt| {
            let best = *self.best_rtt.get_or_insert(rtt);
            self.best_rtt = Some(best.min(rtt));
            rtt > best.saturating_add(QUEUE_RTT)
        });
        let before = self.rate;
        let scaled = |factor: f64| (f64::from(self.rate) * factor) as u32;
        if loss > 0.10 {
            self.rate = scaled(1.0 - loss / 2.0);
        } else if queued {
            self.rate = scaled(0.85);
        } else if loss < 0.02
            && self
                .last_change
                .is_none_or(|at| now.saturating_sub(at) >= GROW_EVERY)
        {
            self.rate = scaled(1.08).max(self.rate.saturating_add(1_000));
        }
        self.rate = self.rate.clamp(self.min, self.max);
        if self.rate == before {
            return None;
        }
        self.last_change = Some(now);
        Some(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn heavy_loss_brings_the_rate_down_within_seconds() {
        let mut c = BitrateController::new(500_000, 50_000, 1_000_000);
        for t in 0..4 {
            c.report(0.3, Some(Duration::from_millis(40)), s(t));
        }
        assert!(c.rate() < 300_000, "{}", c.rate());
        assert!(c.rate() >= 50_000);
    }

    #[test]
    fn a_clean_path_grows_slowly_up_to_the_bound() {
        let mut c = BitrateController::new(300_000, 50_000, 500_000);
        // Two reports in the same second grow it once.
        c.report(0.0, None, s(0));
        c.report(0.0, None, Duration::from_millis(500));
        assert_eq!(c.rate(), 324_000);
        for t in 1..60 {
            c.report(0.0, None, s(t));
        }
        assert_eq!(c.rate(), 500_000);
    }

    #[test]
    fn a_growing_queue_brings_it_down_without_loss() {
        let mut c = BitrateController::new(400_000, 50_000, 1_000_000);
        c.report(0.0, Some(Duration::from_millis(20)), s(0));
        let before = c.rate();
        c.report(0.0, Some(Duration::from_millis(400)), s(1));
        assert!(c.rate() < before);
    }

    #[test]
    fn lies_stay_within_the_bounds() {
        let mut c = BitrateController::new(300_000, 100_000, 600_000);
        for (t, loss) in [f64::NAN, f64::INFINITY, -5.0, 7.0, 1.0, 0.0]
            .into_iter()
            .enumerate()
        {
            c.report(loss, Some(Duration::MAX), s(t as u64));
            assert!((100_000..=600_000).contains(&c.rate()));
        }
        let mut c = BitrateController::new(u32::MAX, u32::MAX, 0);
        c.report(0.0, Some(Duration::ZERO), s(9));
        assert_eq!(c.rate(), u32::MAX);
    }
}
