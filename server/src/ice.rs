//! ICE servers for the peers (`GET /ice/<room>`): the STUN servers as configured, and TURN servers
//! with short-lived credentials in the TURN REST scheme that coturn's `use-auth-secret` checks, so a
//! game never ships the TURN secret: the user name is `<expiry>:<name>` (the expiry in seconds
//! since the Unix epoch) and the credential is base64(HMAC-SHA1(secret, user name)).

use crate::config::ServerConfig;
use base64::Engine;
use ring::hmac;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One ICE server, in the shape of WebRTC's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServerEntry {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// TURN REST credentials for `name` valid until `expires`: (user name, credential).
pub fn turn_credentials(secret: &[u8], name: &str, expires: SystemTime) -> (String, String) {
    let expiry = expires
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let username = format!("{expiry}:{name}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, credential)
}

/// The ICE servers `config` hands a peer called `name` at `now`.
pub fn ice_servers(config: &ServerConfig, name: &str, now: SystemTime) -> Vec<IceServerEntry> {
    let mut servers = Vec::new();
    if !config.stun_url.is_empty() {
        servers.push(IceServerEntry {
            urls: config.stun_url.clone(),
            username: None,
            credential: None,
        });
    }
    if let (false, Some(secret)) = (config.turn_url.is_empty(), &config.turn_secret) {
        let expires = now + Duration::from_secs(config.turn_ttl_secs);
        let (username, credential) = turn_credentials(secret.as_bytes(), name, expires);
        servers.push(IceServerEntry {
            urls: config.turn_url.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    servers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        // RFC 2202's first HMAC-SHA1 vector: key 0x0b × 20, "Hi There" (the user name here is
        // made to be that text, to check the MAC and its encoding against the RFC).
        let key = [0x0b; 20];
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key),
            b"Hi There",
        );
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
            "thcxhlUFcmTii8C2+zeMjvFGvgA="
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let (user, credential) = turn_credentials(b"s3cret", "ann", at);
        assert_eq!(user, "1767225600:ann");
        let expected = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"s3cret"),
            user.as_bytes(),
        );
        assert_eq!(
            credential,
            base64::engine::general_purpose::STANDARD.encode(expected.as_ref())
        );
    }

    #[test]
    fn stun_as_configured_and_turn_only_with_a_secret() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let mut config = ServerConfig::loopback();
        assert!(ice_servers(&config, "x", now).is_empty());
        config.stun_url = vec!["stun:stun.example.com:3478".into()];
        config.turn_url = vec!["turn:turn.example.com:3478".into()];
        let servers = ice_servers(&config, "x", now);
        assert_eq!(servers.len(), 1, "no TURN without its secret");
        config.turn_secret = Some("shared".into());
        config.turn_ttl_secs = 60;
        let servers = ice_servers(&config, "x", now);
        assert_eq!(servers[1].username.as_deref(), Some("1060:x"));
        assert!(servers[1].credential.is_some());
        let json = serde_json::to_string(&servers[0]).unwrap_or_default();
        assert_eq!(json, r#"{"urls":["stun:stun.example.com:3478"]}"#);
    }
}
