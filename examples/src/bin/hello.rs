//! The smallest huddle game: join a room, see who comes and goes, greet them, read their greetings.
//! `cargo run --release -p huddle_server` starts a signaling server on :3536; then run
//! `cargo run -p huddle_examples --bin hello [ROOM_URL [SECONDS]]` in two or more terminals.
use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy_huddle::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Our one message type: every peer registers the same types.
#[derive(Serialize, Deserialize)]
struct Greeting(String);

fn main() {
    let mut args = std::env::args().skip(1);
    let room = args.next().unwrap_or("ws://127.0.0.1:3536/hello".into());
    let stay = args.next().and_then(|s| s.parse().ok());
    let frame = Duration::from_secs_f64(1.0 / 60.0);
    App::new()
        .add_plugins(MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(frame)))
        .add_plugins(bevy::log::LogPlugin {
            filter: bevy_huddle::LOG_FILTER.into(),
            ..Default::default()
        })
        .add_plugins(HuddlePlugin::new(HuddleConfig::room(room)))
        .add_huddle_message::<Greeting>(Channel::Reliable)
        .add_systems(Update, (greet, read, leave_after(stay)))
        .run();
}

/// Greets every peer that joins, and says who left.
fn greet(
    mut joined: MessageReader<PeerJoined>,
    mut left: MessageReader<PeerLeft>,
    mut out: MessageWriter<Outgoing<Greeting>>,
    roster: Res<Roster>,
) {
    for peer in joined.read().map(|j| j.peer) {
        info!("{peer} joined; the host is {:?}", roster.host);
        out.write(Outgoing::to_peer(peer, Greeting("hello!".into())));
    }
    for l in left.read() {
        info!("{} left ({:?})", l.peer, l.reason);
    }
}

/// Reads the greetings others sent us.
fn read(mut greetings: MessageReader<Incoming<Greeting>>) {
    for g in greetings.read() {
        info!("{} says {}", g.from, g.message.0);
    }
}

/// Leaves the room and quits after `seconds`, if given.
fn leave_after(seconds: Option<f64>) -> impl FnMut(Commands, Res<Time>, MessageWriter<AppExit>) {
    move |mut commands, time, mut exit| {
        if seconds.is_some_and(|s| time.elapsed_secs_f64() > s) {
            commands.leave_huddle();
            exit.write(AppExit::Success);
        }
    }
}
