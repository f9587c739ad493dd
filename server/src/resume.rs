//! Resume tokens: a peer whose websocket dropped comes back to its place in its room
//! ([`huddle_protocol::reconnect`] has the whole story).
//!
//! A token is `<peer>.<seq>.<group>.<mac>`: the peer's id (32 hex digits), its place in the
//! room's join order (a stamp, [`Stamps`]), its `?next=N` group as `N-generation` (or `-`), then
//! HMAC-SHA256 (hex) over `huddle-resume-v1`, the room's path and those fields, with the server's
//! resume secret (`--resume-secret`; without one a random secret per process: a token then
//! survives a dropped connection but not a restart). The server sends a peer its token and
//! nobody else, so holding one proves being that peer.

use crate::registry::RoomKey;
use matchbox_protocol::PeerId;
use ring::hmac;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeToken {
    /// The peer's id.
    pub peer: PeerId,
    /// Its place in the room's join order.
    pub seq: u64,
    /// Its `?next=N` group: `(N, generation)`.
    pub group: Option<(usize, u64)>,
}

/// Why a resume token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// Not `<peer>.<seq>.<group>.<mac>`.
    #[error("the resume token is malformed")]
    Malformed,
    /// Signed with another secret, for another room, or altered.
    #[error("the resume token is not valid for room `{0}`")]
    Invalid(String),
    /// The peer's place is gone: it was away past the grace period, or was removed.
    #[error("the resume window of this peer is over")]
    Gone,
}

fn message(path: &str, token: &ResumeToken) -> String {
    format!(
        "huddle-resume-v1\n{path}\n{}\n{}\n{}",
        token.peer.0.simple(),
        token.seq,
        group_text(token.group)
    )
}

fn group_text(group: Option<(usize, u64)>) -> String {
    match group {
        Some((n, generation)) => format!("{n}-{generation}"),
        None => "-".into(),
    }
}

/// The token for `token`'s peer in room `path`, signed with `secret`.
pub fn mint(secret: &[u8], path: &str, token: &ResumeToken) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, message(path, token).as_bytes());
    format!(
        "{}.{}.{}.{}",
        token.peer.0.simple(),
        token.seq,
        group_text(token.group),
        hex::encode(tag.as_ref())
    )
}

/// Checks `text` for room `path` (constant time).
pub fn verify(secret: &[u8], path: &str, text: &str) -> Result<ResumeToken, ResumeError> {
    let parts: Vec<&str> = text.splitn(5, '.').collect();
    let [peer, seq, group, mac] = parts[..] else {
        return Err(ResumeError::Malformed);
    };
    let peer = uuid::Uuid::try_parse(peer).map_err(|_| ResumeError::Malformed)?;
    let seq: u64 = seq.parse().map_err(|_| ResumeError::Malformed)?;
    let group = match group {
        "-" => None,
        g => {
            let (n, generation) = g.split_once('-').ok_or(ResumeError::Malformed)?;
            let n: usize = n.parse().map_err(|_| ResumeError::Malformed)?;
            let generation: u64 = generation.parse().map_err(|_| ResumeError::Malformed)?;
            Some((n, generation))
        }
    };
    let mac = hex::decode(mac).map_err(|_| ResumeError::Malformed)?;
    let token = ResumeToken {
        peer: PeerId(peer),
        seq,
        group,
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, message(path, &token).as_bytes(), &mac)
        .map_err(|_| ResumeError::Invalid(path.to_string()))?;
    Ok(token)
}

impl ResumeToken {
    /// The room the token's peer was in.
    pub fn room(&self, path: &str) -> RoomKey {
        RoomKey {
            path: path.to_string(),
            group: self.group,
        }
    }
}

/// Join-order stamps: microseconds since the Unix epoch, strictly increasing within a process, so
/// the peers of a room rebuilt after a restart (from their tokens) keep their order and newcomers
/// come after them.
#[derive(Debug, Default)]
pub struct Stamps(AtomicU64);

impl Stamps {
    /// The next stamp.
    pub fn next(&self) -> u64 {
        let now = crate::clock::now_us();
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            let stamp = now.max(prev.saturating_add(1));
            match self
                .0
                .compare_exchange(prev, stamp, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return stamp,
                Err(current) => prev = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"every instance has this";

    fn token() -> ResumeToken {
        ResumeToken {
            peer: PeerId(uuid::Uuid::from_u128(0xfeed)),
            seq: 1_700_000_000_000_000,
            group: Some((4, 12)),
        }
    }

    #[test]
    fn a_token_resumes_its_peer_in_its_room_only() {
        let text = mint(SECRET, "arena", &token());
        assert_eq!(verify(SECRET, "arena", &text), Ok(token()));
        assert_eq!(
            verify(SECRET, "other", &text),
            Err(ResumeError::Invalid("other".into()))
        );
        assert_eq!(
            verify(b"another server", "arena", &text),
            Err(ResumeError::Invalid("arena".into()))
        );
        let plain = ResumeToken {
            group: None,
            ..token()
        };
        assert_eq!(
            verify(SECRET, "arena", &mint(SECRET, "arena", &plain)),
            Ok(plain)
        );
    }

    /// A member that knows another's id and place (every member does) cannot make its token:
    /// changing any field breaks the signature.
    #[test]
    fn forged_fields_are_refused() {
        let text = mint(SECRET, "arena", &token());
        let mine = PeerId(uuid::Uuid::from_u128(0xbad));
        let forged = text.replacen(
            &token().peer.0.simple().to_string(),
            &mine.0.simple().to_string(),
            1,
        );
        assert_eq!(
            verify(SECRET, "arena", &forged),
            Err(ResumeError::Invalid("arena".into()))
        );
        let earlier = text.replacen("1700000000000000", "1", 1);
        assert!(verify(SECRET, "arena", &earlier).is_err());
        for bad in [
            "",
            "x",
            "a.b.c.d",
            "a.b.c.d.e",
            &format!("{}.1.-.zz", mine.0.simple()),
        ] {
            assert_eq!(
                verify(SECRET, "arena", bad),
                Err(ResumeError::Malformed),
                "{bad}"
            );
        }
        let huge = format!("{}.99999999999999999999999.-.00", mine.0.simple());
        assert_eq!(verify(SECRET, "arena", &huge), Err(ResumeError::Malformed));
    }

    #[test]
    fn stamps_increase() {
        let stamps = Stamps::default();
        let a = stamps.next();
        let b = stamps.next();
        assert!(b > a);
    }
}
