//! The plugin's settings.

use std::time::Duration;

/// A STUN or TURN server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port` URLs of one server.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN password or token.
    pub credential: Option<String>,
}

impl IceServer {
    /// A STUN server without credentials.
    pub fn stun(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            ..Self::default()
        }
    }

    /// A TURN server with its credentials.
    pub fn turn(
        url: impl Into<String>,
        username: impl Into<String>,
        credential: impl Into<String>,
    ) -> Self {
        Self {
            urls: vec![url.into()],
            username: Some(username.into()),
            credential: Some(credential.into()),
        }
    }
}

/// How the peers of a room are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// Every peer to every peer: best for 2-4 players and for rollback.
    Mesh,
    /// Every peer to the host only; the host relays. For big lobbies. Needs a server with star
    /// rooms (huddle_server: `?topology=star`, which the plugin adds to the room URL).
    Star,
    /// Mesh up to 4 players, star beyond, judged from the room URL's `?capacity=N` or `?next=N`
    /// (mesh when it has neither).
    #[default]
    Auto,
}

/// The room URL to join and whether it is a star room, for `topology`: adds `topology=star` to the
/// query when the room is a star.
pub fn resolve_room(room_url: &str, topology: Topology) -> (String, bool) {
    let query = room_url.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    };
    let asked = param("topology");
    let star = match topology {
        Topology::Star => true,
        Topology::Mesh => false,
        Topology::Auto => {
            asked == Some("star")
                || ["capacity", "next"]
                    .iter()
                    .filter_map(|n| param(n).and_then(|v| v.parse::<usize>().ok()))
                    .any(|n| n > 4)
        }
    };
    let url = match (star, asked) {
        (true, None) if room_url.contains('?') => format!("{room_url}&topology=star"),
        (true, None) => format!("{room_url}?topology=star"),
        _ => room_url.to_string(),
    };
    (url, star)
}

/// Settings of [`HuddlePlugin`](crate::HuddlePlugin).
#[derive(Debug, Clone)]
pub struct HuddleConfig {
    /// Room to join at startup (`ws://host:port/<room>`); `None` to connect later with
    /// [`HuddleCommandsExt::connect_huddle`](crate::HuddleCommandsExt::connect_huddle).
    pub room_url: Option<String>,
    /// STUN/TURN servers. Empty means host candidates only (LAN and loopback).
    ///
    /// matchbox_socket 0.15 takes one credential set: servers with credentials must share them
    /// (connecting with two different TURN credentials fails with a clear error).
    pub ice_servers: Vec<IceServer>,
    /// Mesh, star, or chosen from the room's size.
    pub topology: Topology,
    /// How long a newcomer waits for an earlier peer's offer before it decides it is the first in
    /// the room, and so the host.
    pub host_grace: Duration,
    /// Largest reliable message, after encoding (larger ones are refused at send).
    pub max_message_bytes: usize,
    /// Most bytes of unfinished chunked messages held per peer.
    pub max_pending_bytes: usize,
    /// Most chunk bytes in flight (sent, not yet acknowledged) per peer: bulk transfers are paced
    /// by this so they never starve game moves.
    pub bulk_window_bytes: usize,
    /// How often each link is pinged (for RTT and loss).
    pub ping_interval: Duration,
    /// GGRS session parameters (feature `ggrs`).
    #[cfg(feature = "ggrs")]
    pub rollback: crate::rollback::RollbackSettings,
}

impl Default for HuddleConfig {
    fn default() -> Self {
        Self {
            room_url: None,
            ice_servers: Vec::new(),
            topology: Topology::Auto,
            host_grace: Duration::from_millis(500),
            max_message_bytes: 16 * 1024 * 1024,
            max_pending_bytes: 32 * 1024 * 1024,
            bulk_window_bytes: 256 * 1024,
            ping_interval: Duration::from_millis(250),
            #[cfg(feature = "ggrs")]
            rollback: crate::rollback::RollbackSettings::default(),
        }
    }
}

impl HuddleConfig {
    /// Defaults, joining `room_url` at startup.
    pub fn room(room_url: impl Into<String>) -> Self {
        Self {
            room_url: Some(room_url.into()),
            ..Self::default()
        }
    }

    /// The ICE servers as matchbox_socket takes them (one credential set for all).
    pub(crate) fn matchbox_ice(&self) -> Result<matchbox_socket::RtcIceServerConfig, String> {
        let mut creds: Option<(Option<String>, Option<String>)> = None;
        let mut urls = Vec::new();
        for s in &self.ice_servers {
            urls.extend(s.urls.iter().cloned());
            if s.username.is_some() || s.credential.is_some() {
                let c = (s.username.clone(), s.credential.clone());
                match &creds {
                    Some(existing) if *existing != c => {
                        return Err("ICE servers with different credentials: matchbox_socket \
                                    0.15 takes one credential set"
                            .into())
                    }
                    _ => creds = Some(c),
                }
            }
        }
        let (username, credential) = creds.unwrap_or_default();
        Ok(matchbox_socket::RtcIceServerConfig {
            urls,
            username,
            credential,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_star_beyond_four() {
        let r = |url: &str, t| resolve_room(url, t);
        assert_eq!(r("ws://h/a", Topology::Auto), ("ws://h/a".into(), false));
        assert!(!r("ws://h/a?capacity=4", Topology::Auto).1);
        assert_eq!(
            r("ws://h/a?capacity=8", Topology::Auto),
            ("ws://h/a?capacity=8&topology=star".into(), true)
        );
        assert!(r("ws://h/a?next=6", Topology::Auto).1);
        assert_eq!(
            r("ws://h/a", Topology::Star),
            ("ws://h/a?topology=star".into(), true)
        );
        assert_eq!(
            r("ws://h/a?topology=star", Topology::Auto),
            ("ws://h/a?topology=star".into(), true)
        );
        assert!(!r("ws://h/a?capacity=8", Topology::Mesh).1);
    }

    #[test]
    fn ice_servers_merge_or_refuse() {
        let mut c = HuddleConfig::default();
        assert!(c.matchbox_ice().unwrap().urls.is_empty());
        c.ice_servers = vec![
            IceServer::stun("stun:a"),
            IceServer::turn("turn:b", "u", "p"),
        ];
        let ice = c.matchbox_ice().unwrap();
        assert_eq!(ice.urls, ["stun:a", "turn:b"]);
        assert_eq!(ice.username.as_deref(), Some("u"));
        c.ice_servers.push(IceServer::turn("turn:c", "other", "p"));
        assert!(c.matchbox_ice().is_err());
    }
}
