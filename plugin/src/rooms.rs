//! The room browser: `commands.list_rooms(server)` asks a huddle_server for its public rooms
//! (`GET /rooms`, off the game's thread); the answer arrives as a [`RoomList`] message.

use bevy::prelude::*;
pub use huddle_protocol::room::RoomInfo;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

/// Rooms read from one answer at most (huddle_server pages at 100 by default).
const MAX_ROOMS: usize = 1000;

/// The answer to a [`list_rooms`](crate::HuddleCommandsExt::list_rooms): the public rooms of a
/// server, or why they could not be read.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct RoomList {
    /// The URL asked (`http://host:port/rooms`).
    pub url: String,
    /// The rooms, sorted by path as the server lists them; or the error.
    pub rooms: Result<Vec<RoomInfo>, String>,
}

/// Room lists on their way to the game.
#[derive(Resource)]
pub(crate) struct RoomListAnswers {
    tx: Sender<RoomList>,
    rx: Mutex<Receiver<RoomList>>,
}

impl Default for RoomListAnswers {
    fn default() -> Self {
        let (tx, rx) = channel();
        Self {
            tx,
            rx: Mutex::new(rx),
        }
    }
}

/// Starts reading the room list of `server` (a room URL, `ws://host:port`, or `http(s)://...`);
/// the answer comes as a [`RoomList`].
pub(crate) fn request(world: &mut World, server: &str, roots: Vec<Vec<u8>>) {
    let tx = world.get_resource_or_init::<RoomListAnswers>().tx.clone();
    let Some(url) = huddle_protocol::room::rooms_url(server) else {
        let _ = tx.send(RoomList {
            url: server.to_string(),
            rooms: Err(format!(
                "`{server}` is not a ws://, wss:// or http(s):// address"
            )),
        });
        return;
    };
    fetch(url, roots, tx);
}

/// `PreUpdate`: hands the answers that arrived to the game.
pub(crate) fn deliver(answers: Option<Res<RoomListAnswers>>, mut out: MessageWriter<RoomList>) {
    let Some(answers) = answers else { return };
    let Ok(rx) = answers.rx.lock() else { return };
    while let Ok(list) = rx.try_recv() {
        out.write(list);
    }
}

/// Reads the list off the game's thread and sends it to the game.
fn fetch(url: String, roots: Vec<Vec<u8>>, tx: Sender<RoomList>) {
    crate::http_get::spawn(url.clone(), roots, move |body| {
        let rooms = body.and_then(|body| huddle_protocol::room::parse_room_list(&body, MAX_ROOMS));
        let _ = tx.send(RoomList { url, rooms });
    });
}
