//! GGRS rollback sessions over the plugin's GGRS channel: peers from the lobby, handles in join
//! order, a deterministic game under latency, jitter and loss; garbage on the channel.
//! Run inside the loopback-only network namespace (see README).

use bevy_huddle::ggrs::{self, GgrsEvent, GgrsRequest, P2PSession, SessionBuilder, SessionState};
use bevy_huddle::prelude::*;
use bevy_huddle::{HuddleGgrsSocket, HuddleSession, RollbackSettings};
use huddle_tests::apps::*;
use huddle_tests::*;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
const FRAMES: i32 = 600;

struct BoxConfig;
impl ggrs::Config for BoxConfig {
    type Input = u8;
    type InputPredictor = ggrs::PredictRepeatLast;
    type State = Boxes;
    type Address = PeerId;
}

/// Every player's box; moved by inputs 0-4 (still, left, right, up, down).
#[derive(Clone, Default, Hash, PartialEq, Debug)]
struct Boxes {
    frame: i32,
    at: Vec<(i32, i32)>,
}

impl Boxes {
    fn new(players: usize) -> Self {
        Self {
            frame: 0,
            at: vec![(0, 0); players],
        }
    }

    fn step(&mut self, inputs: &[(u8, ggrs::InputStatus)]) {
        for (i, (input, _)) in inputs.iter().enumerate() {
            let (dx, dy) = match input {
                1 => (-1, 0),
                2 => (1, 0),
                3 => (0, 1),
                4 => (0, -1),
                _ => (0, 0),
            };
            self.at[i].0 += dx;
            self.at[i].1 += dy;
        }
        self.frame += 1;
    }

    fn checksum(&self) -> u128 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        u128::from(h.finish())
    }
}

/// A player's scripted input for a frame: deterministic, different per handle.
fn input(handle: usize, frame: i32) -> u8 {
    ((frame as usize / 7 + handle * 3) % 5) as u8
}

struct Rollback {
    session: P2PSession<BoxConfig>,
    socket: HuddleGgrsSocket,
    state: Boxes,
    checksums: BTreeMap<i32, u128>,
    desyncs: usize,
    disconnected: Vec<PeerId>,
}

fn start(player: &mut Player) -> Rollback {
    let world = player.app.world_mut();
    let mut session = world.resource_mut::<HuddleSession>();
    let settings = RollbackSettings {
        max_prediction: 12,
        ..session.config().rollback
    };
    let players = session.ggrs_players().len();
    let (session, socket) = session
        .start_p2p_session::<BoxConfig>(settings)
        .expect("a session from the lobby");
    Rollback {
        session,
        socket,
        state: Boxes::new(players),
        checksums: BTreeMap::new(),
        desyncs: 0,
        disconnected: Vec::new(),
    }
}

impl Rollback {
    /// One frame of the game loop: poll, add our input, advance, handle GGRS's requests.
    fn frame(&mut self) {
        self.session.poll_remote_clients();
        for event in self.session.events() {
            match event {
                GgrsEvent::DesyncDetected { .. } => self.desyncs += 1,
                GgrsEvent::Disconnected { addr } => self.disconnected.push(addr),
                _ => {}
            }
        }
        if self.session.current_state() != SessionState::Running || self.state.frame >= FRAMES + 60
        {
            return;
        }
        for handle in self.session.local_player_handles() {
            let _ = self
                .session
                .add_local_input(handle, input(handle, self.state.frame));
        }
        let Ok(requests) = self.session.advance_frame() else {
            return; // too far ahead: wait for the others
        };
        for request in requests {
            match request {
                GgrsRequest::SaveGameState { cell, frame } => {
                    assert_eq!(frame, self.state.frame);
                    cell.save(frame, Some(self.state.clone()), Some(self.state.checksum()));
                }
                GgrsRequest::LoadGameState { cell, .. } => {
                    self.state = cell.load().expect("a saved state");
                }
                GgrsRequest::AdvanceFrame { inputs } => {
                    self.state.step(&inputs);
                    self.checksums
                        .insert(self.state.frame, self.state.checksum());
                }
            }
        }
    }
}

