//! What a player may say in GGRS's packets: its own inputs, nothing about anyone else.
//!
//! GGRS 0.13 believes what an input packet says of every player's connection: a packet that
//! marks another player disconnected at frame -1 trips its asserts (a panic in every receiver),
//! `disconnect_requested` drops the sender's endpoint, and a first packet far ahead of frame 0
//! overfills its input queue (another assert). In huddle's matches GGRS never decides alone who
//! is gone (the players agree on departures, see the `departure` module), so every input packet
//! is passed on with its connection claims cleared (nobody disconnected, no frame claimed),
//! a packet that asks to disconnect is dropped, and a packet whose first frame runs more than
//! [`AHEAD`] frames past what the sender sent before (or past frame [`AHEAD`] at first) is
//! dropped. Everything else GGRS checks itself.
//!
//! GGRS keeps its message fields private, so this reads the packets through a copy of their
//! layout (bincode writes fields in order, without names): [`Packet`]. Pure and sans-IO, so it is
//! unit-tested and fuzzed here; the plugin's GGRS socket applies it to every packet.

use matchbox_protocol::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How far a packet's first frame may run past the first frame of the sender's packets so far:
/// GGRS's input queue holds 128 frames, and a sender repeats from its oldest unacknowledged one.
pub const AHEAD: i32 = 64;

/// GGRS's "no frame" (`ggrs::NULL_FRAME`).
pub const NULL_FRAME: i32 = -1;

/// bincode as GGRS's packets use it in huddle: 64 KiB at most (a data channel message).
pub fn codec() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<65536>,
> {
    bincode::config::standard().with_limit::<65536>()
}

/// The most senders remembered (more than any match has players).
pub(crate) const SENDERS: usize = 256;

/// A GGRS packet as it is on the wire, as far as the input packet (variant 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// The sender's magic number.
    pub magic: u16,
    /// The message.
    pub body: Body,
}

/// The first variants of GGRS's message body (later ones are not read here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A sync request's random number.
    SyncRequest(u32),
    /// A sync reply's random number.
    SyncReply(u32),
    /// Inputs.
    Input(Input),
}

/// GGRS's input packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// The sender's view of every player's connection.
    pub statuses: Vec<Status>,
    /// The sender asks to be disconnected.
    pub disconnect_requested: bool,
    /// The frame of the first input in `bytes`.
    pub start_frame: i32,
    /// The newest of our frames the sender has.
    pub ack_frame: i32,
    /// The inputs, delta-encoded.
    pub bytes: Vec<u8>,
}

/// One player's connection as a sender sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The sender believes this player disconnected.
    pub disconnected: bool,
    /// The newest frame of this player the sender has.
    pub last_frame: i32,
}

/// What to do with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on as it came.
    Pass,
    /// Pass on these bytes instead (the claims cleared).
    Rewrite(Vec<u8>),
    /// Drop it (counted).
    Drop,
}

/// The per-sender state of the filter.
#[derive(Debug, Clone, Default)]
pub struct InputFilter {
    /// The first frame of each sender's newest packet, as far as accepted.
    first_frames: HashMap<PeerId, i32>,
}

