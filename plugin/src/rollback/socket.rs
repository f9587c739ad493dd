//! GGRS traffic on the session's raw lane (feature `ggrs`).
//!
//! A GGRS session owns its socket, while the data channels belong to the [`HuddleSession`]. So
//! the socket GGRS gets is a handle on the raw lane's queues, which the session fills and drains
//! each frame (in `HuddleSystems::Receive` and `HuddleSystems::Flush`). Bytes that are not a GGRS
//! message are dropped and counted, never a panic; what a GGRS message may say is filtered
//! ([`huddle_protocol::ggrs_filter`]). Every packet starts with its match epoch's low byte: a
//! resync starts a new GGRS session, and packets of the one before (checksum reports, acks,
//! inputs of other frames) must not reach it; they are dropped and counted. GGRS's five-round-trip
//! handshake takes one ([`huddle_protocol::ggrs_sync`]): the socket answers the first four sync
//! requests to each peer itself.

use super::RollbackSettings;
use crate::session::{HuddleSession, RawLane};
#[cfg(test)]
use bytes::Bytes;
use ggrs::{
    Config, DesyncDetection, GgrsError, Message, NonBlockingSocket, P2PSession, PlayerType,
    SessionBuilder,
};
use huddle_protocol::ggrs_filter::{InputFilter, Verdict};
use huddle_protocol::ggrs_sync::{Outgoing, SyncShortcut};
use matchbox_socket::PeerId;
use std::time::Duration;

/// GGRS tells of a silent player ([`RollbackEvent::NetworkInterrupted`]) after this long.
///
/// [`RollbackEvent::NetworkInterrupted`]: super::RollbackEvent::NetworkInterrupted
pub(crate) const NOTIFY_AFTER: Duration = Duration::from_millis(500);

/// A disconnect timeout GGRS never reaches: in the rollback plugin's matches the players agree
/// on who is gone, and when (see the `departure` module), so GGRS must not decide alone.
pub(crate) const GGRS_NEVER: Duration = Duration::from_secs(24 * 60 * 60);

/// The [`NonBlockingSocket`] a GGRS session gets: the session's raw lane
/// ([`HuddleSession::open_raw_lane`]), GGRS messages encoded with bincode.
#[derive(Debug, Clone)]
pub struct HuddleGgrsSocket {
    lane: RawLane,
    /// What a player may say ([`huddle_protocol::ggrs_filter`]).
    filter: InputFilter,
    /// The first byte of every packet: the match epoch's low byte.
    epoch: u8,
    /// GGRS's handshake in one round trip ([`huddle_protocol::ggrs_sync`]).
    shortcut: SyncShortcut,
    /// Sync replies answered here, for the session's next receive.
    answered: Vec<(PeerId, Message)>,
}

impl HuddleGgrsSocket {
    /// A socket on a newly opened raw lane of `session` (replacing the last one).
    pub fn open(session: &mut HuddleSession) -> Self {
        Self::open_in(session, 0)
    }

    /// A socket for the match's `epoch` (see the module docs).
    pub(crate) fn open_in(session: &mut HuddleSession, epoch: u32) -> Self {
        Self {
            lane: session.open_raw_lane(),
            filter: InputFilter::default(),
            epoch: epoch.to_le_bytes()[0],
            shortcut: SyncShortcut::default(),
            answered: Vec::new(),
        }
    }

    /// GGRS packets dropped so far (garbage, or more than GGRS read).
    pub fn dropped(&self) -> u64 {
        self.lane.queues().dropped
    }

    /// Holds received packets back from GGRS (`true`) or lets them through again.
    pub(crate) fn hold(&self, on: bool) {
        self.lane.queues().held = on;
    }

    /// GGRS bytes received and sent so far: `(in, out)`.
    pub fn bytes(&self) -> (u64, u64) {
        let q = self.lane.queues();
        (q.bytes_in, q.bytes_out)
    }
}

