//! Rollback matches: the `box_game` example's game in headless Bevy apps, GGRS run by bevy_ggrs
//! through huddle's rollback plugin, over real WebRTC under latency, jitter and loss; a player
//! leaving, garbage on the GGRS channel, a spectator joining late.
//! Run inside the loopback-only network namespace (see README).

use bevy_huddle::bevy_ggrs::RollbackApp;
use bevy_huddle::prelude::*;
use bevy_huddle::rollback::RollbackDiagnostics;
use bevy_huddle::{HuddleConfig, LeaveRollback, RollbackEvent, RollbackPhase, StartRollback};
use huddle_examples::box_game::{checksum, start_positions};
use huddle_tests::apps::*;
use huddle_tests::rollback::*;
use huddle_tests::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const FRAMES: i32 = 600;

fn match_of(n: usize) {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url(&format!("rollback{n}"));
    let mut players = lobby(&url, n, n);
    condition(&mut players);
    play_to(&mut players, FRAMES);
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

/// The positive control of every `no_desync` check: one player's world is nudged from frame 100
/// on (a bug in its game), and the players' checksum exchange reports the desync.
#[test]
fn a_real_divergence_is_reported_as_a_desync() {
    use bevy::prelude::*;
    use bevy_huddle::bevy_ggrs::{GgrsSchedule, RollbackFrameCount};
    use huddle_examples::box_game::{BoxBody, BoxSystems};
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-desync");
    let mut players = lobby(&url, 2, 2);
    fn nudge(frame: Res<RollbackFrameCount>, mut bodies: Query<&mut BoxBody>) {
        if frame.0 >= 100 {
            for mut body in &mut bodies {
                body.x = body.x.wrapping_add(1);
            }
        }
    }
    players[1]
        .app
        .add_systems(GgrsSchedule, nudge.after(BoxSystems));
    let reported = run_until(&mut players, LIMIT, |ps| {
        ps.iter().any(|p| {
            rollback_log(p)
                .iter()
                .any(|e| matches!(e, RollbackEvent::DesyncDetected { .. }))
        })
    });
    assert!(
        reported,
        "a desync is reported: frames {:?}",
        players
            .iter()
            .map(|p| rollback_stats(p).newest_frame)
            .collect::<Vec<_>>()
    );
}

/// One of three players leaves mid-match (`LeaveRollback`) under latency, jitter and loss: it
/// leaves the lobby once the other two hold its last input; they get the disconnect message once
/// and play on to the same world.
#[test]
fn one_of_three_players_leaves_and_the_others_play_on() {
    let peers = leave_mid_match("rollback-leave3", 3, 2, Going::Leaves, true);
    assert!(peers
        .iter()
        .all(|p| game(p).phase == RollbackPhase::Playing));
}

/// The host player of three leaves the same way: the next host plays on with the third.
#[test]
fn the_host_player_of_three_leaves_and_the_others_play_on() {
    leave_mid_match("rollback-host-leaves3", 3, 0, Going::Leaves, true);
}

/// One of three players vanishes (its app is dropped) at frame ~120 under 60 ms ± 10 ms / 5 %
/// loss: the other two play on to frame 600 with equal checksums, never `Abandoned`: they agree
/// on its last input, or (when they hold different ones) resync from the leader's snapshot.
#[test]
fn one_of_three_players_vanishes_and_the_others_play_on() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-vanish3");
    let mut peers = lobby(&url, 3, 3);
    condition(&mut peers);
    play_to(&mut peers, 120);
    let gone = peers.remove(1);
    drop(gone);
    play_to(&mut peers, FRAMES);
    assert_eq!(
        checksum_at(&peers[0], FRAMES),
        checksum_at(&peers[1], FRAMES)
    );
    for p in &peers {
        assert_eq!(game(p).phase, RollbackPhase::Playing);
        assert!(!rollback_log(p)
            .iter()
            .any(|e| matches!(e, RollbackEvent::Abandoned { .. })));
        no_desync(p);
    }
    let resynced = rollback_stats(&peers[0]).resyncs;
    assert_eq!(resynced, rollback_stats(&peers[1]).resyncs);
    eprintln!("played on ({resynced} resyncs)");
}

/// A player whose GGRS packets all get lost, while it stays in the lobby, counts as gone after
/// `RollbackSettings::disconnect_timeout` (2 s): the other one is told it is interrupted, then
/// disconnected, and plays on alone (huddle decides this, not GGRS's own timeout).
#[test]
fn a_silent_player_counts_as_gone_after_the_disconnect_timeout() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-silent");
    let mut peers = lobby(&url, 2, 2);
    play_to(&mut peers, 120);
    let quiet = peers[1].id().expect("an id");
    peers[1].app.insert_resource(LinkConditioner {
        reliable: None,
        unreliable: Some(Conditions::new(Duration::ZERO, Duration::ZERO, 1.0)),
        ..Default::default()
    });
    let ok = run_until(&mut peers, LIMIT, |ps| {
        checksum_at(&ps[0], FRAMES).is_some()
    });
    assert!(ok, "plays on: {:?}", rollback_log(&peers[0]));
    let log = rollback_log(&peers[0]);
    let interrupted = log.iter().position(|e| {
        matches!(e, RollbackEvent::NetworkInterrupted { peer, disconnect_timeout }
            if *peer == quiet && *disconnect_timeout == Duration::from_millis(1500))
    });
    let disconnected = log.iter().position(|e| {
        *e == RollbackEvent::Disconnected {
            peer: quiet,
            handle: 1,
        }
    });
    assert!(
        interrupted.is_some() && interrupted < disconnected,
        "interrupted, then disconnected: {log:?}"
    );
    assert_eq!(game(&peers[0]).disconnected, vec![1]);
    assert!(
        peers[0].roster().peers.contains(&quiet),
        "still in the lobby"
    );
}