impl InputFilter {
    /// Judges `packet` from `peer` (bytes that decode as a GGRS message).
    pub fn judge(&mut self, peer: PeerId, packet: &[u8]) -> Verdict {
        let config = codec();
        let Ok((Packet { magic, body }, n)) =
            bincode::serde::decode_from_slice::<Packet, _>(packet, config)
        else {
            // Not an input packet (a later variant): GGRS reads it.
            return Verdict::Pass;
        };
        let Body::Input(mut input) = body else {
            return Verdict::Pass;
        };
        if n != packet.len() || input.disconnect_requested {
            return Verdict::Drop;
        }
        let known = self.first_frames.get(&peer).copied();
        let limit = known.unwrap_or(0).saturating_add(AHEAD);
        if input.start_frame > limit || (known.is_none() && self.first_frames.len() >= SENDERS) {
            return Verdict::Drop;
        }
        let newest = known.map_or(input.start_frame, |k| k.max(input.start_frame));
        self.first_frames.insert(peer, newest);
        let clear = Status {
            disconnected: false,
            last_frame: NULL_FRAME,
        };
        if input.statuses.iter().all(|s| *s == clear) {
            return Verdict::Pass;
        }
        input.statuses.iter_mut().for_each(|s| *s = clear);
        let cleared = Packet {
            magic,
            body: Body::Input(input),
        };
        match bincode::serde::encode_to_vec(&cleared, config) {
            Ok(bytes) => Verdict::Rewrite(bytes),
            Err(_) => Verdict::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(packet: &Packet) -> Vec<u8> {
        bincode::serde::encode_to_vec(packet, codec()).unwrap_or_default()
    }

    fn input(statuses: Vec<Status>, disconnect_requested: bool, start_frame: i32) -> Vec<u8> {
        encode(&Packet {
            magic: 7,
            body: Body::Input(Input {
                statuses,
                disconnect_requested,
                start_frame,
                ack_frame: -1,
                bytes: vec![1, 2, 3],
            }),
        })
    }

    fn ggrs_reads(bytes: &[u8]) -> bool {
        bincode::serde::decode_from_slice::<ggrs::Message, _>(bytes, codec())
            .is_ok_and(|(_, n)| n == bytes.len())
    }

    const PEER: PeerId = PeerId(uuid::Uuid::from_u128(9));

    #[test]
    fn the_layout_is_ggrs_own() {
        let honest = Status {
            disconnected: false,
            last_frame: 12,
        };
        for bytes in [
            input(vec![honest; 2], false, 0),
            encode(&Packet {
                magic: 1,
                body: Body::SyncRequest(42),
            }),
        ] {
            assert!(ggrs_reads(&bytes), "GGRS reads what we write");
        }
    }

    #[test]
    fn claims_about_connections_are_cleared_and_disconnects_dropped() {
        let mut filter = InputFilter::default();
        // Another player disconnected at frame -1: what panics GGRS 0.13.
        let forged = vec![
            Status {
                disconnected: false,
                last_frame: 3,
            },
            Status {
                disconnected: true,
                last_frame: -1,
            },
        ];
        let Verdict::Rewrite(bytes) = filter.judge(PEER, &input(forged, false, 0)) else {
            panic!("rewritten");
        };
        assert!(ggrs_reads(&bytes));
        let (packet, _): (Packet, usize) = bincode::serde::decode_from_slice(&bytes, codec())
            .unwrap_or_else(|_| panic!("our layout"));
        let Body::Input(cleared) = packet.body else {
            panic!("an input");
        };
        assert!(cleared
            .statuses
            .iter()
            .all(|s| !s.disconnected && s.last_frame == -1));
        assert_eq!((cleared.start_frame, cleared.bytes), (0, vec![1, 2, 3]));
        // Asking to be disconnected: dropped.
        assert_eq!(filter.judge(PEER, &input(vec![], true, 1)), Verdict::Drop);
        // Cleared claims pass untouched; other messages too.
        let clear = Status {
            disconnected: false,
            last_frame: -1,
        };
        assert_eq!(
            filter.judge(PEER, &input(vec![clear; 2], false, 1)),
            Verdict::Pass
        );
        let sync = encode(&Packet {
            magic: 1,
            body: Body::SyncReply(5),
        });
        assert_eq!(filter.judge(PEER, &sync), Verdict::Pass);
    }

    #[test]
    fn a_first_frame_far_ahead_is_dropped() {
        let mut filter = InputFilter::default();
        let clear = vec![
            Status {
                disconnected: false,
                last_frame: -1,
            };
            2
        ];
        assert_eq!(
            filter.judge(PEER, &input(clear.clone(), false, AHEAD + 1)),
            Verdict::Drop,
            "a first packet past frame {AHEAD}"
        );
        assert_eq!(
            filter.judge(PEER, &input(clear.clone(), false, 0)),
            Verdict::Pass
        );
        // The sender moves on: so may its packets, AHEAD at a time, and repeat older frames.
        for start in [40, 100, 90, 160] {
            assert_eq!(
                filter.judge(PEER, &input(clear.clone(), false, start)),
                Verdict::Pass,
                "{start}"
            );
        }
        assert_eq!(
            filter.judge(PEER, &input(clear.clone(), false, i32::MAX)),
            Verdict::Drop
        );
        assert_eq!(
            filter.judge(PEER, &input(clear, false, 160 + AHEAD + 1)),
            Verdict::Drop
        );
    }
}
