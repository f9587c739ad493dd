//! The native build: a window or headless, and with no arguments a server and a bot too.

use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::{HuddleSession, RollbackMatch, RollbackPhase};
use clap::Parser;
use huddle_examples::box_game::{
    final_checksum, synctest_app, BoxGame, FrameChecksums, SyncTestFailures,
};
use huddle_examples::lobby::Pilot;
use huddle_examples::local::host_with_bot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// huddle's box game.
#[derive(Parser, Debug)]
struct Args {
    /// Join this room instead of hosting one with a bot.
    #[arg(long)]
    room: Option<String>,
    /// No window; a bot plays for us.
    #[arg(long)]
    headless: bool,
    /// Stop once frame N is final and print the world's checksum at it.
    #[arg(long)]
    frames: Option<i32>,
    /// Players in the match (later peers watch).
    #[arg(long, default_value_t = 2)]
    players: usize,
    /// Check the game is rollback-safe: a local GGRS SyncTest session, no network.
    #[arg(long)]
    synctest: bool,
    /// A STUN or TURN server for play across NATs: `stun:host:port` or
    /// `turn:user:credential@host:port` (repeat for more).
    #[arg(long)]
    ice: Vec<String>,
    /// Take the ICE servers from the room's huddle_server (`GET /ice/<room>`: its STUN servers
    /// and short-lived TURN credentials), before those of `--ice`.
    #[arg(long)]
    ice_from_server: bool,
}

/// `--ice-from-server`, for every app of the process.
static ICE_FROM_SERVER: AtomicBool = AtomicBool::new(false);

fn config(room: &str) -> HuddleConfig {
    let mut config = HuddleConfig::room(room);
    config.topology = Some(Topology::Mesh);
    config.ice_servers = huddle_examples::ice();
    config.ice_from_server = ICE_FROM_SERVER.load(Ordering::Relaxed);
    config
}

/// Prints the path each link took (`link <peer> <ours>/<theirs>`: host, server-reflexive,
/// peer-reflexive or relayed candidates), for scripts and the NAT tests.
fn print_paths(world: &World) {
    let Some(session) = world.get_resource::<HuddleSession>() else {
        return;
    };
    for peer in session.peers() {
        if let Some(path) = session.link_stats(*peer).and_then(|s| s.path) {
            println!("link {peer} {:?}/{:?}", path.local, path.remote);
        }
    }
}

/// Quits once frame `n` is final, printing its checksum; lingers a second so the others get our
/// last inputs. Gives up (exit code 1) after a generous time.
fn stop_at(n: i32) -> impl FnMut(&mut World) {
    let mut done_at: Option<Instant> = None;
    let limit = Instant::now() + Duration::from_secs(60) + Duration::from_millis(n as u64 * 50);
    move |world: &mut World| {
        let now = Instant::now();
        if done_at.is_none() {
            if let Some(sum) = final_checksum(world, n) {
                let phase = world.resource::<RollbackMatch>().phase;
                println!("frame {n} checksum {sum:016x} ({phase:?})");
                print_paths(world);
                done_at = Some(now);
            }
        }
        let ended = world.resource::<RollbackMatch>().phase == RollbackPhase::Ended;
        if done_at.is_some_and(|t| now - t > Duration::from_secs(1)) {
            world.write_message(AppExit::Success);
        } else if now > limit || ended {
            eprintln!("frame {n} was not reached");
            world.write_message(AppExit::error());
        }
    }
}

/// The game's app; `bot` is the opponent on a thread beside a local player (no logger of its own).
fn app(room: &str, players: usize, frames: Option<i32>, windowed: bool, bot: bool) -> App {
    let mut app = match windowed {
        #[cfg(feature = "window")]
        true => huddle_examples::window_app(huddle_examples::box_window::BoxWindow),
        _ => huddle_examples::headless_app(!bot),
    };
    let pilot = if windowed { Pilot::Player } else { Pilot::Bot };
    app.add_plugins(HuddlePlugin::new(config(room)))
        .add_plugins(BoxGame::new(pilot, players));
    if let Some(n) = frames {
        app.add_systems(Last, (connect_time(Instant::now()), stop_at(n)));
    }
    app
}

/// Prints once how long after `start` the first link opened (`connected in <ms> ms`), for the
/// NAT lab's figures: signaling, ICE gathering (STUN, TURN allocations), checks, DTLS and SCTP.
fn connect_time(start: Instant) -> impl FnMut(&mut World) {
    let mut printed = false;
    move |world: &mut World| {
        let Some(session) = world.get_resource::<HuddleSession>() else {
            return;
        };
        let open = session
            .peers()
            .iter()
            .any(|p| session.link_stats(*p).is_some_and(|s| s.path.is_some()));
        if open && !printed {
            printed = true;
            println!("connected in {} ms", start.elapsed().as_millis());
        }
    }
}

fn synctest(frames: i32) -> AppExit {
    let mut app = match synctest_app(2, 7) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("cannot start the sync test: {e}");
            return AppExit::error();
        }
    };
    // As fast as it goes: bevy_ggrs steps by the clock, so give it a fixed 60 Hz clock.
    app.insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(
        Duration::from_secs_f64(1.0 / 60.0),
    ));
    while app.world().resource::<FrameChecksums>().0.keys().last() < Some(&frames) {
        app.update();
    }
    let failures = app.world().resource::<SyncTestFailures>().0;
    let sum = app
        .world()
        .resource::<FrameChecksums>()
        .0
        .get(&frames)
        .copied();
    println!("synctest: {frames} frames, {failures} mismatches, checksum {sum:016x?}");
    if failures == 0 {
        AppExit::Success
    } else {
        AppExit::error()
    }
}

pub fn main() -> AppExit {
    let args = Args::parse();
    ICE_FROM_SERVER.store(args.ice_from_server, Ordering::Relaxed);
    if let Err(e) = huddle_examples::set_ice(&args.ice) {
        eprintln!("{e}");
        return AppExit::error();
    }
    if args.synctest {
        return synctest(args.frames.unwrap_or(600));
    }
    let windowed = cfg!(feature = "window") && !args.headless;
    if !windowed && !args.headless {
        eprintln!("built without the `window` feature: running headless");
    }
    // With no room, host one here and add a bot player on a thread of its own.
    let (_server, room) = match args.room {
        Some(room) => (None, room),
        None => {
            let (frames, players) = (args.frames, args.players);
            match host_with_bot("boxes", Duration::from_millis(500), move |room| {
                app(&room, players, frames, false, true).run();
            }) {
                Ok((server, room)) => (Some(server), room),
                Err(e) => {
                    eprintln!("{e}");
                    return AppExit::error();
                }
            }
        }
    };
    app(&room, args.players, args.frames, windowed, false).run()
}