/// A player in the background (a hidden browser tab, a minimised window: `Backgrounded`) says
/// so, then runs no frame at all for 3 s (a frozen tab): the other player waits for it past
/// `disconnect_timeout` (2 s) without dropping it, and when it is back they play on to equal
/// checksums. A player that says it is away and stays silent is still gone after
/// `away_timeout` (4 s here): saying "away" buys no more than that.
#[test]
fn a_player_in_the_background_keeps_its_place_for_the_away_timeout() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-away");
    let settings = bevy_huddle::RollbackSettings {
        players: 2,
        max_prediction: 12,
        away_timeout: Duration::from_secs(4),
        ..bevy_huddle::RollbackSettings::default()
    };
    let mut peers = vec![box_player_with(&url, settings)];
    assert!(run_until(&mut peers, LIMIT, |ps| ps[0].roster().is_host()));
    peers.push(box_player_with(&url, settings));
    play_to(&mut peers, 120);
    let away = peers[1].id().expect("an id");
    let away_for = |peers: &mut Vec<Player>, d: Duration| {
        peers[1].app.world_mut().write_message(Backgrounded(true));
        run_for(peers, Duration::from_millis(300));
        // Frozen: only the other player runs.
        run_for(&mut peers[..1], d);
    };
    away_for(&mut peers, Duration::from_secs(3));
    peers[1].app.world_mut().write_message(Backgrounded(false));
    play_to(&mut peers, FRAMES);
    assert_eq!(
        checksum_at(&peers[0], FRAMES),
        checksum_at(&peers[1], FRAMES),
        "{:?}\n{:?}\n{:?}",
        peers[0].log().left,
        rollback_log(&peers[0]),
        rollback_log(&peers[1])
    );
    let gone = |p: &Player| {
        rollback_log(p)
            .iter()
            .any(|e| matches!(e, RollbackEvent::Disconnected { .. }))
    };
    assert!(
        !gone(&peers[0]) && !gone(&peers[1]),
        "{:?}",
        rollback_log(&peers[0])
    );
    let interrupted = rollback_log(&peers[0])
        .iter()
        .any(|e| matches!(e, RollbackEvent::NetworkInterrupted { peer, .. } if *peer == away));
    assert!(interrupted, "it was silent past the notify delay");

    // Away again, and silent past the away timeout: gone.
    away_for(&mut peers, Duration::from_secs(6));
    assert_eq!(
        game(&peers[0]).disconnected,
        vec![1],
        "{:?}",
        rollback_log(&peers[0])
    );
}

/// One player of a 1v1 with a spectator leaves: the other player and the spectator get the
/// disconnect message and go on (the spectator still fed by the host).
#[test]
fn a_player_leaving_is_disconnected_and_the_other_plays_on() {
    let peers = leave_mid_match("rollback-leave", 2, 1, Going::Vanishes, false);
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
    let peers = leave_mid_match("rollback-host-leaves", 2, 0, Going::Vanishes, false);
    let watcher = spectator(&peers);
    assert_eq!(game(watcher).feeder, Some(game(watcher).players[1]));
    assert_eq!(rollback_stats(watcher).spectator_starved, 0);
}

/// The same with `LeaveRollback`: the spectator switches to the other player on the farewell.
#[test]
fn the_host_player_of_a_1v1_leaves_cleanly_and_the_spectator_follows() {
    let peers = leave_mid_match("rollback-host-parts", 2, 0, Going::Leaves, false);
    let watcher = spectator(&peers);
    assert_eq!(game(watcher).feeder, Some(game(watcher).players[1]));
    assert_eq!(rollback_stats(watcher).spectator_starved, 0);
}

/// How a player goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Going {
    /// `LeaveRollback`, then it leaves the lobby by itself.
    Leaves,
    /// Its app is dropped.
    Vanishes,
}

