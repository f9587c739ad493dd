//! The room-URL contract between clients and the server: `ws://host:port/<room>?next=N&
//! topology=star&capacity=N&private=1`. One parse and one format, used by the plugin (to decide
//! and ask for its topology) and by the server (to make the room).
//!
//! The first peer of a room fixes its settings; later peers join the room as it is. Parameters
//! this contract does not know are kept as they came (a server in front may use them).

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;

/// The room used when a client connects to `/` with no path (as matchbox_server does).
pub const DEFAULT_ROOM: &str = "world";

/// How the peers of a room are linked, and how the server introduces them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// Every peer to every peer: every newcomer is introduced to everyone in the room. Best for
    /// 2-4 players and for rollback.
    #[default]
    Mesh,
    /// Every peer to the host only, which relays: a newcomer is introduced to the host only, and
    /// when the host leaves, the oldest remaining peer becomes host and is introduced to all
    /// others. For big lobbies.
    Star,
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Topology::Mesh => "mesh",
            Topology::Star => "star",
        })
    }
}

impl FromStr for Topology {
    type Err = RoomError;

    fn from_str(s: &str) -> Result<Self, RoomError> {
        match s {
            "mesh" => Ok(Topology::Mesh),
            "star" => Ok(Topology::Star),
            v => Err(invalid("topology", v, "`mesh` or `star`")),
        }
    }
}

/// What a connecting peer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomRequest {
    /// The URL path naming the room (`world` for `/`).
    pub path: String,
    /// `?next=N`: form a fresh room from each next N arrivals on this path.
    pub next: Option<NonZeroUsize>,
    /// `?topology=mesh|star`; a mesh when absent.
    pub topology: Option<Topology>,
    /// `?capacity=N`: the most peers the room holds at once (the server's maximum when absent).
    pub capacity: Option<NonZeroUsize>,
    /// `?private=1`: the room is not listed by the server's `GET /rooms`.
    pub private: bool,
    /// Query parameters this contract does not know, in their order.
    pub extra: Vec<(String, String)>,
}

/// Why a room request cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// A query parameter could not be parsed.
    #[error("invalid query parameter `{name}={value}`: {why}")]
    InvalidParameter {
        /// The parameter's name.
        name: String,
        /// The value the client sent.
        value: String,
        /// What is expected instead.
        why: &'static str,
    },
    /// `?capacity=N` above what the server allows.
    #[error("capacity {asked} exceeds the server maximum of {max} peers per room")]
    CapacityTooLarge {
        /// The capacity the client asked for.
        asked: usize,
        /// The server's maximum.
        max: usize,
    },
    /// `?next=N` above what the server allows per room (the group could never meet).
    #[error("next={asked} exceeds the server maximum of {max} peers per room")]
    NextTooLarge {
        /// The group size the client asked for.
        asked: usize,
        /// The server's maximum.
        max: usize,
    },
    /// The URL is not `ws://host[:port]/...` or `wss://...`.
    #[error("not a websocket URL: `{0}`")]
    NotAWebsocketUrl(String),
}

fn invalid(name: &str, value: &str, why: &'static str) -> RoomError {
    RoomError::InvalidParameter {
        name: name.to_string(),
        value: value.to_string(),
        why,
    }
}

fn whole(name: &str, v: &str) -> Result<NonZeroUsize, RoomError> {
    v.parse()
        .map_err(|_| invalid(name, v, "a whole number of at least 1"))
}

impl RoomRequest {
    /// Reads a request from the URL path (without the leading `/`) and the query parameters.
    pub fn from_query<'a>(
        path: Option<&str>,
        query: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, RoomError> {
        let mut request = RoomRequest {
            path: match path {
                Some(p) if !p.is_empty() => p.to_string(),
                _ => DEFAULT_ROOM.to_string(),
            },
            ..Self::default()
        };
        for (name, value) in query {
            match name {
                "next" => request.next = Some(whole(name, value)?),
                "capacity" => request.capacity = Some(whole(name, value)?),
                "topology" => request.topology = Some(value.parse()?),
                "private" => {
                    request.private = match value {
                        "0" | "false" => false,
                        "1" | "true" | "" => true,
                        v => return Err(invalid(name, v, "`1`/`true` or `0`/`false`")),
                    }
                }
                _ => request.extra.push((name.to_string(), value.to_string())),
            }
        }
        Ok(request)
    }

    /// The room's topology: as asked, or a mesh.
    pub fn topology(&self) -> Topology {
        self.topology.unwrap_or_default()
    }

    /// The seats the room holds on a server that allows `max` peers per room: as asked (refused
    /// above `max`), never more than a match-of-N needs (a match of more than `max` is refused).
    pub fn capacity_within(&self, max: usize) -> Result<usize, RoomError> {
        if let Some(n) = self.next.filter(|n| n.get() > max) {
            return Err(RoomError::NextTooLarge {
                asked: n.get(),
                max,
            });
        }
        let capacity = match self.capacity {
            Some(asked) if asked.get() > max => {
                return Err(RoomError::CapacityTooLarge {
                    asked: asked.get(),
                    max,
                })
            }
            Some(asked) => asked.get(),
            None => max,
        };
        Ok(self.next.map_or(capacity, |n| capacity.min(n.get())))
    }

