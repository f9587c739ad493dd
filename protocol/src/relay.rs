//! Star topology routing: clients are linked to the host only, and the host relays.
//!
//! A relayed frame is a routing header in front of an ordinary frame (a whole message or a chunk),
//! which the host forwards as it came, without decoding or re-encoding the payload.
//!
//! Header: one byte `0b11_00_STO` (frame kind 3; `O` set when an origin follows; `T` set when a
//! target follows, else broadcast; `S` set when a sequence number follows), then the 16-byte
//! origin, the 16-byte target, the 4-byte sequence number (little endian).
//!
//! Reliable frames a client sends through the host carry a sequence number of that client's. The
//! host acknowledges them once it has passed them on; the client keeps the unacknowledged ones and
//! sends them again through the next host if the host leaves, and receivers drop any number they
//! have seen from that origin: delivered once, or (no host within the wait) reported as failed.
//! A client never sets the origin: the host stamps it from the link the frame came on, so a client
//! cannot speak for another (a client frame that claims an origin is forged and dropped).

use matchbox_protocol::PeerId;
use thiserror::Error;
use uuid::Uuid;

const KIND_ROUTED: u8 = 3 << 6;
const HAS_ORIGIN: u8 = 0b01;
const HAS_TARGET: u8 = 0b10;
const HAS_SEQ: u8 = 0b100;

/// A routing header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Who sent it, stamped by the host; `None` on the way to the host.
    pub origin: Option<PeerId>,
    /// Who it is for; `None` for everyone.
    pub target: Option<PeerId>,
    /// The origin's sequence number of a reliable frame (for acknowledgement and deduplication).
    pub seq: Option<u32>,
}

/// Why a routed frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    /// Not a routed frame, or cut short.
    #[error("malformed routed frame")]
    Malformed,
    /// A client's frame claimed an origin: only the host stamps origins.
    #[error("a client claimed an origin")]
    ForgedOrigin,
    /// A frame with an origin came from a peer that is not the host.
    #[error("an origin-stamped frame from a peer that is not the host")]
    NotFromHost,
}

/// Whether `bytes` starts with a routing header.
pub fn is_routed(bytes: &[u8]) -> bool {
    bytes
        .first()
        .is_some_and(|b| b & 0b1100_0000 == KIND_ROUTED)
}

/// The routing header for `route`, to put in front of an ordinary frame.
pub fn encode(route: Route) -> Vec<u8> {
    let mut out = Vec::with_capacity(33);
    let mut flags = 0;
    if route.origin.is_some() {
        flags |= HAS_ORIGIN;
    }
    if route.target.is_some() {
        flags |= HAS_TARGET;
    }
    if route.seq.is_some() {
        flags |= HAS_SEQ;
    }
    out.push(KIND_ROUTED | flags);
    for id in [route.origin, route.target].into_iter().flatten() {
        out.extend_from_slice(id.0.as_bytes());
    }
    if let Some(seq) = route.seq {
        out.extend_from_slice(&seq.to_le_bytes());
    }
    out
}

/// Reads a routing header; returns it and the length of the header (the inner frame follows).
pub fn decode(bytes: &[u8]) -> Result<(Route, usize), RouteError> {
    let (&first, rest) = bytes.split_first().ok_or(RouteError::Malformed)?;
    if first & 0b1100_0000 != KIND_ROUTED || first & 0b0011_1000 != 0 {
        return Err(RouteError::Malformed);
    }
    let mut at = 0;
    let mut id = |present: bool| -> Result<Option<PeerId>, RouteError> {
        if !present {
            return Ok(None);
        }
        let raw: [u8; 16] = rest
            .get(at..at + 16)
            .and_then(|s| s.try_into().ok())
            .ok_or(RouteError::Malformed)?;
        at += 16;
        Ok(Some(PeerId(Uuid::from_bytes(raw))))
    };
    let origin = id(first & HAS_ORIGIN != 0)?;
    let target = id(first & HAS_TARGET != 0)?;
    let seq = if first & HAS_SEQ != 0 {
        let raw: [u8; 4] = rest
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or(RouteError::Malformed)?;
        at += 4;
        Some(u32::from_le_bytes(raw))
    } else {
        None
    };
    if rest.len() == at {
        // A header with nothing behind it.
        return Err(RouteError::Malformed);
    }
    Ok((
        Route {
            origin,
            target,
            seq,
        },
        1 + at,
    ))
}

/// What the host does with a routed frame from one of its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Deliver the inner frame to the host's own game, from this origin.
    pub deliver_from: Option<PeerId>,
    /// Forward to these clients, with this header (origin stamped).
    pub forward: Vec<PeerId>,
    /// The header the forwarded copies carry.
    pub header: Route,
}

