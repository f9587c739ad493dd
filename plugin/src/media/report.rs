//! What a media connection tells the driver (both targets: webrtc-rs natively, the browser's
//! `RTCPeerConnection` on wasm32).

use super::remote::{RemoteAudio, RemoteVideo};
use matchbox_socket::PeerId;
use std::sync::Arc;
use std::time::Duration;

/// The connection's view of the path, from its RTCP reports (once a second).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PathReport {
    /// Round-trip time the peer's receiver reports give.
    pub(crate) rtt: Option<Duration>,
    /// Fraction of our video the peer reports lost (0..=1).
    pub(crate) video_loss: Option<f64>,
    /// Fraction of our audio the peer reports lost.
    pub(crate) audio_loss: Option<f64>,
    /// Interarrival jitter of what we receive (audio), in seconds.
    pub(crate) jitter: Option<f64>,
    /// What the send-side congestion controller (Google Congestion Control over transport-wide
    /// feedback) says the path carries, in bits per second.
    pub(crate) estimate: Option<u32>,
}

/// What the connection did.
pub(crate) enum Report {
    Offer {
        round: u32,
        sdp: String,
    },
    Answer {
        round: u32,
        sdp: String,
    },
    Candidate(String),
    Connected,
    /// Failed or closed, or a step could not be done (with why).
    Failed(String),
    /// A voice arrived (natively its decoding thread runs), of the peer its stream names (in a star, the
    /// host names each forwarded stream by its publisher) or else of the connection's peer.
    RemoteAudio(PeerId, Arc<RemoteAudio>),
    /// A camera arrived.
    RemoteVideo(PeerId, Arc<RemoteVideo>),
    Path(PathReport),
    /// The peer asked for a keyframe of our camera (PLI or FIR), at most every 250 ms (native:
    /// the browser answers them itself).
    #[cfg(not(target_arch = "wasm32"))]
    KeyframeWanted,
    /// A remote track past what one connection takes (browser): refused, counted with the
    /// peer's dropped signals.
    #[cfg(target_arch = "wasm32")]
    Refused,
}

/// Whose a remote stream is. On a star client's connection to its host (`relay`), a stream
/// named by a peer id is that publisher's (the host names what it forwards so; the driver still
/// checks the name against the lobby); on any other connection every stream is the peer's own,
/// whatever it is named: a peer cannot pass its packets off as another's (a browser names its
/// streams with random uuids, too).
pub(crate) fn origin(stream: &str, peer: PeerId, relay: bool) -> PeerId {
    if !relay {
        return peer;
    }
    uuid::Uuid::parse_str(stream).map_or(peer, PeerId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_star_host_may_name_a_streams_publisher() {
        let host = PeerId(uuid::Uuid::from_u128(1));
        let victim = PeerId(uuid::Uuid::from_u128(2));
        let named = victim.0.to_string();
        assert_eq!(
            origin(&named, host, true),
            victim,
            "the host forwards the victim's"
        );
        // A mesh peer (or a star client) naming its stream after another member is still itself.
        assert_eq!(origin(&named, host, false), host);
        assert_eq!(origin("huddle", host, true), host);
        assert_eq!(origin("{not a uuid}", host, true), host);
    }
}
