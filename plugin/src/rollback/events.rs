//! GGRS events as Bevy messages, with the peer's id.

use bevy::prelude::*;
use ggrs::{Config, GgrsEvent};
use matchbox_socket::PeerId;
use std::time::Duration;

/// What happened in the rollback session. Read with `MessageReader<RollbackEvent>`.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub enum RollbackEvent {
    /// Synchronizing with `peer`: `count` of `total` round trips done.
    Synchronizing {
        /// The peer.
        peer: PeerId,
        /// Round trips done.
        count: u32,
        /// Round trips needed.
        total: u32,
    },
    /// Synchronized with `peer`.
    Synchronized {
        /// The peer.
        peer: PeerId,
    },
    /// A player is gone: it left the match ([`LeaveRollback`](super::LeaveRollback)) or the
    /// lobby, or was silent for `RollbackSettings::disconnect_timeout`. The match goes on with
    /// default inputs for it (`InputStatus::Disconnected`) once the remaining players agree on
    /// its last input (else [`RollbackEvent::Abandoned`] follows); the game may end or pause it.
    Disconnected {
        /// The peer.
        peer: PeerId,
        /// Its player handle.
        handle: usize,
    },
    /// The match ended: `peer` vanished and the remaining players hold different last inputs
    /// of it, which ggrs 0.13 cannot play on from (see `LeaveRollback` for leaving cleanly).
    /// Every remaining player gets this and the match's session is gone; the host may start a
    /// new one ([`StartRollback`](super::StartRollback)).
    Abandoned {
        /// The peer that vanished.
        peer: PeerId,
        /// Its player handle.
        handle: usize,
    },
    /// The match goes on in a fresh GGRS session from the state of match frame `frame` (the
    /// leader's snapshot: the game's world was set back to it), with the seats `players` (handle
    /// `i` at index `i`; handles do not change, `RollbackMatch::disconnected` lists the seats
    /// nobody plays, which get the default input). It follows a vanish the remaining players held
    /// different last inputs of, a player dropping in (a new seat at the end: spawn what it
    /// needs, the same way on every peer) or a player coming back into its gone seat
    /// ([`JoinRollback`](super::JoinRollback)).
    Resynced {
        /// The match frame of the state the match goes on from.
        frame: i32,
        /// The seats, handle order.
        players: Vec<PeerId>,
    },
    /// Nothing heard from `peer` for a while; it counts as gone after `disconnect_timeout` more.
    NetworkInterrupted {
        /// The peer.
        peer: PeerId,
        /// Time left before it is disconnected.
        disconnect_timeout: Duration,
    },
    /// `peer` is heard again after an interruption.
    NetworkResumed {
        /// The peer.
        peer: PeerId,
    },
    /// We are ahead of the others: GGRS suggests skipping frames (bevy_ggrs already runs slower).
    WaitRecommendation {
        /// Frames to skip.
        skip_frames: u32,
    },
    /// `peer` computed another checksum for `frame`: the game is not deterministic.
    DesyncDetected {
        /// The peer.
        peer: PeerId,
        /// The frame.
        frame: i32,
        /// Our checksum.
        local_checksum: u128,
        /// Its checksum.
        remote_checksum: u128,
    },
}

impl RollbackEvent {
    /// The event for a GGRS event. `handle_of` finds a disconnected peer's handle.
    pub(crate) fn from_ggrs<C: Config<Address = PeerId>>(
        event: GgrsEvent<C>,
        handle_of: impl Fn(PeerId) -> Option<usize>,
    ) -> Option<Self> {
        Some(match event {
            GgrsEvent::Synchronizing { addr, total, count } => Self::Synchronizing {
                peer: addr,
                count,
                total,
            },
            GgrsEvent::Synchronized { addr } => Self::Synchronized { peer: addr },
            GgrsEvent::Disconnected { addr } => Self::Disconnected {
                peer: addr,
                handle: handle_of(addr)?,
            },
            GgrsEvent::NetworkInterrupted {
                addr,
                disconnect_timeout,
            } => Self::NetworkInterrupted {
                peer: addr,
                disconnect_timeout: Duration::from_millis(
                    u64::try_from(disconnect_timeout).unwrap_or(u64::MAX),
                ),
            },
            GgrsEvent::NetworkResumed { addr } => Self::NetworkResumed { peer: addr },
            GgrsEvent::WaitRecommendation { skip_frames } => {
                Self::WaitRecommendation { skip_frames }
            }
            GgrsEvent::DesyncDetected {
                frame,
                local_checksum,
                remote_checksum,
                addr,
            } => Self::DesyncDetected {
                peer: addr,
                frame,
                local_checksum,
                remote_checksum,
            },
        })
    }
}