/// The host's decision for a frame from `link` (a client) with `route`; `members` are the
/// lobby's peers other than the host itself.
pub fn relay(
    host: PeerId,
    link: PeerId,
    route: Route,
    members: &[PeerId],
) -> Result<Relay, RouteError> {
    if route.origin.is_some() {
        return Err(RouteError::ForgedOrigin);
    }
    let header = Route {
        origin: Some(link),
        ..route
    };
    Ok(match route.target {
        None => Relay {
            deliver_from: Some(link),
            forward: members.iter().copied().filter(|m| *m != link).collect(),
            header,
        },
        Some(t) if t == host => Relay {
            deliver_from: Some(link),
            forward: Vec::new(),
            header,
        },
        Some(t) => Relay {
            deliver_from: None,
            forward: members
                .iter()
                .copied()
                .filter(|m| *m == t && *m != link)
                .collect(),
            header,
        },
    })
}

/// A client's check of a routed frame from `link`: the origin it may believe.
pub fn accept(host: Option<PeerId>, link: PeerId, route: Route) -> Result<PeerId, RouteError> {
    match route.origin {
        Some(origin) if host == Some(link) => Ok(origin),
        Some(_) => Err(RouteError::NotFromHost),
        None => Err(RouteError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u128) -> PeerId {
        PeerId(Uuid::from_u128(i))
    }

    fn r(origin: Option<PeerId>, target: Option<PeerId>, seq: Option<u32>) -> Route {
        Route {
            origin,
            target,
            seq,
        }
    }

    #[test]
    fn headers_roundtrip() {
        for route in [
            r(None, None, None),
            r(Some(id(1)), None, None),
            r(None, Some(id(2)), Some(7)),
            r(Some(id(1)), Some(id(2)), Some(u32::MAX)),
        ] {
            let mut frame = encode(route);
            let header = frame.len();
            frame.extend_from_slice(&[0x00, 42]);
            assert!(is_routed(&frame));
            assert_eq!(decode(&frame), Ok((route, header)));
        }
        assert_eq!(encode(r(None, None, None)).len(), 1);
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(decode(&[]), Err(RouteError::Malformed));
        assert_eq!(
            decode(&[0xC0]),
            Err(RouteError::Malformed),
            "no inner frame"
        );
        assert_eq!(
            decode(&[0xC1, 1, 2, 3]),
            Err(RouteError::Malformed),
            "origin cut short"
        );
        assert_eq!(
            decode(&[0xC4, 1, 2]),
            Err(RouteError::Malformed),
            "sequence cut short"
        );
        assert_eq!(
            decode(&[0xC8, 0]),
            Err(RouteError::Malformed),
            "unknown flag"
        );
        assert_eq!(decode(&[0x00, 0]), Err(RouteError::Malformed), "not routed");
        assert!(!is_routed(&[0x00]));
    }

    #[test]
    fn host_relays_broadcasts_and_directed_frames() {
        let (host, a, b, c) = (id(1), id(2), id(3), id(4));
        let members = [a, b, c];
        let d = relay(host, a, r(None, None, Some(5)), &members).unwrap();
        assert_eq!(d.deliver_from, Some(a));
        assert_eq!(d.forward, vec![b, c]);
        assert_eq!(
            d.header,
            r(Some(a), None, Some(5)),
            "origin stamped, sequence kept"
        );
        let d = relay(host, a, r(None, Some(c), None), &members).unwrap();
        assert_eq!((d.deliver_from, d.forward), (None, vec![c]));
        let d = relay(host, a, r(None, Some(host), None), &members).unwrap();
        assert_eq!((d.deliver_from, d.forward), (Some(a), vec![]));
        let d = relay(host, a, r(None, Some(id(99)), None), &members).unwrap();
        assert!(
            d.forward.is_empty() && d.deliver_from.is_none(),
            "unknown target: dropped"
        );
    }

    #[test]
    fn forged_origins_are_refused() {
        let (host, a, b) = (id(1), id(2), id(3));
        let forged = r(Some(b), None, Some(1));
        assert_eq!(
            relay(host, a, forged, &[a, b]),
            Err(RouteError::ForgedOrigin)
        );
        // A client believes origins only from the host's link.
        assert_eq!(accept(Some(host), host, forged), Ok(b));
        assert_eq!(accept(Some(host), a, forged), Err(RouteError::NotFromHost));
        assert_eq!(
            accept(Some(host), host, r(None, None, None)),
            Err(RouteError::Malformed)
        );
    }
}
