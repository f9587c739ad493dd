//! Lip sync: a peer's picture shown when its voice of the same moment plays.
//!
//! Voice waits in the jitter buffer; pictures are shown as soon as they decode, so without help
//! a face moves before its words are heard. The sender's RTCP sender reports map each track's
//! RTP timestamps to one wall clock (NTP); the voice's playout says which sender moment is heard
//! now; a decoded picture is held until its own moment is heard.
//!
//! Everything here comes from the peer: sender reports can lie. A hold never exceeds
//! [`MAX_HOLD`] (a picture that would wait longer is shown at once and counted), no arithmetic on
//! the peer's numbers can overflow, and without a recent voice (muted, off, or no reports yet)
//! pictures are shown at once.

use super::MediaKind;
use std::time::Duration;

/// The longest a picture is held for its voice.
pub const MAX_HOLD: Duration = Duration::from_millis(500);
/// A voice that has not played for this long no longer sets the pace.
const STALE: Duration = Duration::from_secs(2);

/// One track's clock: the sender report's NTP time (seconds) and RTP timestamp, and the clock
/// rate of the timestamps.
#[derive(Debug, Clone, Copy)]
struct Clock {
    ntp: f64,
    rtp: u32,
    rate: f64,
}

impl Clock {
    /// The sender's wall-clock time (seconds) of RTP timestamp `rtp`.
    fn time(&self, rtp: u32) -> f64 {
        // Timestamps wrap: the nearer way round (±6.6 hours at 90 kHz).
        let delta = rtp.wrapping_sub(self.rtp) as i32;
        self.ntp + f64::from(delta) / self.rate
    }
}

/// The voice heard at a local moment: at `local`, the sender's moment `sender` played.
#[derive(Debug, Clone, Copy)]
struct Heard {
    local: Duration,
    sender: f64,
}

/// Lip sync of one peer's voice and camera.
#[derive(Debug, Default, Clone)]
pub struct LipSync {
    audio: Option<Clock>,
    video: Option<Clock>,
    heard: Option<Heard>,
    /// Pictures that would have waited longer than [`MAX_HOLD`] (shown at once).
    out_of_bounds: u64,
}

impl LipSync {
    /// A lip sync that knows nothing yet (pictures are shown at once).
    pub fn new() -> Self {
        Self::default()
    }

    /// A sender report for the peer's track of `kind`: its NTP timestamp (RFC 3550, 32.32 fixed
    /// point) and the RTP timestamp of the same moment.
    pub fn sender_report(&mut self, kind: MediaKind, ntp: u64, rtp: u32) {
        let seconds = (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0;
        let (slot, rate) = match kind {
            MediaKind::Audio => (&mut self.audio, 48_000.0),
            MediaKind::Video => (&mut self.video, 90_000.0),
        };
        *slot = Some(Clock {
            ntp: seconds,
            rtp,
            rate,
        });
    }

    /// The voice frame with RTP timestamp `rtp` starts playing at `now`.
    pub fn audio_played(&mut self, rtp: u32, now: Duration) {
        if let Some(audio) = self.audio {
            self.heard = Some(Heard {
                local: now,
                sender: audio.time(rtp),
            });
        }
    }

    /// How long to hold the picture with RTP timestamp `rtp`, decoded at `now`, until its voice
    /// plays (zero: show it now).
    pub fn hold(&mut self, rtp: u32, now: Duration) -> Duration {
        let (Some(video), Some(heard)) = (self.video, self.heard) else {
            return Duration::ZERO;
        };
        if now.saturating_sub(heard.local) > STALE {
            return Duration::ZERO;
        }
        // Its voice plays at heard.local + (its moment − the heard moment).
        let ahead = video.time(rtp) - heard.sender;
        let since = now.as_secs_f64() - heard.local.as_secs_f64();
        let wait = ahead - since;
        if !wait.is_finite() || wait <= 0.0 {
            return Duration::ZERO;
        }
        if wait > MAX_HOLD.as_secs_f64() {
            self.out_of_bounds += 1;
            return Duration::ZERO;
        }
        Duration::from_secs_f64(wait)
    }

    /// Pictures that would have waited past [`MAX_HOLD`] and were shown at once.
    pub fn out_of_bounds(&self) -> u64 {
        self.out_of_bounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// NTP 32.32 of `seconds`.
    fn ntp(seconds: f64) -> u64 {
        (seconds * 4_294_967_296.0) as u64
    }

    /// A sender whose audio and video clocks started at random offsets, reporting both at
    /// sender time 1000 s.
    fn reported(audio_base: u32, video_base: u32) -> LipSync {
        let mut sync = LipSync::new();
        sync.sender_report(MediaKind::Audio, ntp(1000.0), audio_base);
        sync.sender_report(MediaKind::Video, ntp(1000.0), video_base);
        sync
    }

    #[test]
    fn a_picture_waits_for_its_voice() {
        let (a, v) = (4_000_000_000, 77);
        let mut sync = reported(a, v);
        // The voice captured at sender time 1000.5 s plays at local 10.2 s (its jitter buffer and
        // the path took 200 ms more than the picture's).
        sync.audio_played(a.wrapping_add(24_000), 10_200 * MS);
        // The picture of sender time 1000.52 s decoded at local 10.04 s: its voice plays at
        // 10.22 s.
        let hold = sync.hold(v + 46_800, 10_040 * MS);
        assert!(hold.abs_diff(180 * MS) < MS, "{hold:?}");
        // A picture already behind its voice is shown at once.
        assert_eq!(sync.hold(v, 10_040 * MS), Duration::ZERO);
    }

    #[test]
    fn without_reports_or_a_recent_voice_pictures_show_at_once() {
        let mut sync = LipSync::new();
        sync.audio_played(5, 10 * MS);
        assert_eq!(sync.hold(5, 10 * MS), Duration::ZERO);
        let mut sync = reported(0, 0);
        assert_eq!(
            sync.hold(90_000, Duration::ZERO),
            Duration::ZERO,
            "no voice heard"
        );
        sync.audio_played(0, Duration::from_secs(1));
        assert!(sync.hold(9_000, Duration::from_secs(1)) > Duration::ZERO);
        assert_eq!(
            sync.hold(9_000, Duration::from_secs(4)),
            Duration::ZERO,
            "the voice went quiet"
        );
    }

    /// A sender that lies in its reports cannot hold the picture past the bound, and no value
    /// breaks the arithmetic.
    #[test]
    fn lying_reports_cannot_hold_the_picture() {
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut next = || rng.u64(..);
        let mut sync = LipSync::new();
        for i in 0..20_000u64 {
            let kind = if next() % 2 == 0 {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            let special = [0, u64::MAX, 1 << 63, next()];
            sync.sender_report(kind, special[(i % 4) as usize], next() as u32);
            sync.audio_played(next() as u32, Duration::from_millis(i));
            let hold = sync.hold(next() as u32, Duration::from_millis(i));
            assert!(hold <= MAX_HOLD, "{hold:?}");
        }
        assert!(sync.out_of_bounds() > 0);
    }
}
