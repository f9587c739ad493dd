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

    /// Peer 1 hosts; peer 2 joins but peer 1's offer has not reached it: 2 claims host too.
    fn early_claim() -> Self {
        let mut sim = Self::new();
        sim.join(id(1));
        sim.advance(GRACE);
        sim.peers
            .insert(id(2), HostElection::new(id(2), sim.now, GRACE));
        sim.room.push(id(2));
        sim.advance(GRACE);
        assert!(sim.peers[&id(2)].is_host(), "claims while alone");
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
                Output::Vouch { to, roster } => self.wire.push_back((who, to, roster)),
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
                let o = peer.roster_received(from, r, self.now);
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
    let mut sim = Sim::early_claim();
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
    // A later peer claims to host with the largest epoch: refused, the host stays, and it keeps
    // publishing (epochs counting on from its own) when members change.
    let claim = Succession::in_join_order(u64::MAX, vec![later, host]);
    let out = e.roster_received(later, claim, GRACE);
    assert!(e.is_host() && out.is_empty());
    assert_eq!(e.refused(), 1);
    let out = e.disconnected(later);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Publish(r) if r.epoch < 10)));
    // A host that itself claims the largest epoch: its successor takes over without overflow.
    let mut member = HostElection::new(later, Duration::ZERO, GRACE);
    member.introduced_earlier(host);
    member.roster_received(
        host,
        Succession::in_join_order(u64::MAX, vec![host, later]),
        GRACE,
    );
    assert_eq!(member.host(), Some(host));
    let out = member.disconnected(host);
    assert!(member.is_host());
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Publish(r) if r.epoch == u64::MAX)));
}

/// The roster a hostile member sends: itself first, the others after it.
fn forged(by: PeerId, room: &[PeerId], epoch: u64) -> Succession {
    let mut order = vec![by];
    order.extend(room.iter().copied().filter(|p| *p != by));
    Succession::in_join_order(epoch, order)
}

#[test]
fn a_member_cannot_take_the_room_over_with_a_roster() {
    for hostile in [id(2), id(3)] {
        let mut sim = Sim::lobby(4);
        sim.advance(GRACE * 2);
        let room = sim.room.clone();
        for epoch in [2, 3, 1_000, u64::MAX] {
            for &to in &room {
                if to != hostile {
                    sim.wire
                        .push_back((hostile, to, forged(hostile, &room, epoch)));
                }
            }
        }
        sim.deliver();
        sim.assert_agree(id(1));
        // Nothing was published in answer: a lie costs the room no traffic.
        assert!(sim.wire.is_empty());
        let refused: u64 = room.iter().map(|p| sim.peers[p].refused()).sum();
        // Every forged roster is counted, but the successor's (2) next roster, which is kept
        // until the host goes (one for each of the two others).
        let kept = if hostile == id(2) { 2 } else { 0 };
        assert_eq!(refused, 12 - kept, "every forged roster is counted");
        // The host leaves: the true successor (2) takes over, whoever lied.
        sim.leave(id(1));
        sim.deliver();
        sim.assert_agree(id(2));
    }
}

#[test]
fn the_host_cannot_jump_its_epoch_past_the_bound() {
    let mut sim = Sim::lobby(3);
    sim.advance(GRACE * 2);
    let epoch = sim.peers[&id(2)].roster().map(|r| r.epoch).unwrap_or(0);
    let jump = Succession::in_join_order(epoch + MAX_EPOCH_STEP + 1, vec![id(1), id(3), id(2)]);
    let out = sim
        .peers
        .get_mut(&id(2))
        .unwrap()
        .roster_received(id(1), jump, sim.now);
    assert!(out.is_empty());
    assert_eq!(sim.peers[&id(2)].refused(), 1);
    assert_eq!(sim.peers[&id(2)].roster().map(|r| r.epoch), Some(epoch));
}

#[test]
fn a_stray_offer_from_a_later_peer_does_not_make_it_earlier() {
    let mut sim = Sim::lobby(3);
    // Peer 3 sends the host an offer through the server after it joined: refused, and its
    // roster after that is refused too.
    let host = sim.peers.get_mut(&id(1)).unwrap();
    assert!(host.introduced_earlier(id(3)).is_empty());
    assert!(!host.is_earlier(id(3)));
    let out = host.roster_received(id(3), forged(id(3), &[id(1), id(2)], 99), GRACE * 3);
    assert!(out.is_empty() && host.is_host());
    assert_eq!(host.refused(), 2);
}

