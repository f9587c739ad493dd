//! Big lobbies: star rooms through the elected host, with relay and host migration.
//! Run inside the loopback-only network namespace (see README).

use bevy_huddle::prelude::*;
use bevy_huddle::{HuddleConfig, HuddleSession, LeaveReason};
use huddle_tests::apps::*;
use huddle_tests::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn topology(p: &Player) -> Option<Topology> {
    p.app
        .world()
        .get_resource::<HuddleSession>()
        .map(|s| s.topology())
}

/// The first player hosts; `n - 1` more join at once. `room` carries the capacity.
fn star_lobby(url: &str, n: usize) -> Vec<Player> {
    let mut players = vec![Player::join(url)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.extend((1..n).map(|_| Player::join(url)));
    let ok = run_until(&mut players, LIMIT, lobby_complete);
    let views: Vec<_> = players
        .iter()
        .map(|p| (p.state(), p.roster().peers.len()))
        .collect();
    assert!(ok, "{n} players in one star lobby: {views:?}");
    players
}

#[test]
fn eight_players_in_a_star_relay_through_the_host() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("big?capacity=8");
    let mut players = star_lobby(&url, 8);
    let host = players[0].id().unwrap();
    for p in &players {
        assert_eq!(topology(p), Some(Topology::Star), "capacity 8 picks a star");
        assert_eq!(p.roster().host, Some(host));
        assert_eq!(p.roster().members.len(), 8);
    }
    broadcast_round(&mut players, "hello");
    // Every byte a client received came on its link to the host.
    for p in &players[1..] {
        let session = p.app.world().resource::<HuddleSession>();
        let linked: Vec<_> = p
            .roster()
            .peers
            .iter()
            .filter(|q| session.link_stats(**q).is_some_and(|s| s.bytes_in > 0))
            .collect();
        assert_eq!(linked, vec![&host], "a client talks to the host only");
    }
    // Directed messages reach their target only.
    let ids: Vec<PeerId> = players.iter().map(|p| p.id().unwrap()).collect();
    players[3].send(Outgoing::to_peer(ids[5], Chat("for five".into())));
    assert!(run_until(&mut players, LIMIT, |ps| ps[5]
        .log()
        .chats
        .contains(&(ids[3], Chat("for five".into())))));
    run_for(&mut players, Duration::from_millis(300));
    for (i, p) in players.iter().enumerate() {
        let got = p.log().chats.iter().any(|(_, c)| c.0 == "for five");
        assert_eq!(got, i == 5, "player {i}");
    }
    let relayed = players[0].stats().relayed;
    assert!(
        relayed >= 7 * 6,
        "the host relayed the broadcasts: {relayed}"
    );
}

#[test]
fn a_forged_origin_is_refused() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("forge?capacity=8");
    let mut players = star_lobby(&url, 2);
    let host = players[0].id().unwrap();
    let victim = players[1].id().unwrap();
    // A raw client in the star (huddle's channel layout) speaks with a forged origin.
    let hostile_url = format!("{url}&topology=star");
    let mut hostile = hostile_member(&rt, &hostile_url, &mut players, LIMIT);
    let route = bevy_huddle::protocol::relay::Route {
        origin: Some(victim),
        target: None,
        seq: Some(0),
    };
    let mut frame = bevy_huddle::protocol::relay::encode(route);
    frame.push(1); // Chat, type id 1
    frame.extend(
        bincode::serde::encode_to_vec(Chat("I am the victim".into()), bincode::config::standard())
            .unwrap(),
    );
    hostile.send(1, host, &frame);
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .stats()
        .forged_dropped
        >= 1));
    run_for(&mut players, Duration::from_millis(300));
    for p in &players {
        assert!(p.log().chats.is_empty(), "nobody believes the forged line");
    }
}

