//! The native build: a window or headless, and with no arguments a server and a bot too.

use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::PeerLinks;
use clap::Parser;
use huddle_examples::lobby::{short, ChatLog, LobbyGame, Pilot, Squares};
use huddle_examples::lobby_media::{Heard, LobbyMedia};
use huddle_examples::local::host_with_bot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `--host-by-upload`, for every app of the process.
static HOST_BY_UPLOAD: AtomicBool = AtomicBool::new(false);

/// huddle's lobby demo.
#[derive(Parser, Debug)]
struct Args {
    /// Join this room instead of hosting one with a bot.
    #[arg(long)]
    room: Option<String>,
    /// Browse the rooms of this server (`ws://host:3536`): list them, then join the first with a
    /// free seat (`lobby` if none).
    #[arg(long, conflicts_with = "room")]
    browse: Option<String>,
    /// No window: print the lobby once a second.
    #[arg(long)]
    headless: bool,
    /// Leave the room and quit after this many frames (60 a second); exit code 1 if the lobby
    /// never formed.
    #[arg(long)]
    frames: Option<u32>,
    /// No voice or camera (they are on by default: a tone and a test pattern when headless, the
    /// M and C keys in the window).
    #[arg(long)]
    no_media: bool,
    /// A STUN or TURN server for play across NATs: `stun:host:port` or
    /// `turn:user:credential@host:port` (repeat for more).
    #[arg(long)]
    ice: Vec<String>,
    /// Your name, shown to the others (player metadata in the hello).
    #[arg(long)]
    name: Option<String>,
    /// Big lobbies: the host measures everyone's upload, and the one with the most headroom
    /// hosts after it (every player should pass it).
    #[arg(long)]
    host_by_upload: bool,
}

/// The demo's settings for `room` (none: it joins once it browsed): media on unless
/// `--no-media`, our name as player metadata, the next host chosen by upload with
/// `--host-by-upload`.
fn config(room: Option<&str>, media: bool, name: &str) -> HuddleConfig {
    let mut config = room.map(HuddleConfig::room).unwrap_or_default();
    config.media.enabled = media;
    config.protocol.host_by_upload = HOST_BY_UPLOAD.load(Ordering::Relaxed);
    config.ice_servers = huddle_examples::ice();
    let short_name: String = name.chars().take(64).collect();
    // 64 characters always fit in the 1 KiB of metadata.
    config.clone().with_metadata(&short_name).unwrap_or(config)
}

/// A peer as the status line shows it: its name and short id.
fn label(roster: &Roster, peer: PeerId) -> String {
    match roster.metadata::<String>(peer) {
        Some(name) => format!("{name} {}", short(peer)),
        None => short(peer),
    }
}

/// `--browse`: asks `server` for its rooms at start, prints them, and joins the first with a
/// free seat.
fn browse(app: &mut App, server: String) {
    let ask = server.clone();
    app.add_systems(Startup, move |mut commands: Commands| {
        commands.list_rooms(ask.clone())
    });
    app.add_systems(
        Update,
        move |mut lists: MessageReader<RoomList>, mut commands: Commands| {
            for list in lists.read() {
                let rooms = match &list.rooms {
                    Ok(rooms) => rooms,
                    Err(e) => {
                        error!("cannot list the rooms of {server}: {e}");
                        continue;
                    }
                };
                for room in rooms {
                    info!(
                        "room {}: {}/{} peers, {}",
                        room.path, room.peers, room.capacity, room.topology
                    );
                }
                let open = rooms
                    .iter()
                    .find(|r| r.peers < r.capacity && r.next.is_none());
                let path = open.map_or("lobby", |r| r.path.as_str());
                info!("joining room {path}");
                commands.connect_huddle(format!("{}/{path}", server.trim_end_matches('/')));
            }
        },
    );
}

fn app(room: Option<&str>, frames: Option<u32>, windowed: bool, media: bool, name: &str) -> App {
    let mut app = match windowed {
        #[cfg(feature = "window")]
        true => huddle_examples::window_app(huddle_examples::window::LobbyWindow),
        _ => huddle_examples::headless_app(true),
    };
    let pilot = if windowed { Pilot::Player } else { Pilot::Bot };
    app.add_plugins(HuddlePlugin::new(config(room, media, name)))
        .add_plugins(LobbyGame { pilot })
        .add_plugins(LobbyMedia {
            tone: 440.0,
            autostart: media && !windowed,
        });
    if let Some(frames) = frames {
        // Leave (the others hear it at once), then quit a few frames later.
        app.add_systems(
            Last,
            move |mut n: Local<u32>,
                  mut formed: Local<bool>,
                  state: Res<State<LobbyState>>,
                  mut commands: Commands,
                  mut exit: MessageWriter<AppExit>| {
                *n += 1;
                if *n == frames {
                    *formed = *state.get() == LobbyState::InLobby;
                    commands.leave_huddle();
                }
                if *n >= frames + 10 {
                    exit.write(if *formed {
                        AppExit::Success
                    } else {
                        AppExit::error()
                    });
                }
            },
        );
    }
    app
}

