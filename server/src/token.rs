//! Join tokens: a room on a server with an auth secret (`--auth-secret`) admits only peers that
//! bring a token for it, minted by the game's backend with the same secret.
//!
//! A token is `<expiry>.<mac>`: the expiry in seconds since the Unix epoch, then HMAC-SHA256
//! (hex) over `huddle-join-v1`, the room's path and the expiry. It travels in the room URL's query
//! (`?token=...`: browsers cannot set websocket headers) and names no room itself, so a token for
//! one room opens no other. Checked in constant time (ring's `hmac::verify`).

use ring::hmac;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The query parameter that carries the token.
pub const QUERY: &str = "token";

/// Why a join token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The room needs a token and none came.
    #[error("this server needs a join token (`?token=`)")]
    Missing,
    /// Not `<expiry>.<mac>`.
    #[error("the join token is malformed")]
    Malformed,
    /// Past its expiry.
    #[error("the join token expired {0} s ago")]
    Expired(u64),
    /// Signed with another secret, for another room, or altered.
    #[error("the join token is not valid for room `{0}`")]
    Invalid(String),
}

fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

fn message(room: &str, expires: u64) -> String {
    format!("huddle-join-v1\n{room}\n{expires}")
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A token for `room` (its path, as in the URL) that expires at `expires`.
pub fn mint(secret: &[u8], room: &str, expires: SystemTime) -> String {
    let expires = unix(expires);
    let tag = hmac::sign(&key(secret), message(room, expires).as_bytes());
    format!("{expires}.{}", hex::encode(tag.as_ref()))
}

/// A token for `room` valid for `ttl` from now.
pub fn mint_for(secret: &[u8], room: &str, ttl: Duration) -> String {
    mint(secret, room, SystemTime::now() + ttl)
}

/// Checks `token` for `room` at `now`.
pub fn verify(
    secret: &[u8],
    room: &str,
    token: Option<&str>,
    now: SystemTime,
) -> Result<(), TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let (expires, mac) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    let mac = hex::decode(mac).map_err(|_| TokenError::Malformed)?;
    hmac::verify(&key(secret), message(room, expires).as_bytes(), &mac)
        .map_err(|_| TokenError::Invalid(room.to_string()))?;
    let now = unix(now);
    if now > expires {
        return Err(TokenError::Expired(now - expires));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"backend and server share this";

    #[test]
    fn a_token_opens_its_room_until_it_expires() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = mint(SECRET, "lobby", now + Duration::from_secs(60));
        assert_eq!(verify(SECRET, "lobby", Some(&token), now), Ok(()));
        let later = now + Duration::from_secs(90);
        assert_eq!(
            verify(SECRET, "lobby", Some(&token), later),
            Err(TokenError::Expired(30))
        );
    }

    #[test]
    fn other_rooms_secrets_and_alterations_are_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = mint(SECRET, "lobby", now + Duration::from_secs(60));
        let invalid = Err(TokenError::Invalid("duel".into()));
        assert_eq!(verify(SECRET, "duel", Some(&token), now), invalid);
        assert!(verify(b"another secret", "lobby", Some(&token), now).is_err());
        // A later expiry with the old signature.
        let (_, mac) = token.split_once('.').unwrap_or_default();
        let stretched = format!("{}.{mac}", 1_000_000 + 10_000);
        assert!(matches!(
            verify(SECRET, "lobby", Some(&stretched), now),
            Err(TokenError::Invalid(_))
        ));
        for bad in ["", "123", "x.ab", "123.zz", "123.", ".abcd"] {
            assert!(verify(SECRET, "lobby", Some(bad), now).is_err(), "{bad}");
        }
        assert_eq!(verify(SECRET, "lobby", None, now), Err(TokenError::Missing));
    }
}
