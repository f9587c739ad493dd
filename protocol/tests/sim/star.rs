//! Star rooms: relaying through the host, exactly-once delivery across host changes, link
//! give-up.

use crate::net::{Sim, FRAME};
use crate::{conditions, numbered, read_numbered, SEEDS};
use huddle_protocol::endpoint::{Channel, EndpointError, Event, Recipients};
use huddle_protocol::Topology;
use std::collections::BTreeMap;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn star(n: usize, seed: u64, loss: f32) -> Sim {
    let mut sim = Sim::new(Topology::Star, conditions(20, 10, loss), seed);
    for _ in 0..n {
        sim.join();
        sim.run_for(FRAME * 4);
    }
    assert!(
        sim.run_until(LIMIT, Sim::settled),
        "seed {seed}: star settles"
    );
    sim
}

/// Numbers of reliable messages of type 1 from each sender that peer `i` got, in order.
fn received(sim: &Sim, i: usize) -> BTreeMap<u32, Vec<u32>> {
    let mut by_sender: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (from, t, bytes) in sim.messages(i) {
        if t != 1 {
            continue;
        }
        let (sender, n) = read_numbered(&bytes);
        assert_eq!(Sim::id(sender as usize), from, "the origin is the sender");
        by_sender.entry(sender).or_default().push(n);
    }
    by_sender
}

#[test]
fn clients_reach_each_other_through_the_host() {
    for seed in SEEDS {
        let mut sim = star(6, seed, 0.0);
        for i in 1..6 {
            assert_eq!(sim.nodes[i].ep.peers().len(), 5, "members by roster");
        }
        sim.send(
            3,
            1,
            Channel::Reliable,
            &numbered(3, 0, 40),
            Recipients::All,
        );
        sim.send(
            4,
            1,
            Channel::Reliable,
            &numbered(4, 0, 40),
            Recipients::Peer(Sim::id(5)),
        );
        sim.run_for(Duration::from_millis(300));
        for i in (0..6).filter(|i| *i != 3) {
            assert_eq!(received(&sim, i).get(&3), Some(&vec![0]), "seed {seed}");
        }
        assert_eq!(received(&sim, 5).get(&4), Some(&vec![0]));
        assert!(
            (0..5).all(|i| !received(&sim, i).contains_key(&4)),
            "directed"
        );
        assert!(sim.nodes[0].ep.counters().relayed >= 5);
    }
}

/// Five clients stream numbered reliable messages (small ones and a chunked one) to everyone
/// under 5 % loss; the host vanishes mid-stream. Every message of a remaining sender reaches
/// every remaining peer exactly once, in order: those the old host had not passed on go again
/// through the next host, and receivers drop those they had.
#[test]
fn exactly_once_across_a_host_change_with_loss() {
    let mut resent = 0;
    for seed in SEEDS {
        let mut sim = star(6, seed, 0.05);
        let host_leaves_at = 6 + seed as u32 % 10;
        for round in 0..30u32 {
            if round == host_leaves_at {
                sim.leave(0, seed % 2 == 0);
            }
            for i in 1..6 {
                let len = if round == 3 { 40 * 1024 } else { 32 };
                let msg = numbered(i as u32, round, len);
                sim.send(i, 1, Channel::Reliable, &msg, Recipients::All);
            }
            sim.step();
        }
        let complete = |s: &Sim| {
            (1..6).all(|i| {
                let got = received(s, i);
                (1..6u32)
                    .filter(|o| *o != i as u32)
                    .all(|o| got.get(&o).map_or(0, Vec::len) >= 30)
            })
        };
        assert!(sim.run_until(LIMIT, complete), "seed {seed}: all arrive");
        sim.run_for(Duration::from_secs(1));
        for i in 1..6 {
            let got = received(&sim, i);
            for o in (1..6u32).filter(|o| *o != i as u32) {
                assert_eq!(
                    got[&o],
                    (0..30).collect::<Vec<_>>(),
                    "seed {seed}: peer {i} from {o}: once each, in order"
                );
            }
            assert_eq!(sim.nodes[i].ep.host(), Some(Sim::id(1)), "seed {seed}");
            resent += sim.nodes[i].ep.counters().duplicates_dropped;
        }
    }
    assert!(resent > 0, "some frames went twice and were dropped");
}