/// Three peers, `players` of them in the match (under 60 ms / 10 ms / 5 % if `lossy`); the one
/// with handle `leaver` goes at frame ~120. The others get one disconnect message and reach the
/// same frame 600. Returns them.
fn leave_mid_match(
    room: &str,
    players: usize,
    leaver: usize,
    how: Going,
    lossy: bool,
) -> Vec<Player> {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url(room);
    let mut peers = lobby(&url, 3, players);
    if lossy {
        condition(&mut peers);
    }
    play_to(&mut peers, 120);
    let index = peers
        .iter()
        .position(|p| game(p).local_handle == Some(leaver))
        .expect("a player with that handle");
    let disconnected = RollbackEvent::Disconnected {
        peer: peers[index].id().expect("an id"),
        handle: leaver,
    };
    if how == Going::Leaves {
        peers[index].app.world_mut().write_message(LeaveRollback);
        // It waits for the others to hold its last input (2 s at most), then leaves the lobby.
        let left = run_until(&mut peers, LIMIT, |ps| {
            ps[index].state() == LobbyState::Offline
                && game(&ps[index]).phase == RollbackPhase::Ended
        });
        assert!(left, "the leaver left: {:?}", game(&peers[index]));
        assert_eq!(game(&peers[index]).phase, RollbackPhase::Ended);
    }
    drop(peers.remove(index));
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
    let sums = |p: &Player| {
        p.app
            .world()
            .resource::<huddle_examples::box_game::FrameChecksums>()
            .0
            .clone()
    };
    let (a, b) = (sums(&peers[0]), sums(&peers[1]));
    let first_difference = a.iter().find(|(f, c)| b.get(f).is_some_and(|d| d != *c));
    assert_eq!(
        checksum_at(&peers[0], FRAMES),
        checksum_at(&peers[1], FRAMES),
        "first differing frame {first_difference:?}; {seen:#?}; starved {:?}",
        peers
            .iter()
            .map(|p| rollback_stats(p).spectator_starved)
            .collect::<Vec<_>>()
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

/// GGRS's packets as they are on the wire, as far as the input packet: what a hostile player
/// writes by hand.
mod ggrs_wire {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Packet {
        pub magic: u16,
        pub body: Body,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Body {
        SyncRequest(u32),
        SyncReply(u32),
        Input {
            statuses: Vec<(bool, i32)>,
            disconnect_requested: bool,
            start_frame: i32,
            ack_frame: i32,
            bytes: Vec<u8>,
        },
    }

    /// Every packet starts with the match epoch's low byte (0: no resync yet).
    pub fn encode(packet: &Packet) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend(
            bincode::serde::encode_to_vec(packet, bincode::config::standard()).unwrap_or_default(),
        );
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Packet> {
        bincode::serde::decode_from_slice(bytes.strip_prefix(&[0])?, bincode::config::standard())
            .ok()
            .map(|(p, _)| p)
    }
}

/// A third player that speaks GGRS (it answers the others' sync requests) and then lies: its
/// input packets say the other two disconnected at frame -1 (what trips ggrs 0.13's asserts, or
/// makes one player drop another alone), ask to disconnect, and start far ahead of the match.
/// The two honest players clear every claim and drop (and count) the rest, so nothing panics and
/// nobody drops anyone alone; the liar, silent from then on and never having played a frame, is
/// left behind by a resync from the host's snapshot (no replay reaches that far back), the two
/// play on, and the lobby goes on.
#[test]
fn a_player_that_lies_about_the_others_connections_changes_nothing() {
    use ggrs_wire::{Body, Packet};
    let (rt, server) = server_on_runtime();
    let url = server.room_url("rollback-liar");
    let mut players = lobby(&url, 2, 3);
    assert!(run_until(&mut players, LIMIT, lobby_complete));
    let (host, other) = (players[0].id().unwrap(), players[1].id().unwrap());
    let mut hostile = hostile_member(&rt, &url, &mut players, LIMIT);
    let _guard = rt.enter();
    hostile_greets(&mut hostile, &mut players, 1, LIMIT);
    const MAGIC: u16 = 4242;
    let liar = PlayingLiar::new(MAGIC, 3);
    // Answer every sync request until both players run the match with the liar in it.
    let synced = run_until(&mut players, LIMIT, |ps| {
        liar.answer_syncs(&mut hostile);
        ps.iter()
            .all(|p| game(p).players.len() == 3 && rollback_stats(p).newest_frame >= 5)
    });
    assert!(synced, "the match runs with the liar");
    let dropped_before: Vec<u64> = players
        .iter()
        .map(|p| rollback_stats(p).packets_dropped)
        .collect();
    let lie = |statuses: Vec<(bool, i32)>, disconnect_requested: bool, start_frame: i32| {
        ggrs_wire::encode(&Packet {
            magic: MAGIC,
            body: Body::Input {
                statuses,
                disconnect_requested,
                start_frame,
                ack_frame: 0,
                bytes: vec![],
            },
        })
    };
    for to in [host, other] {
        hostile.send(3, to, &lie(vec![(true, -1); 3], false, 0));
        hostile.send(
            3,
            to,
            &lie(vec![(false, 0), (true, -1), (true, -1)], false, 1),
        );
        hostile.send(3, to, &lie(vec![(false, -1); 3], true, 2));
        hostile.send(3, to, &lie(vec![(false, -1); 3], false, 100_000));
    }
    // The lies change nothing; silent from now on, the liar is gone after the timeout. It never
    // played a frame, so no player can replay from its departure (GGRS would go back to frame
    // 0, past bevy_ggrs's snapshots: a panic): both resync from the host's snapshot instead and
    // play on, the liar's seat played with the default input.
    let resynced = |p: &Player| {
        rollback_log(p).iter().find_map(|e| match e {
            RollbackEvent::Resynced { frame, players } => Some((*frame, players.clone())),
            _ => None,
        })
    };
    let on = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        hostile.inbox.clear();
        ps.iter()
            .all(|p| resynced(p).is_some_and(|(frame, _)| checksum_at(p, frame + 120).is_some()))
    });
    assert!(
        on,
        "both resync and play on: {:?}",
        players.iter().map(rollback_log).collect::<Vec<_>>()
    );
    let (frame, going_on) = resynced(&players[0]).unwrap_or_default();
    let lying = hostile.id().expect("an id");
    assert_eq!(going_on, vec![host, other, lying], "the seats stay");
    assert_eq!(resynced(&players[1]), Some((frame, going_on)));
    assert_eq!(
        checksum_at(&players[0], frame + 120),
        checksum_at(&players[1], frame + 120)
    );
    for p in &players {
        assert_eq!(game(p).phase, RollbackPhase::Playing);
        assert_eq!(
            game(p).disconnected,
            vec![2],
            "the liar's seat, handles unchanged"
        );
    }
    players.iter().for_each(no_desync);
    for (p, before) in players.iter().zip(&dropped_before) {
        assert!(
            rollback_stats(p).packets_dropped >= before + 2,
            "the disconnect request and the far start are dropped and counted: {} -> {}",
            before,
            rollback_stats(p).packets_dropped
        );
    }
    // The lobby goes on, the liar still in it.
    run_for(&mut players, Duration::from_millis(300));
    for p in &players {
        assert_eq!(p.state(), LobbyState::InLobby);
        assert_eq!(p.roster().peers.len(), 2, "{:?}", p.roster());
    }
}

/// A hostile player that speaks GGRS well enough to play: it answers the others' sync requests
/// and sends neutral inputs (one zero byte a frame, as GGRS writes a `BoxInput`, after its
/// two-byte length; delta-coded against the frame before and run-length coded), the last 8 frames
/// each time, up to 2 past the honest players' newest frame.
struct PlayingLiar {
    magic: u16,
    players: usize,
    sent_to: i32,
}

impl PlayingLiar {
    fn new(magic: u16, players: usize) -> Self {
        Self {
            magic,
            players,
            sent_to: -1,
        }
    }

    /// Reads what came: answers sync requests, returns everything else (channel, sender, bytes).
    fn answer_syncs(&self, hostile: &mut StockPeer) -> Vec<(usize, PeerId, Vec<u8>)> {
        use ggrs_wire::{Body, Packet};
        hostile.poll();
        let mut rest = Vec::new();
        for (channel, from, bytes) in std::mem::take(&mut hostile.inbox) {
            match (channel, ggrs_wire::decode(&bytes)) {
                (
                    3,
                    Some(Packet {
                        body: Body::SyncRequest(r),
                        ..
                    }),
                ) => {
                    let reply = Packet {
                        magic: self.magic,
                        body: Body::SyncReply(r),
                    };
                    hostile.send(3, from, &ggrs_wire::encode(&reply));
                }
                _ => rest.push((channel, from, bytes)),
            }
        }
        rest
    }

    /// One step of play (see the type); returns what came besides sync requests.
    fn play(&mut self, hostile: &mut StockPeer, ps: &[Player]) -> Vec<(usize, PeerId, Vec<u8>)> {
        use ggrs_wire::{Body, Packet};
        let rest = self.answer_syncs(hostile);
        let newest = ps.iter().map(|p| rollback_stats(p).newest_frame).max();
        let newest = newest.unwrap_or(-1);
        if newest < 0 {
            return rest;
        }
        self.sent_to = self.sent_to.max(newest + 2);
        let start = (self.sent_to - 7).max(0);
        let inputs = (start..=self.sent_to)
            .flat_map(|_| [1u8, 0, 0])
            .collect::<Vec<u8>>();
        for p in ps
            .iter()
            .filter(|p| game(p).phase == RollbackPhase::Playing)
        {
            let packet = Packet {
                magic: self.magic,
                body: Body::Input {
                    statuses: vec![(false, -1); self.players],
                    disconnect_requested: false,
                    start_frame: start,
                    ack_frame: rollback_stats(p).newest_frame,
                    bytes: bitfield_rle::encode(inputs.clone()),
                },
            };
            hostile.send(3, p.id().expect("an id"), &ggrs_wire::encode(&packet));
        }
        rest
    }
}

/// Two honest players and a hostile third one that plays (see [`PlayingLiar`], with `magic`), in a
/// match past frame 60: the players, their ids, the hostile peer and its play.
fn playing_with_a_liar(
    rt: &tokio::runtime::Runtime,
    url: &str,
    magic: u16,
) -> (Vec<Player>, [PeerId; 2], StockPeer, PlayingLiar) {
    let mut players = lobby(url, 2, 3);
    assert!(run_until(&mut players, LIMIT, lobby_complete));
    let ids = [players[0].id().unwrap(), players[1].id().unwrap()];
    let mut hostile = hostile_member(rt, url, &mut players, LIMIT);
    let _guard = rt.enter();
    hostile_greets(&mut hostile, &mut players, 1, LIMIT);
    let mut liar = PlayingLiar::new(magic, 3);
    let playing = run_until(&mut players, LIMIT, |ps| {
        liar.play(&mut hostile, ps);
        ps.iter()
            .all(|p| game(p).players.len() == 3 && rollback_stats(p).confirmed_frame >= 60)
    });
    assert!(playing, "the match runs with the liar playing");
    (players, ids, hostile, liar)
}

/// A `LastInput` message (`type_id`, its wire id) saying the sender holds player `handle`'s
/// inputs up to `frame`, as a hostile member encodes it.
fn last_input(type_id: u8, handle: u32, frame: i32) -> Vec<u8> {
    encode_message(type_id, &(0u32, handle, frame))
}

/// A third player that plays (it answers the sync requests and sends every frame's inputs, all
/// neutral, in step with the others) and lies about departures: it tells each honest player that
/// the *other* one is gone, at different frames (`LastInput`, a well-formed message of the
/// rollback plugin), and that it ended the match over the other (`Abandoning`). Reports and notices
/// alone decide nothing (only a player that sees another go acts on them), so the match goes on
/// well past the agreement's 5 s deadline for both, with equal checksums. (When the first report
/// started the deadline, both ended the match after 5 s.)
#[test]
fn a_player_that_reports_present_players_gone_ends_nothing() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("rollback-forged-departure");
    let (mut players, ids, mut hostile, mut liar) = playing_with_a_liar(&rt, &url, 4343);
    let _guard = rt.enter();
    let last_input_id = type_id(&players[0], "LastInput:");
    // Each honest player hears that the other is gone, at different frames.
    hostile.send(1, ids[0], &last_input(last_input_id, 1, 20));
    hostile.send(1, ids[1], &last_input(last_input_id, 0, 30));
    let abandoning = type_id(&players[0], "Abandoning:");
    let notice = |handle: u32| encode_message(abandoning, &(0u32, handle));
    hostile.send(1, ids[0], &notice(1));
    hostile.send(1, ids[1], &notice(0));
    let at_lie = rollback_stats(&players[0]).confirmed_frame;
    // 7 s: past the agreement's 5 s deadline.
    let ended = run_until(&mut players, Duration::from_secs(7), |ps| {
        liar.play(&mut hostile, ps);
        ps.iter().any(|p| game(p).phase != RollbackPhase::Playing)
    });
    let events: Vec<_> = players.iter().map(rollback_log).collect();
    assert!(!ended, "the match goes on: {events:?}");
    let frame = players
        .iter()
        .map(|p| rollback_stats(p).confirmed_frame)
        .min()
        .unwrap_or(0)
        - 10;
    assert!(frame > at_lie + 300, "frames went on: {at_lie} -> {frame}");
    assert_eq!(
        checksum_at(&players[0], frame),
        checksum_at(&players[1], frame)
    );
    players.iter().for_each(no_desync);
}

