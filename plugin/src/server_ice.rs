//! ICE servers from the room's server (`HuddleConfig::ice_from_server`): before connecting, the
//! plugin asks huddle_server's `GET /ice/<room>` (with the room URL's join token) for its STUN
//! servers and short-lived TURN credentials, so a game never ships a TURN secret.

use crate::config::IceServer;
use crate::lobby::{connect_with, set_state};
use crate::messages::HuddleError;
use crate::schedule::LobbyState;
use bevy::prelude::*;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

/// Servers read from one answer at most.
const MAX_SERVERS: usize = 16;

/// One entry of the answer (WebRTC's `RTCIceServer` shape).
#[derive(serde::Deserialize)]
struct Entry {
    urls: Vec<String>,
    username: Option<String>,
    credential: Option<String>,
}

/// A room URL and its server's answer.
type Answer = (String, Result<Vec<IceServer>, String>);

/// Answers on their way, and the room that waits for its answer.
#[derive(Resource)]
pub(crate) struct ServerIce {
    tx: Sender<Answer>,
    rx: Mutex<Receiver<Answer>>,
    /// The room URL whose ICE servers we wait for (a leave or another join forgets it).
    pending: Option<String>,
}

impl Default for ServerIce {
    fn default() -> Self {
        let (tx, rx) = channel();
        Self {
            tx,
            rx: Mutex::new(rx),
            pending: None,
        }
    }
}

/// Reads the ICE servers answer.
fn parse(body: &str) -> Result<Vec<IceServer>, String> {
    let entries: Vec<Entry> =
        serde_json::from_str(body).map_err(|e| format!("not a list of ICE servers: {e}"))?;
    Ok(entries
        .into_iter()
        .take(MAX_SERVERS)
        .map(|e| IceServer {
            urls: e.urls,
            username: e.username,
            credential: e.credential,
        })
        .collect())
}

/// Asks `room_url`'s server for its ICE servers; the join goes on when they come.
pub(crate) fn request(world: &mut World, room_url: &str, roots: Vec<Vec<u8>>) {
    let mut ice = world.get_resource_or_init::<ServerIce>();
    ice.pending = Some(room_url.to_string());
    let tx = ice.tx.clone();
    let url = room_url.to_string();
    let Some(endpoint) = huddle_protocol::room::ice_url(room_url) else {
        let _ = tx.send((
            url,
            Err(format!("`{room_url}` is not a ws:// or wss:// room URL")),
        ));
        return;
    };
    crate::http_get::spawn(endpoint, roots, move |body| {
        let _ = tx.send((url, body.and_then(|b| parse(&b))));
    });
}

/// Forgets the room that waits for its ICE servers (we left, or join another).
pub(crate) fn forget(world: &mut World) {
    if let Some(mut ice) = world.get_resource_mut::<ServerIce>() {
        ice.pending = None;
    }
}

/// `PreUpdate`: joins the waiting room once its ICE servers came (or reports why they did not).
pub(crate) fn deliver(world: &mut World) {
    let answers: Vec<_> = match world.get_resource::<ServerIce>() {
        Some(ice) => match ice.rx.lock() {
            Ok(rx) => rx.try_iter().collect(),
            Err(_) => Vec::new(),
        },
        None => return,
    };
    for (url, servers) in answers {
        let Some(mut ice) = world.get_resource_mut::<ServerIce>() else {
            return;
        };
        if ice.pending.as_deref() != Some(url.as_str()) {
            continue;
        }
        ice.pending = None;
        let mut config = world
            .get_resource::<crate::HuddleSettings>()
            .map(|s| s.0.clone())
            .unwrap_or_default();
        match servers {
            Ok(mut servers) => {
                servers.append(&mut config.ice_servers);
                config.ice_servers = servers;
                connect_with(world, &url, &config);
            }
            Err(e) => {
                let error = HuddleError::Signaling(format!("the ICE servers of {url}: {e}"));
                warn!("huddle: {error}");
                world.write_message(error);
                set_state(world, LobbyState::Offline);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_and_bounded() {
        let body = r#"[{"urls":["stun:s:3478"]},{"urls":["turn:t:3478"],"username":"1:a","credential":"c"}]"#;
        let servers = parse(body).unwrap_or_default();
        assert_eq!(servers[0], IceServer::stun("stun:s:3478"));
        assert_eq!(servers[1], IceServer::turn("turn:t:3478", "1:a", "c"));
        let many = format!("[{}]", vec![r#"{"urls":[]}"#; 100].join(","));
        assert_eq!(parse(&many).map(|s| s.len()), Ok(MAX_SERVERS));
        assert!(parse("{}").is_err());
    }
}
