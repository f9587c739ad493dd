//! What the peer's RTCP says of the streams we send it: the round trip (from the report blocks'
//! last-sender-report times, [`huddle_protocol::media::round_trip`]) and the fraction of each
//! stream lost. The blocks come in the peer's receiver reports, or in its sender reports when it
//! sends media too; only blocks about our own streams count.

use huddle_protocol::media::round_trip::{ntp_middle, round_trip};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The latest round trip and losses the peer reported (shared by the connection's tasks).
#[derive(Debug, Default)]
pub(crate) struct ObservedPath {
    /// Our voice's and camera's SSRCs.
    ours: [u32; 2],
    /// Microseconds, plus one (0: none yet).
    rtt: AtomicU64,
    /// Fraction lost (of 256), plus one, per stream (0: none yet).
    loss: [AtomicU32; 2],
}

impl ObservedPath {
    /// For a connection sending our voice as `audio` and our camera as `video` (SSRCs).
    pub(crate) fn new(audio: u32, video: u32) -> Self {
        Self {
            ours: [audio, video],
            ..Self::default()
        }
    }

    /// RTCP from the peer.
    pub(crate) fn reports(&self, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        let arrived = ntp_middle(SystemTime::now());
        let blocks = packets.iter().flat_map(|p| {
            let any = p.as_any();
            let blocks: &[ReceptionReport] = if let Some(rr) = any.downcast_ref::<ReceiverReport>()
            {
                &rr.reports
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                &sr.reports
            } else {
                &[]
            };
            blocks.iter()
        });
        for block in blocks {
            let Some(stream) = self.ours.iter().position(|s| *s == block.ssrc) else {
                continue;
            };
            self.loss[stream].store(u32::from(block.fraction_lost) + 1, Ordering::Relaxed);
            if let Some(rtt) = round_trip(arrived, block.last_sender_report, block.delay) {
                self.rtt
                    .store(rtt.as_micros() as u64 + 1, Ordering::Relaxed);
            }
        }
    }

    /// The latest round trip.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        let us = self.rtt.load(Ordering::Relaxed);
        (us > 0).then(|| Duration::from_micros(us - 1))
    }

    /// The fraction of our voice (`0`) or camera (`1`) the peer last reported lost.
    pub(crate) fn loss(&self, stream: usize) -> Option<f64> {
        let v = self.loss.get(stream)?.load(Ordering::Relaxed);
        (v > 0).then(|| f64::from(v - 1) / 256.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_protocol::media::round_trip::ntp_middle;

    fn block(ssrc: u32, fraction_lost: u8, last_sender_report: u32, delay: u32) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost,
            last_sender_report,
            delay,
            ..Default::default()
        }
    }

    #[test]
    fn only_blocks_about_our_streams_count() {
        let path = ObservedPath::new(10, 20);
        assert_eq!((path.rtt(), path.loss(0), path.loss(1)), (None, None, None));
        let sent = ntp_middle(SystemTime::now() - Duration::from_millis(30));
        let packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![
            Box::new(ReceiverReport {
                ssrc: 1,
                reports: vec![block(20, 64, sent, 0), block(99, 255, sent, 0)],
                ..Default::default()
            }),
            Box::new(SenderReport {
                ssrc: 1,
                reports: vec![block(10, 0, 0, 0)],
                ..Default::default()
            }),
        ];
        path.reports(&packets);
        assert_eq!(path.loss(1), Some(0.25));
        assert_eq!(path.loss(0), Some(0.0));
        let rtt = path.rtt().expect("a round trip");
        assert!(
            rtt >= Duration::from_millis(29) && rtt < Duration::from_millis(200),
            "{rtt:?}"
        );
        assert_eq!(path.loss(7), None);
    }
}
