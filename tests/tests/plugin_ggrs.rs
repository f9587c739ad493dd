//! Rollback matches: the `box_game` example's game in headless Bevy apps, GGRS run by bevy_ggrs
//! through huddle's rollback plugin, over real WebRTC under latency, jitter and loss; a player
//! leaving, garbage on the GGRS channel, a spectator joining late.
//! Run inside the loopback-only network namespace (see README).

use bevy_huddle::prelude::*;
use bevy_huddle::rollback::RollbackDiagnostics;
use bevy_huddle::{HuddleConfig, RollbackEvent, RollbackPhase, StartRollback};
use huddle_examples::box_game::{checksum, start_positions};
use huddle_tests::apps::*;
use huddle_tests::rollback::*;
use huddle_tests::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const FRAMES: i32 = 600;

/// Players joined one after the other (so join order is known), in a complete lobby.
fn lobby(url: &str, n: usize, players: usize) -> Vec<Player> {
    let mut ps = vec![box_player(url, players)];
    assert!(run_until(&mut ps, LIMIT, |ps| ps[0].roster().is_host()));
    ps.extend((1..n).map(|_| box_player(url, players)));
    ps
}

fn no_desync(player: &Player) {
    let desyncs: Vec<_> = rollback_log(player)
        .iter()
        .filter(|e| matches!(e, RollbackEvent::DesyncDetected { .. }))
        .collect();
    assert!(desyncs.is_empty(), "desync reported: {desyncs:?}");
}

fn match_of(n: usize) {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url(&format!("rollback{n}"));
    let mut players = lobby(&url, n, n);
    let conditions = Conditions::new(Duration::from_millis(60), Duration::from_millis(10), 0.05);
    for p in &mut players {
        p.app.insert_resource(LinkConditioner::both(conditions));
    }
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter().all(|p| checksum_at(p, FRAMES).is_some())
    });
    let at: Vec<_> = players
        .iter()
        .map(|p| (game(p).phase, rollback_stats(p).newest_frame))
        .collect();
    assert!(ok, "{n} peers make frame {FRAMES} final: {at:?}");
    // Handles follow join order, the same everywhere.
    let order = players[0].roster().members.clone();
    for p in &players {
        assert_eq!(game(p).phase, RollbackPhase::Playing);
        assert_eq!(game(p).players, order);
        let me = p.id().expect("an id");
        assert_eq!(game(p).local_handle, order.iter().position(|m| *m == me));
    }
    let sums: Vec<u64> = players
        .iter()
        .filter_map(|p| checksum_at(p, FRAMES))
        .collect();
    assert!(sums.iter().all(|s| *s == sums[0]), "equal: {sums:?}");
    assert_ne!(sums[0], checksum(&start_positions(n)), "the boxes moved");
    players.iter().for_each(no_desync);
    // The conditions made GGRS predict and roll back.
    let resimulated: u64 = players
        .iter()
        .map(|p| rollback_stats(p).frames_resimulated)
        .sum();
    assert!(resimulated > 0, "rollbacks happened");
    for p in &players {
        // GGRS's own events arrive as messages with the peer's id.
        let me = p.id().expect("an id");
        for other in order.iter().filter(|o| **o != me) {
            let synced = RollbackEvent::Synchronized { peer: *other };
            assert!(rollback_log(p).contains(&synced), "{synced:?}");
        }
        // Network stats as Bevy diagnostics.
        let diagnostics = p
            .app
            .world()
            .resource::<bevy::diagnostic::DiagnosticsStore>();
        let ping = diagnostics
            .get(&RollbackDiagnostics::PING_MS)
            .and_then(|d| d.value());
        assert!(ping.is_some_and(|p| p > 0.0), "ping diagnostic: {ping:?}");
        let stats = rollback_stats(p);
        assert_eq!(stats.peers.len(), n - 1, "GGRS stats of every remote");
        assert!(
            stats.peers.values().all(|s| s.ping > 0),
            "{:?}",
            stats.peers
        );
        assert!(stats.bytes_out > 0 && stats.bytes_in > 0);
    }
}

