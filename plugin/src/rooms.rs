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

/// Natively: a blocking GET (ureq) on a thread of its own.
#[cfg(not(target_arch = "wasm32"))]
fn fetch(url: String, roots: Vec<Vec<u8>>, tx: Sender<RoomList>) {
    let spawned = std::thread::Builder::new()
        .name("huddle-room-list".into())
        .spawn({
            let (url, tx) = (url.clone(), tx.clone());
            move || {
                let rooms = get(&url, &roots)
                    .and_then(|body| huddle_protocol::room::parse_room_list(&body, MAX_ROOMS));
                let _ = tx.send(RoomList { url, rooms });
            }
        });
    if let Err(e) = spawned {
        let _ = tx.send(RoomList {
            url,
            rooms: Err(format!("cannot start the request: {e}")),
        });
    }
}

/// The body of `GET url`, trusting `roots` (DER) instead of the web PKI when there are any.
#[cfg(not(target_arch = "wasm32"))]
fn get(url: &str, roots: &[Vec<u8>]) -> Result<String, String> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if !roots.is_empty() {
        let certs = roots
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect::<Vec<_>>();
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(4 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", body.trim()));
    }
    Ok(body)
}

/// In the browser: the page's `fetch`.
#[cfg(target_arch = "wasm32")]
fn fetch(url: String, _roots: Vec<Vec<u8>>, tx: Sender<RoomList>) {
    wasm_bindgen_futures::spawn_local(async move {
        let rooms = crate::web_fetch::get(&url)
            .await
            .and_then(|(status, body)| {
                if status != 200 {
                    return Err(format!("HTTP {status}: {}", body.trim()));
                }
                huddle_protocol::room::parse_room_list(&body, MAX_ROOMS)
            });
        let _ = tx.send(RoomList { url, rooms });
    });
}
