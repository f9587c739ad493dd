//! What goes into and out of an [`Endpoint`](super::Endpoint).

use crate::lane::Lane;
use crate::media::MediaSignal;
use crate::room::Topology;
use bytes::Bytes;
use matchbox_protocol::PeerId;
use std::time::Duration;

/// Which data channel a game message type travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Ordered, retransmitted: chat, lobby and game events. Large messages are chunked.
    Reliable,
    /// Unordered, never retransmitted: moves and positions. At most one data channel message
    /// (64 KiB, header included).
    Unreliable,
}

/// Who an outgoing message goes to. Messages are never delivered to ourselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Every peer in the lobby.
    All,
    /// The host (nothing is sent if we are the host; [`SendError::NotInLobby`] if there is no
    /// host we are joined with, e.g. while a new one is being agreed).
    Host,
    /// One peer ([`SendError::NotInLobby`] if it is not in our lobby: not joined yet, or gone).
    Peer(PeerId),
    /// Several peers (sent to those in our lobby; [`SendError::NotInLobby`] names the others).
    Peers(Vec<PeerId>),
}

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

/// The endpoint's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Hash of the game's registered message types and their channels (peers must agree).
    pub types_hash: u64,
    /// The registered message types' names, in id order (for a readable mismatch error).
    pub type_names: Vec<String>,
    /// The room's topology (peers must agree).
    pub topology: Topology,
    /// Whether we do media: with it, media signals from peers become [`Event::Media`]; without,
    /// a peer's offer is answered [`MediaSignal::Unsupported`].
    pub media: bool,
    /// Limits and timings (a game's `HuddleConfig` carries them).
    pub settings: ProtocolSettings,
    /// Our player metadata, sent in every hello (at most [`MAX_META`](crate::control::MAX_META)
    /// bytes; the plugin checks it when connecting).
    pub meta: Vec<u8>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            types_hash: 0,
            type_names: Vec::new(),
            topology: Topology::Mesh,
            media: false,
            settings: ProtocolSettings::default(),
            meta: Vec::new(),
        }
    }
}

/// The protocol's limits and timings: what a game may tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSettings {
    /// How long a newcomer waits for an earlier peer's offer before it decides it is the first in
    /// the room, and so the host.
    pub host_grace: Duration,
    /// Largest reliable message, after encoding (larger ones are refused at send).
    pub max_message_bytes: usize,
    /// Most bytes of unfinished chunked messages held per peer.
    pub max_pending_bytes: usize,
    /// Most chunk bytes in flight (sent, not yet acknowledged) per peer.
    pub bulk_window_bytes: usize,
    /// Most bytes of reliable frames queued behind the window per peer (a peer that does not
    /// read cannot make us hold more; past it sends are refused and relayed frames given up).
    pub max_queued_bytes: usize,
    /// How often each link is pinged (for RTT and loss).
    pub ping_interval: Duration,
    /// How long a link to a peer the server introduced may take to open before it is given up
    /// ([`EndpointError::ConnectTimeout`]; a link that opens later is taken as it comes).
    pub connect_timeout: Duration,
    /// The host measures each member's upload headroom (a ~70 KB probe train from each, and
    /// again every [`REMEASURE`](crate::uplink::REMEASURE); see [`crate::uplink`]) and names the
    /// members with the most as its heirs: when it leaves, the one best able to relay hosts next
    /// instead of the next in join order. For star rooms, where the host relays everything. Whoever hosts decides (members answer
    /// probes whatever theirs says), so set it on every peer: after a migration the new host
    /// measures too.
    pub host_by_upload: bool,
}

impl Default for ProtocolSettings {
    fn default() -> Self {
        Self {
            host_grace: Duration::from_millis(500),
            max_message_bytes: 16 * 1024 * 1024,
            max_pending_bytes: 32 * 1024 * 1024,
            bulk_window_bytes: 256 * 1024,
            max_queued_bytes: 64 * 1024 * 1024,
            ping_interval: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(20),
            host_by_upload: false,
        }
    }
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The data channel.
    pub lane: Lane,
    /// The peer to send it to.
    pub peer: PeerId,
    /// The packet.
    pub bytes: Bytes,
}

/// Something the game must hear, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A peer joined the lobby: its link is open and it speaks our protocol and message set (or,
    /// in a star, the host's roster names it).
    Joined {
        /// The peer.
        peer: PeerId,
        /// Our role on the link to it.
        role: Role,
    },
    /// A peer that had joined is gone (announced once).
    Left {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// The host changed (or became known). Every peer sees the same sequence.
    HostChanged {
        /// The previous host.
        old: Option<PeerId>,
        /// The new host.
        new: PeerId,
    },
    /// A game message arrived (its payload, still encoded).
    Message {
        /// The registered type's id.
        type_id: u32,
        /// Who sent it (the origin, for a relayed one).
        from: PeerId,
        /// The encoded message.
        bytes: Bytes,
    },
    /// A media signal from a peer in the lobby (only when the endpoint does media), for the
    /// driver's [`MediaPeer`](crate::media::MediaPeer) of that peer.
    Media {
        /// The peer.
        from: PeerId,
        /// The signal.
        signal: MediaSignal,
    },
    /// Bytes on the raw lane from a peer in the lobby.
    Raw {
        /// The peer.
        from: PeerId,
        /// The packet.
        bytes: Bytes,
    },
    /// Something went wrong with a peer or a send; the endpoint goes on.
    Error(EndpointError),
}