#[test]
fn two_peers_play_600_frames_under_latency_and_loss() {
    match_of(2);
}

#[test]
fn four_peers_play_600_frames_under_latency_and_loss() {
    match_of(4);
}

/// One of three players leaves mid-match: the other two get the disconnect message once and play
/// on to the same world.
///
/// Ignored: ggrs 0.13 itself panics on this path in some runs. When the two remaining peers last
/// heard the gone player at different frames, the later one is told the earlier frame after it
/// confirmed past it, and GGRS asserts (input queue, prediction window, or a load of the current
/// frame). huddle holds GGRS packets back while it disconnects the player (see `follow_lobby`),
/// which made 8 of 8 runs pass alone but not every run under load. Run it with `--ignored`.
#[test]
#[ignore = "ggrs 0.13 can panic when a player of three leaves (see the doc comment)"]
fn one_of_three_players_leaves_and_the_others_play_on() {
    let peers = leave_mid_match("rollback-leave3", 3, 2);
    assert!(peers
        .iter()
        .all(|p| game(p).phase == RollbackPhase::Playing));
}

/// One player of a 1v1 with a spectator leaves: the other player and the spectator get the
/// disconnect message and go on (the spectator still fed by the host).
#[test]
fn a_player_leaving_is_disconnected_and_the_other_plays_on() {
    let peers = leave_mid_match("rollback-leave", 2, 1);
    assert_eq!(
        game(spectator(&peers)).feeder,
        Some(game(&peers[0]).players[0])
    );
}

/// The host (player 0) of a 1v1 with a spectator leaves: the other player feeds the spectator
/// now (whoever hosts next: the spectator itself may be next in join order), which asks it for
/// the frames it still needs and reaches the same frame 600.
#[test]
fn when_the_host_player_leaves_the_spectator_follows_the_new_host() {
    let peers = leave_mid_match("rollback-host-leaves", 2, 0);
    let watcher = spectator(&peers);
    assert_eq!(game(watcher).feeder, Some(game(watcher).players[1]));
    assert_eq!(rollback_stats(watcher).spectator_starved, 0);
}

/// Three peers, `players` of them in the match; the one with handle `leaver` leaves at frame
/// ~120. The other two get one disconnect message and reach the same frame 600. Returns them.
fn leave_mid_match(room: &str, players: usize, leaver: usize) -> Vec<Player> {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url(room);
    let mut peers = lobby(&url, 3, players);
    assert!(run_until(&mut peers, LIMIT, |ps| ps
        .iter()
        .all(|p| checksum_at(p, 120).is_some())));
    let index = peers
        .iter()
        .position(|p| game(p).local_handle == Some(leaver))
        .expect("a player with that handle");
    let gone = peers.remove(index);
    let disconnected = RollbackEvent::Disconnected {
        peer: gone.id().expect("an id"),
        handle: leaver,
    };
    drop(gone);
    let ok = run_until(&mut peers, LIMIT, |ps| {
        ps.iter()
            .all(|p| rollback_log(p).contains(&disconnected) && checksum_at(p, FRAMES).is_some())
    });
    let seen: Vec<_> = peers
        .iter()
        .map(|p| {
            (
                game(p).clone(),
                rollback_stats(p).newest_frame,
                rollback_stats(p).confirmed_frame,
                p.roster().host,
                rollback_log(p).to_vec(),
            )
        })
        .collect();
    assert!(
        ok,
        "both saw the disconnect and reached frame {FRAMES}: {seen:#?}"
    );
    for p in &peers {
        let count = rollback_log(p)
            .iter()
            .filter(|e| matches!(e, RollbackEvent::Disconnected { .. }))
            .count();
        assert_eq!(count, 1, "one disconnect message");
        assert_eq!(game(p).disconnected, vec![leaver]);
        no_desync(p);
    }
    assert_eq!(
        checksum_at(&peers[0], FRAMES),
        checksum_at(&peers[1], FRAMES)
    );
    peers
}

