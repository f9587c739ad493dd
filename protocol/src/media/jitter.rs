//! The receive jitter buffer of an audio stream: packets in, one frame out every frame period,
//! with loss concealment, as a plain state machine over a caller-supplied clock.
//!
//! Packets are keyed by their RTP sequence number, extended past its 16-bit wrap. Playout starts
//! once the first packet has waited the *target delay*; from then on [`JitterBuffer::pop`] is
//! called once per frame period and returns the next packet, or asks the decoder to recover it
//! from the following packet's in-band FEC, or to conceal it (Opus PLC). A packet that comes after
//! its slot was played is *late*: it is dropped, counted, and raises the target delay; so does a
//! *burst* (packets arriving together after a stall: a sender or a path that stalls and then
//! catches up, as a browser on a busy machine does), to as many frames as came at once, so that
//! the next stall plays out of the buffer instead of going silent. A long run of on-time frames
//! lowers the target again. A stream that goes quiet (DTX, a muted sender, a pause)
//! stops concealing after a few frames and waits for the next packet as at the start.
//!
//! Every number here comes from the network: sequence numbers are compared with wrapping
//! arithmetic, nothing is kept beyond [`JitterBuffer::capacity`] packets, and a sequence number
//! that jumps far ahead restarts the buffer instead of waiting for the gap.

use std::collections::BTreeMap;
use std::time::Duration;

/// How a jitter buffer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterSettings {
    /// One frame's duration (20 ms for huddle's Opus).
    pub frame: Duration,
    /// The target delay at the start and its lowest value.
    pub min_delay: Duration,
    /// The highest the target delay goes after late packets.
    pub max_delay: Duration,
    /// Packets held at most.
    pub capacity: usize,
}

impl Default for JitterSettings {
    fn default() -> Self {
        Self {
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
            capacity: 64,
        }
    }
}

/// What to play for the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet.
    Packet(Vec<u8>),
    /// The packet is lost but the next one is here: decode this (the next) packet's in-band FEC.
    Recover(Vec<u8>),
    /// The packet is lost: conceal it (the decoder's packet loss concealment).
    Conceal,
    /// Nothing is playing (before the first packet, or after the stream went quiet): silence.
    Silence,
}

/// What happened to the packets so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets taken in.
    pub received: u64,
    /// Frames played from their own packet.
    pub played: u64,
    /// Frames recovered from the next packet's FEC.
    pub recovered: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Packets that came after their slot was played, or twice.
    pub late: u64,
    /// Packets dropped because the buffer was over its capacity or its target.
    pub discarded: u64,
    /// Times playout stopped for lack of packets and started over.
    pub restarts: u64,
}

/// Frames played on time before the target delay comes down one step.
const CALM_FRAMES: u32 = 250;
/// Missing frames in a row after which the stream counts as quiet.
const QUIET_FRAMES: u32 = 5;

/// A jitter buffer. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    settings: JitterSettings,
    target: Duration,
    packets: BTreeMap<u64, Vec<u8>>,
    /// The highest extended sequence number seen, for unwrapping.
    highest: Option<u64>,
    /// The next frame to play; `None` while buffering.
    next: Option<u64>,
    /// When the buffered packets started waiting (while buffering).
    waiting_since: Option<Duration>,
    missing: u32,
    calm: u32,
    /// Frames to hold playout back by (concealing meanwhile), after late packets.
    stretch: u32,
    /// When the latest packet arrived, and how many came together up to it.
    last_arrival: Option<Duration>,
    burst: u32,
    stats: JitterStats,
}