/// A `ResyncOffer` (`type_id`, its wire id) for `epoch`, with `seats` of which `gone` nobody
/// plays and a snapshot of `frame` that holds nothing, as a hostile member encodes it.
fn resync_offer(type_id: u8, epoch: u32, seats: &[PeerId], gone: &[u32], frame: i32) -> Vec<u8> {
    type Snapshot = (
        i32,
        u32,
        Vec<(String, Vec<(u32, Vec<u8>)>)>,
        Vec<(String, Option<Vec<u8>>)>,
    );
    let snapshot: Snapshot = (frame, 0, Vec::new(), Vec::new());
    encode_message(type_id, &(epoch, seats, gone, snapshot))
}

/// A third player that plays (neutral inputs, in step) forges resync offers (well-formed
/// `ResyncOffer` messages of the rollback plugin) while nobody is gone: marking both honest
/// players gone so that it leads, seats shuffled, a living player gone, for an epoch far ahead,
/// and at frame `i32::MAX`. Each is refused and counted (only the first remaining player may
/// offer, for the next epoch, dropping only players seen gone, near our frame), the match stays
/// in its first epoch and goes on with equal checksums.
#[test]
fn a_player_that_forges_resync_offers_changes_nothing() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("rollback-forged-resync");
    let (mut players, ids, mut hostile, mut liar) = playing_with_a_liar(&rt, &url, 4545);
    let _guard = rt.enter();
    let me = hostile.id().expect("an id");
    let offer_id = type_id(&players[0], "ResyncOffer:");
    let at = rollback_stats(&players[0]).confirmed_frame;
    let seats = vec![ids[0], ids[1], me];
    let forgeries = [
        // The two honest players gone, so that the liar leads.
        (1, seats.clone(), vec![0, 1], at),
        // Seats shuffled, the liar first.
        (1, vec![me, ids[1], ids[0]], vec![], at),
        // The first player gone: not the liar's to say (the second would lead).
        (1, seats.clone(), vec![0], at),
        (9, seats.clone(), vec![0, 1], at),
        (1, seats.clone(), vec![0, 1], i32::MAX),
    ];
    for (epoch, named, gone, frame) in &forgeries {
        for to in ids {
            hostile.send(1, to, &resync_offer(offer_id, *epoch, named, gone, *frame));
        }
    }
    let on = run_until(&mut players, LIMIT, |ps| {
        liar.play(&mut hostile, ps);
        ps.iter().all(|p| {
            rollback_stats(p).resyncs_refused >= forgeries.len() as u64
                && rollback_stats(p).confirmed_frame >= at + 300
        })
    });
    let refused: Vec<u64> = players
        .iter()
        .map(|p| rollback_stats(p).resyncs_refused)
        .collect();
    assert!(on, "every forgery refused, the match goes on: {refused:?}");
    for p in &players {
        assert_eq!(game(p).epoch, 0, "no resync");
        assert_eq!(game(p).phase, RollbackPhase::Playing);
        assert!(game(p).disconnected.is_empty());
        assert_eq!(rollback_stats(p).resyncs, 0);
    }
    let frame = at + 290;
    assert_eq!(
        checksum_at(&players[0], frame),
        checksum_at(&players[1], frame)
    );
    players.iter().for_each(no_desync);
}

