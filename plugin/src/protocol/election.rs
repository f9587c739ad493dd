//! Host election: every peer agrees on the host and on the order of succession, with any matchbox
//! server (no server-side knowledge needed).
//!
//! How it works:
//! - The signaling roles tell each peer who joined before it: the earlier peer of every pair is
//!   the caller (it got `NewPeer` and sends the offer). A peer that no earlier peer offered to
//!   within a grace period after it joined is the first in the room: it is the host.
//! - The host publishes the **roster** (the succession order: itself, then everyone in join order)
//!   whenever it changes, with an increasing epoch.
//! - When the host leaves, every peer takes the next peer of the last roster that has not left.
//!   The new host republishes the roster with a higher epoch.
//! - Conflicts (two peers claiming to host, e.g. after a late offer) resolve to the earlier peer.
//!
//! This is a plain state machine: the caller feeds it events with the current time and carries
//! out the [`Output`]s it returns (sending rosters, announcing host changes).

use matchbox_protocol::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// The succession order as the host published it. `order[0]` is the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// Grows with every change; a roster with a higher epoch replaces one with a lower.
    pub epoch: u64,
    /// The host, then every other peer in join order.
    pub order: Vec<PeerId>,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The host changed (or became known).
    HostChanged {
        /// The previous host, if there was one.
        old: Option<PeerId>,
        /// The new host.
        new: PeerId,
    },
    /// Send this roster to every connected peer (only ever output by the host).
    Publish(Roster),
}

/// One peer's view of the host election.
#[derive(Debug, Clone)]
pub struct HostElection {
    me: PeerId,
    joined_at: Duration,
    grace: Duration,
    /// Peers that offered to us: they joined before us.
    earlier: BTreeSet<PeerId>,
    /// Peers we offered to, in the order the server introduced them: their join order.
    later: Vec<PeerId>,
    /// Peers with an open link to us.
    connected: BTreeSet<PeerId>,
    /// Peers that left (we saw their link close or the server said so).
    gone: BTreeSet<PeerId>,
    roster: Option<Roster>,
    host: Option<PeerId>,
}

impl HostElection {
    /// A peer that just got its id `me` at time `now`. With no earlier peer showing up within
    /// `grace`, it declares itself host.
    pub fn new(me: PeerId, now: Duration, grace: Duration) -> Self {
        Self {
            me,
            joined_at: now,
            grace,
            earlier: BTreeSet::new(),
            later: Vec::new(),
            connected: BTreeSet::new(),
            gone: BTreeSet::new(),
            roster: None,
            host: None,
        }
    }

    /// Our own id.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// The agreed host, once known.
    pub fn host(&self) -> Option<PeerId> {
        self.host
    }

    /// Whether we are the host.
    pub fn is_host(&self) -> bool {
        self.host == Some(self.me)
    }

    /// The last roster (ours if we host).
    pub fn roster(&self) -> Option<&Roster> {
        self.roster.as_ref()
    }

