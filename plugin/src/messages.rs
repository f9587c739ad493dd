//! The Bevy messages the plugin writes and reads.

use bevy::prelude::*;
use matchbox_socket::PeerId;

use huddle_protocol::endpoint::{EndpointError, Event};
pub use huddle_protocol::endpoint::{LeaveReason, Recipients, Role};
use huddle_protocol::Topology;

/// A peer joined the lobby: its link is open and it speaks our message set.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct PeerJoined {
    /// The peer.
    pub peer: PeerId,
    /// Our role on the link to it.
    pub role: Role,
}

/// A peer left the lobby (announced once per peer that had joined).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct PeerLeft {
    /// The peer.
    pub peer: PeerId,
    /// Why.
    pub reason: LeaveReason,
}

/// The host changed (or became known). Every peer sees the same sequence.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct HostChanged {
    /// The previous host.
    pub old: Option<PeerId>,
    /// The new host.
    pub new: PeerId,
}

/// Something went wrong; the plugin never panics on it.
#[derive(Message, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HuddleError {
    /// The room URL or ICE settings cannot be used.
    #[error("bad configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The signaling server could not be reached, or the connection to it ended.
    #[error("signaling failed: {0}")]
    Signaling(String),
    /// The link to a peer the server introduced did not open within
    /// `ProtocolSettings::connect_timeout` (20 s): no path between us (a NAT that needs a TURN
    /// server, a firewall) or a peer that never answers. It is given up and the lobby goes on; a
    /// link that still opens later is taken.
    #[error("no link to {peer} opened within {waited:?}")]
    ConnectTimeout {
        /// The peer.
        peer: PeerId,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// The signaling server refused to let us into the room (its answer to the websocket
    /// request; in a browser, which hides that answer, huddle_server's `GET /admit/<room>`:
    /// another server gives [`HuddleError::Signaling`] there). The session ends: retrying
    /// changes nothing until what the refusal names changes.
    #[error("the signaling server refused the join: {0}")]
    Refused(JoinRefusal),
    /// The connection to the signaling server is lost for good (it went away and we could not
    /// resume our place within `HuddleConfig::reconnect`, or the server gives no resume tokens):
    /// the lobby goes on over its peer-to-peer links and the game keeps playing, but nobody new
    /// can join us until we join the room again. While we are still reconnecting,
    /// [`SignalingState`](crate::SignalingState) is `Reconnecting` and nothing is reported.
    #[error("lost the signaling server: the lobby goes on over its links, nobody new can join")]
    SignalingLost,
    /// The signaling server took us out of the room (kicked by the host or the operator, or
    /// closed for a policy: silent too long, not reading, flooding). The session ends: the
    /// others were told we left, and our links to them close.
    #[error("removed from the room by the server: {reason}")]
    Removed {
        /// The server's reason, e.g. `"kicked by <host id>"`.
        reason: String,
    },
    /// A peer registered a different set of message types: we ignore its messages.
    #[error("peer {peer} registered other message types (ours: {ours:?}, theirs: {theirs:?})")]
    MessageTypeMismatch {
        /// The peer.
        peer: PeerId,
        /// Our message types, in id order.
        ours: Vec<String>,
        /// Its message types.
        theirs: Vec<String>,
    },
    /// A peer speaks another version of the plugin's protocol.
    #[error("peer {peer} speaks protocol version {theirs}, we speak {ours}")]
    ProtocolMismatch {
        /// The peer.
        peer: PeerId,
        /// Our version.
        ours: u16,
        /// Its version.
        theirs: u16,
    },
    /// A peer joined the room as another topology (a star client in a mesh room, or the other
    /// way round): we ignore its messages.
    #[error("peer {peer} joined as a {theirs} room, we joined as a {ours} room")]
    TopologyMismatch {
        /// The peer.
        peer: PeerId,
        /// Ours.
        ours: Topology,
        /// Its.
        theirs: Topology,
    },
    /// A local media track stopped by itself (feature `media`): its device could not be opened
    /// or failed, or its encoder could not start. The track is off; the game goes on.
    #[error("media: {0}")]
    Media(String),
    /// A message could not be sent.
    #[error("cannot send {type_name}: {why}")]
    Send {
        /// The message type.
        type_name: &'static str,
        /// Why.
        why: String,
    },
}

