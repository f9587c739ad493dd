//! Checks that a relayed signal is a well-formed matchbox `PeerSignal` before it reaches a peer.
//!
//! matchbox_socket `unwrap`s the SDP it is sent (a garbage offer panics the receiver's socket), so the
//! server parses every offer and answer with the SDP parser webrtc-rs itself uses and checks that it
//! carries what a peer connection needs; ICE candidates must be matchbox's JSON encoding of an
//! `RTCIceCandidateInit` (or `"null"`, the end of candidates).

use serde::Deserialize;
use std::borrow::Cow;
use std::io::Cursor;

/// The signal payload, as matchbox_socket 0.15 encodes it (`{"Offer":"v=0..."}`). Strings are
/// borrowed from the message where they have no escapes.
#[derive(Debug, Deserialize)]
enum PeerSignal<'a> {
    IceCandidate(#[serde(borrow)] Cow<'a, str>),
    Offer(#[serde(borrow)] Cow<'a, str>),
    Answer(#[serde(borrow)] Cow<'a, str>),
}

/// matchbox's JSON form of an ICE candidate.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read by serde for its shape
struct CandidateInit<'a> {
    #[serde(borrow)]
    candidate: Cow<'a, str>,
    #[serde(default, borrow)]
    sdp_mid: Option<Cow<'a, str>>,
    #[serde(default, rename = "sdpMLineIndex")]
    sdp_mline_index: Option<u16>,
    #[serde(default, borrow)]
    username_fragment: Option<Cow<'a, str>>,
}

/// Why a signal was not relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Not one of `Offer`, `Answer`, `IceCandidate` with a string.
    #[error("not a matchbox PeerSignal: {0}")]
    NotAPeerSignal(String),
    /// The SDP text does not parse.
    #[error("malformed SDP: {0}")]
    Sdp(String),
    /// The SDP parses but lacks what a WebRTC data connection needs.
    #[error("SDP lacks {0}")]
    SdpIncomplete(&'static str),
    /// The ICE candidate is not an `RTCIceCandidateInit` in JSON.
    #[error("malformed ICE candidate: {0}")]
    Candidate(String),
}

/// Checks a signal payload, given as its JSON text.
pub fn validate(data: &str) -> Result<(), SignalError> {
    let signal: PeerSignal<'_> =
        serde_json::from_str(data).map_err(|e| SignalError::NotAPeerSignal(e.to_string()))?;
    match signal {
        PeerSignal::Offer(sdp) | PeerSignal::Answer(sdp) => validate_sdp(&sdp),
        PeerSignal::IceCandidate(json) => validate_candidate(&json),
    }
}

fn validate_sdp(sdp: &str) -> Result<(), SignalError> {
    let parsed = rtc_sdp::SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| SignalError::Sdp(e.to_string()))?;
    if parsed.media_descriptions.is_empty() {
        return Err(SignalError::SdpIncomplete("a media section"));
    }
    let has = |key: &str| {
        parsed.has_attribute(key)
            || parsed
                .media_descriptions
                .iter()
                .any(|m| m.has_attribute(key))
    };
    for key in ["ice-ufrag", "ice-pwd", "fingerprint"] {
        if !has(key) {
            return Err(SignalError::SdpIncomplete(match key {
                "ice-ufrag" => "a=ice-ufrag",
                "ice-pwd" => "a=ice-pwd",
                _ => "a=fingerprint",
            }));
        }
    }
    Ok(())
}

fn validate_candidate(json: &str) -> Result<(), SignalError> {
    if json == "null" {
        return Ok(());
    }
    let init: CandidateInit<'_> =
        serde_json::from_str(json).map_err(|e| SignalError::Candidate(e.to_string()))?;
    let c = init.candidate.as_ref();
    // An empty candidate also marks the end of candidates.
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
        Err(SignalError::Candidate(format!("bad candidate line `{c}`")))
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
        validate(&json!({ "Offer": OFFER }).to_string()).unwrap();
        validate(&json!({ "Answer": OFFER }).to_string()).unwrap();
        validate(&json!({ "IceCandidate": "null" }).to_string()).unwrap();
        let cand = json!({
            "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"
        })
        .to_string();
        validate(&json!({ "IceCandidate": cand }).to_string()).unwrap();
        validate(&json!({ "IceCandidate": r#"{"candidate":""}"# }).to_string()).unwrap();
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            validate(&json!({ "Offer": "this is not sdp" }).to_string()),
            Err(SignalError::Sdp(_))
        ));
        assert!(matches!(
            validate(&json!({ "Offer": 7 }).to_string()),
            Err(SignalError::NotAPeerSignal(_))
        ));
        assert!(matches!(
            validate(&json!("hello").to_string()),
            Err(SignalError::NotAPeerSignal(_))
        ));
        let no_ice = OFFER.replace("a=ice-pwd:efghijklmnopqrstuvwxyz\r\n", "");
        assert_eq!(
            validate(&json!({ "Answer": no_ice }).to_string()),
            Err(SignalError::SdpIncomplete("a=ice-pwd"))
        );
        let no_media = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        assert_eq!(
            validate(&json!({ "Offer": no_media }).to_string()),
            Err(SignalError::SdpIncomplete("a media section"))
        );
        for bad in ["{", r#"{"candidate":"candidate:x"}"#, r#"{"foo":1}"#] {
            assert!(
                matches!(
                    validate(&json!({ "IceCandidate": bad }).to_string()),
                    Err(SignalError::Candidate(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn sdp_parser_survives_arbitrary_bytes() {
        // A cheap deterministic fuzz: prefixes and byte-flips of a real offer must never panic.
        let bytes = OFFER.as_bytes();
        for cut in 0..bytes.len() {
            let _ = validate_sdp(&String::from_utf8_lossy(&bytes[..cut]));
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut b = bytes.to_vec();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x as usize >> 8) % b.len();
                b[i] = (x >> 24) as u8;
            }
            let _ = validate_sdp(&String::from_utf8_lossy(&b));
        }
    }
}
