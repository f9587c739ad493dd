//! What an endpoint keeps per peer: role, hello, early frames, reassembly, bulk flow control, and
//! link statistics.

use super::Role;
use crate::chunk::Reassembler;
use crate::lane::Lane;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// Pings remembered for the loss estimate.
const LOSS_WINDOW: usize = 32;

/// Statistics of one link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkStats {
    /// Smoothed round trip time (ping/pong on the unreliable channel).
    pub rtt: Option<Duration>,
    /// The last round trip measured.
    pub last_rtt: Option<Duration>,
    /// Share of the recent pings (up to 32, the newest few excluded) that got no pong.
    pub loss: f32,
    /// Bytes received from the peer (all channels).
    pub bytes_in: u64,
    /// Bytes sent to the peer (all channels).
    pub bytes_out: u64,
    /// Game messages received.
    pub messages_in: u64,
    /// Game messages sent.
    pub messages_out: u64,
    /// The path the link runs over, as ICE chose it (the driver reports it).
    pub path: Option<LinkPath>,
    /// The peer's upload headroom in bits per second, as we measured it while we host with
    /// [`host_by_upload`](super::ProtocolSettings::host_by_upload) (at most
    /// [`ENOUGH_BPS`](crate::uplink::ENOUGH_BPS)).
    pub upload_headroom: Option<u64>,
}

/// The kind of ICE candidate one end of a link uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateKind {
    /// A network interface's own address.
    Host,
    /// The public address of the NAT in front of that end, learnt from a STUN server.
    ServerReflexive,
    /// An address learnt from the peer's packets (a NAT's address the STUN server did not show).
    PeerReflexive,
    /// An address on a TURN server, which relays the traffic.
    Relay,
}

/// The candidate pair a link runs over: how directly the peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkPath {
    /// Our end.
    pub local: CandidateKind,
    /// The peer's end.
    pub remote: CandidateKind,
}

impl LinkPath {
    /// Whether a TURN server relays the link.
    pub fn is_relayed(&self) -> bool {
        self.local == CandidateKind::Relay || self.remote == CandidateKind::Relay
    }
}

/// A ping in flight or answered.
#[derive(Debug, Clone, Copy)]
struct Ping {
    seq: u32,
    sent_at: Duration,
    answered: bool,
}

#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) role: Option<Role>,
    /// When the server introduced it (until its link opens).
    pub(crate) introduced_at: Option<Duration>,
    /// Its player metadata, from its hello.
    pub(crate) meta: Vec<u8>,
    pub(crate) connected: bool,
    /// `Joined` was announced: its hello matched ours.
    pub(crate) announced: bool,
    /// Its hello did not match: its frames are dropped.
    pub(crate) mismatched: bool,
    /// We told it we have no media.
    pub(crate) media_refused: bool,
    /// It told us it has our hello.
    pub(crate) hello_acked: bool,
    /// When we last sent it our hello.
    pub(crate) hello_sent: Option<Duration>,
    /// Frames that came before its hello.
    pub(crate) early: Vec<(Lane, Bytes)>,
    pub(crate) reassembler: Reassembler,
    pub(crate) chunk_bytes_in: u64,
    pub(crate) chunk_acked_out: u64,
    /// Reliable frames waiting behind the window, in order: (chunk payload bytes, which count
    /// against the window, or 0 for a whole message queued behind a chunked one; frame).
    bulk: VecDeque<(usize, Bytes)>,
    /// Bytes in `bulk`.
    bulk_bytes: usize,
    pub(crate) bulk_sent: u64,
    pub(crate) bulk_acked: u64,
    /// Since when reliable frames have been waiting for this link to come up.
    pub(crate) waiting_since: Option<Duration>,
    ping_seq: u32,
    pings: VecDeque<Ping>,
    pub(crate) stats: LinkStats,
}

