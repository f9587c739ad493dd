//! The one check of a signal (SDP offer/answer, ICE candidate) before it reaches matchbox: its
//! handshake `unwrap`s what it is given, so one malformed offer would panic a peer's message loop.
//! The server checks every signal it relays ([`check_json`]); the plugin checks every signal it
//! receives ([`check`]), since a stock server relays anything.
//!
//! The SDP must have the shape of a session description with what a WebRTC connection needs
//! (origin, a media section, ICE credentials, a DTLS fingerprint); natively it must also pass the
//! SDP parser webrtc-rs itself uses. A candidate must be matchbox's JSON of an
//! `RTCIceCandidateInit` (or `"null"` / an empty candidate: the end of candidates).

use serde::Deserialize;
use std::borrow::Cow;

/// What a signal carries, as matchbox_socket 0.15 encodes it (`{"Offer":"v=0..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum Signal<'a> {
    /// An ICE candidate: `RTCIceCandidateInit` as JSON text.
    IceCandidate(#[serde(borrow)] Cow<'a, str>),
    /// An SDP offer.
    Offer(#[serde(borrow)] Cow<'a, str>),
    /// An SDP answer.
    Answer(#[serde(borrow)] Cow<'a, str>),
}

/// matchbox's JSON form of an ICE candidate (only `candidate` is read).
#[derive(Debug, Deserialize)]
struct CandidateInit<'a> {
    #[serde(borrow)]
    candidate: Cow<'a, str>,
}

/// Why a signal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Not one of `Offer`, `Answer`, `IceCandidate` with a string.
    #[error("not a matchbox PeerSignal: {0}")]
    NotAPeerSignal(String),
    /// The SDP text does not parse.
    #[error("malformed SDP: {0}")]
    Sdp(String),
    /// The SDP parses but lacks what a WebRTC connection needs.
    #[error("SDP lacks {0}")]
    SdpIncomplete(&'static str),
    /// The ICE candidate is not an `RTCIceCandidateInit` in JSON.
    #[error("malformed ICE candidate: {0}")]
    Candidate(String),
}

/// Checks a signal payload given as its JSON text (what the server relays).
pub fn check_json(data: &str) -> Result<(), SignalError> {
    let signal: Signal<'_> =
        serde_json::from_str(data).map_err(|e| SignalError::NotAPeerSignal(e.to_string()))?;
    check(&signal)
}

/// Checks a signal.
pub fn check(signal: &Signal<'_>) -> Result<(), SignalError> {
    match signal {
        Signal::Offer(sdp) | Signal::Answer(sdp) => check_sdp(sdp),
        Signal::IceCandidate(json) => check_candidate(json),
    }
}

/// Checks an SDP offer or answer.
pub fn check_sdp(sdp: &str) -> Result<(), SignalError> {
    if !sdp.starts_with("v=0") {
        return Err(SignalError::Sdp("does not start with v=0".into()));
    }
    let lines: Vec<&str> = sdp
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(bad) = lines.iter().find(|l| {
        let b = l.as_bytes();
        !(b.len() >= 2 && b[0].is_ascii_lowercase() && b[1] == b'=')
    }) {
        let shown: String = bad.chars().take(40).collect();
        return Err(SignalError::Sdp(format!("`{shown}` is not `x=value`")));
    }
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    for (prefix, lacks) in [
        ("o=", "an origin"),
        ("m=", "a media section"),
        ("a=ice-ufrag:", "a=ice-ufrag"),
        ("a=ice-pwd:", "a=ice-pwd"),
        ("a=fingerprint:", "a=fingerprint"),
    ] {
        if !has(prefix) {
            return Err(SignalError::SdpIncomplete(lacks));
        }
    }
    parse_natively(sdp)
}

/// Natively, also run the SDP parser webrtc-rs itself uses, so nothing reaches its `unwrap` that
/// it would refuse.
#[cfg(not(target_arch = "wasm32"))]
fn parse_natively(sdp: &str) -> Result<(), SignalError> {
    rtc_sdp::SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.as_bytes()))
        .map(|_| ())
        .map_err(|e| SignalError::Sdp(e.to_string()))
}