/// bincode for GGRS packets and the spectators' inputs: 64 KiB at most (a data channel message).
pub(crate) use huddle_protocol::ggrs_filter::codec;

impl NonBlockingSocket<PeerId> for HuddleGgrsSocket {
    fn send_to(&mut self, msg: &Message, addr: &PeerId) {
        let mut bytes = vec![self.epoch];
        if bincode::serde::encode_into_std_write(msg, &mut bytes, codec()).is_err() {
            self.lane.queues().dropped += 1;
            return;
        }
        let answer = match self.shortcut.sent(*addr, &bytes[1..]) {
            Outgoing::AnswerHere(reply) => decode(&reply),
            Outgoing::Send => None,
        };
        match answer {
            Some(reply) => self.answered.push((*addr, reply)),
            None => self.lane.send(*addr, bytes.into()),
        }
    }

    fn receive_all_messages(&mut self) -> Vec<(PeerId, Message)> {
        let packets = self.lane.take_received();
        let mut messages = std::mem::take(&mut self.answered);
        messages.reserve(packets.len());
        let mut garbage = 0;
        for (peer, packet) in packets {
            let Some(packet) = packet.strip_prefix(&[self.epoch]) else {
                // Of another epoch's session, or garbage.
                garbage += 1;
                continue;
            };
            // Judged first, so each packet is decoded for GGRS once (the judge reads only input
            // packets, and passes what it cannot read on to GGRS's own decoding).
            let msg = match self.filter.judge(peer, packet) {
                Verdict::Pass => decode(packet),
                Verdict::Rewrite(bytes) => decode(&bytes),
                Verdict::Drop => None,
            };
            match msg {
                Some(msg) => messages.push((peer, msg)),
                None => garbage += 1,
            }
        }
        self.lane.queues().dropped += garbage;
        messages
    }
}

/// A GGRS message from its bytes (all of them).
fn decode(bytes: &[u8]) -> Option<Message> {
    match bincode::serde::decode_from_slice::<Message, _>(bytes, codec()) {
        Ok((msg, n)) if n == bytes.len() => Some(msg),
        _ => None,
    }
}

/// A GGRS P2P session of `players` (handle, kind) on `session`'s raw lane, with `settings` and
/// GGRS's own disconnect timeout `ggrs_timeout` (the rollback plugin gives GGRS `GGRS_NEVER`
/// and decides itself who is gone). Returns the session and its socket (for the drop counter).
pub fn start_p2p_session<C: Config<Address = PeerId>>(
    session: &mut HuddleSession,
    players: Vec<(usize, PlayerType<PeerId>)>,
    settings: RollbackSettings,
    ggrs_timeout: Duration,
) -> Result<(P2PSession<C>, HuddleGgrsSocket), GgrsError> {
    start_p2p_session_in(session, players, settings, ggrs_timeout, 0)
}

/// [`start_p2p_session`] for the match's `epoch` (a resync's new session).
pub(crate) fn start_p2p_session_in<C: Config<Address = PeerId>>(
    session: &mut HuddleSession,
    players: Vec<(usize, PlayerType<PeerId>)>,
    settings: RollbackSettings,
    ggrs_timeout: Duration,
    epoch: u32,
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
    let socket = HuddleGgrsSocket::open_in(session, epoch);
    Ok((builder.start_p2p_session(socket.clone())?, socket))
}