/// A member (a raw peer, no GGRS) asks for a seat in a two-player match and never plays: the
/// leader seats it at a resync, the new session cannot synchronize with it, and after
/// `disconnect_timeout` both players count it gone and go on from the epoch's first state without
/// it (its seat on the default input). It asks again: refused and counted. The match goes on with
/// equal checksums, never stuck.
#[test]
fn a_member_that_asks_for_a_seat_and_never_plays_cannot_stall_the_match() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("rollback-seat-squatter");
    let mut players = lobby(&url, 2, 2);
    play_to(&mut players, 120);
    let leader = players[0].id().expect("an id");
    let mut hostile = hostile_member(&rt, &url, &mut players, LIMIT);
    let _guard = rt.enter();
    let seat_request = type_id(&players[0], "SeatRequest:");
    let ask = encode_message(seat_request, &None::<u32>);
    hostile.send(1, leader, &ask);
    let squatter = hostile.id().expect("an id");
    let seated = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        hostile.inbox.clear();
        ps.iter().all(|p| game(p).players.contains(&squatter))
    });
    assert!(seated, "the leader seats it");
    let dropped = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        hostile.inbox.clear();
        ps.iter()
            .all(|p| game(p).disconnected == vec![2] && game(p).epoch == 2)
    });
    assert!(
        dropped,
        "both count it gone and resync without it: {:?}",
        players.iter().map(game).collect::<Vec<_>>()
    );
    hostile.send(1, leader, &ask);
    let target = rollback_stats(&players[0]).newest_frame + 300;
    let on = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        hostile.inbox.clear();
        rollback_stats(&ps[0]).seats_refused >= 1
            && ps.iter().all(|p| checksum_at(p, target).is_some())
    });
    assert!(
        on,
        "asked again: refused; the match goes on to frame {target}"
    );
    for p in &players {
        assert_eq!(game(p).phase, RollbackPhase::Playing);
        assert_eq!(game(p).epoch, 2, "no third resync");
        no_desync(p);
    }
    assert_eq!(
        checksum_at(&players[0], target),
        checksum_at(&players[1], target)
    );
}

