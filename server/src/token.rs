//! Join tokens: a room on a server with an auth secret (`--auth-secret`) admits only peers that
//! bring a token for it, minted by the game's backend with the same secret.
//!
//! A token is `<expiry>.<mac>`, or `<expiry>.<name>.<role>.<mac>` with [`Claims`]: the expiry in
//! seconds since the Unix epoch, the player's name and role (each empty or up to 64 of
//! `A-Za-z0-9_-`), then HMAC-SHA256 (hex) over `huddle-join-v1`, the room's path, the expiry and
//! the claims. It travels in the room URL's query (`?token=...`: browsers cannot set websocket
//! headers) and names no room itself, so a token for one room opens no other. Checked in constant
//! time (ring's `hmac::verify`).
//!
//! What the server does with the claims: a peer whose token has the role [`MODERATOR`] may kick
//! anyone in its room, as the room's host may; a kick bans the kicked peer's name (if its token
//! had one) from the room as well as its address, so a new token for the same name from another
//! address does not get it back in during the ban.

use ring::hmac;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The query parameter that carries the token.
pub const QUERY: &str = "token";

/// The role that may kick anyone in its room.
pub const MODERATOR: &str = "moderator";

/// The most bytes of a claim (a name or a role).
pub const MAX_CLAIM: usize = 64;

/// Who a token says its bearer is, as the game's backend vouched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// The player's name (e.g. its account name).
    pub name: Option<String>,
    /// The player's role; [`MODERATOR`] may kick.
    pub role: Option<String>,
}

impl Claims {
    /// Claims with a name and no role.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            role: None,
        }
    }

    /// Whether the bearer may kick anyone in its room.
    pub fn is_moderator(&self) -> bool {
        self.role.as_deref() == Some(MODERATOR)
    }

    fn is_empty(&self) -> bool {
        self.name.is_none() && self.role.is_none()
    }
}

/// Reads a claim: empty is none; otherwise up to [`MAX_CLAIM`] of `A-Za-z0-9_-`.
fn claim(text: &str) -> Result<Option<String>, TokenError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if text.len() > MAX_CLAIM || !text.chars().all(allowed) {
        return Err(TokenError::BadClaim(text.chars().take(MAX_CLAIM).collect()));
    }
    Ok((!text.is_empty()).then(|| text.to_string()))
}

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
    /// A name or role longer than [`MAX_CLAIM`] or with characters other than `A-Za-z0-9_-`.
    #[error("a token claim must be at most {MAX_CLAIM} of A-Za-z0-9_- (got `{0}`)")]
    BadClaim(String),
}

fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