#[test]
fn host_leaving_mid_stream_hands_the_star_to_the_oldest_client() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("migrate?capacity=8");
    let mut players = star_lobby(&url, 6);
    let order = players[0].roster().members.clone();
    broadcast_round(&mut players, "before");
    let gone = players.remove(0);
    let left_at = Instant::now();
    drop(gone);
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter()
            .all(|p| p.roster().host == Some(order[1]) && p.roster().peers.len() == 4)
    });
    let views: Vec<_> = players
        .iter()
        .map(|p| (p.roster().host, p.roster().peers.len()))
        .collect();
    assert!(ok, "all 5 agree on the oldest client as host: {views:?}");
    let mut latest = Duration::ZERO;
    for p in &players {
        let hosts: Vec<_> = p.log().hosts.iter().map(|(h, _)| h.new).collect();
        assert_eq!(hosts, vec![order[0], order[1]], "one HostChanged");
        latest = latest.max(p.log().hosts[1].1.duration_since(left_at));
        // One leave, the old host's. Its reason is `Left` when the server's word comes before
        // its data channels close, `Disconnected` when they close first.
        let left: Vec<_> = p.log().left.iter().map(|l| l.peer).collect();
        assert_eq!(left, vec![order[0]], "no spurious leave");
        assert!(matches!(
            p.log().left[0].reason,
            LeaveReason::Left | LeaveReason::Disconnected
        ));
        let joined: BTreeSet<_> = p.log().joined.iter().map(|j| j.peer).collect();
        assert_eq!(joined.len(), 5, "no spurious join");
    }
    println!("new host agreed by all {latest:?} after the host left");
    broadcast_round(&mut players, "after");
}

#[test]
fn auto_picks_mesh_for_four_and_star_for_eight() {
    let (_rt, server) = server_on_runtime();
    let small = star_lobby(&server.room_url("four?capacity=4"), 2);
    assert_eq!(topology(&small[0]), Some(Topology::Mesh));
    let big = star_lobby(&server.room_url("eight?capacity=8"), 2);
    assert_eq!(topology(&big[0]), Some(Topology::Star));
    assert_eq!(
        server
            .rooms()
            .iter()
            .find(|r| r.path == "eight")
            .map(|r| r.topology),
        Some(huddle_server::Topology::Star)
    );
    let _ = HuddleConfig::default();
}

#[test]
fn two_hosts_leaving_one_after_the_other_still_converge() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("twice?capacity=8");
    let mut players = star_lobby(&url, 5);
    let order = players[0].roster().members.clone();
    for round in 0..2 {
        let host = order[round];
        let i = players.iter().position(|p| p.id() == Some(host)).unwrap();
        drop(players.remove(i));
        let next = order[round + 1];
        let left = players.len();
        let ok = run_until(&mut players, LIMIT, |ps| {
            ps.iter()
                .all(|p| p.roster().host == Some(next) && p.roster().peers.len() == left - 1)
        });
        assert!(ok, "round {round}: all agree on {next}");
        broadcast_round(&mut players, &format!("round{round}"));
    }
    for p in &players {
        let hosts: Vec<_> = p.log().hosts.iter().map(|(h, _)| h.new).collect();
        assert_eq!(hosts, order[..3].to_vec());
    }
}