/// A hostile *host* (a raw peer, first in the room, that the players follow) sends match plans no
/// match can follow: 65 players, a player named twice, and a player that never links. The first
/// two are refused at once, the third once the player waited `plan_link_wait` for the link; the
/// lobby is unharmed, and a plan that can be played (the two honest players) is played, with
/// equal checksums.
#[test]
fn a_hosts_match_plans_that_cannot_be_played_are_refused() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("rollback-hostile-host");
    let _guard = rt.enter();
    let mut hostile = hostile_first(&url, LIMIT);
    let settings = bevy_huddle::RollbackSettings {
        players: 2,
        spectators: false,
        max_prediction: 12,
        plan_link_wait: Duration::from_secs(2),
        ..Default::default()
    };
    let mut players = vec![box_player_with(&url, settings)];
    players.push(box_player_with(&url, settings));
    hostile_hosts(&mut hostile, &mut players, LIMIT);
    assert!(run_until(&mut players, LIMIT, |ps| ps.iter().all(|p| p
        .roster()
        .peers
        .len()
        == 2)));
    let (a, b) = (players[0].id().unwrap(), players[1].id().unwrap());
    let match_plan = type_id(&players[0], "MatchPlan:");
    let plan = |ids: Vec<PeerId>| encode_message(match_plan, &ids);
    let ghost = |i: u128| PeerId(uuid::Uuid::from_u128(i));
    let refused = |ps: &[Player], n: u64| ps.iter().all(|p| rollback_stats(p).plans_refused >= n);
    let send_all = |hostile: &mut StockPeer, bytes: &[u8]| {
        for to in [a, b] {
            hostile.send(1, to, bytes);
        }
    };
    send_all(&mut hostile, &plan((0..65).map(ghost).collect()));
    send_all(&mut hostile, &plan(vec![a, a]));
    let keep_hostile = |hostile: &mut StockPeer| {
        hostile.poll();
        hostile.inbox.clear();
    };
    assert!(
        run_until(&mut players, LIMIT, |ps| {
            keep_hostile(&mut hostile);
            refused(ps, 2)
        }),
        "65 players and a player twice are refused"
    );
    // A player that never links: player a waits 2 s, then refuses; b is not named.
    send_all(&mut hostile, &plan(vec![a, ghost(7)]));
    run_for(&mut players, Duration::from_millis(500));
    assert_eq!(
        rollback_stats(&players[0]).plans_refused,
        2,
        "a waits first"
    );
    assert!(
        run_until(&mut players, LIMIT, |ps| {
            keep_hostile(&mut hostile);
            rollback_stats(&ps[0]).plans_refused == 3
        }),
        "a refuses the plan it cannot play"
    );
    for p in &players {
        assert_eq!(game(p).phase, RollbackPhase::Waiting);
        assert_eq!(p.state(), LobbyState::InLobby);
    }
    // A plan that can be played is.
    send_all(&mut hostile, &plan(vec![a, b]));
    let played = run_until(&mut players, LIMIT, |ps| {
        keep_hostile(&mut hostile);
        ps.iter().all(|p| checksum_at(p, 120).is_some())
    });
    assert!(played, "a and b play the host's sound plan");
    assert_eq!(checksum_at(&players[0], 120), checksum_at(&players[1], 120));
    players.iter().for_each(no_desync);
}

/// Four players, one of them a liar that plays (neutral inputs, in step). An honest player
/// vanishes; the other two honest players report its last input, and the liar, having read their
/// report, confirms it to one of them and contradicts it to the other. Nobody plays on alone:
/// either both end the match over the vanished player (the contradicted one waits for a resync
/// offer from the first remaining player, which agreed and plays on, so none comes: after 5 s it
/// ends the match and says so, and the other follows), or both resync (the liar's reports reached
/// both as a disagreement) and, since the liar does not follow the new session, both count it
/// gone and play on together with equal checksums.
#[test]
fn a_player_that_splits_a_departure_verdict_leaves_nobody_playing_alone() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("rollback-split");
    let mut players = lobby(&url, 3, 4);
    assert!(run_until(&mut players, LIMIT, lobby_complete));
    let mut hostile = hostile_member(&rt, &url, &mut players, LIMIT);
    let _guard = rt.enter();
    for i in 1..3 {
        hostile_greets(&mut hostile, &mut players, i, LIMIT);
    }
    let mut liar = PlayingLiar::new(4444, 4);
    let last_input_id = type_id(&players[0], "LastInput:");
    // Reports the liar reads: (from, gone handle, frame).
    let heard = |messages: Vec<(usize, PeerId, Vec<u8>)>| -> Vec<(PeerId, u32, i32)> {
        let config = bincode::config::standard();
        messages
            .into_iter()
            .filter(|(channel, _, bytes)| *channel == 1 && bytes.first() == Some(&last_input_id))
            .filter_map(|(_, from, bytes)| {
                let decoded =
                    bincode::serde::decode_from_slice::<(u32, u32, i32), _>(&bytes[1..], config);
                decoded
                    .ok()
                    .map(|((_epoch, handle, frame), _)| (from, handle, frame))
            })
            .collect()
    };
    let playing = run_until(&mut players, LIMIT, |ps| {
        liar.play(&mut hostile, ps);
        ps.iter()
            .all(|p| game(p).players.len() == 4 && rollback_stats(p).confirmed_frame >= 60)
    });
    assert!(playing, "the match runs with the liar playing");
    let gone = players.remove(2);
    let vanished = gone.id().expect("an id");
    drop(gone);
    let (a, b) = (players[0].id().unwrap(), players[1].id().unwrap());
    let mut answered = 0;
    let ended = run_until(&mut players, LIMIT, |ps| {
        for (from, handle, frame) in heard(liar.play(&mut hostile, ps)) {
            if handle == 2 && answered == 0 {
                // The first report of the vanished player: confirm it to a, contradict it to b.
                hostile.send(1, a, &last_input(last_input_id, 2, frame));
                hostile.send(1, b, &last_input(last_input_id, 2, frame + 1));
                answered += 1;
            } else if handle != 2 {
                // Any later agreement: echo it, so it would pass.
                hostile.send(1, from, &last_input(last_input_id, handle, frame));
            }
        }
        let together = |p: &Player| {
            game(p).phase == RollbackPhase::Playing
                && game(p).epoch > 0
                && game(p).epoch == game(&ps[0]).epoch
                && rollback_stats(p).confirmed_frame >= game(p).frame_offset + 120
        };
        ps.iter().all(|p| game(p).phase != RollbackPhase::Playing) || ps.iter().all(together)
    });
    let logs: Vec<_> = players.iter().map(rollback_log).collect();
    assert!(
        ended,
        "both end the match, or both play on together: {logs:?}"
    );
    players.iter().for_each(no_desync);
    if game(&players[0]).phase == RollbackPhase::Playing {
        eprintln!("both resynced and play on together");
        let frame = players
            .iter()
            .map(|p| rollback_stats(p).confirmed_frame)
            .min()
            .unwrap_or(0)
            - 10;
        let sums = [
            checksum_at(&players[0], frame),
            checksum_at(&players[1], frame),
        ];
        assert!(
            sums[0].is_some() && sums[0] == sums[1],
            "frame {frame}: {sums:?}"
        );
        return;
    }
    let abandoned = RollbackEvent::Abandoned {
        peer: vanished,
        handle: 2,
    };
    for log in &logs {
        assert!(
            log.contains(&abandoned),
            "over the vanished player: {log:?}"
        );
    }
}