/// GGRS players for `members` (handle `i` is `members[i]`): `me` is `Local`, the others
/// `Remote`.
pub fn ggrs_players(me: Option<PeerId>, members: &[PeerId]) -> Vec<(usize, PlayerType<PeerId>)> {
    members
        .iter()
        .copied()
        .enumerate()
        .map(|(handle, peer)| {
            let kind = if Some(peer) == me {
                PlayerType::Local
            } else {
                PlayerType::Remote(peer)
            };
            (handle, kind)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket of epoch 1 on a lane the test fills.
    fn socket() -> (RawLane, HuddleGgrsSocket) {
        let lane = RawLane::default();
        let socket = HuddleGgrsSocket {
            lane: lane.clone(),
            filter: InputFilter::default(),
            epoch: 1,
            shortcut: SyncShortcut::default(),
            answered: Vec::new(),
        };
        (lane, socket)
    }

    /// Two real GGRS sessions on our sockets (their lanes wired to each other) synchronize after
    /// one real round trip: each puts one sync request on the wire, not five.
    #[test]
    fn two_sessions_synchronize_in_one_round_trip() {
        use huddle_protocol::ggrs_filter::{Body, Packet};
        type Test = bevy_ggrs::GgrsConfig<u8, PeerId>;
        let ids = [
            PeerId(uuid::Uuid::from_u128(1)),
            PeerId(uuid::Uuid::from_u128(2)),
        ];
        let (lanes, sockets): (Vec<RawLane>, Vec<HuddleGgrsSocket>) =
            (0..2).map(|_| socket()).unzip();
        let mut sessions: Vec<P2PSession<Test>> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                SessionBuilder::<Test>::new()
                    .with_num_players(2)
                    .and_then(|b| b.add_player(PlayerType::Local, i))
                    .and_then(|b| b.add_player(PlayerType::Remote(ids[1 - i]), 1 - i))
                    .and_then(|b| b.start_p2p_session(socket))
                    .expect("a session")
            })
            .collect();
        let mut requests_on_wire = [0, 0];
        for _ in 0..50 {
            for s in &mut sessions {
                s.poll_remote_clients();
            }
            for from in 0..2 {
                let out = std::mem::take(&mut lanes[from].queues().outbox);
                for (_, bytes) in out {
                    let body = bincode::serde::decode_from_slice::<Packet, _>(&bytes[1..], codec());
                    if let Ok((
                        Packet {
                            body: Body::SyncRequest(_),
                            ..
                        },
                        _,
                    )) = body
                    {
                        requests_on_wire[from] += 1;
                    }
                    lanes[1 - from].received(ids[from], bytes);
                }
            }
            if sessions
                .iter()
                .all(|s| s.current_state() == ggrs::SessionState::Running)
            {
                break;
            }
        }
        assert!(sessions
            .iter()
            .all(|s| s.current_state() == ggrs::SessionState::Running));
        assert_eq!(requests_on_wire, [1, 1]);
    }

    #[test]
    fn garbage_is_counted_not_decoded() {
        let (lane, mut socket) = socket();
        let peer = PeerId(uuid::Uuid::from_u128(1));
        lane.received(peer, Bytes::from_static(&[1, 0xff, 0xff, 0xff, 0x01]));
        lane.received(peer, Bytes::new());
        lane.received(peer, Bytes::from_static(&[1]));
        assert!(socket.receive_all_messages().is_empty());
        assert_eq!(socket.dropped(), 3);
    }

    /// A packet of another epoch's session is dropped, one of ours reaches GGRS.
    #[test]
    fn packets_of_another_epoch_are_dropped() {
        let (lane, mut socket) = socket();
        let peer = PeerId(uuid::Uuid::from_u128(1));
        // A sync request (magic 7, random 42) as GGRS writes it.
        let bytes = bincode::serde::encode_to_vec(
            huddle_protocol::ggrs_filter::Packet {
                magic: 7,
                body: huddle_protocol::ggrs_filter::Body::SyncRequest(42),
            },
            codec(),
        )
        .unwrap_or_default();
        let stale = [&[0u8][..], &bytes].concat();
        let ours = [&[1u8][..], &bytes].concat();
        lane.received(peer, Bytes::from(stale));
        lane.received(peer, Bytes::from(ours));
        assert_eq!(socket.receive_all_messages().len(), 1);
        assert_eq!(socket.dropped(), 1);
    }
}
