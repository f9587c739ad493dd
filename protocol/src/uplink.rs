//! Measuring members' upload headroom, so the host election can rank as heirs the peers best
//! able to relay ([`HostElection::upload_measured`](crate::election::HostElection::upload_measured)).
//!
//! The host asks one member at a time ([`Control::UploadProbe`](crate::control::Control)); the
//! member sends a train of [`PROBE_FRAMES`] frames of [`PROBE_FRAME_BYTES`] on the unreliable
//! lane, back to back, beside whatever it sends anyway; the host times their arrival: the bytes
//! that came after the first arrival, over the time from the first to the last, is what the
//! member's upload adds on top of its traffic now: its headroom. The data channel's congestion
//! control paces the train like any traffic, so this is a throughput the path gives now, not
//! the line's capacity; [`ENOUGH_BPS`] or more counts as enough (a train that arrives within one
//! poll of the driver is that).
//!
//! What a member can do about it: send no more than its upload carries. The host times what
//! arrives itself, counts each frame of the train once, and only frames of the train it asked
//! that member for, over a direct link. What a host can do: ask for one train per
//! [`ANSWER_INTERVAL`] (a member answers no more), so it cannot make a member flood.

use crate::frame::Frame;
use matchbox_protocol::PeerId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

/// Frames in a probe train (a `u64` marks which came).
pub const PROBE_FRAMES: u32 = 64;
/// Padding bytes in each probe frame: a train is about 70 KB.
pub const PROBE_FRAME_BYTES: usize = 1100;
/// How long the host waits for a train after asking, then measures what came.
pub const PROBE_WAIT: Duration = Duration::from_secs(3);
/// A member answers at most one probe request of a host in this time (a new host is answered
/// at once: it measures anew).
pub const ANSWER_INTERVAL: Duration = Duration::from_secs(10);
/// How long a measure stands: then the member is measured again (what a player's upload has
/// to spare changes when it starts a video, or when someone else at home does).
pub const REMEASURE: Duration = Duration::from_secs(120);
/// Upload headroom that counts as enough to relay a lobby (16 Mbit/s: full video fan-out to six
/// players needs about 12).
pub const ENOUGH_BPS: u64 = 16_000_000;
/// Members waiting for a measurement, at most (beyond it, later ones are not measured).
const MAX_QUEUED: usize = 4096;

/// Whether headroom `a` is clearly more than `b`: at least twice as much (measures of one link
/// vary by a frame's grain; a member goes ahead of an earlier one only for a real difference).
pub fn clearly_more(a: u64, b: u64) -> bool {
    a > b && a / 2 >= b
}

/// The frames of probe train `id`, to send on the unreliable lane.
pub fn probe_train(id: u32) -> impl Iterator<Item = Vec<u8>> {
    (0..PROBE_FRAMES).map(move |index| {
        let mut frame = Frame::Probe { id, index }.header();
        frame.resize(frame.len() + PROBE_FRAME_BYTES, 0);
        frame
    })
}

/// A member's side: whether to answer a probe request now.
#[derive(Debug, Clone, Default)]
pub struct ProbeAnswerer {
    /// The host we last answered, and when.
    last: Option<(PeerId, Duration)>,
    refused: u64,
}

impl ProbeAnswerer {
    /// Our host `host` asked at `now`: true if we send the train (one per [`ANSWER_INTERVAL`]
    /// to the same host).
    pub fn may_answer(&mut self, host: PeerId, now: Duration) -> bool {
        if self
            .last
            .is_some_and(|(h, t)| h == host && now.saturating_sub(t) < ANSWER_INTERVAL)
        {
            self.refused += 1;
            return false;
        }
        self.last = Some((host, now));
        true
    }

    /// Requests not answered (too soon after the last).
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// A train being received.
#[derive(Debug, Clone)]
struct Train {
    peer: PeerId,
    id: u32,
    asked_at: Duration,
    /// When its first frame came.
    first: Option<Duration>,
    /// When its latest frame came.
    last: Duration,
    /// Bytes that came after the first arrival's instant.
    after_first: u64,
    /// Which frames came (bit `index`).
    seen: u64,
}

impl Train {
    fn complete(&self) -> bool {
        self.seen.count_ones() == PROBE_FRAMES
    }

