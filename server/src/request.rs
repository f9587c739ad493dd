//! What a connecting peer asks for: the room path and its query parameters.
//!
//! `ws://host:port/<path>?next=N&topology=star&capacity=N&private=1`. The first peer of a room fixes
//! its settings; later peers join the room as it is (their differing settings are ignored).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;

/// The room used when a client connects to `/` with no path (as matchbox_server does).
pub const DEFAULT_ROOM: &str = "world";

/// How the server introduces peers in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// Every newcomer is introduced to every peer already in the room.
    #[default]
    Mesh,
    /// Every newcomer is introduced to the host only; when the host leaves, the oldest remaining peer
    /// becomes host and is introduced to all others.
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

/// A parsed room request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRequest {
    /// The URL path naming the room (`world` for `/`).
    pub path: String,
    /// `?next=N`: form a fresh room from each next N arrivals on this path.
    pub next: Option<NonZeroUsize>,
    /// `?topology=mesh|star`.
    pub topology: Topology,
    /// `?capacity=N`: the most peers the room holds at once (the server maximum when absent).
    pub capacity: usize,
    /// `?private=1`: the room is not listed by `GET /rooms`.
    pub private: bool,
}

/// Why a room request was refused before the websocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
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
}

fn invalid(name: &str, value: &str, why: &'static str) -> RequestError {
    RequestError::InvalidParameter {
        name: name.to_string(),
        value: value.to_string(),
        why,
    }
}

impl RoomRequest {
    /// Parses a request from the URL path (without the leading `/`) and query parameters.
    /// `max_capacity` is the server's limit of peers per room.
    pub fn parse(
        path: Option<&str>,
        query: &HashMap<String, String>,
        max_capacity: usize,
    ) -> Result<Self, RequestError> {
        let path = match path {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => DEFAULT_ROOM.to_string(),
        };
        let next = match query.get("next") {
            None => None,
            Some(v) => Some(
                v.parse::<NonZeroUsize>()
                    .map_err(|_| invalid("next", v, "a whole number of at least 1"))?,
            ),
        };
        let topology = match query.get("topology").map(String::as_str) {
            None | Some("mesh") => Topology::Mesh,
            Some("star") => Topology::Star,
            Some(v) => return Err(invalid("topology", v, "`mesh` or `star`")),
        };
        let capacity = match query.get("capacity") {
            None => max_capacity,
            Some(v) => {
                let asked = v
                    .parse::<NonZeroUsize>()
                    .map_err(|_| invalid("capacity", v, "a whole number of at least 1"))?
                    .get();
                if asked > max_capacity {
                    return Err(RequestError::CapacityTooLarge {
                        asked,
                        max: max_capacity,
                    });
                }
                asked
            }
        };
        // A match-of-N room never needs more than N seats.
        let capacity = next.map_or(capacity, |n| capacity.min(n.get()));
        let private = match query.get("private").map(String::as_str) {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") | Some("") => true,
            Some(v) => return Err(invalid("private", v, "`1`/`true` or `0`/`false`")),
        };
        Ok(Self {
            path,
            next,
            topology,
            capacity,
            private,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let r = RoomRequest::parse(None, &q(&[]), 64).unwrap();
        assert_eq!(r.path, "world");
        assert_eq!(r.next, None);
        assert_eq!(r.topology, Topology::Mesh);
        assert_eq!(r.capacity, 64);
        assert!(!r.private);
    }

    #[test]
    fn all_parameters() {
        let r = RoomRequest::parse(
            Some("lobby"),
            &q(&[
                ("next", "4"),
                ("topology", "star"),
                ("capacity", "8"),
                ("private", "1"),
            ]),
            64,
        )
        .unwrap();
        assert_eq!(r.path, "lobby");
        assert_eq!(r.next, NonZeroUsize::new(4));
        assert_eq!(r.topology, Topology::Star);
        assert_eq!(r.capacity, 4, "a next=4 room needs no more than 4 seats");
        assert!(r.private);
    }

    #[test]
    fn bad_parameters_are_refused_with_a_reason() {
        for (k, v) in [
            ("next", "0"),
            ("next", "x"),
            ("topology", "ring"),
            ("capacity", "0"),
            ("private", "maybe"),
        ] {
            let err = RoomRequest::parse(Some("a"), &q(&[(k, v)]), 64).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
        let err = RoomRequest::parse(Some("a"), &q(&[("capacity", "65")]), 64).unwrap_err();
        assert_eq!(err, RequestError::CapacityTooLarge { asked: 65, max: 64 });
    }
}
