//! Checks a signal from another peer before matchbox_socket's handshake sees it: matchbox
//! `unwrap`s the SDP it is given, so one malformed offer would panic our socket's message loop.

use matchbox_socket::PeerSignal;
use serde::Deserialize;
use std::borrow::Cow;

/// Why a signal was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSignal {
    /// The SDP does not have the shape of a session description.
    #[error("malformed SDP: {0}")]
    Sdp(&'static str),
    /// The ICE candidate is not an `RTCIceCandidateInit` in JSON.
    #[error("malformed ICE candidate")]
    Candidate,
}

/// Checks a signal.
pub fn check(signal: &PeerSignal) -> Result<(), BadSignal> {
    match signal {
        PeerSignal::Offer(sdp) | PeerSignal::Answer(sdp) => check_sdp(sdp),
        PeerSignal::IceCandidate(json) => check_candidate(json),
    }
}

fn check_sdp(sdp: &str) -> Result<(), BadSignal> {
    if !sdp.starts_with("v=0") {
        return Err(BadSignal::Sdp("does not start with v=0"));
    }
    let lines: Vec<&str> = sdp
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    if !lines.iter().all(|l| {
        let b = l.as_bytes();
        b.len() >= 2 && b[0].is_ascii_lowercase() && b[1] == b'='
    }) {
        return Err(BadSignal::Sdp("a line is not `x=value`"));
    }
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    for (prefix, why) in [
        ("o=", "no origin"),
        ("m=", "no media section"),
        ("a=ice-ufrag:", "no ICE username fragment"),
        ("a=ice-pwd:", "no ICE password"),
        ("a=fingerprint:", "no DTLS fingerprint"),
    ] {
        if !has(prefix) {
            return Err(BadSignal::Sdp(why));
        }
    }
    parse_natively(sdp)
}

/// Natively, also run the SDP parser webrtc-rs itself uses, so nothing reaches its `unwrap` that
/// it would refuse.
#[cfg(not(target_arch = "wasm32"))]
fn parse_natively(sdp: &str) -> Result<(), BadSignal> {
    rtc_sdp::SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.as_bytes()))
        .map(|_| ())
        .map_err(|_| BadSignal::Sdp("rejected by the SDP parser"))
}

#[cfg(target_arch = "wasm32")]
fn parse_natively(_sdp: &str) -> Result<(), BadSignal> {
    Ok(())
}

#[derive(Deserialize)]
struct CandidateInit<'a> {
    #[serde(borrow)]
    candidate: Cow<'a, str>,
}

fn check_candidate(json: &str) -> Result<(), BadSignal> {
    if json == "null" {
        return Ok(());
    }
    let init: CandidateInit<'_> = serde_json::from_str(json).map_err(|_| BadSignal::Candidate)?;
    let c = init.candidate.as_ref();
    if c.is_empty() {
        return Ok(());
    }
    let fields: Vec<&str> = c
        .strip_prefix("candidate:")
        .unwrap_or(c)
        .split_ascii_whitespace()
        .collect();
    let ok = fields.len() >= 8
        && fields[1].parse::<u16>().is_ok()
        && fields[3].parse::<u32>().is_ok()
        && fields[5].parse::<u16>().is_ok()
        && fields[6] == "typ";
    if ok {
        Ok(())
    } else {
        Err(BadSignal::Candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=fingerprint:sha-256 AB:CD\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
        c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz\r\n";

    #[test]
    fn accepts_good_and_drops_bad() {
        assert!(check(&PeerSignal::Offer(SDP.into())).is_ok());
        assert!(check(&PeerSignal::Answer("garbage".into())).is_err());
        assert!(check(&PeerSignal::Offer(SDP.replace("a=ice-pwd", "a=xx-pwd"))).is_err());
        assert!(check(&PeerSignal::IceCandidate("null".into())).is_ok());
        let c =
            r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdpMid":"0"}"#;
        assert!(check(&PeerSignal::IceCandidate(c.into())).is_ok());
        assert!(check(&PeerSignal::IceCandidate("{".into())).is_err());
        assert!(check(&PeerSignal::IceCandidate(r#"{"candidate":"x"}"#.into())).is_err());
    }
}