fn print_lobby(
    time: Res<Time>,
    mut last: Local<f32>,
    state: Res<State<LobbyState>>,
    roster: Res<Roster>,
    links: Res<PeerLinks>,
    (squares, chat, heard): (Res<Squares>, Res<ChatLog>, Res<Heard>),
) {
    if time.elapsed_secs() - *last < 1.0 {
        return;
    }
    *last = time.elapsed_secs();
    let me = roster
        .me
        .map(|p| label(&roster, p))
        .unwrap_or_else(|| "?".into());
    let host = roster
        .host
        .map(|p| label(&roster, p))
        .unwrap_or_else(|| "?".into());
    let next = roster
        .next_host
        .map(|p| label(&roster, p))
        .unwrap_or_else(|| "-".into());
    let peers: Vec<String> = roster
        .peers
        .iter()
        .map(|p| {
            let rtt = links
                .0
                .get(p)
                .and_then(|l| l.rtt)
                .map(|r| format!("{:.1} ms", r.as_secs_f64() * 1e3));
            // As host with --host-by-upload: the upload headroom we measured.
            let up = links
                .0
                .get(p)
                .and_then(|l| l.upload_headroom)
                .map(|b| format!(" up {:.1} Mbit/s", b as f64 / 1e6))
                .unwrap_or_default();
            let at = squares
                .0
                .get(p)
                .map(|s| format!("({:.0},{:.0})", s.x, s.y))
                .unwrap_or_default();
            let hears = heard.0.get(p).map(|h| {
                let voice = h
                    .frequency
                    .map(|f| format!("{f:.0} Hz at {:.0} dBFS", h.level_db))
                    .unwrap_or_else(|| "silence".into());
                let frame = h
                    .frame
                    .map(|i| format!("frame {i}"))
                    .unwrap_or("no video".into());
                format!(" hears {voice}, sees {frame}")
            });
            format!(
                "{} {at} rtt {}{up}{}",
                label(&roster, *p),
                rtt.unwrap_or_else(|| "-".into()),
                hears.unwrap_or_default()
            )
        })
        .collect();
    info!(
        "{:?} | me {me} | host {host} | next {next} | peers: [{}] | last chat: {:?}",
        state.get(),
        peers.join(", "),
        chat.0.last().map(|(f, l)| format!("{}: {l}", short(*f)))
    );
}

/// The bot: a headless player that quits a second after `frames`.
fn bot(room: &str, frames: Option<u32>, media: bool) -> App {
    let mut bot = huddle_examples::headless_app(false);
    bot.add_plugins(HuddlePlugin::new(config(Some(room), media, "bot")))
        .add_plugins(LobbyGame { pilot: Pilot::Bot })
        .add_plugins(LobbyMedia {
            tone: 550.0,
            autostart: media,
        });
    if let Some(frames) = frames {
        bot.add_systems(
            Last,
            move |mut n: Local<u32>, mut exit: MessageWriter<AppExit>| {
                *n += 1;
                if *n >= frames + 60 {
                    exit.write(AppExit::Success);
                }
            },
        );
    }
    bot
}

pub fn main() -> AppExit {
    let args = Args::parse();
    HOST_BY_UPLOAD.store(args.host_by_upload, Ordering::Relaxed);
    let name = args.name.clone().unwrap_or_else(|| "you".into());
    if let Err(e) = huddle_examples::set_ice(&args.ice) {
        eprintln!("{e}");
        return AppExit::error();
    }
    let windowed = cfg!(feature = "window") && !args.headless;
    if !windowed && !args.headless {
        eprintln!("built without the `window` feature: running headless");
    }
    if let Some(server) = args.browse {
        let mut app = app(None, args.frames, windowed, !args.no_media, &name);
        browse(&mut app, server);
        app.add_systems(Update, print_lobby);
        return app.run();
    }
    // With no room, host one here and add a bot player on a thread of its own.
    let (_server, room) = match args.room {
        Some(room) => (None, room),
        None => {
            let (frames, media) = (args.frames, !args.no_media);
            match host_with_bot("lobby", Duration::from_millis(700), move |room| {
                bot(&room, frames, media).run();
            }) {
                Ok((server, room)) => (Some(server), room),
                Err(e) => {
                    eprintln!("{e}");
                    return AppExit::error();
                }
            }
        }
    };
    let mut app = app(Some(&room), args.frames, windowed, !args.no_media, &name);
    app.add_systems(Update, print_lobby);
    app.run()
}