/// Where extended sequence numbers start, so that the first packet can be preceded.
const BASE: u64 = 1 << 32;

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(settings: JitterSettings) -> Self {
        Self {
            target: settings.min_delay,
            settings,
            packets: BTreeMap::new(),
            highest: None,
            next: None,
            waiting_since: None,
            missing: 0,
            calm: 0,
            stretch: 0,
            last_arrival: None,
            burst: 0,
            stats: JitterStats::default(),
        }
    }

    /// Packets held at most.
    pub fn capacity(&self) -> usize {
        self.settings.capacity
    }

    /// The current target delay.
    pub fn target_delay(&self) -> Duration {
        self.target
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet is waiting.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// What happened so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// A packet with RTP sequence number `seq` arrived at `now`.
    pub fn push(&mut self, seq: u16, payload: Vec<u8>, now: Duration) {
        self.stats.received += 1;
        self.arrived(now);
        let ext = self.extend(seq);
        if let Some(next) = self.next {
            if ext < next {
                self.stats.late += 1;
                self.raise_target();
                return;
            }
            if ext - next >= self.settings.capacity as u64 {
                // A jump no gap can explain (a restarted sender, or a lie): start over from here.
                self.restart();
            }
        }
        if self.packets.contains_key(&ext) {
            self.stats.late += 1;
            return;
        }
        if self.next.is_none() && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        self.packets.insert(ext, payload);
        while self.packets.len() > self.settings.capacity {
            self.packets.pop_first();
            self.stats.discarded += 1;
        }
    }

    /// The frame to play now (call once per frame period).
    pub fn pop(&mut self, now: Duration) -> Playout {
        let Some(next) = self.next else {
            return self.maybe_start(now);
        };
        if self.stretch > 0 {
            // Packets came late: play one concealed frame without advancing, so the playout
            // point moves back by a frame and later packets arrive in time.
            self.stretch -= 1;
            self.stats.concealed += 1;
            return Playout::Conceal;
        }
        // Too much buffered (the sender's clock runs fast, or a burst came): catch up by one.
        let over = self.target.as_millis() / self.settings.frame.as_millis().max(1) + 3;
        if self.packets.range(next..).count() as u128 > over {
            if self.packets.remove(&next).is_some() {
                self.stats.discarded += 1;
            }
            self.next = Some(next + 1);
            return self.pop_at(next + 1);
        }
        self.pop_at(next)
    }

    fn pop_at(&mut self, next: u64) -> Playout {
        self.next = Some(next + 1);
        if let Some(packet) = self.packets.remove(&next) {
            self.missing = 0;
            self.calm += 1;
            if self.calm >= CALM_FRAMES {
                self.calm = 0;
                self.target = self
                    .target
                    .saturating_sub(self.settings.frame / 4)
                    .max(self.settings.min_delay);
            }
            self.stats.played += 1;
            return Playout::Packet(packet);
        }
        self.missing += 1;
        if self.packets.is_empty() && self.missing >= QUIET_FRAMES {
            self.restart();
            return Playout::Silence;
        }
        if let Some(following) = self.packets.get(&(next + 1)) {
            self.stats.recovered += 1;
            return Playout::Recover(following.clone());
        }
        self.stats.concealed += 1;
        Playout::Conceal
    }

    fn maybe_start(&mut self, now: Duration) -> Playout {
        let ready = self
            .waiting_since
            .is_some_and(|since| now.saturating_sub(since) >= self.target);
        match self.packets.first_key_value() {
            Some((&first, _)) if ready => {
                self.waiting_since = None;
                self.missing = 0;
                self.pop_at(first)
            }
            _ => Playout::Silence,
        }
    }

    fn restart(&mut self) {
        if self.next.take().is_some() {
            self.stats.restarts += 1;
        }
        self.stats.discarded += self.packets.len() as u64;
        self.packets.clear();
        self.waiting_since = None;
        self.missing = 0;
        self.stretch = 0;
    }

    /// Packets that arrive together (within a quarter frame of each other) say how far the
    /// stream can stall: the target covers that many frames.
    fn arrived(&mut self, now: Duration) {
        let together = self
            .last_arrival
            .is_some_and(|at| now.saturating_sub(at) < self.settings.frame / 4);
        self.last_arrival = Some(now);
        self.burst = if together {
            self.burst.saturating_add(1)
        } else {
            1
        };
        let cover = self
            .settings
            .frame
            .saturating_mul(self.burst)
            .min(self.settings.max_delay);
        if cover > self.target {
            self.calm = 0;
            self.target = cover;
        }
    }

    fn raise_target(&mut self) {
        self.calm = 0;
        let raised = (self.target + self.settings.frame).min(self.settings.max_delay);
        if raised > self.target {
            self.stretch += 1;
        }
        self.target = raised;
    }

    /// `seq` extended past its wrap, relative to the highest seen so far.
    fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.highest {
            None => BASE + u64::from(seq),
            Some(highest) => {
                let delta = seq.wrapping_sub(highest as u16) as i16;
                highest.saturating_add_signed(i64::from(delta))
            }
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn packet(seq: u16) -> Vec<u8> {
        seq.to_be_bytes().to_vec()
    }

    /// Feeds `seqs` at 20 ms intervals (arrival `delay(i)` late) and pops every 20 ms for `ticks`.
    fn run(seqs: &[u16], delay: impl Fn(usize) -> u64, ticks: u64) -> (Vec<Playout>, JitterStats) {
        let mut buffer = JitterBuffer::new(JitterSettings::default());
        let mut arrivals: Vec<(u64, u16)> = seqs
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as u64 * 20 + delay(i), s))
            .collect();
        arrivals.sort();
        let mut out = Vec::new();
        let mut a = 0;
        for t in 0..ticks {
            let now = t * 20 + 10;
            while a < arrivals.len() && arrivals[a].0 <= now {
                buffer.push(arrivals[a].1, packet(arrivals[a].1), ms(arrivals[a].0));
                a += 1;
            }
            out.push(buffer.pop(ms(now)));
        }
        (out, buffer.stats())
    }

    fn played(out: &[Playout]) -> Vec<u16> {
        out.iter()
            .filter_map(|p| match p {
                Playout::Packet(b) => Some(u16::from_be_bytes([b[0], b[1]])),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plays_in_order_after_the_target_delay_across_the_wrap() {
        let seqs: Vec<u16> = (0..50u16).map(|i| i.wrapping_add(65_520)).collect();
        let (out, stats) = run(&seqs, |_| 0, 52);
        assert_eq!(played(&out), seqs);
        // Nothing before the 40 ms target delay.
        assert_eq!(out[..2], [Playout::Silence, Playout::Silence]);
        assert_eq!(stats.concealed + stats.recovered + stats.late, 0);
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let seqs: Vec<u16> = vec![0, 2, 1, 3, 5, 4, 6, 7, 9, 8, 10];
        let (out, stats) = run(&seqs, |_| 0, 20);
        assert_eq!(played(&out), (0..=10).collect::<Vec<_>>());
        assert_eq!(stats.late, 0);
    }

    #[test]
    fn a_lost_packet_is_recovered_from_the_next_ones_fec() {
        let seqs: Vec<u16> = (0..20).filter(|&s| s != 7).collect();
        let (out, stats) = run(&seqs, |_| 0, 30);
        assert_eq!(stats.recovered, 1);
        let i = out
            .iter()
            .position(|p| matches!(p, Playout::Recover(_)))
            .unwrap();
        assert_eq!(out[i], Playout::Recover(packet(8)));
        assert_eq!(out[i + 1], Playout::Packet(packet(8)));
    }

    #[test]
    fn two_lost_in_a_row_conceal_then_recover() {
        let seqs: Vec<u16> = (0..20).filter(|&s| s != 7 && s != 8).collect();
        let (out, stats) = run(&seqs, |_| 0, 22);
        assert_eq!((stats.concealed, stats.recovered), (1, 1));
        assert_eq!(played(&out).len(), 18);
    }

    #[test]
    fn late_packets_are_dropped_and_raise_the_target() {
        // Packet 10 arrives 100 ms late, long after its slot.
        let seqs: Vec<u16> = (0..30).collect();
        let (out, stats) = run(&seqs, |i| if i == 10 { 100 } else { 0 }, 40);
        assert_eq!(stats.late, 1);
        assert!(!played(&out).contains(&10));
    }

    #[test]
    fn a_path_that_gets_slower_moves_playout_back() {
        // From packet 20 on every packet arrives 70 ms later than before.
        let seqs: Vec<u16> = (0..200).collect();
        let (out, stats) = run(&seqs, |i| if i >= 20 { 70 } else { 0 }, 210);
        assert!(stats.late <= 4, "{stats:?}");
        assert!(played(&out).len() >= 190, "{stats:?}");
    }

    #[test]
    fn a_quiet_stream_falls_silent_and_starts_again() {
        // 10 packets, a 1 s pause (DTX, mute), 10 more.
        let mut buffer = JitterBuffer::new(JitterSettings::default());
        let mut out = Vec::new();
        for t in 0..100u64 {
            let now = ms(t * 20);
            if t < 10 || (60..70).contains(&t) {
                buffer.push(t as u16, packet(t as u16), now);
            }
            out.push(buffer.pop(now + ms(10)));
        }
        let concealed = out.iter().filter(|p| **p == Playout::Conceal).count();
        assert!(
            concealed < QUIET_FRAMES as usize * 2,
            "{concealed} concealed"
        );
        assert_eq!(played(&out).len(), 20);
        assert_eq!(buffer.stats().restarts, 2);
    }

    #[test]
    fn a_hostile_sender_cannot_grow_it_or_stall_it() {
        let mut buffer = JitterBuffer::new(JitterSettings::default());
        // Every sequence number, far ahead, backwards, the same one again.
        for i in 0..200_000u32 {
            let seq = (i.wrapping_mul(2_654_435_761) >> 16) as u16;
            buffer.push(seq, vec![0; 4], ms(u64::from(i)));
            buffer.push(seq, vec![0; 4], ms(u64::from(i)));
            assert!(buffer.len() <= buffer.capacity());
            let _ = buffer.pop(ms(u64::from(i)));
        }
        // An honest stream afterwards still plays.
        let mut good = 0;
        for t in 0..50u64 {
            let now = ms(300_000 + t * 20);
            buffer.push(1000 + t as u16, packet(1000 + t as u16), now);
            if matches!(buffer.pop(now), Playout::Packet(_)) {
                good += 1;
            }
        }
        assert!(good >= 40, "{good} of 50 played");
    }

    #[test]
    fn a_burst_raises_the_target_to_the_maximum_and_the_rest_is_trimmed() {
        let settings = JitterSettings::default();
        let mut buffer = JitterBuffer::new(settings);
        for s in 0..40u16 {
            buffer.push(s, packet(s), ms(0));
        }
        assert_eq!(buffer.target_delay(), settings.max_delay);
        for t in 0..30u64 {
            let _ = buffer.pop(ms(40 + t * 20));
        }
        let most = (settings.max_delay.as_millis() / 20) as usize + 3;
        assert!(buffer.len() <= most, "{} still buffered", buffer.len());
        assert!(buffer.stats().discarded > 0);
    }

    /// A sender that stalls 140 ms every 600 ms and then sends what it owes at once (a busy
    /// browser): after the first stall the target covers it, and the rest plays without a
    /// restart or a gap.
    #[test]
    fn a_stalling_sender_plays_without_gaps_once_the_target_covers_its_bursts() {
        let mut buffer = JitterBuffer::new(JitterSettings::default());
        let period = 30u64;
        let stall = 7u64;
        // Frame i is sent at i*20 ms, except in a stall, when it waits for the stall's end.
        let sent = |i: u64| {
            let at = i * 20;
            let phase = at % (period * 20);
            if phase < stall * 20 {
                at - phase + stall * 20
            } else {
                at
            }
        };
        let mut out = Vec::new();
        let mut i = 0u64;
        for t in 0..300u64 {
            let now = t * 20 + 10;
            while sent(i) <= now && i < 300 {
                buffer.push(i as u16, packet(i as u16), ms(sent(i)));
                i += 1;
            }
            out.push(buffer.pop(ms(now)));
        }
        let late_start = 2 * period as usize;
        let gaps = out[late_start..]
            .iter()
            .filter(|p| !matches!(p, Playout::Packet(_)))
            .count();
        assert_eq!(gaps, 0, "after the first bursts: {:?}", buffer.stats());
        assert!(buffer.target_delay() >= ms(stall * 20));
        assert!(buffer.target_delay() <= JitterSettings::default().max_delay);
    }
}