/// A member (not a player) that floods the feeder with requests for the whole feed from frame 1
/// gets each final frame once, as a spectator would, however often it asks: a request cannot
/// wind its feed back (each used to resend the whole input log), and the match goes on.
#[test]
fn a_member_that_keeps_asking_for_the_whole_feed_gets_each_frame_once() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("rollback-feed-flood");
    let mut players = lobby(&url, 2, 2);
    play_to(&mut players, 120);
    let mut hostile = hostile_member(&rt, &url, &mut players, LIMIT);
    let _guard = rt.enter();
    let feeder = players[0].id().unwrap();
    let (request_id, frames_id) = (
        type_id(&players[0], "FeedRequest:"),
        type_id(&players[0], "FeedFrames:"),
    );
    let request = encode_message(request_id, &(2u32, 1i32));
    let mut times_sent: std::collections::BTreeMap<i32, u32> = Default::default();
    let mut asked = 0;
    let target = rollback_stats(&players[0]).confirmed_frame + 300;
    let done = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        for (channel, _, bytes) in std::mem::take(&mut hostile.inbox) {
            match (channel, bytes.split_first()) {
                (1, Some((&t, rest))) if t == frames_id => {
                    let decoded = bincode::serde::decode_from_slice::<(u32, i32, Vec<Vec<u8>>), _>(
                        rest,
                        bincode::config::standard(),
                    );
                    if let Ok(((_epoch, first, frames), _)) = decoded {
                        for f in first..first + frames.len() as i32 {
                            *times_sent.entry(f).or_default() += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        if asked < 2000 {
            for _ in 0..20 {
                hostile.send(1, feeder, &request);
                asked += 1;
            }
        }
        ps.iter()
            .all(|p| rollback_stats(p).confirmed_frame >= target)
    });
    assert!(done, "the match goes on to frame {target}");
    let twice: Vec<_> = times_sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        times_sent.len() >= 300,
        "the feed flows: {} frames",
        times_sent.len()
    );
    assert!(
        twice.is_empty(),
        "{asked} requests: {} frames sent more than once, e.g. {:?}",
        twice.len(),
        twice.first()
    );
}

/// The wire id of the message type whose name starts with `prefix` in `player`'s registry.
fn type_id(player: &Player, prefix: &str) -> u8 {
    let hello = bevy_huddle::protocol::control::Control::decode(&hello_like(player));
    let Some(bevy_huddle::protocol::control::Control::Hello(hello)) = hello else {
        panic!("a hello");
    };
    let id = hello.types.iter().position(|t| t.starts_with(prefix));
    u8::try_from(id.expect("registered")).expect("a small id")
}

#[test]
fn a_spectator_joining_a_running_match_reaches_the_players_checksum() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-watch");
    let mut players = lobby(&url, 2, 2);
    play_to(&mut players, 150);
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
    // It started from the players' snapshot of a frame past the one it joined at, not from the
    // first frame.
    let from = rollback_stats(watcher).snapshot_frame;
    assert!(from.is_some_and(|f| f >= 150), "started from {from:?}");
    assert!(
        checksum_at(watcher, 1).is_none(),
        "frame 1 was not replayed"
    );
}

/// The first player of a match of three vanishes (the other two play on); a peer that joins
/// later is told the plan, which still names the gone player first. It gets no answer from it (no
/// link), passes it over, and watches from the next player's snapshot to the players' checksum.
#[test]
fn a_spectator_told_of_a_player_gone_before_it_came_watches_the_next() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-watch-gone-first");
    let mut peers = lobby(&url, 3, 3);
    play_to(&mut peers, 120);
    let first = peers[0].id().expect("an id");
    vanish(&mut peers, 0);
    play_to(&mut peers, 300);
    peers.push(box_player(&url, 3));
    play_to(&mut peers, 900);
    let watcher = &peers[2];
    assert_eq!(game(watcher).phase, RollbackPhase::Spectating);
    assert_eq!(game(watcher).players[0], first, "the plan names it");
    assert_ne!(game(watcher).feeder, Some(first));
    assert!(rollback_stats(watcher)
        .snapshot_frame
        .is_some_and(|f| f >= 300));
    let sums: Vec<_> = peers.iter().map(|p| checksum_at(p, 900)).collect();
    assert!(sums.iter().all(|s| *s == sums[0]), "equal: {sums:?}");
}

/// What the players' game snapshots and the spectator's does not know.
#[derive(bevy::prelude::Resource, Clone, serde::Serialize, serde::Deserialize)]
struct NotOurs(u32);

/// Three players whose snapshots carry a type the spectator's game does not register (a game
/// that differs, or players that lie): it passes over the players' snapshots in turn, then
/// replays from the first frame, and reaches the players' checksum.
#[test]
fn a_spectator_whose_snapshots_do_not_fit_asks_each_player_then_replays() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-watch-misfit");
    let mut peers = lobby_with(3, || {
        let mut p = box_player(&url, 3);
        p.app
            .insert_resource(NotOurs(7))
            .rollback_resource_with_clone::<NotOurs>()
            .snapshot_resource::<NotOurs>();
        p
    });
    play_to(&mut peers, 300);
    peers.push(box_player(&url, 3));
    play_to(&mut peers, 900);
    let watcher = &peers[3];
    assert_eq!(game(watcher).phase, RollbackPhase::Spectating);
    assert_eq!(rollback_stats(watcher).snapshot_frame, None, "replayed");
    // Each player's snapshot is tried in turn (one that has not answered within `SNAPSHOT_WAIT`,
    // 6 s, feeds the replay instead; two or three are refused; one without passing over).
    let refused = rollback_stats(watcher).snapshots_refused;
    assert!((2..=3).contains(&refused), "{refused} snapshots refused");
    let sums: Vec<_> = peers.iter().map(|p| checksum_at(p, 900)).collect();
    assert!(sums.iter().all(|s| *s == sums[0]), "equal: {sums:?}");
}