#[test]
fn a_newcomer_follows_the_host_most_earlier_peers_back() {
    // Peers 1 (host), 2 and 3 are in the room; 3 lies to the newcomer 4 that it hosts. Whatever
    // order the newcomer hears them in, two back peer 1 and one backs 3.
    for order in 0..6usize {
        let mut sim = Sim::lobby(3);
        sim.advance(GRACE * 2);
        sim.join(id(4));
        sim.link_all();
        // The honest host's roster and 2's vouch are on the wire; 3 lies instead of vouching.
        sim.wire
            .retain(|(from, to, _)| !(*from == id(3) && *to == id(4)));
        let room = sim.room.clone();
        let lie = (id(3), id(4), forged(id(3), &room, 1_000));
        let at = order % (sim.wire.len() + 1);
        sim.wire.insert(at, lie);
        if order >= 3 {
            sim.wire.make_contiguous().reverse();
        }
        sim.deliver();
        sim.advance(GRACE * 2);
        sim.deliver();
        sim.assert_agree(id(1));
    }
}

#[test]
fn the_successor_heard_before_the_host_is_seen_going_takes_over() {
    let mut sim = Sim::lobby(3);
    sim.advance(GRACE * 2);
    // Peer 2 saw the host go and publishes; peer 3 still has a link to the host.
    let out = sim.peers.get_mut(&id(2)).unwrap().disconnected(id(1));
    sim.apply(id(2), out);
    sim.wire.retain(|(_, to, _)| *to == id(3));
    sim.deliver();
    assert_eq!(
        sim.peers[&id(3)].host(),
        Some(id(1)),
        "the host is still there"
    );
    let out = sim.peers.get_mut(&id(3)).unwrap().disconnected(id(1));
    sim.apply(id(3), out);
    sim.room.retain(|p| *p != id(1));
    sim.peers.remove(&id(1));
    sim.deliver();
    sim.assert_agree(id(2));
    assert_eq!(sim.peers[&id(3)].refused(), 0);
}

#[test]
fn followers_of_an_early_claim_follow_the_earlier_host_it_hands_over_to() {
    // Peer 2 claims early (peer 1's offer is late) and peer 3 follows it; then 2 learns of 1.
    let mut sim = Sim::early_claim();
    sim.peers
        .insert(id(3), HostElection::new(id(3), sim.now, GRACE));
    sim.room.push(id(3));
    sim.peers.get_mut(&id(2)).unwrap().introduced_later(id(3));
    sim.peers.get_mut(&id(3)).unwrap().introduced_earlier(id(2));
    let out = sim.peers.get_mut(&id(2)).unwrap().connected(id(3));
    sim.apply(id(2), out);
    let out = sim.peers.get_mut(&id(3)).unwrap().connected(id(2));
    sim.apply(id(3), out);
    sim.deliver();
    sim.advance(GRACE * 2);
    assert_eq!(sim.peers[&id(3)].host(), Some(id(2)));
    // Now 1's offers arrive; 1's link to 3 opens last, after 2 handed over.
    for later in [id(2), id(3)] {
        sim.peers.get_mut(&id(1)).unwrap().introduced_later(later);
        let o = sim.peers.get_mut(&later).unwrap().introduced_earlier(id(1));
        sim.apply(later, o);
    }
    let out = sim.peers.get_mut(&id(1)).unwrap().connected(id(2));
    sim.apply(id(1), out);
    let out = sim.peers.get_mut(&id(2)).unwrap().connected(id(1));
    sim.apply(id(2), out);
    sim.deliver();
    assert_eq!(sim.peers[&id(3)].host(), Some(id(1)), "handed over by 2");
    sim.link_all();
    sim.deliver();
    sim.assert_agree(id(1));
}

impl Sim {
    /// The host measured `peer`'s upload at `kbps`; its new roster is delivered.
    fn measured(&mut self, host: PeerId, peer: PeerId, kbps: u64) {
        let out = self
            .peers
            .get_mut(&host)
            .unwrap()
            .upload_measured(peer, kbps * 1000);
        self.apply(host, out);
        self.deliver();
    }
}

