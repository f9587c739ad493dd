//! The box game: its systems are rollback-safe (GGRS SyncTest), a SyncTest does catch a system
//! that is not, and the binary plays a match with its bot and prints equal checksums.
//! The binary's test runs inside the loopback-only network namespace (see README).

mod common;

use bevy::prelude::*;
use bevy_huddle::bevy_ggrs::GgrsSchedule;
use huddle_examples::box_game::{
    checksum, start_positions, synctest_app, BoxBody, BoxSystems, FrameChecksums, SyncTestFailures,
};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs a SyncTest app for `frames` frames on a fixed 60 Hz clock (a mismatch stops it); returns
/// (mismatches, checksum at the last frame).
fn run(mut app: App, frames: i32) -> (u32, Option<u64>) {
    app.insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(
        Duration::from_secs_f64(1.0 / 60.0),
    ));
    for _ in 0..frames * 2 {
        app.update();
        let failures = app.world().resource::<SyncTestFailures>().0;
        if failures > 0
            || app
                .world()
                .resource::<FrameChecksums>()
                .0
                .contains_key(&frames)
        {
            break;
        }
    }
    let sum = app
        .world()
        .resource::<FrameChecksums>()
        .0
        .get(&frames)
        .copied();
    (app.world().resource::<SyncTestFailures>().0, sum)
}

#[test]
fn the_game_is_rollback_safe() {
    let app = synctest_app(2, 7).expect("a synctest session");
    let (failures, sum) = run(app, 300);
    assert_eq!(failures, 0);
    let sum = sum.expect("frame 300 ran");
    assert_ne!(sum, checksum(&start_positions(2)), "the boxes moved");
}

/// A system that keeps state outside the rollback (a `Local`) gives other results when frames
/// are resimulated: the SyncTest must notice, or the test above proves nothing.
#[test]
fn a_synctest_catches_a_system_that_is_not_rollback_safe() {
    let mut app = synctest_app(2, 7).expect("a synctest session");
    app.add_systems(
        GgrsSchedule,
        (|mut runs: Local<i32>, mut boxes: Query<&mut BoxBody>| {
            *runs += 1;
            for mut b in &mut boxes {
                b.x += *runs % 3;
            }
        })
        .after(BoxSystems),
    );
    let (failures, _) = run(app, 120);
    assert!(failures > 0, "the SyncTest saw the mismatch");
}

#[test]
fn the_binary_plays_a_match_with_its_bot_and_prints_equal_checksums() {
    let child = Command::new(env!("CARGO_BIN_EXE_box_game"))
        .args(["--headless", "--frames", "300"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the game starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (ok, stdout, stderr) = common::finish(child, deadline, "the game");
    assert!(ok, "{stdout}{stderr}");
    let sums: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("frame 300 checksum"))
        .collect();
    assert_eq!(sums.len(), 2, "the player and its bot: {stdout}");
    assert_eq!(
        sums[0].split_whitespace().nth(3),
        sums[1].split_whitespace().nth(3)
    );
}
