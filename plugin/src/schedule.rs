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
