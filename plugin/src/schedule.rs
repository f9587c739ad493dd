//! Where the plugin runs in the frame, and the lobby's phase.

use bevy::prelude::*;

/// The plugin's system sets, so games can order their systems around them.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub enum HuddleSystems {
    /// `PreUpdate`: reads the network and writes `Incoming<T>`, `PeerJoined`, `PeerLeft`,
    /// `HostChanged`, `HuddleError`; updates [`Roster`](crate::Roster) and the lobby state.
    Receive,
    /// `PostUpdate`: encodes this frame's `Outgoing<T>`.
    Send,
    /// `PostUpdate`, after `Send`: hands the frames to the data channels (bulk paced, pings).
    Flush,
}

/// The lobby's phase.
#[derive(States, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LobbyState {
    /// Not in a room.
    #[default]
    Offline,
    /// Joining: waiting for the server's id and for the host to be known.
    Connecting,
    /// In the lobby: our id and the host are known; peers come and go.
    InLobby,
}

/// The connection to the signaling server, beside the lobby's phase: the game goes on over the
/// peer-to-peer links whatever this is (so systems gated on [`LobbyState::InLobby`] keep running
/// while it reconnects); what needs the server is meeting newcomers.
#[derive(States, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SignalingState {
    /// No session.
    #[default]
    Offline,
    /// Connected to the server (or connecting to it for the first time).
    Connected,
    /// The connection dropped: reconnecting to resume our place, on the schedule of
    /// [`HuddleConfig::reconnect`](crate::HuddleConfig::reconnect). Nobody new can join us
    /// meanwhile; the peers we have stay.
    Reconnecting,
    /// The server is gone for good (we could not resume our place, or the server gives no resume
    /// tokens): the peers we have stay, nobody new can join. `HuddleError::SignalingLost` says
    /// when it happens.
    Lost,
}