    /// Bits per second, if the train says anything: all of it in one instant is enough; a
    /// train of which part came in one instant, and nothing after, is no measurement.
    fn rate(&self) -> Option<u64> {
        let first = self.first?;
        let took = self.last.saturating_sub(first).as_micros();
        if took == 0 {
            return self.complete().then_some(ENOUGH_BPS);
        }
        let bits = u128::from(self.after_first).saturating_mul(8_000_000) / took;
        Some(u64::try_from(bits).unwrap_or(u64::MAX).min(ENOUGH_BPS))
    }
}

/// What the meter wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterOutput {
    /// Ask `peer` for train `id`.
    Ask {
        /// The member to measure.
        peer: PeerId,
        /// The train's mark.
        id: u32,
    },
    /// `peer`'s upload headroom came out at this many bits per second (at most [`ENOUGH_BPS`]).
    Measured {
        /// The member measured.
        peer: PeerId,
        /// Its headroom.
        bits_per_second: u64,
    },
    /// `peer` sent no usable train in [`PROBE_WAIT`].
    Failed {
        /// The member asked.
        peer: PeerId,
    },
}

/// The host's side: measures members one at a time, each again every [`REMEASURE`] while we
/// host.
#[derive(Debug, Clone, Default)]
pub struct UploadMeter {
    queue: VecDeque<PeerId>,
    /// What `queue` holds (asked every frame for every member: no scan).
    queued: HashSet<PeerId>,
    train: Option<Train>,
    /// Members done (measured or failed), with their headroom if measured, and when.
    done: HashMap<PeerId, (Option<u64>, Duration)>,
    next_id: u32,
    dropped: u64,
}

impl UploadMeter {
    /// Measure `peer` when its turn comes, unless it is being measured or was within
    /// [`REMEASURE`] before `now`.
    pub fn want(&mut self, peer: PeerId, now: Duration) {
        let busy = self.train.as_ref().is_some_and(|t| t.peer == peer);
        let fresh = self
            .done
            .get(&peer)
            .is_some_and(|(_, at)| now.saturating_sub(*at) < REMEASURE);
        if busy || fresh || self.queued.contains(&peer) || self.queue.len() >= MAX_QUEUED {
            return;
        }
        self.queued.insert(peer);
        self.queue.push_back(peer);
    }

    /// `peer` left: nothing more of it.
    pub fn forget(&mut self, peer: PeerId) {
        if self.queued.remove(&peer) {
            self.queue.retain(|p| *p != peer);
        }
        self.done.remove(&peer);
        if self.train.as_ref().is_some_and(|t| t.peer == peer) {
            self.train = None;
        }
    }

    /// We no longer host: everything is forgotten (a new tenure measures anew).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.queued.clear();
        self.train = None;
        self.done.clear();
    }

    /// The headroom measured for `peer`, if it was.
    pub fn headroom(&self, peer: PeerId) -> Option<u64> {
        self.done.get(&peer).and_then(|(rate, _)| *rate)
    }

    /// Probe frames dropped: not of the train we wait for, or seen twice.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A probe frame from `peer` over its direct link, `len` bytes, at `now`.
    pub fn frame(&mut self, peer: PeerId, id: u32, index: u32, len: usize, now: Duration) {
        let Some(train) = self
            .train
            .as_mut()
            .filter(|t| t.peer == peer && t.id == id && index < PROBE_FRAMES)
        else {
            self.dropped += 1;
            return;
        };
        let bit = 1u64 << index;
        if train.seen & bit != 0 {
            self.dropped += 1;
            return;
        }
        train.seen |= bit;
        match train.first {
            None => train.first = Some(now),
            Some(first) if now > first => {
                train.after_first = train.after_first.saturating_add(len as u64);
            }
            Some(_) => {}
        }
        train.last = train.last.max(now);
    }

    /// What to do at `now`: a finished train's result, else the next member to ask.
    pub fn poll(&mut self, now: Duration) -> Option<MeterOutput> {
        if let Some(train) = &self.train {
            let waited = now.saturating_sub(train.asked_at) >= PROBE_WAIT;
            if !train.complete() && !waited {
                return None;
            }
            let (peer, rate) = (train.peer, train.rate());
            self.train = None;
            self.done.insert(peer, (rate, now));
            return Some(match rate {
                Some(bits_per_second) => MeterOutput::Measured {
                    peer,
                    bits_per_second,
                },
                None => MeterOutput::Failed { peer },
            });
        }
        let peer = self.queue.pop_front()?;
        self.queued.remove(&peer);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.train = Some(Train {
            peer,
            id,
            asked_at: now,
            first: None,
            last: now,
            after_first: 0,
            seen: 0,
        });
        Some(MeterOutput::Ask { peer, id })
    }

    /// When [`UploadMeter::poll`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.train {
            Some(t) => Some(t.asked_at.saturating_add(PROBE_WAIT)),
            None => (!self.queue.is_empty()).then_some(Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests;