impl Link {
    pub(crate) fn new(max_message: usize, max_pending: usize) -> Self {
        Self {
            role: None,
            introduced_at: None,
            meta: Vec::new(),
            connected: false,
            announced: false,
            mismatched: false,
            media_refused: false,
            hello_acked: false,
            hello_sent: None,
            early: Vec::new(),
            reassembler: Reassembler::new(max_message, max_pending),
            chunk_bytes_in: 0,
            chunk_acked_out: 0,
            bulk: VecDeque::new(),
            bulk_bytes: 0,
            bulk_sent: 0,
            bulk_acked: 0,
            waiting_since: None,
            ping_seq: 0,
            pings: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    /// Queues a reliable frame behind the window (`counted`: its chunk payload bytes).
    pub(crate) fn queue_bulk(&mut self, counted: usize, frame: Bytes) {
        self.bulk_bytes += frame.len();
        self.bulk.push_back((counted, frame));
    }

    /// The next frame behind the window.
    pub(crate) fn pop_bulk(&mut self) -> Option<(usize, Bytes)> {
        let next = self.bulk.pop_front()?;
        self.bulk_bytes -= next.1.len();
        Some(next)
    }

    /// Gives up every frame behind the window; returns how many there were.
    pub(crate) fn clear_bulk(&mut self) -> usize {
        self.bulk_bytes = 0;
        std::mem::take(&mut self.bulk).len()
    }

    /// Bytes of frames behind the window.
    pub(crate) fn bulk_bytes(&self) -> usize {
        self.bulk_bytes
    }

    /// The frames waiting behind the window (or for the link), oldest first.
    pub(crate) fn bulk_frames(&self) -> impl Iterator<Item = &Bytes> {
        self.bulk.iter().map(|(_, frame)| frame)
    }

    /// Whether frames wait behind the window.
    pub(crate) fn has_bulk(&self) -> bool {
        !self.bulk.is_empty()
    }

    /// Whether we have its hello (matching or not).
    pub(crate) fn has_hello(&self) -> bool {
        self.announced || self.mismatched
    }

    /// Whether game frames can go to it now: the link is open and its hello matched.
    pub(crate) fn ready(&self) -> bool {
        self.connected && self.announced
    }

    /// Whether hellos are still due: we lack its hello, or it lacks ours.
    pub(crate) fn hello_pending(&self) -> bool {
        self.connected && !(self.has_hello() && self.hello_acked)
    }

    /// Records a ping going out at `now`; returns its sequence number.
    pub(crate) fn ping(&mut self, now: Duration) -> u32 {
        self.ping_seq = self.ping_seq.wrapping_add(1);
        self.pings.push_back(Ping {
            seq: self.ping_seq,
            sent_at: now,
            answered: false,
        });
        while self.pings.len() > LOSS_WINDOW {
            self.pings.pop_front();
        }
        self.update_loss();
        self.ping_seq
    }

    /// Records a pong for ping `seq` at `now`. The round trip is measured from our own record of
    /// the ping, never from a number the peer sent back.
    pub(crate) fn pong(&mut self, seq: u32, now: Duration) {
        let Some(ping) = self.pings.iter_mut().find(|p| p.seq == seq) else {
            return;
        };
        if ping.answered {
            return;
        }
        ping.answered = true;
        let rtt = now.saturating_sub(ping.sent_at);
        self.stats.last_rtt = Some(rtt);
        self.stats.rtt = Some(match self.stats.rtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
        self.update_loss();
    }

    fn update_loss(&mut self) {
        // The newest pings may still be in flight: judge only those with a later ping answered.
        let Some(last_answered) = self.pings.iter().rposition(|p| p.answered) else {
            return;
        };
        let judged = last_answered + 1;
        let lost = self.pings.range(..judged).filter(|p| !p.answered).count();
        self.stats.loss = lost as f32 / judged as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rtt_is_smoothed_and_loss_counts_unanswered() {
        let mut l = Link::new(1024, 1024);
        let a = l.ping(ms(0));
        let b = l.ping(ms(0));
        let c = l.ping(ms(0));
        l.pong(a, ms(1));
        assert_eq!(l.stats.rtt, Some(ms(1)));
        l.pong(c, ms(9));
        assert_eq!(l.stats.rtt, Some(ms(2)));
        assert_eq!(l.stats.last_rtt, Some(ms(9)));
        assert!((l.stats.loss - 1.0 / 3.0).abs() < 1e-6, "b was lost");
        l.pong(b, ms(5));
        assert_eq!(l.stats.loss, 0.0, "late pong counts");
        let before = (l.stats.rtt, l.stats.last_rtt, l.stats.loss);
        // A repeat and an unknown pong, at times that would show if they were counted.
        l.pong(b, ms(50));
        l.pong(999, ms(70));
        assert_eq!(
            (l.stats.rtt, l.stats.last_rtt, l.stats.loss),
            before,
            "repeats and unknown pongs change nothing"
        );
        assert_eq!(before.1, Some(ms(5)));
    }
}
