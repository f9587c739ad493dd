//! The `ggrs` section: rollback matches of the box game (huddle_examples) under a clean link and
//! under 60 ms ± 10 ms latency with 5 % loss, all peers updated from one thread as often as
//! bevy_ggrs wants (it steps at 60 Hz by the clock).

use crate::{Conditions, LinkConditioner};
use bevy::prelude::*;
use bevy_huddle::{
    HuddleConfig, HuddlePlugin, RollbackMatch, RollbackPhase, RollbackStats, Topology,
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

/// A match of `n` box-game peers at `base`/`room` under `conditions`, measured for `window`.
/// Returns each peer's rates.
pub fn measure(
    base: &str,
    room: &str,
    n: usize,
    conditions: Option<Conditions>,
    window: Duration,
) -> Vec<Rates> {
    let url = format!("{base}/{room}");
    let mut apps: Vec<App> = (0..n)
        .map(|_| {
            let mut config = HuddleConfig::room(&url);
            config.topology = Topology::Mesh;
            config.rollback.players = n;
            let mut app = App::new();
            app.add_plugins(MinimalPlugins)
                .add_plugins(HuddlePlugin::new(config))
                .add_plugins(BoxGame { pilot: Pilot::Bot });
            if let Some(c) = conditions {
                app.insert_resource(LinkConditioner::both(c));
            }
            app
        })
        .collect();
    let run = |apps: &mut Vec<App>, until: &dyn Fn(&[App]) -> bool, limit: Duration| {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            for a in apps.iter_mut() {
                a.update();
            }
            if until(apps) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    };
    let started = run(
        &mut apps,
        &|apps| {
            apps.iter().all(|a| {
                a.world().resource::<RollbackMatch>().phase == RollbackPhase::Playing
                    && a.world().resource::<RollbackStats>().newest_frame >= 120
            })
        },
        Duration::from_secs(60),
    );
    assert!(started, "the match started");
    let before: Vec<_> = apps.iter().map(snapshot).collect();
    let t0 = Instant::now();
    run(&mut apps, &|_| false, window);
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