#[test]
fn reliable_messages_across_a_host_change_arrive_exactly_once() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("once?capacity=8");
    let mut players = star_lobby(&url, 8);
    const N: usize = 60;
    let first_host = players[0].id();
    let mut left_at = None;
    for k in 0..N {
        // Every client broadcasts line k (one of them hosts after the switch); the host leaves a
        // third of the way through.
        for p in players.iter_mut().filter(|p| p.id() != first_host) {
            p.send(Outgoing::to_all(Chat(k.to_string())));
        }
        if k == N / 3 {
            let host = players.iter().position(|p| p.roster().is_host()).unwrap();
            drop(players.remove(host));
            left_at = Some(Instant::now());
        }
        run_for(&mut players, Duration::from_millis(10));
    }
    let senders: Vec<PeerId> = players.iter().map(|p| p.id().unwrap()).collect();
    let complete = |ps: &[Player]| {
        ps.iter().all(|p| {
            senders
                .iter()
                .filter(|s| Some(**s) != p.id())
                .all(|s| p.log().chats.iter().filter(|(f, _)| f == s).count() >= N)
        })
    };
    let ok = run_until(&mut players, LIMIT, complete);
    let mut failed = 0;
    for p in &players {
        failed += p
            .log()
            .errors
            .iter()
            .filter(|e| matches!(e, HuddleError::Send { .. }))
            .count();
    }
    assert!(
        ok || failed > 0,
        "every line arrives, or its sender is told"
    );
    for p in &players {
        for s in senders.iter().filter(|s| Some(**s) != p.id()) {
            let lines: Vec<usize> = p
                .log()
                .chats
                .iter()
                .filter(|(f, _)| f == s)
                .map(|(_, c)| c.0.parse().unwrap())
                .collect();
            let unique: BTreeSet<usize> = lines.iter().copied().collect();
            assert_eq!(
                lines.len(),
                unique.len(),
                "no line twice (from {s}): {lines:?}"
            );
            assert_eq!(
                unique,
                (0..N).collect(),
                "every line from {s}, in order: {lines:?}"
            );
            assert!(lines.windows(2).all(|w| w[0] < w[1]), "in order: {lines:?}");
        }
    }
    let resent: u64 = players.iter().map(|p| p.stats().duplicates_dropped).sum();
    let agreed = players
        .iter()
        .filter_map(|p| p.log().hosts.get(1).map(|(_, at)| *at))
        .max()
        .zip(left_at)
        .map(|(at, left)| at.duration_since(left));
    println!("7 remaining agreed on the new host {agreed:?} after the host left; {resent} resent frames dropped as duplicates");
    // What the old host passed on in its last 2 s went again through the new one: the receivers
    // saw it again and dropped it (exactly once is tested, not only at most once).
    assert!(resent > 0, "frames were sent again across the switch");
    let host = players[0].roster().host;
    assert!(players
        .iter()
        .all(|p| p.roster().host == host && p.log().hosts.len() == 2));
}

#[test]
fn messages_whose_next_hop_never_comes_up_are_reported_to_the_sender() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("stuck?capacity=8");
    let mut players = star_lobby(&url, 3);
    let order = players[0].roster().members.clone();
    // The host leaves; the oldest client takes over, but the last client's app freezes (it stops
    // running frames), so its link to the new host never completes.
    drop(players.remove(0));
    let last = players
        .iter()
        .position(|p| p.id() == Some(order[2]))
        .unwrap();
    let frozen = players.remove(last);
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps[0].roster().host == Some(order[1])
    });
    assert!(ok, "the oldest client hosts");
    players[0].send(Outgoing::to_peer(order[2], Chat("are you there?".into())));
    let ok = run_until(&mut players, Duration::from_secs(20), |ps| {
        ps[0]
            .log()
            .errors
            .iter()
            .any(|e| matches!(e, HuddleError::Send { .. }))
    });
    assert!(ok, "the sender is told: {:?}", players[0].log().errors);
    assert!(players[0].stats().send_failed >= 1);
    drop(frozen);
}

#[test]
fn a_chunked_message_in_flight_during_a_host_change_arrives_once() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("bulk?capacity=8");
    let mut players = star_lobby(&url, 4);
    let order = players[0].roster().members.clone();
    // The last client broadcasts 2 MiB (many windows through the host); the host leaves while it
    // is on its way.
    let sender = players
        .iter()
        .position(|p| p.id() == Some(order[3]))
        .unwrap();
    let data: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 241) as u8).collect();
    players[sender].send(Outgoing::to_all(Blob(data.clone())));
    run_for(&mut players, Duration::from_millis(30));
    assert!(
        players.iter().all(|p| p.log().blobs.is_empty()),
        "still on its way when the host leaves"
    );
    drop(players.remove(0));
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter()
            .filter(|p| p.id() != Some(order[3]))
            .all(|p| !p.log().blobs.is_empty())
    });
    assert!(ok, "the blob arrives at the remaining players");
    run_for(&mut players, Duration::from_millis(500));
    for p in players.iter().filter(|p| p.id() != Some(order[3])) {
        assert_eq!(p.log().blobs.len(), 1, "once");
        assert_eq!(p.log().blobs[0].0, order[3]);
        assert_eq!(p.log().blobs[0].1 .0, data);
    }
}