fn message(room: &str, expires: u64, claims: &Claims) -> String {
    let mut message = format!("huddle-join-v1\n{room}\n{expires}");
    if !claims.is_empty() {
        let (name, role) = (claims.name.as_deref(), claims.role.as_deref());
        message.push_str(&format!(
            "\n{}\n{}",
            name.unwrap_or_default(),
            role.unwrap_or_default()
        ));
    }
    message
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A token for `room` (its path, as in the URL) that expires at `expires`.
pub fn mint(secret: &[u8], room: &str, expires: SystemTime) -> String {
    let expires = unix(expires);
    let tag = hmac::sign(
        &key(secret),
        message(room, expires, &Claims::default()).as_bytes(),
    );
    format!("{expires}.{}", hex::encode(tag.as_ref()))
}

/// A token for `room` that expires at `expires` and carries `claims` (a name, a role); refused
/// if a claim is not at most [`MAX_CLAIM`] of `A-Za-z0-9_-`.
pub fn mint_with(
    secret: &[u8],
    room: &str,
    expires: SystemTime,
    claims: &Claims,
) -> Result<String, TokenError> {
    let name = claims.name.as_deref().unwrap_or_default();
    let role = claims.role.as_deref().unwrap_or_default();
    // Checked as `verify` reads them: an empty claim is none.
    let claims = Claims {
        name: claim(name)?,
        role: claim(role)?,
    };
    if claims.is_empty() {
        return Ok(mint(secret, room, expires));
    }
    let expires = unix(expires);
    let tag = hmac::sign(&key(secret), message(room, expires, &claims).as_bytes());
    Ok(format!(
        "{expires}.{name}.{role}.{}",
        hex::encode(tag.as_ref())
    ))
}

/// A token for `room` valid for `ttl` from now.
pub fn mint_for(secret: &[u8], room: &str, ttl: Duration) -> String {
    mint(secret, room, SystemTime::now() + ttl)
}

/// Checks `token` for `room` at `now`: the claims it carries, once its signature holds and it
/// has not expired.
pub fn verify(
    secret: &[u8],
    room: &str,
    token: Option<&str>,
    now: SystemTime,
) -> Result<Claims, TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let parts: Vec<&str> = token.splitn(5, '.').collect();
    let (expires, claims, mac) = match parts[..] {
        [expires, mac] => (expires, Claims::default(), mac),
        [expires, name, role, mac] => {
            let claims = Claims {
                name: claim(name)?,
                role: claim(role)?,
            };
            (expires, claims, mac)
        }
        _ => return Err(TokenError::Malformed),
    };
    let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    let mac = hex::decode(mac).map_err(|_| TokenError::Malformed)?;
    hmac::verify(
        &key(secret),
        message(room, expires, &claims).as_bytes(),
        &mac,
    )
    .map_err(|_| TokenError::Invalid(room.to_string()))?;
    let now = unix(now);
    if now > expires {
        return Err(TokenError::Expired(now - expires));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"backend and server share this";

    #[test]
    fn a_token_opens_its_room_until_it_expires() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = mint(SECRET, "lobby", now + Duration::from_secs(60));
        assert_eq!(
            verify(SECRET, "lobby", Some(&token), now),
            Ok(Claims::default())
        );
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

    #[test]
    fn claims_are_signed_with_the_room_and_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let until = now + Duration::from_secs(60);
        let claims = Claims {
            name: Some("alice".into()),
            role: Some(MODERATOR.into()),
        };
        let token = mint_with(SECRET, "lobby", until, &claims).unwrap_or_default();
        let read = verify(SECRET, "lobby", Some(&token), now);
        assert_eq!(read.as_ref(), Ok(&claims));
        assert!(read.is_ok_and(|c| c.is_moderator()));
        // A name alone; a role alone.
        let named = mint_with(SECRET, "lobby", until, &Claims::named("bob")).unwrap_or_default();
        assert_eq!(
            verify(SECRET, "lobby", Some(&named), now),
            Ok(Claims::named("bob"))
        );
        // Another name or role with the same signature is refused.
        let mac = token.rsplit('.').next().unwrap_or_default();
        let expiry = token.split('.').next().unwrap_or_default();
        for forged in [
            format!("{expiry}.mallory.{MODERATOR}.{mac}"),
            format!("{expiry}.alice..{mac}"),
            format!("{expiry}.{mac}"),
        ] {
            assert!(
                matches!(
                    verify(SECRET, "lobby", Some(&forged), now),
                    Err(TokenError::Invalid(_))
                ),
                "{forged}"
            );
        }
        // Claims that do not fit are refused, minting and reading.
        let long = "x".repeat(MAX_CLAIM + 1);
        for bad in [long.as_str(), "a.b", "a b", "é"] {
            assert!(matches!(
                mint_with(SECRET, "lobby", until, &Claims::named(bad)),
                Err(TokenError::BadClaim(_))
            ));
            let text = format!("{}.{bad}..{mac}", 1_000_060);
            assert!(verify(SECRET, "lobby", Some(&text), now).is_err(), "{bad}");
        }
        // Empty claims are no claims: the short form.
        let none = mint_with(SECRET, "lobby", until, &Claims::default()).unwrap_or_default();
        assert_eq!(none, mint(SECRET, "lobby", until));
        assert!(matches!(
            verify(SECRET, "lobby", Some("1.a.b.c.d"), now),
            Err(TokenError::Malformed)
        ));
    }
}