/// Ten minutes into a match (frame 36,000, generated: the players continue a match saved at
/// that frame, `RollbackSettings::first_frame`, so no frame before it exists to replay), a
/// spectator joins: it starts from the players' snapshot of their newest final frame, catches
/// up, and reaches their checksum.
#[test]
fn a_spectator_joining_ten_minutes_in_starts_from_the_snapshot() {
    const TEN_MINUTES: i32 = 36_000;
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-watch-late");
    let settings = bevy_huddle::RollbackSettings {
        players: 2,
        first_frame: TEN_MINUTES,
        ..Default::default()
    };
    let join = || box_player_with(&url, settings);
    let mut players = lobby_with(2, join);
    play_to(&mut players, TEN_MINUTES + 150);
    players.push(join());
    let joined = std::time::Instant::now();
    let caught_up = run_until(&mut players, LIMIT, |ps| {
        let watcher = rollback_stats(&ps[2]).newest_frame;
        // At its normal pace a spectator trails the frames every player holds by a few.
        watcher > TEN_MINUTES && watcher >= rollback_stats(&ps[0]).confirmed_frame - 10
    });
    assert!(
        caught_up,
        "the spectator catches up: {:?}, {:?}, players at {}",
        game(&players[2]),
        rollback_stats(&players[2]),
        rollback_stats(&players[0]).confirmed_frame
    );
    eprintln!(
        "caught up with the players at frame {} in {:?}",
        rollback_stats(&players[2]).newest_frame,
        joined.elapsed()
    );
    let end = TEN_MINUTES + 600;
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter().all(|p| checksum_at(p, end).is_some())
    });
    assert!(ok, "all reach frame {end}: {:?}", game(&players[2]));
    let watcher = &players[2];
    assert_eq!(game(watcher).phase, RollbackPhase::Spectating);
    let sums: Vec<_> = players.iter().map(|p| checksum_at(p, end)).collect();
    assert!(sums.iter().all(|s| *s == sums[0]), "equal: {sums:?}");
    assert_eq!(rollback_stats(watcher).spectator_starved, 0);
    let from = rollback_stats(watcher).snapshot_frame;
    assert!(
        from.is_some_and(|f| f >= TEN_MINUTES + 150),
        "started from {from:?}"
    );
    assert!(checksum_at(watcher, TEN_MINUTES + 1).is_none());
}

/// Without auto-start, nothing starts until the host's game writes `StartRollback`.
#[test]
fn a_match_starts_when_the_game_asks() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("rollback-asked");
    let manual = |url: &str| {
        let mut config = HuddleConfig::room(url);
        config.topology = Some(Topology::Mesh);
        let mut p = Player::join_with(url, Types::Nothing, config);
        p.app.add_plugins(huddle_examples::box_game::BoxGame {
            pilot: huddle_examples::lobby::Pilot::Bot,
            rollback: bevy_huddle::RollbackSettings {
                auto_start: false,
                ..Default::default()
            },
            snapshots: true,
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
    play_to(&mut players, 60);
    assert_eq!(checksum_at(&players[0], 60), checksum_at(&players[1], 60));
}

/// A star room (`Topology::Auto` with capacity 8) of six peers plays a four-player match with two
/// spectators: the players' GGRS packets to each other go through the host (20 ms ± 5 ms, 2 %
/// loss on every link, so twice that between two clients), and every peer reaches frame 600 with
/// the same checksum.
#[test]
fn a_six_peer_star_room_plays_a_four_player_match_with_two_spectators() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("starry?capacity=8");
    let rollback = bevy_huddle::RollbackSettings {
        players: 4,
        max_prediction: 12,
        ..bevy_huddle::RollbackSettings::default()
    };
    let mut peers = vec![box_player_in(&url, rollback, None)];
    assert!(run_until(&mut peers, LIMIT, |ps| ps[0].roster().is_host()));
    for _ in 1..6 {
        peers.push(box_player_in(&url, rollback, None));
    }
    assert!(
        run_until(&mut peers, LIMIT, lobby_complete),
        "the lobby forms"
    );
    assert_eq!(peers[1].roster().peers.len(), 5, "a client knows 5 members");
    let conditions = Conditions::new(Duration::from_millis(20), Duration::from_millis(5), 0.02);
    for p in &mut peers {
        p.app.insert_resource(LinkConditioner::both(conditions));
        assert_eq!(
            p.app
                .world()
                .resource::<bevy_huddle::HuddleSession>()
                .topology(),
            Topology::Star
        );
    }
    play_to(&mut peers, FRAMES);
    // The host named the first four it linked to; each plays or watches as named.
    let named = game(&peers[0]).players.clone();
    assert_eq!(named.len(), 4);
    assert_eq!(named[0], peers[0].id().expect("an id"), "the host plays");
    for (i, p) in peers.iter().enumerate() {
        let plays = named.contains(&p.id().expect("an id"));
        let phase = if plays {
            RollbackPhase::Playing
        } else {
            RollbackPhase::Spectating
        };
        assert_eq!(game(p).phase, phase, "peer {i}");
        assert_eq!(game(p).players, named, "peer {i}");
    }
    let sums: Vec<_> = peers.iter().map(|p| checksum_at(p, FRAMES)).collect();
    assert!(sums.iter().all(|s| *s == sums[0]), "equal: {sums:?}");
    peers.iter().for_each(no_desync);
    let relayed = peers[0]
        .app
        .world()
        .resource::<bevy_huddle::HuddleSession>()
        .endpoint()
        .counters()
        .relayed;
    assert!(
        relayed > 1_000,
        "the clients' GGRS packets go through the host: {relayed}"
    );
}
