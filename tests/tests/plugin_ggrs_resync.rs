//! Rollback resyncs: a player vanishes, ten matches in a row; a player drops in; a player comes
//! back into its seat. Their own test binary, so that the ten four-player matches under latency
//! and loss do not run beside the other rollback tests. Run inside the loopback-only network
//! namespace (see README).

use bevy_huddle::{JoinRollback, RollbackEvent, RollbackPhase};
use huddle_examples::box_game::{start_positions, BoxBody};
use huddle_tests::apps::*;
use huddle_tests::rollback::*;
use huddle_tests::*;

/// Four players under 60 ms ± 10 ms / 5 % loss; one vanishes (its app is dropped) at frame 300;
/// the other three play on to frame 900 with equal checksums. Ten matches, ten played on: when
/// the three hold different last inputs of it, they resync from the leader's snapshot (a fresh
/// GGRS session; handles stay, the gone player's seat plays the default input).
#[test]
fn four_players_one_vanishes_the_three_play_on_ten_times_of_ten() {
    let (_rt, server) = server_on_runtime();
    let mut resyncs = 0;
    for run in 0..10 {
        let url = server.room_url(&format!("rollback-vanish4-{run}"));
        let mut peers = lobby(&url, 4, 4);
        condition(&mut peers);
        play_to(&mut peers, 300);
        // Not always the same seat: the leader itself, or one after it.
        let gone = peers.remove(run % 4);
        drop(gone);
        play_to(&mut peers, 900);
        let sums: Vec<_> = peers.iter().map(|p| checksum_at(p, 900)).collect();
        assert!(sums.iter().all(|s| *s == sums[0]), "run {run}: {sums:?}");
        for p in &peers {
            assert_eq!(game(p).phase, RollbackPhase::Playing, "run {run}");
            let abandoned = rollback_log(p)
                .iter()
                .any(|e| matches!(e, RollbackEvent::Abandoned { .. }));
            assert!(!abandoned, "run {run}: {:?}", rollback_log(p));
            no_desync(p);
        }
        let counts: Vec<u32> = peers.iter().map(|p| rollback_stats(p).resyncs).collect();
        assert!(
            counts.iter().all(|c| *c == counts[0]),
            "run {run}: {counts:?}"
        );
        if counts[0] > 0 {
            let resynced = rollback_log(&peers[0]).iter().find_map(|e| match e {
                RollbackEvent::Resynced { frame, players } => Some((*frame, players.len())),
                _ => None,
            });
            assert!(
                resynced.is_some_and(|(frame, n)| n == 4 && frame >= 290),
                "run {run}: {resynced:?}"
            );
        }
        resyncs += counts[0];
    }
    eprintln!("10/10 played on, {resyncs} of them through a resync");
}

/// A two-player match under 60 ms ± 10 ms / 5 % loss: a third peer joins at frame 600 (it
/// watches, from the players' snapshot), asks to play (`JoinRollback`), and the leader seats it
/// at its next resync, in a new seat; all three reach frame 1200 with equal checksums.
#[test]
fn a_third_player_drops_in_to_a_running_match() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-drop-in");
    let mut peers = lobby(&url, 2, 2);
    condition(&mut peers);
    play_to(&mut peers, 600);
    join_and_ask(&mut peers, &url, 2, None);
    all_three_play_to_1200(&mut peers);
    let seated = rollback_log(&peers[0]).iter().find_map(|e| match e {
        RollbackEvent::Resynced { frame, players } if players.len() == 3 => Some(*frame),
        _ => None,
    });
    assert!(seated.is_some_and(|f| f >= 600), "seated at {seated:?}");
    // Every game spawned the new seat's box, and its player moved it.
    let start = start_positions(3)[2];
    for p in &mut peers {
        let mut boxes = p.app.world_mut().query::<&BoxBody>();
        let third: Vec<BoxBody> = boxes
            .iter(p.app.world())
            .filter(|b| b.handle == 2)
            .copied()
            .collect();
        assert_eq!(third.len(), 1, "one box for seat 2");
        assert_ne!((third[0].x, third[0].y), (start.x, start.y), "it moved");
    }
}

/// Three players under 60 ms ± 10 ms / 5 % loss; one's process is dropped at frame 300 (the other
/// two play on, its seat on the default input); a new process joins, asks for that seat
/// (`JoinRollback { seat: Some(2) }`) and plays in it by frame 600; all three reach frame 1200
/// with equal checksums.
#[test]
fn a_player_whose_process_was_dropped_comes_back_into_its_seat() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-rejoin");
    let mut peers = lobby(&url, 3, 3);
    condition(&mut peers);
    play_to(&mut peers, 300);
    vanish(&mut peers, 2);
    join_and_ask(&mut peers, &url, 3, Some(2));
    let back = run_until(&mut peers, MATCH_LIMIT, |ps| {
        ps.iter().all(|p| game(p).local_handle.is_some())
    });
    let at = rollback_stats(&peers[0]).newest_frame;
    assert!(back && at <= 600, "back in its seat at frame {at}");
    all_three_play_to_1200(&mut peers);
}

/// A newcomer (a box player of a `players` match) joins `url`, watches from the players'
/// snapshot, and asks to play (`JoinRollback { seat }`); it is `peers[2]`.
fn join_and_ask(peers: &mut Vec<Player>, url: &str, players: usize, seat: Option<usize>) {
    peers.push(box_player(url, players));
    condition(&mut peers[2..]);
    let watching = run_until(peers, MATCH_LIMIT, |ps| {
        game(&ps[2]).phase == RollbackPhase::Spectating
            && rollback_stats(&ps[2]).snapshot_frame.is_some()
    });
    assert!(watching, "the newcomer watches from a snapshot");
    peers[2]
        .app
        .world_mut()
        .write_message(JoinRollback { seat });
}

/// All three reach frame 1200 with equal checksums, the newcomer (`peers[2]`) playing seat 2
/// and no seat gone, on every peer.
fn all_three_play_to_1200(peers: &mut [Player]) {
    play_to(peers, 1200);
    let newcomer = peers[2].id().expect("an id");
    for p in peers.iter() {
        assert_eq!(game(p).phase, RollbackPhase::Playing);
        assert_eq!(game(p).players.len(), 3, "three seats");
        assert_eq!(game(p).players[2], newcomer);
        assert!(game(p).disconnected.is_empty());
        no_desync(p);
    }
    assert_eq!(game(&peers[2]).local_handle, Some(2));
    let sums: Vec<_> = peers.iter().map(|p| checksum_at(p, 1200)).collect();
    assert!(sums.iter().all(|s| *s == sums[0]), "equal: {sums:?}");
}