/// A star whose host left and whose next host never links up: the clients' reliable messages
/// wait, then are given up and reported (never dropped in silence).
#[test]
fn messages_whose_next_hop_never_comes_are_given_up_and_reported() {
    let mut sim = star(3, 11, 0.0);
    sim.connect_time = Duration::from_secs(3600);
    sim.leave(0, true);
    sim.step();
    assert_eq!(
        sim.nodes[2].ep.host(),
        Some(Sim::id(1)),
        "the next host is known"
    );
    sim.send(
        2,
        1,
        Channel::Reliable,
        &numbered(2, 0, 32),
        Recipients::All,
    );
    sim.run_for(Duration::from_secs(5));
    let gave_up = |sim: &Sim| {
        sim.nodes[2].events.iter().any(|e| {
            matches!(e, Event::Error(EndpointError::LinkGaveUp { peer, frames, .. })
                if *peer == Sim::id(1) && *frames >= 1)
        })
    };
    assert!(!gave_up(&sim), "still waiting after 5 s");
    sim.run_for(Duration::from_secs(6));
    assert!(gave_up(&sim), "given up after the link wait");
    assert!(sim.nodes[2].ep.counters().send_failed >= 1);
    assert_eq!(sim.nodes[2].ep.bulk_pending(Sim::id(1)), 0, "nothing kept");
}

/// Messages just under the data channel limit, relayed with the largest routing header (origin,
/// target, sequence number): each frame the network carries stays within the limit (the
/// simulation checks every one) and every message arrives.
#[test]
fn the_largest_frames_fit_behind_the_routing_header() {
    let mut sim = star(3, 5, 0.0);
    for (k, len) in [65_460usize, 65_499, 65_502, 65_536]
        .into_iter()
        .enumerate()
    {
        let msg = numbered(1, k as u32, len);
        sim.send(1, 1, Channel::Reliable, &msg, Recipients::Peer(Sim::id(2)));
    }
    assert!(sim.run_until(LIMIT, |s| received(s, 2).get(&1).map_or(0, Vec::len) == 4));
    assert_eq!(received(&sim, 2)[&1], [0, 1, 2, 3]);
}

/// A viewer that stops acknowledging chunks shuts the host's window to it, so what clients send
/// it waits in the host's queue. The host acknowledges a client's frames only once passed on, so
/// the client keeps the waiting ones (past the 2 s it keeps acknowledged frames), and when the
/// host vanishes they reach the viewer through the next host, exactly once and in order. (When
/// the host acknowledged on receipt, the client forgot them after 2 s and they were lost.)
#[test]
fn frames_waiting_in_the_hosts_queue_survive_its_departure() {
    let mut sim = Sim::new(Topology::Star, conditions(10, 0, 0.0), 5);
    sim.config.settings.bulk_window_bytes = 64 * 1024;
    for _ in 0..4 {
        sim.join();
        sim.run_for(FRAME * 4);
    }
    assert!(sim.run_until(LIMIT, Sim::settled));
    let viewer = Sim::id(3);
    // Peer 3 stops acknowledging the host's chunks: the host's window to it shuts.
    sim.drop_if = Some(|from, to, lane, bytes| {
        from == 3
            && to == 0
            && lane == huddle_protocol::Lane::Control
            && matches!(
                huddle_protocol::control::Control::decode(bytes),
                Some(huddle_protocol::control::Control::ChunkAck { .. })
            )
    });
    let big = numbered(2, 0, 300 * 1024);
    sim.send(2, 2, Channel::Reliable, &big, Recipients::Peer(viewer));
    sim.run_for(Duration::from_millis(500));
    for n in 0..20 {
        sim.send(
            1,
            1,
            Channel::Reliable,
            &numbered(1, n, 32),
            Recipients::Peer(viewer),
        );
        sim.step();
    }
    sim.run_for(Duration::from_secs(3));
    assert!(
        !received(&sim, 3).contains_key(&1),
        "client 1's lines wait behind the shut window"
    );
    // Client 1 goes on talking to peer 2: acknowledgements keep coming to it.
    sim.send(
        1,
        3,
        Channel::Reliable,
        b"still here",
        Recipients::Peer(Sim::id(2)),
    );
    sim.run_for(Duration::from_millis(300));
    // The host vanishes; peer 3 reads again.
    sim.drop_if = None;
    sim.leave(0, false);
    let all = |s: &Sim| received(s, 3).get(&1).map_or(0, Vec::len) >= 20;
    assert!(
        sim.run_until(LIMIT, all),
        "client 1's lines arrive: {:?}",
        received(&sim, 3)
    );
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        received(&sim, 3)[&1],
        (0..20).collect::<Vec<_>>(),
        "once each, in order"
    );
}

