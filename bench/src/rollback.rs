//! The `ggrs` section: rollback matches of the box game (huddle_examples) under a clean link and
//! under 60 ms ± 10 ms latency with 5 % loss, all peers updated from one thread as often as
//! bevy_ggrs wants (it steps at 60 Hz by the clock). And what a player going costs the others in
//! a match of three: how long they go without a new frame, and whether they play on.

use crate::{Conditions, LinkConditioner};
use bevy::prelude::*;
use bevy_huddle::{
    HuddleConfig, HuddlePlugin, LeaveRollback, LobbyState, RollbackMatch, RollbackPhase,
    RollbackStats, Topology,
};
use huddle_examples::box_game::BoxGame;
use huddle_examples::lobby::Pilot;
use std::time::{Duration, Instant};

/// What one peer did during the measured window, per second.
pub struct Rates {
    /// New frames (the match's pace).
    pub frames: f64,
    /// Frames resimulated after rollbacks.
    pub rollback_frames: f64,
    /// GGRS bytes sent.
    pub bytes_out: f64,
    /// Highest GGRS ping to a remote, ms (at the end).
    pub ping_ms: u128,
}

fn snapshot(app: &App) -> (i32, u64, u64) {
    let s = app.world().resource::<RollbackStats>();
    (s.newest_frame, s.frames_resimulated, s.bytes_out)
}

/// `n` box-game peers joining `url` (a room of `topology`) under `conditions`, in a match of `n`.
fn players(url: &str, n: usize, conditions: Option<Conditions>, topology: Topology) -> Vec<App> {
    (0..n)
        .map(|_| {
            let app = peer(url, topology, BoxGame::new(Pilot::Bot, n));
            with_conditions(app, conditions)
        })
        .collect()
}

/// A box-game peer of `game` joining `url` (a room of `topology`).
fn peer(url: &str, topology: Topology, game: BoxGame) -> App {
    let mut config = HuddleConfig::room(url);
    config.topology = Some(topology);
    let mut app = App::new();
    app.add_plugins(MinimalPlugins)
        .add_plugins(HuddlePlugin::new(config))
        .add_plugins(game);
    app
}

fn with_conditions(mut app: App, conditions: Option<Conditions>) -> App {
    if let Some(c) = conditions {
        app.insert_resource(LinkConditioner::both(c));
    }
    app
}

/// Updates every app, then calls `each_round`, until it returns true or `limit` passes; returns
/// whether it did.
fn run(apps: &mut [App], limit: Duration, mut each_round: impl FnMut(&mut [App]) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        for a in apps.iter_mut() {
            a.update();
        }
        if each_round(apps) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Runs until every peer plays and simulated frame 120.
fn start(apps: &mut [App]) {
    let started = run(apps, Duration::from_secs(60), |apps| {
        apps.iter().all(|a| {
            a.world().resource::<RollbackMatch>().phase == RollbackPhase::Playing
                && a.world().resource::<RollbackStats>().newest_frame >= 120
        })
    });
    assert!(started, "the match started");
}

/// A match of `n` box-game peers at `base`/`room` (of `topology`) under `conditions`, measured
/// for `window`. Returns each peer's rates.
pub fn measure(
    base: &str,
    room: &str,
    n: usize,
    conditions: Option<Conditions>,
    topology: Topology,
    window: Duration,
) -> Vec<Rates> {
    let mut apps = players(&format!("{base}/{room}"), n, conditions, topology);
    start(&mut apps);
    let before: Vec<_> = apps.iter().map(snapshot).collect();
    let t0 = Instant::now();
    run(&mut apps, window, |_| false);
    let secs = t0.elapsed().as_secs_f64();
    apps.iter()
        .zip(before)
        .map(|(a, (f0, r0, b0))| {
            let (f1, r1, b1) = snapshot(a);
            let stats = a.world().resource::<RollbackStats>();
            Rates {
                frames: f64::from(f1 - f0) / secs,
                rollback_frames: (r1 - r0) as f64 / secs,
                bytes_out: (b1 - b0) as f64 / secs,
                ping_ms: stats.peers.values().map(|s| s.ping).max().unwrap_or(0),
            }
        })
        .collect()
}

/// How the third player of a match of three goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Going {
    /// It stays (the anchor: the same window without a departure).
    Stays,
    /// `LeaveRollback`, then it leaves the lobby by itself.
    Leaves,
    /// Its app is dropped.
    Vanishes,
}

/// What a departure cost the two players that stayed.
pub struct Departure {
    /// From `LeaveRollback` until the leaver was out of the lobby.
    pub parting: Option<Duration>,
    /// Until both remaining players knew it was gone (`RollbackEvent::Disconnected`).
    pub detected: Option<Duration>,
    /// The longest time a remaining peer went without a new frame, over [`AFTER`].
    pub longest_stall: Duration,
    /// The remaining players still play at the end (else the match was abandoned).
    pub played_on: bool,
    /// They went on through a resync: the size of the snapshot they went on from, bytes.
    pub resynced: Option<usize>,
}

