//! Simulated network conditions: added latency, jitter and loss per lane. The plugin's link
//! conditioner puts it in its send path (natively and in the browser), and the endpoint tests'
//! simulated network is made of it.
//!
//! Unreliable frames are dropped with the loss probability and may arrive out of order. Reliable
//! frames are never dropped (the real channel would retransmit them): a "lost" one is held back by
//! a retransmission delay, and the frames after it wait for it, as they would in order.

use crate::lane::Lane;
use bytes::Bytes;
use matchbox_protocol::PeerId;
use std::collections::HashMap;
use std::time::Duration;

/// Network conditions to simulate on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Conditions {
    /// Added one-way delay.
    pub latency: Duration,
    /// Up to this much more or less delay, uniformly.
    pub jitter: Duration,
    /// Probability that a frame is lost (unreliable) or retransmitted (reliable), 0 to 1.
    pub loss: f32,
}

impl Conditions {
    /// Latency, jitter and loss.
    pub fn new(latency: Duration, jitter: Duration, loss: f32) -> Self {
        Self {
            latency,
            jitter,
            loss,
        }
    }
}

#[derive(Debug)]
struct Held {
    at: Duration,
    order: u64,
    lane: Lane,
    peer: PeerId,
    bytes: Bytes,
}

/// Frames held back by the conditions until their time comes (`now` is any monotonic clock).
#[derive(Debug)]
pub struct Delayer {
    held: Vec<Held>,
    rng: fastrand::Rng,
    order: u64,
    /// Release time of the last reliable frame per (peer, channel): later ones never pass it.
    last_reliable: HashMap<(PeerId, Lane), Duration>,
    /// Frames the conditions dropped.
    pub dropped: u64,
}

impl Delayer {
    /// A delayer whose chance draws start from `seed` (the same seed, the same draws).
    pub fn new(seed: u64) -> Self {
        Self {
            held: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
            order: 0,
            last_reliable: HashMap::new(),
            dropped: 0,
        }
    }

    /// Takes a frame; it comes out of [`Delayer::due`] when its time has come (or never).
    pub fn submit(
        &mut self,
        now: Duration,
        conditions: &Conditions,
        lane: Lane,
        peer: PeerId,
        bytes: Bytes,
    ) {
        let reliable = lane.is_reliable();
        let lost = self.rng.f32() < conditions.loss;
        if lost && !reliable {
            self.dropped += 1;
            return;
        }
        let jitter = conditions.jitter.as_secs_f64() * (self.rng.f64() * 2.0 - 1.0);
        let mut delay = (conditions.latency.as_secs_f64() + jitter).max(0.0);
        if lost {
            // A retransmission: about one more round trip, at least 50 ms.
            delay += (conditions.latency.as_secs_f64() * 2.0).max(0.05);
        }
        let mut at = now.saturating_add(Duration::from_secs_f64(delay));
        if reliable {
            let last = self.last_reliable.entry((peer, lane)).or_insert(at);
            at = at.max(*last);
            *last = at;
        }
        self.order += 1;
        self.held.push(Held {
            at,
            order: self.order,
            lane,
            peer,
            bytes,
        });
    }

    /// The frames whose time has come, in release order.
    pub fn due(&mut self, now: Duration) -> Vec<(Lane, PeerId, Bytes)> {
        let (mut ready, held): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.at <= now);
        self.held = held;
        ready.sort_by(|a, b| a.at.cmp(&b.at).then(a.order.cmp(&b.order)));
        ready
            .into_iter()
            .map(|h| (h.lane, h.peer, h.bytes))
            .collect()
    }

    /// Frames still held.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId(uuid::Uuid::from_u128(1))
    }

    #[test]
    fn unreliable_loses_about_the_share_asked() {
        let mut d = Delayer::new(7);
        let now = Duration::ZERO;
        let c = Conditions::new(Duration::from_millis(10), Duration::ZERO, 0.2);
        for i in 0..10_000u32 {
            d.submit(
                now,
                &c,
                Lane::Unreliable,
                peer(),
                Bytes::copy_from_slice(&i.to_le_bytes()),
            );
        }
        assert!(d.due(now).is_empty(), "nothing before the latency");
        let out = d.due(now + Duration::from_millis(10));
        let share = out.len() as f64 / 10_000.0;
        assert!((0.77..0.83).contains(&share), "{share}");
        assert_eq!(d.dropped as usize + out.len(), 10_000);
    }

    #[test]
    fn reliable_never_loses_and_keeps_order() {
        let mut d = Delayer::new(11);
        let start = Duration::ZERO;
        let c = Conditions::new(Duration::from_millis(30), Duration::from_millis(20), 0.3);
        let mut got = Vec::new();
        for i in 0..2000u32 {
            let now = start + Duration::from_millis(u64::from(i));
            d.submit(
                now,
                &c,
                Lane::Reliable,
                peer(),
                Bytes::copy_from_slice(&i.to_le_bytes()),
            );
            got.extend(d.due(now));
        }
        got.extend(d.due(start + Duration::from_secs(10)));
        let seq: Vec<u32> = got
            .iter()
            .map(|(_, _, b)| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(seq, (0..2000).collect::<Vec<_>>());
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut d = Delayer::new(3);
        let now = Duration::ZERO;
        let c = Conditions::new(Duration::from_millis(60), Duration::from_millis(10), 0.0);
        for _ in 0..1000 {
            d.submit(now, &c, Lane::Unreliable, peer(), Bytes::new());
        }
        assert!(d.due(now + Duration::from_millis(49)).is_empty());
        let early = d.due(now + Duration::from_millis(60)).len();
        assert!((350..650).contains(&early), "{early}");
        assert_eq!(early + d.due(now + Duration::from_millis(71)).len(), 1000);
    }
}
