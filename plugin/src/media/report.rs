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
}