    /// The succession order without peers known to have left: host first.
    pub fn succession(&self) -> Vec<PeerId> {
        self.roster
            .as_ref()
            .map(|r| {
                r.order
                    .iter()
                    .copied()
                    .filter(|p| !self.gone.contains(p))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `peer` joined before us (it offered to us).
    pub fn is_earlier(&self, peer: PeerId) -> bool {
        self.earlier.contains(&peer)
    }

    /// The server introduced `peer` to us: we call it, so it joined after us.
    pub fn introduced_later(&mut self, peer: PeerId) {
        self.gone.remove(&peer);
        if !self.later.contains(&peer) {
            self.later.push(peer);
        }
    }

    /// `peer` sent us an offer: it joined before us.
    pub fn introduced_earlier(&mut self, peer: PeerId) -> Vec<Output> {
        self.gone.remove(&peer);
        self.earlier.insert(peer);
        Vec::new()
    }

    /// A link to `peer` opened.
    pub fn connected(&mut self, peer: PeerId) -> Vec<Output> {
        self.gone.remove(&peer);
        self.connected.insert(peer);
        if self.is_host() {
            self.republish()
        } else {
            Vec::new()
        }
    }

    /// The link to `peer` closed, or the server said it left.
    pub fn disconnected(&mut self, peer: PeerId) -> Vec<Output> {
        self.connected.remove(&peer);
        self.earlier.remove(&peer);
        self.later.retain(|p| *p != peer);
        self.gone.insert(peer);
        if self.host == Some(peer) {
            self.succeed(peer)
        } else if self.is_host() {
            self.republish()
        } else {
            Vec::new()
        }
    }

    /// Time passed: a peer with no earlier peer after the grace period is the host.
    pub fn tick(&mut self, now: Duration) -> Vec<Output> {
        let waited = now.saturating_sub(self.joined_at) >= self.grace;
        if self.host.is_none() && self.roster.is_none() && self.earlier.is_empty() && waited {
            return self.become_host(0);
        }
        Vec::new()
    }

    /// A roster arrived from `from`.
    pub fn roster_received(&mut self, from: PeerId, roster: Roster) -> Vec<Output> {
        // Only a host publishes, and it lists itself first.
        if roster.order.first() != Some(&from) || from == self.me {
            return Vec::new();
        }
        let current_epoch = self.roster.as_ref().map_or(0, |r| r.epoch);
        if self.is_host() {
            if self.earlier.contains(&from) {
                // An earlier peer hosts: we claimed too early. Step down.
                return self.adopt(roster);
            }
            // A later peer claims to host: outbid it so everyone converges on us.
            return self.become_host(roster.epoch.max(current_epoch));
        }
        let newer = roster.epoch > current_epoch;
        let host_lost = self.host.is_none_or(|h| self.gone.contains(&h));
        let same_epoch_earlier = roster.epoch == current_epoch
            && self
                .roster
                .as_ref()
                .and_then(|r| {
                    let pos = |p: PeerId| r.order.iter().position(|q| *q == p);
                    Some(pos(from)? < pos(self.host?)?)
                })
                .unwrap_or(false);
        if newer || host_lost || same_epoch_earlier {
            self.adopt(roster)
        } else {
            Vec::new()
        }
    }

    fn adopt(&mut self, roster: Roster) -> Vec<Output> {
        let new = roster.order[0];
        self.roster = Some(roster);
        self.set_host(new)
    }

    fn set_host(&mut self, new: PeerId) -> Vec<Output> {
        let old = self.host.replace(new);
        if old == Some(new) {
            Vec::new()
        } else {
            vec![Output::HostChanged { old, new }]
        }
    }

    /// The host `left` is gone: the next in the last roster takes over.
    fn succeed(&mut self, left: PeerId) -> Vec<Output> {
        let next = self.succession().into_iter().find(|p| *p != left);
        match next {
            Some(next) if next == self.me => {
                let epoch = self.roster.as_ref().map_or(0, |r| r.epoch);
                self.become_host(epoch)
            }
            Some(next) => self.set_host(next),
            None => {
                // No roster yet: if nobody earlier is left, we are first now.
                self.host = None;
                if self.earlier.is_empty() {
                    self.become_host(0)
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Take the host role with an epoch above `above`.
    fn become_host(&mut self, above: u64) -> Vec<Output> {
        let mut out = self.set_host(self.me);
        let epoch = above.max(self.roster.as_ref().map_or(0, |r| r.epoch)) + 1;
        self.roster = Some(Roster {
            epoch,
            order: self.order_as_host(),
        });
        if let Some(r) = &self.roster {
            out.push(Output::Publish(r.clone()));
        }
        out
    }

    /// As host: recompute the roster after a change and publish it if it changed.
    fn republish(&mut self) -> Vec<Output> {
        let order = self.order_as_host();
        let epoch = self.roster.as_ref().map_or(0, |r| r.epoch);
        if self.roster.as_ref().is_some_and(|r| r.order == order) {
            return Vec::new();
        }
        let roster = Roster {
            epoch: epoch + 1,
            order,
        };
        self.roster = Some(roster.clone());
        vec![Output::Publish(roster)]
    }

    /// Us, then the peers who joined after us in join order (those linked to us, and those of the
    /// last roster, which in a star re-link to a new host), then anyone else of the last roster.
    fn order_as_host(&self) -> Vec<PeerId> {
        let previous = self
            .roster
            .as_ref()
            .map(|r| r.order.as_slice())
            .unwrap_or_default();
        let mut order = vec![self.me];
        for p in &self.later {
            let member = self.connected.contains(p) || previous.contains(p);
            if member && !self.gone.contains(p) && !order.contains(p) {
                order.push(*p);
            }
        }
        for p in previous {
            if !self.gone.contains(p) && !order.contains(p) {
                order.push(*p);
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, VecDeque};
    use uuid::Uuid;

    const GRACE: Duration = Duration::from_millis(500);

    fn id(i: u128) -> PeerId {
        PeerId(Uuid::from_u128(i))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Several peers wired together the way a matchbox mesh room wires them, with a message queue
    /// whose delivery order the test controls (like quinn-proto's test network).
    struct Sim {
        now: Duration,
        peers: BTreeMap<PeerId, HostElection>,
        /// Join order of peers still in the room.
        room: Vec<PeerId>,
        /// Rosters in flight: (from, to, roster).
        wire: VecDeque<(PeerId, PeerId, Roster)>,
        /// Host changes each peer announced.
        announced: BTreeMap<PeerId, Vec<PeerId>>,
    }

    impl Sim {
        /// Peer 1 hosts, peers 2..=n join; all linked, all rosters delivered.
        fn lobby(n: u128) -> Self {
            let mut sim = Self::new();
            sim.join(id(1));
            sim.advance(GRACE);
            for i in 2..=n {
                sim.join(id(i));
            }
            sim.link_all();
            sim.deliver();
            sim
        }

        fn new() -> Self {
            Self {
                now: Duration::ZERO,
                peers: BTreeMap::new(),
                room: Vec::new(),
                wire: VecDeque::new(),
                announced: BTreeMap::new(),
            }
        }

        fn apply(&mut self, who: PeerId, outs: Vec<Output>) {
            for o in outs {
                match o {
                    Output::HostChanged { new, .. } => {
                        self.announced.entry(who).or_default().push(new)
                    }
                    Output::Publish(r) => {
                        let targets: Vec<PeerId> =
                            self.peers[&who].connected.iter().copied().collect();
                        for t in targets {
                            self.wire.push_back((who, t, r.clone()));
                        }
                    }
                }
            }
        }

        /// `p` joins: earlier peers get NewPeer and offer; links open.
        fn join(&mut self, p: PeerId) {
            self.peers.insert(p, HostElection::new(p, self.now, GRACE));
            let earlier = self.room.clone();
            self.room.push(p);
            for e in earlier {
                self.peers.get_mut(&e).unwrap().introduced_later(p);
                let o = self.peers.get_mut(&p).unwrap().introduced_earlier(e);
                self.apply(p, o);
            }
        }

        fn link_all(&mut self) {
            let room = self.room.clone();
            for &a in &room {
                for &b in &room {
                    if a != b && !self.peers[&a].connected.contains(&b) {
                        let o = self.peers.get_mut(&a).unwrap().connected(b);
                        self.apply(a, o);
                    }
                }
            }
        }

        fn leave(&mut self, p: PeerId) {
            self.room.retain(|q| *q != p);
            self.peers.remove(&p);
            self.wire.retain(|(_, to, _)| *to != p);
            for q in self.room.clone() {
                let o = self.peers.get_mut(&q).unwrap().disconnected(p);
                self.apply(q, o);
            }
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            for q in self.room.clone() {
                let now = self.now;
                let o = self.peers.get_mut(&q).unwrap().tick(now);
                self.apply(q, o);
            }
        }

        /// Delivers messages, picking the next with `pick` (index into the queue).
        fn deliver_with(&mut self, mut pick: impl FnMut(usize) -> usize) {
            let mut steps = 0;
            while !self.wire.is_empty() {
                steps += 1;
                assert!(steps < 10_000, "message storm");
                let i = pick(self.wire.len()) % self.wire.len();
                let (from, to, r) = self.wire.remove(i).unwrap();
                if let Some(peer) = self.peers.get_mut(&to) {
                    let o = peer.roster_received(from, r);
                    self.apply(to, o);
                }
            }
        }

        fn deliver(&mut self) {
            self.deliver_with(|_| 0);
        }

        fn hosts(&self) -> BTreeSet<Option<PeerId>> {
            self.room.iter().map(|p| self.peers[p].host()).collect()
        }

        fn assert_agree(&self, host: PeerId) {
            for p in &self.room {
                assert_eq!(self.peers[p].host(), Some(host), "peer {p} host");
                assert_eq!(
                    self.peers[p].succession(),
                    self.room_from(host),
                    "peer {p} succession"
                );
            }
        }

        /// The room in join order, starting with `host` (the host is the earliest present).
        fn room_from(&self, host: PeerId) -> Vec<PeerId> {
            let i = self.room.iter().position(|p| *p == host).unwrap();
            self.room[i..].to_vec()
        }
    }

    #[test]
    fn first_peer_becomes_host_after_grace() {
        let mut e = HostElection::new(id(1), ms(0), GRACE);
        assert!(e.tick(ms(100)).is_empty());
        let out = e.tick(ms(500));
        assert_eq!(
            out[0],
            Output::HostChanged {
                old: None,
                new: id(1)
            }
        );
        assert!(matches!(&out[1], Output::Publish(r) if r.order == vec![id(1)] && r.epoch == 1));
        assert!(e.is_host());
        assert!(e.tick(ms(1000)).is_empty(), "announced once");
    }

    #[test]
    fn later_peer_never_claims_while_an_earlier_one_is_there() {
        let mut e = HostElection::new(id(2), ms(0), GRACE);
        e.introduced_earlier(id(1));
        assert!(e.tick(ms(5000)).is_empty());
        assert_eq!(e.host(), None);
    }

    #[test]
    fn mesh_of_four_agrees_on_first_and_join_order() {
        let mut sim = Sim::new();
        sim.join(id(1));
        sim.advance(GRACE);
        for i in 2..=4 {
            sim.join(id(i));
            sim.link_all();
            sim.deliver();
            sim.advance(ms(10));
        }
        sim.advance(GRACE);
        sim.deliver();
        sim.assert_agree(id(1));
        for p in 1..=4 {
            assert_eq!(sim.announced[&id(p)], vec![id(1)], "one announcement each");
        }
    }

    #[test]
    fn links_opening_out_of_join_order_keep_join_order() {
        let mut host = HostElection::new(id(1), ms(0), GRACE);
        host.tick(GRACE);
        for i in 2..=4 {
            host.introduced_later(id(i));
        }
        // The last to join connects first.
        for i in [4, 2, 3] {
            host.connected(id(i));
        }
        assert_eq!(host.succession(), vec![id(1), id(2), id(3), id(4)]);
    }

    #[test]
    fn host_leaving_promotes_next_in_join_order_everywhere() {
        let mut sim = Sim::lobby(4);
        sim.assert_agree(id(1));
        sim.leave(id(1));
        // Everyone knows the successor at once, before any message.
        assert_eq!(sim.hosts(), BTreeSet::from([Some(id(2))]));
        sim.deliver();
        sim.assert_agree(id(2));
        for p in 2..=4 {
            assert_eq!(sim.announced[&id(p)], vec![id(1), id(2)]);
        }
        // And again.
        sim.leave(id(2));
        sim.deliver();
        sim.assert_agree(id(3));
    }

    #[test]
    fn two_leave_at_once_including_the_successor() {
        let mut sim = Sim::lobby(5);
        // Host and successor leave before anyone hears from the successor.
        sim.leave(id(1));
        sim.leave(id(2));
        sim.deliver();
        sim.assert_agree(id(3));
    }

    #[test]
    fn non_host_leaving_is_published_and_skipped_in_succession() {
        let mut sim = Sim::lobby(4);
        sim.leave(id(2));
        sim.deliver();
        sim.assert_agree(id(1));
        sim.leave(id(1));
        sim.deliver();
        sim.assert_agree(id(3));
    }

    #[test]
    fn newcomer_after_migration_learns_the_new_host() {
        let mut sim = Sim::new();
        sim.join(id(1));
        sim.advance(GRACE);
        sim.join(id(2));
        sim.join(id(3));
        sim.link_all();
        sim.deliver();
        sim.leave(id(1));
        sim.deliver();
        sim.join(id(4));
        sim.link_all();
        sim.deliver();
        sim.advance(GRACE);
        sim.assert_agree(id(2));
    }

    #[test]
    fn early_self_claim_steps_down_for_an_earlier_peer() {
        // Peer 2's offer from peer 1 is late: 2 claims host, then learns of 1.
        let mut sim = Sim::new();
        sim.join(id(1));
        sim.advance(GRACE);
        sim.peers
            .insert(id(2), HostElection::new(id(2), sim.now, GRACE));
        sim.room.push(id(2));
        sim.advance(GRACE);
        assert!(sim.peers[&id(2)].is_host(), "claims while alone");
        sim.peers.get_mut(&id(1)).unwrap().introduced_later(id(2));
        let o = sim.peers.get_mut(&id(2)).unwrap().introduced_earlier(id(1));
        sim.apply(id(2), o);
        sim.link_all();
        sim.deliver();
        sim.assert_agree(id(1));
    }

    #[test]
    fn any_delivery_order_converges() {
        // A tiny deterministic fuzz over delivery orders and join/leave interleavings.
        for seed in 0..200u64 {
            let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let mut rnd = move |n: usize| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((x >> 33) as usize) % n.max(1)
            };
            let mut sim = Sim::new();
            sim.join(id(1));
            sim.advance(GRACE);
            let n = 3 + rnd(4) as u128;
            for i in 2..=n {
                sim.join(id(i));
                if rnd(2) == 0 {
                    sim.link_all();
                }
            }
            sim.link_all();
            sim.deliver_with(&mut rnd);
            let leaves = rnd(n as usize - 1);
            for _ in 0..leaves {
                let victim = if rnd(2) == 0 {
                    sim.room[0]
                } else {
                    sim.room[rnd(sim.room.len())]
                };
                sim.leave(victim);
                if rnd(2) == 0 {
                    sim.deliver_with(&mut rnd);
                }
            }
            sim.deliver_with(&mut rnd);
            sim.advance(GRACE);
            sim.deliver_with(&mut rnd);
            let first = sim.room[0];
            sim.assert_agree(first);
        }
    }
}