/// Runs the apps and the rollback loops at 60 Hz until `done`.
fn play(
    players: &mut [Player],
    games: &mut [Rollback],
    limit: Duration,
    done: impl Fn(&[Rollback]) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let tick = Duration::from_secs_f64(1.0 / 60.0);
    let mut next = Instant::now();
    while Instant::now() < deadline {
        for p in players.iter_mut() {
            p.update();
        }
        for g in games.iter_mut() {
            g.frame();
        }
        for p in players.iter_mut() {
            p.update();
        }
        if done(games) {
            return true;
        }
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    false
}

fn match_of(n: usize) {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url(&format!("rollback{n}"));
    let mut players = vec![Player::join(&url)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.extend((1..n).map(|_| Player::join(&url)));
    assert!(
        run_until(&mut players, LIMIT, lobby_complete),
        "lobby of {n}"
    );
    let conditions = Conditions::new(Duration::from_millis(60), Duration::from_millis(10), 0.05);
    for p in &mut players {
        p.app.insert_resource(LinkConditioner::both(conditions));
    }
    let mut games: Vec<Rollback> = players.iter_mut().map(start).collect();
    let ok = play(&mut players, &mut games, LIMIT, |gs| {
        gs.iter().all(|g| g.session.confirmed_frame() >= FRAMES)
    });
    let frames: Vec<_> = games
        .iter()
        .map(|g| (g.state.frame, g.session.confirmed_frame()))
        .collect();
    assert!(ok, "{n} peers reach frame {FRAMES}, confirmed: {frames:?}");
    let start_sum = Boxes::new(n).checksum();
    let sums: Vec<u128> = games.iter().map(|g| g.checksums[&FRAMES]).collect();
    assert!(
        sums.iter().all(|s| *s == sums[0]),
        "equal checksums at frame {FRAMES}: {sums:?}"
    );
    assert_ne!(sums[0], start_sum, "the boxes moved");
    for g in &games {
        assert_eq!(g.desyncs, 0, "no desync reported");
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

#[test]
fn garbage_on_the_ggrs_channel_is_dropped_and_the_match_goes_on() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("rollback-garbage");
    let mut players = vec![Player::join(&url)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.push(Player::join(&url));
    assert!(run_until(&mut players, LIMIT, lobby_complete));
    // A third, hostile peer in the lobby (huddle's channel layout, a valid hello) sends garbage
    // on the GGRS channel to the host.
    let host = players[0].id().unwrap();
    let mut hostile = hostile_member(&rt, &url, &mut players, LIMIT);
    // The match is between the two players (the hostile peer is not one of its addresses).
    let mut games: Vec<Rollback> = players
        .iter_mut()
        .map(|p| {
            let world = p.app.world_mut();
            let mut session = world.resource_mut::<HuddleSession>();
            let socket = session.ggrs_socket();
            let me = session.id().unwrap();
            let others: Vec<PeerId> = session
                .succession()
                .into_iter()
                .filter(|m| session.peers().contains(m) || *m == me)
                .collect();
            let two: Vec<PeerId> = others.into_iter().take(2).collect();
            let mut builder = SessionBuilder::<BoxConfig>::new()
                .with_num_players(2)
                .unwrap();
            for (handle, peer) in two.iter().enumerate() {
                let kind = if *peer == me {
                    ggrs::PlayerType::Local
                } else {
                    ggrs::PlayerType::Remote(*peer)
                };
                builder = builder.add_player(kind, handle).unwrap();
            }
            Rollback {
                session: builder.start_p2p_session(socket.clone()).unwrap(),
                socket,
                state: Boxes::new(2),
                checksums: BTreeMap::new(),
                desyncs: 0,
                disconnected: Vec::new(),
            }
        })
        .collect();
    for k in 0..50u8 {
        hostile.send(3, host, &[k, 0xff, 0x00, k]);
    }
    let ok = play(&mut players, &mut games, LIMIT, |gs| {
        gs.iter().all(|g| g.session.confirmed_frame() >= 120)
    });
    assert!(ok, "the match goes on");
    assert!(
        games[0].socket.dropped() >= 1,
        "garbage counted: {}",
        games[0].socket.dropped()
    );
    assert_eq!(games[0].checksums[&120], games[1].checksums[&120]);
}
