//! The plugin's settings, and how they and the room URL decide the room's topology.

pub use huddle_protocol::endpoint::ProtocolSettings;
pub use huddle_protocol::reconnect::ReconnectSettings;
use huddle_protocol::room::{RoomError, RoomUrl};
pub use huddle_protocol::Topology;

/// Rooms of more than this many peers are stars when the topology is left to the room URL.
pub const MESH_MAX: usize = 4;

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

    /// Reads a server from one line, as the examples take it (`--ice`, `?ice=`):
    /// `stun:host:port`, or `turn:user:credential@host:port` (also `turns:`); `?transport=...`
    /// stays on the URL.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::IceServer(spec.to_string());
        let (scheme, rest) = spec.split_once(':').ok_or_else(bad)?;
        if !["stun", "stuns", "turn", "turns"].contains(&scheme) || rest.is_empty() {
            return Err(bad());
        }
        match rest.rsplit_once('@') {
            None => Ok(Self::stun(spec)),
            Some((creds, host)) => {
                let (user, credential) = creds.split_once(':').ok_or_else(bad)?;
                if host.is_empty() || user.is_empty() {
                    return Err(bad());
                }
                Ok(Self::turn(format!("{scheme}:{host}"), user, credential))
            }
        }
    }

    /// Whether it is reachable from anywhere: not on loopback or a private network, so a NAT's
    /// public side can be learnt from it.
    fn is_public(&self) -> bool {
        self.urls.iter().any(|u| {
            let host = u.split_once(':').map_or("", |(_, r)| r);
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            !is_local_host(host.split(['?', '/']).next().unwrap_or_default())
        })
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

/// Whether `host` (`name`, `name:port`, `[v6]:port`) is this machine or a private network.
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    match name.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => name == "localhost" || name.ends_with(".local") || name.ends_with(".localhost"),
    }
}

/// Why the settings cannot be used to join a room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The room URL does not follow the room contract.
    #[error("bad room URL: {0}")]
    Room(#[from] RoomError),
    /// The settings ask for one topology and the room URL for another.
    #[error("the settings ask for a {configured} room, the room URL for a {url} room")]
    TopologyConflict {
        /// [`HuddleConfig::topology`].
        configured: Topology,
        /// The URL's `?topology=`.
        url: Topology,
    },
    /// An ICE server line that is not `stun:host:port` or `turn:user:credential@host:port`.
    #[error("not an ICE server: `{0}` (stun:host:port or turn:user:credential@host:port)")]
    IceServer(String),
    /// The player metadata is over the protocol's bound.
    #[error("player metadata of {0} bytes exceeds {max}", max = huddle_protocol::control::MAX_META)]
    MetadataTooLarge(usize),
    /// The player metadata could not be encoded.
    #[error("player metadata: {0}")]
    Metadata(String),
    /// matchbox_socket 0.15 takes one credential set for all ICE servers.
    #[error(
        "ICE servers with different credentials: matchbox_socket 0.15 takes one credential set"
    )]
    IceCredentials,
}