    /// The room size the request names (`?capacity`, else `?next`), if any.
    pub fn size(&self) -> Option<usize> {
        self.capacity.or(self.next).map(NonZeroUsize::get)
    }

    /// The query string (without `?`), parameters in a fixed order, unknown ones last.
    pub fn query(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(n) = self.next {
            parts.push(format!("next={n}"));
        }
        if let Some(c) = self.capacity {
            parts.push(format!("capacity={c}"));
        }
        if let Some(t) = self.topology {
            parts.push(format!("topology={t}"));
        }
        if self.private {
            parts.push("private=1".to_string());
        }
        parts.extend(self.extra.iter().map(|(k, v)| format!("{k}={v}")));
        parts.join("&")
    }
}

/// What `GET /rooms` tells of a public room (one entry of the JSON list huddle_server serves).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomInfo {
    /// The URL path.
    pub path: String,
    /// `N` for a match-of-N room.
    pub next: Option<usize>,
    /// Peers in the room now.
    pub peers: usize,
    /// The most peers it holds.
    pub capacity: usize,
    /// Mesh or star.
    pub topology: Topology,
    /// The host's peer id.
    pub host: Option<String>,
}

/// The room list's URL on the server of a room URL or server address: `ws://host:3536/lobby?next=2`
/// → `http://host:3536/rooms` (`wss://` → `https://`; `http(s)://` addresses are taken as they
/// are). `None` for anything else.
pub fn rooms_url(server: &str) -> Option<String> {
    let (scheme, rest) = http_scheme(server)?;
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .filter(|h| !h.is_empty())?;
    Some(format!("{scheme}{host}/rooms"))
}

/// The URL that asks a huddle_server whether it would admit a websocket request for
/// `room_url` (`GET /admit/<room>?<query>`): `ws://host:3536/lobby?next=2` →
/// `http://host:3536/admit/lobby?next=2` (the default room when the URL names none). Browsers
/// use it to learn why a websocket was refused. `None` for anything but `ws(s)://`.
pub fn admit_url(room_url: &str) -> Option<String> {
    room_endpoint(room_url, "admit")
}

/// The URL of a room's ICE servers on its huddle_server (`GET /ice/<room>?<query>`, the query
/// with its join token): `ws://host:3536/lobby?token=t` → `http://host:3536/ice/lobby?token=t`.
pub fn ice_url(room_url: &str) -> Option<String> {
    room_endpoint(room_url, "ice")
}

/// `http(s)://host/<endpoint>/<room>?<query>` for a `ws(s)://host/<room>?<query>` room URL.
fn room_endpoint(room_url: &str, endpoint: &str) -> Option<String> {
    if !room_url.starts_with("ws") {
        return None;
    }
    let (scheme, rest) = http_scheme(room_url)?;
    let (base, query) = rest
        .split_once('?')
        .map_or((rest, None), |(b, q)| (b, Some(q)));
    let (host, path) = base.split_once('/').unwrap_or((base, ""));
    if host.is_empty() {
        return None;
    }
    let path = if path.is_empty() { DEFAULT_ROOM } else { path };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("{scheme}{host}/{endpoint}/{path}{query}"))
}

/// The HTTP scheme of a server's plain requests for `url` (`ws://` and `http://` → `http://`,
/// `wss://` and `https://` → `https://`) and what follows the scheme.
fn http_scheme(url: &str) -> Option<(&'static str, &str)> {
    [
        ("ws://", "http://"),
        ("wss://", "https://"),
        ("http://", "http://"),
        ("https://", "https://"),
    ]
    .iter()
    .find_map(|(from, to)| url.strip_prefix(from).map(|rest| (*to, rest)))
}

/// Reads `GET /rooms`'s answer (a JSON list of [`RoomInfo`]), at most `max` rooms of it.
pub fn parse_room_list(body: &str, max: usize) -> Result<Vec<RoomInfo>, String> {
    let mut rooms: Vec<RoomInfo> =
        serde_json::from_str(body).map_err(|e| format!("not a room list: {e}"))?;
    rooms.truncate(max);
    Ok(rooms)
}

/// A room URL: the server's address and the room request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomUrl {
    /// `ws://host:port` or `wss://host:port`, without a trailing `/`.
    pub server: String,
    /// The room asked for.
    pub request: RoomRequest,
}

impl FromStr for RoomUrl {
    type Err = RoomError;

    fn from_str(url: &str) -> Result<Self, RoomError> {
        let not_ws = || RoomError::NotAWebsocketUrl(url.to_string());
        let scheme_end = ["ws://", "wss://"]
            .iter()
            .find_map(|s| url.starts_with(s).then_some(s.len()))
            .ok_or_else(not_ws)?;
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (server, path) = match base[scheme_end..].find('/') {
            Some(i) => (&base[..scheme_end + i], &base[scheme_end + i + 1..]),
            None => (base, ""),
        };
        if server.len() == scheme_end {
            return Err(not_ws());
        }
        let pairs = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")));
        Ok(RoomUrl {
            server: server.to_string(),
            request: RoomRequest::from_query(Some(path), pairs)?,
        })
    }
}

