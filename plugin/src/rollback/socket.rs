//! GGRS traffic on the plugin's reserved GGRS channel (feature `ggrs`).
//!
//! A GGRS session owns its socket, while the data channels belong to the [`HuddleSession`]. So
//! the socket GGRS gets is a handle on two queues that the session fills and drains each frame
//! (in `HuddleSet::Receive` and `HuddleSet::Flush`). Bytes that are not a GGRS message are
//! dropped and counted, never a panic.

use super::RollbackSettings;
use crate::session::HuddleSession;
use bytes::Bytes;
use ggrs::{
    Config, DesyncDetection, GgrsError, Message, NonBlockingSocket, P2PSession, PlayerType,
    SessionBuilder,
};
use matchbox_socket::PeerId;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// GGRS tells of a silent player ([`RollbackEvent::NetworkInterrupted`]) after this long.
///
/// [`RollbackEvent::NetworkInterrupted`]: super::RollbackEvent::NetworkInterrupted
pub(crate) const NOTIFY_AFTER: Duration = Duration::from_millis(500);

/// A disconnect timeout GGRS never reaches: in the rollback plugin's matches the players agree
/// on who is gone, and when (see the `departure` module), so GGRS must not decide alone.
pub(crate) const GGRS_NEVER: Duration = Duration::from_secs(24 * 60 * 60);

/// Messages held for GGRS at most (it reads them every frame).
const INBOX_LIMIT: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct GgrsQueues {
    pub(crate) inbox: Vec<(PeerId, Bytes)>,
    pub(crate) outbox: Vec<(PeerId, Vec<u8>)>,
    /// Packets on the GGRS channel that were not GGRS messages, or came with nobody to read them.
    pub(crate) dropped: u64,
    /// GGRS bytes received (before decoding).
    pub(crate) bytes_in: u64,
    /// GGRS bytes handed to the data channel.
    pub(crate) bytes_out: u64,
    /// Hold received packets back from GGRS (they wait in the inbox).
    pub(crate) held: bool,
}

/// The session's end of a GGRS socket.
#[derive(Debug, Clone, Default)]
pub(crate) struct GgrsLink(pub(crate) Arc<Mutex<GgrsQueues>>);

impl GgrsLink {
    pub(crate) fn queues(&self) -> std::sync::MutexGuard<'_, GgrsQueues> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A packet from `peer` on the GGRS channel.
    pub(crate) fn received(&self, peer: PeerId, packet: Bytes) {
        let mut q = self.queues();
        q.bytes_in += packet.len() as u64;
        if q.inbox.len() < INBOX_LIMIT {
            q.inbox.push((peer, packet));
        } else {
            q.dropped += 1;
        }
    }
}

/// The [`NonBlockingSocket`] a GGRS session gets from [`HuddleSession::ggrs_socket`].
#[derive(Debug, Clone)]
pub struct HuddleGgrsSocket {
    link: GgrsLink,
}

impl HuddleGgrsSocket {
    /// GGRS packets dropped so far (garbage, or more than GGRS read).
    pub fn dropped(&self) -> u64 {
        self.link.queues().dropped
    }

    /// Holds received packets back from GGRS (`true`) or lets them through again.
    pub(crate) fn hold(&self, on: bool) {
        self.link.queues().held = on;
    }

    /// GGRS bytes received and sent so far: `(in, out)`.
    pub fn bytes(&self) -> (u64, u64) {
        let q = self.link.queues();
        (q.bytes_in, q.bytes_out)
    }
}

/// bincode for GGRS packets and the spectators' inputs: 64 KiB at most (a data channel message).
pub(crate) fn codec() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<65536>,
> {
    bincode::config::standard().with_limit::<65536>()
}

impl NonBlockingSocket<PeerId> for HuddleGgrsSocket {
    fn send_to(&mut self, msg: &Message, addr: &PeerId) {
        if let Ok(bytes) = bincode::serde::encode_to_vec(msg, codec()) {
            self.link.queues().outbox.push((*addr, bytes));
        }
    }

