//! The election driven through every order of joins, leaves and message arrival.

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
    wire: VecDeque<(PeerId, PeerId, Succession)>,
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
                Output::HostChanged { new, .. } => self.announced.entry(who).or_default().push(new),
                Output::Publish(r) => {
                    let targets: Vec<PeerId> = self.peers[&who].connected.iter().copied().collect();
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

#[test]
fn the_largest_epoch_a_peer_can_claim_overflows_nothing() {
    let (host, later) = (id(1), id(2));
    let mut e = HostElection::new(host, Duration::ZERO, GRACE);
    e.tick(GRACE);
    assert!(e.is_host());
    e.introduced_later(later);
    e.connected(later);
    // A later peer claims to host with the largest epoch: the host outbids without overflowing,
    // and keeps publishing when members change.
    let claim = Succession {
        epoch: u64::MAX,
        order: vec![later, host],
    };
    let out = e.roster_received(later, claim);
    assert!(e.is_host());
    assert!(out.iter().any(|o| matches!(o, Output::Publish(_))));
    let out = e.disconnected(later);
    assert!(out.iter().any(|o| matches!(o, Output::Publish(_))));
}
