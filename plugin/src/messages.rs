//! The Bevy messages the plugin writes and reads.

use bevy::prelude::*;
use matchbox_socket::PeerId;

/// Which end of a link we are. In every pair the earlier peer is the caller (it was introduced to
/// the later one and sent the offer); the later one is the receiver (it answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We sent the offer: we were in the room first.
    Caller,
    /// We answered: the other peer was in the room first.
    Receiver,
}

/// Why a peer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The signaling server said it left the room.
    Left,
    /// Its link closed or timed out without word from the server.
    Disconnected,
    /// We left the room ourselves.
    WeLeft,
}

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
    Config(String),
    /// The signaling server could not be reached, or the connection to it ended.
    #[error("signaling failed: {0}")]
    Signaling(String),
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
    /// A message could not be sent.
    #[error("cannot send {type_name}: {why}")]
    Send {
        /// The message type.
        type_name: &'static str,
        /// Why.
        why: String,
    },
}

/// Who an outgoing message goes to. Messages are never delivered to ourselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Every peer in the lobby.
    All,
    /// The host (nothing is sent if we are the host).
    Host,
    /// One peer.
    Peer(PeerId),
    /// Several peers.
    Peers(Vec<PeerId>),
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