    fn receive_all_messages(&mut self) -> Vec<(PeerId, Message)> {
        let mut q = self.link.queues();
        if q.held {
            return Vec::new();
        }
        let packets = std::mem::take(&mut q.inbox);
        let mut messages = Vec::with_capacity(packets.len());
        for (peer, packet) in packets {
            match bincode::serde::decode_from_slice::<Message, _>(&packet, codec()) {
                Ok((msg, n)) if n == packet.len() => messages.push((peer, msg)),
                _ => q.dropped += 1,
            }
        }
        messages
    }
}

impl HuddleSession {
    /// A socket for a GGRS session on the reserved GGRS channel. One at a time: a new one
    /// replaces the last.
    pub fn ggrs_socket(&mut self) -> HuddleGgrsSocket {
        let link = GgrsLink::default();
        self.ggrs = Some(link.clone());
        HuddleGgrsSocket { link }
    }

    /// A GGRS P2P session of everyone in the lobby, handles in join order, on the GGRS channel,
    /// with `settings`. Returns the session and its socket (for the drop counter).
    pub fn start_p2p_session<C: Config<Address = PeerId>>(
        &mut self,
        settings: RollbackSettings,
    ) -> Result<(P2PSession<C>, HuddleGgrsSocket), GgrsError> {
        let players = self.ggrs_players();
        self.start_p2p_session_of::<C>(players, settings)
    }

    /// A GGRS P2P session of `players` (handle, kind), on the GGRS channel, with `settings`
    /// (GGRS disconnects a player it has not heard from for `settings.disconnect_timeout`).
    pub fn start_p2p_session_of<C: Config<Address = PeerId>>(
        &mut self,
        players: Vec<(usize, PlayerType<PeerId>)>,
        settings: RollbackSettings,
    ) -> Result<(P2PSession<C>, HuddleGgrsSocket), GgrsError> {
        self.build_p2p_session(players, settings, settings.disconnect_timeout)
    }

    /// [`Self::start_p2p_session_of`] with GGRS's own disconnect timeout: the rollback plugin
    /// gives GGRS [`GGRS_NEVER`] and decides itself who is gone.
    pub(crate) fn build_p2p_session<C: Config<Address = PeerId>>(
        &mut self,
        players: Vec<(usize, PlayerType<PeerId>)>,
        settings: RollbackSettings,
        ggrs_timeout: Duration,
    ) -> Result<(P2PSession<C>, HuddleGgrsSocket), GgrsError> {
        let desync = match settings.desync_interval {
            Some(interval) => DesyncDetection::On { interval },
            None => DesyncDetection::Off,
        };
        let mut builder = SessionBuilder::<C>::new()
            .with_num_players(players.len())?
            .with_input_delay(settings.input_delay)
            .with_max_prediction_window(settings.max_prediction)
            .with_desync_detection_mode(desync)
            .with_fps(settings.fps)?
            .with_disconnect_timeout(ggrs_timeout)
            .with_disconnect_notify_delay(NOTIFY_AFTER.min(ggrs_timeout));
        for (handle, kind) in players {
            builder = builder.add_player(kind, handle)?;
        }
        let socket = self.ggrs_socket();
        Ok((builder.start_p2p_session(socket.clone())?, socket))
    }

    /// The GGRS players: handle `i` is the `i`-th member in join order, the same on every peer;
    /// we are `Local`, the others `Remote`.
    pub fn ggrs_players(&self) -> Vec<(usize, PlayerType<PeerId>)> {
        self.ggrs_players_of(&self.succession())
    }

    /// GGRS players for `members` (handle `i` is `members[i]`): we are `Local`, the others
    /// `Remote`.
    pub fn ggrs_players_of(&self, members: &[PeerId]) -> Vec<(usize, PlayerType<PeerId>)> {
        members
            .iter()
            .copied()
            .enumerate()
            .map(|(handle, peer)| {
                let kind = if Some(peer) == self.id() {
                    PlayerType::Local
                } else {
                    PlayerType::Remote(peer)
                };
                (handle, kind)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_counted_not_decoded() {
        let link = GgrsLink::default();
        let mut socket = HuddleGgrsSocket { link: link.clone() };
        let peer = PeerId(uuid::Uuid::from_u128(1));
        link.received(peer, Bytes::from_static(&[0xff, 0xff, 0xff, 0x01]));
        link.received(peer, Bytes::new());
        assert!(socket.receive_all_messages().is_empty());
        assert_eq!(socket.dropped(), 2);
    }
}