/// What went wrong with a peer, or with messages already accepted for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// A peer speaks another version of the protocol: we ignore its frames.
    #[error("peer {peer} speaks protocol version {theirs}, we speak {ours}")]
    ProtocolMismatch {
        /// The peer.
        peer: PeerId,
        /// Our version.
        ours: u16,
        /// Its version.
        theirs: u16,
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
    /// A peer joined the room with another topology (a star client in a mesh room, or the other
    /// way round): we ignore its frames.
    #[error("peer {peer} joined as a {theirs} room, we joined as a {ours} room")]
    TopologyMismatch {
        /// The peer.
        peer: PeerId,
        /// Ours.
        ours: Topology,
        /// Its.
        theirs: Topology,
    },
    /// The link to a peer the server introduced did not open in time (ICE found no path: a NAT
    /// that needs TURN, a firewall, a peer that never answers): it is given up, and the lobby
    /// goes on without it.
    #[error("no link to {peer} opened within {waited:?}")]
    ConnectTimeout {
        /// The peer.
        peer: PeerId,
        /// How long we waited.
        waited: Duration,
    },
    /// Reliable frames were given up: no link to their next hop came up in time.
    #[error("no link to {peer} came up within {waited:?}: {frames} reliable frames not sent")]
    LinkGaveUp {
        /// The peer they were for (or the host, for relayed frames).
        peer: PeerId,
        /// How many frames.
        frames: usize,
        /// How long they waited.
        waited: Duration,
    },
    /// Relayed reliable frames for `peer` were given up: its queue was full.
    #[error("{frames} relayed reliable frames for {peer} given up: its queue is full")]
    QueueFull {
        /// The peer.
        peer: PeerId,
        /// How many frames.
        frames: usize,
    },
    /// Relayed reliable frames were given up: more than the endpoint keeps for a resend were
    /// waiting for the host's acknowledgement.
    #[error("{frames} relayed reliable frames given up: too many unacknowledged")]
    RelayOverflow {
        /// How many frames.
        frames: usize,
    },
}

/// Why a message was refused at [`Endpoint::send`](super::Endpoint::send) (nothing was queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// An unreliable message must fit in one data channel message.
    #[error("{bytes} bytes exceed the unreliable channel's {limit}")]
    TooLargeForUnreliable {
        /// The frame's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The reliable queue of a recipient is full (it reads slower than we send, or not at all).
    #[error(
        "the queue for {peer} holds {queued} bytes: {bytes} more exceed max_queued_bytes ({limit})"
    )]
    QueueFull {
        /// The recipient (the next hop).
        peer: PeerId,
        /// Bytes queued for it now.
        queued: usize,
        /// The message's frames.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Recipients that are not in our lobby (not joined yet, or gone), or no host to reach: the
    /// message did not go to them (it went to the other recipients).
    #[error("not in the lobby (not joined yet, or gone): {missing:?}")]
    NotInLobby {
        /// The recipients it did not go to (empty: there was no host to send it to).
        missing: Vec<PeerId>,
    },
    /// The message exceeds `max_message_bytes`.
    #[error("{bytes} bytes exceed max_message_bytes ({limit})")]
    TooLarge {
        /// The message's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// Counters of what was dropped instead of panicking, and of relaying.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Signals from other peers dropped by the signaller (malformed SDP/ICE, garbage events).
    pub signals_dropped: u64,
    /// Data channel frames dropped: unknown kind or type, truncated, undecodable, or on the raw
    /// lane with nobody to read them.
    pub frames_dropped: u64,
    /// Chunks dropped (out of order, over the size limits); their messages are lost.
    pub chunks_dropped: u64,
    /// Control messages that did not decode.
    pub control_dropped: u64,
    /// Frames from peers whose hello differs from ours (version, message types, topology).
    pub mismatched_dropped: u64,
    /// Unreliable frames the link conditioner dropped on purpose.
    pub conditioner_dropped: u64,
    /// Star: frames with a forged or misplaced origin, dropped.
    pub forged_dropped: u64,
    /// Star host: frames relayed to a client.
    pub relayed: u64,
    /// Star: relayed frames seen before (sent again after a host change), dropped.
    pub duplicates_dropped: u64,
    /// Reliable frames given up (reported to the game as errors).
    pub send_failed: u64,
    /// Media signals dropped: from peers outside the lobby, or while we have no media.
    pub media_dropped: u64,
    /// Rosters and offers the host election refused: a roster from a member that may not
    /// publish one or whose epoch jumps, an offer from a peer that joined after us.
    pub election_refused: u64,
    /// Control messages answered less often than they came (a peer repeating its hello).
    pub control_limited: u64,
    /// Upload probes dropped: frames of a train we did not ask for (or seen twice), and
    /// requests not from the host or too soon after the last (see [`crate::uplink`]).
    pub probes_dropped: u64,
}