/// Why a signaling server refused a join, from its HTTP answer (huddle_server answers with a
/// status and the reason in the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    /// 400: the room URL cannot be used (a bad room name, a bad `?next=` or `?capacity=`).
    #[error("bad request: {reason}")]
    BadRequest {
        /// The server's reason.
        reason: String,
    },
    /// 401: the server needs a join token for the room, and ours is missing, expired or for
    /// another room.
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// The server's reason.
        reason: String,
    },
    /// 403: we (our address or our token's name) were kicked from the room, and the ban lasts.
    #[error("banned: {reason}")]
    Banned {
        /// The server's reason, with the seconds left.
        reason: String,
    },
    /// 503 (the room or the server is full) or 429 (too many connections from our address).
    #[error("full: {reason}")]
    Full {
        /// The server's reason.
        reason: String,
    },
    /// Any other answer.
    #[error("HTTP {status}: {reason}")]
    Other {
        /// The HTTP status.
        status: u16,
        /// The body of the answer.
        reason: String,
    },
}

impl JoinRefusal {
    /// The refusal an HTTP answer with `status` and `body` means.
    pub fn from_http(status: u16, body: &str) -> Self {
        // A reason is a line of text, not a page.
        let reason: String = body.trim().chars().take(512).collect();
        match status {
            400 => Self::BadRequest { reason },
            401 => Self::Unauthorized { reason },
            403 => Self::Banned { reason },
            429 | 503 => Self::Full { reason },
            _ => Self::Other { status, reason },
        }
    }
}

/// A game message to send: write it with a `MessageWriter<Outgoing<T>>`.
#[derive(Message, Debug, Clone)]
pub struct Outgoing<T> {
    /// Who gets it.
    pub to: Recipients,
    /// The message.
    pub message: T,
}

impl<T> Outgoing<T> {
    /// To every peer.
    pub fn to_all(message: T) -> Self {
        Self {
            to: Recipients::All,
            message,
        }
    }

    /// To the host.
    pub fn to_host(message: T) -> Self {
        Self {
            to: Recipients::Host,
            message,
        }
    }

    /// To one peer.
    pub fn to_peer(peer: PeerId, message: T) -> Self {
        Self {
            to: Recipients::Peer(peer),
            message,
        }
    }
}

/// A game message received: read it with a `MessageReader<Incoming<T>>`.
#[derive(Message, Debug, Clone)]
pub struct Incoming<T> {
    /// The peer that sent it.
    pub from: PeerId,
    /// The message.
    pub message: T,
}

impl From<EndpointError> for HuddleError {
    fn from(e: EndpointError) -> Self {
        match e {
            EndpointError::ProtocolMismatch { peer, ours, theirs } => {
                HuddleError::ProtocolMismatch { peer, ours, theirs }
            }
            EndpointError::MessageTypeMismatch { peer, ours, theirs } => {
                HuddleError::MessageTypeMismatch { peer, ours, theirs }
            }
            EndpointError::TopologyMismatch { peer, ours, theirs } => {
                HuddleError::TopologyMismatch { peer, ours, theirs }
            }
            EndpointError::ConnectTimeout { peer, waited } => {
                HuddleError::ConnectTimeout { peer, waited }
            }
            EndpointError::LinkGaveUp { .. }
            | EndpointError::RelayOverflow { .. }
            | EndpointError::QueueFull { .. } => HuddleError::Send {
                type_name: "reliable frames",
                why: e.to_string(),
            },
        }
    }
}

/// A media signal from a peer, for the media systems (feature `media`).
#[cfg(feature = "media")]
#[derive(Message, Debug, Clone)]
pub(crate) struct MediaSignalIn {
    pub(crate) from: PeerId,
    pub(crate) signal: huddle_protocol::media::MediaSignal,
}

/// Writes an endpoint's events as Bevy messages; game messages go to `deliver` (which decodes
/// them with the registry).
pub(crate) fn write_events(
    world: &mut World,
    events: impl IntoIterator<Item = Event>,
    mut deliver: impl FnMut(&mut World, u32, PeerId, &[u8]),
) {
    for event in events {
        match event {
            Event::Joined { peer, role } => {
                world.write_message(PeerJoined { peer, role });
            }
            Event::Left { peer, reason } => {
                world.write_message(PeerLeft { peer, reason });
            }
            Event::HostChanged { old, new } => {
                world.write_message(HostChanged { old, new });
            }
            Event::Error(e) => {
                let e = HuddleError::from(e);
                warn!("huddle: {e}");
                world.write_message(e);
            }
            Event::Message {
                type_id,
                from,
                bytes,
            } => deliver(world, type_id, from, &bytes),
            #[cfg(feature = "media")]
            Event::Media { from, signal } => {
                world.write_message(MediaSignalIn { from, signal });
            }
            #[cfg(not(feature = "media"))]
            Event::Media { .. } => {}
            Event::Raw { .. } => {}
        }
    }
}