#[test]
fn the_member_with_the_most_upload_hosts_next_then_the_next_most() {
    let mut sim = Sim::lobby(5);
    sim.advance(GRACE * 2);
    // 2 has little, 4 the most, 3 and 5 about as much (join order between them): nothing yet
    // changes who hosts.
    for (p, kbps) in [(2, 300), (3, 2000), (4, 8000), (5, 2500)] {
        sim.measured(id(1), id(p), kbps);
    }
    sim.assert_agree(id(1));
    for p in 2..=5 {
        let roster = sim.peers[&id(p)].roster().unwrap();
        assert_eq!(roster.heirs, vec![id(4), id(3), id(5), id(2)]);
        assert_eq!(sim.peers[&id(p)].next_host(), Some(id(4)));
    }
    sim.leave(id(1));
    assert_eq!(
        sim.hosts(),
        BTreeSet::from([Some(id(4))]),
        "at once, everywhere"
    );
    sim.deliver();
    for p in [2, 3, 5] {
        assert_eq!(sim.peers[&id(p)].host(), Some(id(4)));
        // The new host keeps the last host's ranking until it measures for itself.
        assert_eq!(
            sim.peers[&id(p)].roster().unwrap().heirs,
            vec![id(3), id(5), id(2)]
        );
    }
    // It measures 2 as the best now: 2 is its heir.
    sim.measured(id(4), id(2), 16_000);
    assert_eq!(sim.peers[&id(3)].next_host(), Some(id(2)));
    sim.leave(id(4));
    sim.deliver();
    assert_eq!(sim.hosts(), BTreeSet::from([Some(id(2))]));
    // Heir and host leave at once: the next of the ranking.
    let mut sim = Sim::lobby(5);
    sim.advance(GRACE * 2);
    for (p, kbps) in [(3, 500), (4, 8000), (5, 2000)] {
        sim.measured(id(1), id(p), kbps);
    }
    sim.leave(id(1));
    sim.leave(id(4));
    sim.deliver();
    assert_eq!(sim.hosts(), BTreeSet::from([Some(id(5))]));
}

#[test]
fn only_the_host_ranks_heirs_and_only_members() {
    let mut sim = Sim::lobby(3);
    sim.advance(GRACE * 2);
    // A member's own measurement, and the host's of a stranger, change nothing.
    assert!(sim
        .peers
        .get_mut(&id(2))
        .unwrap()
        .upload_measured(id(3), 16_000_000)
        .is_empty());
    assert!(sim
        .peers
        .get_mut(&id(1))
        .unwrap()
        .upload_measured(id(99), 16_000_000)
        .is_empty());
    assert!(sim.peers[&id(1)].roster().unwrap().heirs.is_empty());
    // A member that left is no heir.
    sim.measured(id(1), id(3), 4000);
    sim.measured(id(1), id(2), 250);
    sim.leave(id(3));
    sim.deliver();
    assert_eq!(sim.peers[&id(2)].roster().unwrap().heirs, vec![id(2)]);
}

/// A member that speaks the protocol names itself heir: in its own roster (refused, it is not the
/// host), in a roster it vouches with, and the host's roster is not changed by it. Malformed heirs
/// in the host's own roster (a stranger, the host itself, a peer twice) are refused too.
#[test]
fn a_member_cannot_make_itself_heir() {
    let mut sim = Sim::lobby(4);
    sim.advance(GRACE * 2);
    sim.measured(id(1), id(2), 8000);
    sim.measured(id(1), id(4), 500);
    let honest = sim.peers[&id(3)].roster().unwrap().clone();
    let hostile = id(4);
    let mut lie = honest.clone();
    lie.epoch += 1;
    lie.heirs = vec![hostile, id(2)];
    for to in [id(2), id(3)] {
        sim.wire.push_back((hostile, to, lie.clone()));
    }
    sim.deliver();
    for p in [2, 3] {
        assert_eq!(sim.peers[&id(p)].roster(), Some(&honest));
        assert_eq!(sim.peers[&id(p)].next_host(), Some(id(2)));
    }
    // Badly formed heirs, even from the host.
    let refused = sim.peers[&id(3)].refused();
    for heirs in [vec![id(77)], vec![id(1)], vec![id(2), id(2)]] {
        let mut bad = honest.clone();
        bad.epoch += 1;
        bad.heirs = heirs;
        let out = sim
            .peers
            .get_mut(&id(3))
            .unwrap()
            .roster_received(id(1), bad, sim.now);
        assert!(out.is_empty());
    }
    assert_eq!(sim.peers[&id(3)].refused(), refused + 3);
    assert_eq!(sim.peers[&id(3)].roster(), Some(&honest));
    sim.leave(id(1));
    sim.deliver();
    assert_eq!(sim.hosts(), BTreeSet::from([Some(id(2))]));
}