/// The raw packets (GGRS) peer `i` received, as (from, bytes).
fn raw(sim: &Sim, i: usize) -> Vec<(huddle_protocol::PeerId, Vec<u8>)> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Raw { from, bytes } => Some((*from, bytes.to_vec())),
            _ => None,
        })
        .collect()
}

/// GGRS's packets in a star: a client's packet for another client goes through the host, which
/// stamps its origin; the host's own and those for the host arrive as they were sent. A client
/// that writes an origin of its own, or names a target outside the lobby, gets nothing through;
/// a host that names a stranger or the receiver itself as the origin is not believed.
#[test]
fn raw_packets_go_through_the_host_with_their_origin() {
    use huddle_protocol::lane::Lane;
    use huddle_protocol::relay::{self, Route};
    for seed in SEEDS {
        let mut sim = star(4, seed, 0.0);
        let id = Sim::id;
        assert!(sim.nodes[1]
            .ep
            .send_raw(id(2), bytes::Bytes::from_static(b"1->2")));
        assert!(sim.nodes[2]
            .ep
            .send_raw(id(0), bytes::Bytes::from_static(b"2->0")));
        assert!(sim.nodes[0]
            .ep
            .send_raw(id(3), bytes::Bytes::from_static(b"0->3")));
        assert!(
            !sim.nodes[1]
                .ep
                .send_raw(id(9), bytes::Bytes::from_static(b"1->?")),
            "not in the lobby"
        );
        // Client 3 lies: a packet to client 1 that says it comes from client 2, and one for a
        // stranger.
        let forged = Route {
            origin: Some(id(2)),
            target: Some(id(1)),
            seq: None,
        };
        let mut lie = relay::encode(forged);
        lie.extend_from_slice(b"forged");
        sim.inject(3, 0, Lane::Raw, lie);
        let stranger = Route {
            origin: None,
            target: Some(id(9)),
            seq: None,
        };
        let mut astray = relay::encode(stranger);
        astray.extend_from_slice(b"astray");
        sim.inject(3, 0, Lane::Raw, astray);
        // A lying host passes client 1 packets "from" a stranger and from client 1 itself.
        for origin in [id(9), id(1)] {
            let route = Route {
                origin: Some(origin),
                target: None,
                seq: None,
            };
            let mut lie = relay::encode(route);
            lie.extend_from_slice(b"host lies");
            sim.inject(0, 1, Lane::Raw, lie);
        }
        sim.run_for(Duration::from_millis(300));
        assert_eq!(raw(&sim, 2), vec![(id(1), b"1->2".to_vec())], "seed {seed}");
        assert_eq!(raw(&sim, 0), vec![(id(2), b"2->0".to_vec())], "seed {seed}");
        assert_eq!(raw(&sim, 3), vec![(id(0), b"0->3".to_vec())], "seed {seed}");
        assert!(raw(&sim, 1).is_empty(), "seed {seed}: {:?}", raw(&sim, 1));
        let host = sim.nodes[0].ep.counters();
        assert_eq!(host.relayed, 1, "one packet passed on");
        assert!(host.forged_dropped >= 1 && host.frames_dropped >= 1);
        assert_eq!(sim.nodes[1].ep.counters().forged_dropped, 2, "seed {seed}");
    }
}