/// The one of `peers` that watches.
fn spectator(peers: &[Player]) -> &Player {
    peers
        .iter()
        .find(|p| game(p).phase == RollbackPhase::Spectating)
        .expect("a spectator")
}

#[test]
fn garbage_on_the_ggrs_channel_is_dropped_and_the_match_goes_on() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("rollback-garbage");
    let mut players = lobby(&url, 2, 2);
    assert!(run_until(&mut players, LIMIT, |ps| ps
        .iter()
        .all(|p| game(p).phase == RollbackPhase::Playing)));
    // A third, hostile peer in the lobby (huddle's channel layout, a valid hello) sends garbage
    // on the GGRS channel (index 3) to the host.
    let host = players[0].id().expect("an id");
    let mut hostile = hostile_member(&rt, &url, &mut players, LIMIT);
    for k in 0..50u8 {
        hostile.send(3, host, &[k, 0xff, 0x00, k]);
    }
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter().all(|p| checksum_at(p, 300).is_some())
            && rollback_stats(&ps[0]).packets_dropped >= 50
    });
    assert!(
        ok,
        "the match goes on; dropped: {}",
        rollback_stats(&players[0]).packets_dropped
    );
    assert_eq!(checksum_at(&players[0], 300), checksum_at(&players[1], 300));
    players.iter().for_each(no_desync);
}

#[test]
fn a_spectator_joining_a_running_match_reaches_the_players_checksum() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-watch");
    let mut players = lobby(&url, 2, 2);
    assert!(run_until(&mut players, LIMIT, |ps| ps
        .iter()
        .all(|p| checksum_at(p, 150).is_some())));
    players.push(box_player(&url, 2));
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter().all(|p| checksum_at(p, FRAMES).is_some())
    });
    let watcher = &players[2];
    assert!(
        ok,
        "the spectator reaches frame {FRAMES}: {:?}, {:?}",
        game(watcher),
        rollback_stats(watcher).confirmed_frame
    );
    assert_eq!(game(watcher).phase, RollbackPhase::Spectating);
    assert_eq!(game(watcher).local_handle, None);
    assert_eq!(game(watcher).players, players[0].roster().members[..2]);
    let sums: Vec<_> = players.iter().map(|p| checksum_at(p, FRAMES)).collect();
    assert!(sums.iter().all(|s| *s == sums[0]), "equal: {sums:?}");
    assert_eq!(rollback_stats(watcher).spectator_starved, 0);
}

/// Without auto-start, nothing starts until the host's game writes `StartRollback`.
#[test]
fn a_match_starts_when_the_game_asks() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-asked");
    let manual = |url: &str| {
        let mut config = HuddleConfig::room(url);
        config.topology = Topology::Mesh;
        config.rollback.auto_start = false;
        let mut p = Player::join_with(url, Types::Nothing, config);
        p.app.add_plugins(huddle_examples::box_game::BoxGame {
            pilot: huddle_examples::lobby::Pilot::Bot,
        });
        p
    };
    let mut players = vec![manual(&url)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.push(manual(&url));
    assert!(run_until(&mut players, LIMIT, lobby_complete));
    run_for(&mut players, Duration::from_millis(500));
    assert!(players
        .iter()
        .all(|p| game(p).phase == RollbackPhase::Waiting));
    for p in &mut players {
        p.app
            .world_mut()
            .write_message(StartRollback { players: 2 });
    }
    assert!(run_until(&mut players, LIMIT, |ps| ps
        .iter()
        .all(|p| checksum_at(p, 60).is_some())));
    assert_eq!(checksum_at(&players[0], 60), checksum_at(&players[1], 60));
}