/// How long the remaining players are watched after the departure.
pub const AFTER: Duration = Duration::from_secs(3);

/// A match of three at `base`/`room` under `conditions`; the third player goes at frame 120.
pub fn departure(base: &str, room: &str, conditions: Option<Conditions>, how: Going) -> Departure {
    let mut apps = players(&format!("{base}/{room}"), 3, conditions, Topology::Mesh);
    start(&mut apps);
    let t0 = Instant::now();
    match how {
        Going::Stays => {}
        Going::Leaves => {
            apps[2].world_mut().write_message(LeaveRollback);
        }
        Going::Vanishes => drop(apps.pop()),
    }
    let mut parting = None;
    let mut last: Vec<(i32, Instant)> = apps[..2].iter().map(|a| (snapshot(a).0, t0)).collect();
    let mut longest_stall = Duration::ZERO;
    let mut detected = None;
    run(&mut apps, AFTER, |apps| {
        let now = Instant::now();
        let knows = |a: &App| {
            !a.world()
                .resource::<RollbackMatch>()
                .disconnected
                .is_empty()
        };
        if detected.is_none() && apps[..2].iter().all(knows) {
            detected = Some(t0.elapsed());
        }
        for (a, (frame, at)) in apps.iter().zip(last.iter_mut()) {
            // A resync sets the frame back to its snapshot's: that is a step too.
            let newest = snapshot(a).0;
            if newest != *frame {
                *frame = newest;
                *at = now;
            }
            longest_stall = longest_stall.max(now - *at);
        }
        if let (Going::Leaves, None, Some(leaver)) = (how, parting, apps.get(2)) {
            if *leaver.world().resource::<State<LobbyState>>().get() == LobbyState::Offline {
                parting = Some(t0.elapsed());
            }
        }
        false
    });
    let played_on = apps[..2]
        .iter()
        .all(|a| a.world().resource::<RollbackMatch>().phase == RollbackPhase::Playing);
    let stats = apps[0].world().resource::<RollbackStats>();
    let resynced = (stats.resyncs > 0).then_some(stats.snapshot_bytes);
    Departure {
        parting,
        detected,
        longest_stall,
        played_on,
        resynced,
    }
}

/// A spectator that trails the players' newest final frame by this many frames or fewer (a
/// sixth of a second) has caught up: at its normal pace it keeps that distance (it only gets
/// the frames every player holds).
pub const CAUGHT_UP: i32 = 10;

/// A spectator joining a running match of two.
pub struct Join {
    /// From its app's start until it trailed the players' newest final frame by [`CAUGHT_UP`]
    /// frames or fewer, or `None` if it did not within the limit.
    pub caught_up: Option<Duration>,
    /// The frame it joined at (the players' newest when it started).
    pub at: i32,
    /// The snapshot it started from: its frame and size, bytes.
    pub snapshot: Option<(i32, usize)>,
}

/// Two box-game players at `base`/`room` whose match starts at `first_frame` (a long match,
/// generated: see `RollbackSettings::first_frame`) play `played` frames; then a spectator joins.
/// With `snapshots` off, the game registers none: the spectator replays from the first frame.
pub fn spectator_join(
    base: &str,
    room: &str,
    first_frame: i32,
    played: i32,
    snapshots: bool,
) -> Join {
    let url = format!("{base}/{room}");
    let game = || {
        let mut game = BoxGame::new(Pilot::Bot, 2);
        game.rollback.first_frame = first_frame;
        game.snapshots = snapshots;
        peer(&url, Topology::Mesh, game)
    };
    let mut apps = vec![game(), game()];
    let newest = |a: &App| a.world().resource::<RollbackStats>().newest_frame;
    let played_in = run(&mut apps, Duration::from_secs(120), |apps| {
        apps.iter().all(|a| newest(a) >= first_frame + played)
    });
    assert!(
        played_in,
        "the match reached frame {}",
        first_frame + played
    );
    let at = newest(&apps[0]);
    let t0 = Instant::now();
    apps.push(game());
    let mut caught_up = None;
    run(&mut apps, Duration::from_secs(600), |apps| {
        let target = apps[0].world().resource::<RollbackStats>().confirmed_frame;
        let watching =
            apps[2].world().resource::<RollbackMatch>().phase == RollbackPhase::Spectating;
        if watching && newest(&apps[2]) >= target.max(at) - CAUGHT_UP {
            caught_up = Some(t0.elapsed());
        }
        caught_up.is_some()
    });
    let stats = apps[2].world().resource::<RollbackStats>();
    Join {
        caught_up,
        at,
        snapshot: stats.snapshot_frame.map(|f| (f, stats.snapshot_bytes)),
    }
}