/// Settings of [`HuddlePlugin`](crate::HuddlePlugin).
#[derive(Debug, Clone, Default)]
pub struct HuddleConfig {
    /// Room to join at startup (`ws://host:port/<room>`); `None` to connect later with
    /// [`HuddleCommandsExt::connect_huddle`](crate::HuddleCommandsExt::connect_huddle).
    pub room_url: Option<String>,
    /// STUN/TURN servers. Empty means host candidates only (LAN and loopback).
    ///
    /// matchbox_socket 0.15 takes one credential set: servers with credentials must share them
    /// (connecting with two different TURN credentials fails with a clear error).
    pub ice_servers: Vec<IceServer>,
    /// Mesh or star; `None` (the default) leaves it to the room URL: its `?topology=`, else a
    /// star when its `?capacity=N` or `?next=N` is above [`MESH_MAX`], else a mesh. A star room
    /// needs a server with star rooms (huddle_server); the plugin adds `topology=star` to the URL.
    pub topology: Option<Topology>,
    /// The protocol's limits and timings: host grace, message and queue sizes, the bulk window,
    /// the ping interval (see [`ProtocolSettings`]).
    pub protocol: ProtocolSettings,
    /// Certificates (DER) the native signaller trusts for `wss://` besides the public web PKI:
    /// a server with a private or self-signed certificate. The browser uses its own trust store
    /// and ignores these.
    pub root_certificates: Vec<Vec<u8>>,
    /// Ask the room's huddle_server for ICE servers before joining (`GET /ice/<room>`, with the
    /// room URL's join token): its STUN servers and short-lived TURN credentials, taken before
    /// [`HuddleConfig::ice_servers`]. The game then ships no TURN secret. A server that does not
    /// answer ends the join with `HuddleError::Signaling`.
    pub ice_from_server: bool,
    /// Our player metadata (a name, a colour: [`HuddleConfig::with_metadata`]), sent to every
    /// peer in our hello and shown in their [`Roster`](crate::Roster); at most
    /// [`MAX_META`](huddle_protocol::control::MAX_META) bytes (1 KiB).
    pub metadata: Vec<u8>,
    /// Voice and camera (feature `media`, native and browser): whether media is on (off by default: it costs
    /// a second connection per peer), its bitrates and its jitter buffer.
    #[cfg(feature = "media")]
    pub media: crate::media::MediaSettings,
    /// Reconnecting when the connection to the signaling server drops: how soon, how often and
    /// for how long the plugin tries to resume its place in the room (a huddle_server holds it
    /// for its `--resume-grace-secs`) while the game goes on over the links
    /// ([`SignalingState::Reconnecting`](crate::SignalingState)).
    /// [`ReconnectSettings::NEVER`] turns it off.
    pub reconnect: ReconnectSettings,
}

impl HuddleConfig {
    /// Defaults, joining `room_url` at startup.
    pub fn room(room_url: impl Into<String>) -> Self {
        Self {
            room_url: Some(room_url.into()),
            ..Self::default()
        }
    }

    /// With `metadata` (any serde type; bincode 2) as our player metadata: a name, a colour. The
    /// others read it with [`Roster::metadata`](crate::Roster::metadata).
    pub fn with_metadata<T: serde::Serialize>(mut self, metadata: &T) -> Result<Self, ConfigError> {
        let bytes = bincode::serde::encode_to_vec(metadata, bincode::config::standard())
            .map_err(|e| ConfigError::Metadata(e.to_string()))?;
        if bytes.len() > huddle_protocol::control::MAX_META {
            return Err(ConfigError::MetadataTooLarge(bytes.len()));
        }
        self.metadata = bytes;
        Ok(self)
    }

    /// Whether this peer does media: the feature is on and `media.enabled` allows it.
    pub fn media_enabled(&self) -> bool {
        #[cfg(feature = "media")]
        return self.media.enabled;
        #[cfg(not(feature = "media"))]
        false
    }