/// In the browser the browser parses SDP itself, and refuses with an error, not a panic.
#[cfg(target_arch = "wasm32")]
fn parse_natively(_sdp: &str) -> Result<(), SignalError> {
    Ok(())
}

/// Checks an ICE candidate (`RTCIceCandidateInit` as JSON).
pub fn check_candidate(json: &str) -> Result<(), SignalError> {
    if json == "null" {
        return Ok(());
    }
    let init: CandidateInit<'_> =
        serde_json::from_str(json).map_err(|e| SignalError::Candidate(e.to_string()))?;
    let c = init.candidate.as_ref();
    if c.is_empty() {
        return Ok(());
    }
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    let fields: Vec<&str> = c
        .strip_prefix("candidate:")
        .unwrap_or(c)
        .split_ascii_whitespace()
        .collect();
    let well_formed = fields.len() >= 8
        && fields[1].parse::<u16>().is_ok()
        && fields[3].parse::<u32>().is_ok()
        && fields[5].parse::<u16>().is_ok()
        && fields[6] == "typ";
    if well_formed {
        Ok(())
    } else {
        let shown: String = c.chars().take(80).collect();
        Err(SignalError::Candidate(format!(
            "bad candidate line `{shown}`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=fingerprint:sha-256 AB:CD\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
        c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz\r\n\
        a=mid:0\r\na=sctp-port:5000\r\n";

    #[test]
    fn accepts_real_shapes() {
        check_json(&json!({ "Offer": OFFER }).to_string()).unwrap();
        check_json(&json!({ "Answer": OFFER }).to_string()).unwrap();
        check_json(&json!({ "IceCandidate": "null" }).to_string()).unwrap();
        let cand = json!({
            "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"
        })
        .to_string();
        check_json(&json!({ "IceCandidate": cand }).to_string()).unwrap();
        check_json(&json!({ "IceCandidate": r#"{"candidate":""}"# }).to_string()).unwrap();
        check(&Signal::Offer(OFFER.into())).unwrap();
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(matches!(
            check_json(&json!({ "Offer": "this is not sdp" }).to_string()),
            Err(SignalError::Sdp(_))
        ));
        assert!(matches!(
            check_json(&json!({ "Offer": 7 }).to_string()),
            Err(SignalError::NotAPeerSignal(_))
        ));
        assert!(matches!(
            check_json(&json!("hello").to_string()),
            Err(SignalError::NotAPeerSignal(_))
        ));
        let no_ice = OFFER.replace("a=ice-pwd:efghijklmnopqrstuvwxyz\r\n", "");
        assert_eq!(
            check_json(&json!({ "Answer": no_ice }).to_string()),
            Err(SignalError::SdpIncomplete("a=ice-pwd"))
        );
        let no_media = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        assert_eq!(
            check_json(&json!({ "Offer": no_media }).to_string()),
            Err(SignalError::SdpIncomplete("a media section"))
        );
        for bad in ["{", r#"{"candidate":"candidate:x"}"#, r#"{"foo":1}"#] {
            assert!(
                matches!(
                    check_json(&json!({ "IceCandidate": bad }).to_string()),
                    Err(SignalError::Candidate(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn survives_arbitrary_bytes() {
        // A cheap deterministic fuzz: prefixes and byte-flips of a real offer must never panic.
        let bytes = OFFER.as_bytes();
        for cut in 0..bytes.len() {
            let _ = check_sdp(&String::from_utf8_lossy(&bytes[..cut]));
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut b = bytes.to_vec();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x as usize >> 8) % b.len();
                b[i] = (x >> 24) as u8;
            }
            let _ = check_sdp(&String::from_utf8_lossy(&b));
        }
    }
}