impl fmt::Display for RoomUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.server, self.request.path)?;
        let query = self.request.query();
        if !query.is_empty() {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_room_list_is_on_the_rooms_server() {
        assert_eq!(
            rooms_url("ws://127.0.0.1:3536/lobby?next=2").as_deref(),
            Some("http://127.0.0.1:3536/rooms")
        );
        assert_eq!(
            rooms_url("wss://play.example:443").as_deref(),
            Some("https://play.example:443/rooms")
        );
        assert_eq!(
            rooms_url("http://h:1/anything").as_deref(),
            Some("http://h:1/rooms")
        );
        for bad in ["", "ws://", "ftp://h/x", "lobby"] {
            assert_eq!(rooms_url(bad), None, "{bad}");
        }
        let body = r#"[{"path":"a","next":null,"peers":2,"capacity":8,"topology":"mesh","host":"x"},
            {"path":"b","next":4,"peers":1,"capacity":4,"topology":"star","host":null}]"#;
        let rooms = parse_room_list(body, 10).unwrap_or_default();
        assert_eq!(rooms.len(), 2);
        assert_eq!(
            (rooms[1].next, rooms[1].topology),
            (Some(4), Topology::Star)
        );
        assert_eq!(parse_room_list(body, 1).map(|r| r.len()), Ok(1));
        assert!(parse_room_list("{\"not\": \"a list\"}", 10).is_err());
        assert_eq!(
            admit_url("ws://127.0.0.1:3536/lobby?next=2&token=x").as_deref(),
            Some("http://127.0.0.1:3536/admit/lobby?next=2&token=x")
        );
        assert_eq!(
            admit_url("wss://h:1").as_deref(),
            Some(&*format!("https://h:1/admit/{DEFAULT_ROOM}"))
        );
        assert_eq!(admit_url("http://h/x"), None);
        assert_eq!(
            ice_url("wss://h:1/duel?token=t").as_deref(),
            Some("https://h:1/ice/duel?token=t")
        );
    }

    use super::*;

    fn q<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        pairs.iter().copied()
    }

    #[test]
    fn defaults() {
        let r = RoomRequest::from_query(None, q(&[])).unwrap();
        assert_eq!(r.path, "world");
        assert_eq!(
            (r.next, r.topology(), r.private),
            (None, Topology::Mesh, false)
        );
        assert_eq!(r.capacity_within(64), Ok(64));
    }

    #[test]
    fn all_parameters() {
        let pairs = [
            ("next", "4"),
            ("topology", "star"),
            ("capacity", "8"),
            ("private", "1"),
            ("token", "abc"),
        ];
        let r = RoomRequest::from_query(Some("lobby"), q(&pairs)).unwrap();
        assert_eq!(r.path, "lobby");
        assert_eq!(r.next, NonZeroUsize::new(4));
        assert_eq!(r.topology(), Topology::Star);
        assert_eq!(r.capacity_within(64), Ok(4), "a next=4 room needs 4 seats");
        assert!(r.private);
        assert_eq!(r.extra, [("token".to_string(), "abc".to_string())]);
    }

    #[test]
    fn bad_parameters_are_refused_with_a_reason() {
        for (k, v) in [
            ("next", "0"),
            ("next", "x"),
            ("topology", "ring"),
            ("capacity", "0"),
            ("capacity", "99999999999999999999999"),
            ("private", "maybe"),
        ] {
            let err = RoomRequest::from_query(Some("a"), q(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
        let r = RoomRequest::from_query(Some("a"), q(&[("capacity", "65")])).unwrap();
        assert_eq!(
            r.capacity_within(64),
            Err(RoomError::CapacityTooLarge { asked: 65, max: 64 })
        );
    }

    #[test]
    fn urls_parse_and_format_back() {
        let url: RoomUrl = "ws://127.0.0.1:3536/lobby?capacity=8&x=1".parse().unwrap();
        assert_eq!(url.server, "ws://127.0.0.1:3536");
        assert_eq!(url.request.size(), Some(8));
        let mut star = url.clone();
        star.request.topology = Some(Topology::Star);
        assert_eq!(
            star.to_string(),
            "ws://127.0.0.1:3536/lobby?capacity=8&topology=star&x=1"
        );
        assert_eq!(star.to_string().parse::<RoomUrl>(), Ok(star));
        let bare: RoomUrl = "wss://h".parse().unwrap();
        assert_eq!(bare.to_string(), "wss://h/world");
        for bad in ["http://h/a", "ws://", "h/a", "ws://h/a?topology=ring"] {
            assert!(bad.parse::<RoomUrl>().is_err(), "{bad}");
        }
    }
}