    /// The room URL to join for `room_url` and the room's topology: the URL gains
    /// `topology=star` when the room is a star and the URL did not say so.
    pub fn resolve_room(&self, room_url: &str) -> Result<(String, Topology), ConfigError> {
        let mut url: RoomUrl = room_url.parse()?;
        let asked = url.request.topology;
        let topology = match (self.topology, asked) {
            (Some(configured), Some(url)) if configured != url => {
                return Err(ConfigError::TopologyConflict { configured, url })
            }
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) if url.request.size().is_some_and(|n| n > MESH_MAX) => Topology::Star,
            (None, None) => Topology::Mesh,
        };
        if topology == Topology::Star && asked.is_none() {
            url.request.topology = Some(Topology::Star);
            return Ok((url.to_string(), topology));
        }
        Ok((room_url.to_string(), topology))
    }

    /// The ICE servers as matchbox_socket takes them (one credential set for all).
    /// A warning when `room_url` is on the internet and no STUN or TURN server there is
    /// configured: players behind different NATs would then never connect (and time out with
    /// `HuddleError::ConnectTimeout`).
    pub fn ice_warning(&self, room_url: &str) -> Option<String> {
        let host = room_url
            .split_once("://")
            .map_or(room_url, |(_, rest)| rest)
            .split(['/', '?'])
            .next()
            .unwrap_or_default();
        if is_local_host(host) || self.ice_servers.iter().any(IceServer::is_public) {
            return None;
        }
        Some(format!(
            "the room is on {host}, but no STUN or TURN server outside this network is configured \
             (HuddleConfig::ice_servers): only players on the same network will connect"
        ))
    }

    pub(crate) fn matchbox_ice(&self) -> Result<matchbox_socket::RtcIceServerConfig, ConfigError> {
        let mut creds: Option<(Option<String>, Option<String>)> = None;
        let mut urls = Vec::new();
        for s in &self.ice_servers {
            urls.extend(s.urls.iter().cloned());
            if s.username.is_some() || s.credential.is_some() {
                let c = (s.username.clone(), s.credential.clone());
                match &creds {
                    Some(existing) if *existing != c => return Err(ConfigError::IceCredentials),
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
    fn ice_servers_from_one_line() {
        assert_eq!(
            IceServer::parse("stun:stun.example.com:3478"),
            Ok(IceServer::stun("stun:stun.example.com:3478"))
        );
        assert_eq!(
            IceServer::parse("turn:ann:s3:cret@turn.example.com:3478?transport=tcp"),
            Ok(IceServer::turn(
                "turn:turn.example.com:3478?transport=tcp",
                "ann",
                "s3:cret"
            ))
        );
        for bad in [
            "",
            "stun:",
            "http://x",
            "turn:@h:1",
            "turn:nocreds@h:1",
            "turn:a:b@",
        ] {
            assert!(IceServer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_room_on_the_internet_without_stun_is_warned_of() {
        let config = |ice: &[&str]| HuddleConfig {
            ice_servers: ice
                .iter()
                .filter_map(|s| IceServer::parse(s).ok())
                .collect(),
            ..HuddleConfig::default()
        };
        for local in [
            "ws://127.0.0.1:3536/a",
            "ws://localhost:3536/a",
            "ws://192.168.1.20:3536/a",
            "ws://[::1]:3536/a",
            "ws://box.local/a",
        ] {
            assert_eq!(config(&[]).ice_warning(local), None, "{local}");
        }
        let far = "wss://play.example.com/lobby?next=2";
        assert!(config(&[]).ice_warning(far).is_some());
        assert!(config(&["stun:127.0.0.1:3478"]).ice_warning(far).is_some());
        assert_eq!(
            config(&["stun:stun.example.com:3478"]).ice_warning(far),
            None
        );
        assert_eq!(
            config(&["turn:a:b@203.0.113.7:3478"]).ice_warning(far),
            None
        );
    }

    #[test]
    fn the_url_or_the_room_size_picks_the_topology() {
        let r = |url: &str, t: Option<Topology>| {
            HuddleConfig {
                topology: t,
                ..HuddleConfig::default()
            }
            .resolve_room(url)
        };
        let (mesh, star) = (Some(Topology::Mesh), Some(Topology::Star));
        assert_eq!(r("ws://h/a", None), Ok(("ws://h/a".into(), Topology::Mesh)));
        assert_eq!(r("ws://h/a?capacity=4", None).unwrap().1, Topology::Mesh);
        assert_eq!(
            r("ws://h/a?capacity=8", None),
            Ok(("ws://h/a?capacity=8&topology=star".into(), Topology::Star))
        );
        assert_eq!(r("ws://h/a?next=6", None).unwrap().1, Topology::Star);
        assert_eq!(
            r("ws://h/a", star),
            Ok(("ws://h/a?topology=star".into(), Topology::Star))
        );
        assert_eq!(
            r("ws://h/a?topology=star", None),
            Ok(("ws://h/a?topology=star".into(), Topology::Star))
        );
        assert_eq!(r("ws://h/a?capacity=8", mesh).unwrap().1, Topology::Mesh);
        assert_eq!(
            r("ws://h/a?capacity=8&topology=mesh", None).unwrap().1,
            Topology::Mesh,
            "the URL's word beats the size"
        );
    }

    #[test]
    fn a_topology_conflict_is_a_clear_error() {
        let config = HuddleConfig {
            topology: Some(Topology::Mesh),
            ..HuddleConfig::default()
        };
        assert_eq!(
            config.resolve_room("ws://h/a?topology=star"),
            Err(ConfigError::TopologyConflict {
                configured: Topology::Mesh,
                url: Topology::Star
            })
        );
        assert!(matches!(
            config.resolve_room("ws://h/a?topology=ring"),
            Err(ConfigError::Room(_))
        ));
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
