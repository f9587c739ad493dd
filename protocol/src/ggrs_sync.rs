//! GGRS's handshake in one round trip instead of five.
//!
//! A GGRS 0.13 session synchronizes with each remote endpoint before its first frame: five sync
//! requests in a row, each sent once the reply to the one before came (a lost one is retried
//! after 200 ms). At a 120 ms round trip that is 600 ms before a match starts and, worse, the
//! same stall in the middle of a match at every resync. GGRS checks nothing in a reply but that
//! it carries a random number it asked for, and takes the endpoint's magic number from the last
//! one. So our socket answers the first [`ANSWERED_HERE`] requests to each peer itself, at once,
//! without sending them, and sends the last one: the session is synchronized after one real
//! round trip, with the peer's real magic number. A request GGRS repeats after a loss goes out
//! as it is. Pure and sans-IO, like [`ggrs_filter`](crate::ggrs_filter), whose copy of the packet
//! layout it reads.

use crate::ggrs_filter::{codec, Body, Packet, SENDERS as PEERS};
use matchbox_protocol::PeerId;
use std::collections::HashMap;

/// GGRS 0.13's round trips per handshake (`NUM_SYNC_PACKETS`).
pub const ROUND_TRIPS: u32 = 5;

/// Requests to each peer answered here: all but the last round trip.
pub const ANSWERED_HERE: u32 = ROUND_TRIPS - 1;

/// What to do with a packet our session sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Send it.
    Send,
    /// Do not send it; give our session this reply from the peer instead.
    AnswerHere(Vec<u8>),
}

/// The requests answered so far, per peer, in one session (a new session starts a new one).
#[derive(Debug, Clone, Default)]
pub struct SyncShortcut {
    answered: HashMap<PeerId, u32>,
}

impl SyncShortcut {
    /// Our session sends `packet` (a GGRS message as encoded) to `peer`.
    pub fn sent(&mut self, peer: PeerId, packet: &[u8]) -> Outgoing {
        let decoded = bincode::serde::decode_from_slice::<Packet, _>(packet, codec());
        let Ok((
            Packet {
                body: Body::SyncRequest(random),
                ..
            },
            n,
        )) = decoded
        else {
            return Outgoing::Send;
        };
        let known = self.answered.contains_key(&peer);
        if n != packet.len() || (!known && self.answered.len() >= PEERS) {
            return Outgoing::Send;
        }
        let answered = self.answered.entry(peer).or_default();
        if *answered >= ANSWERED_HERE {
            return Outgoing::Send;
        }
        let reply = Packet {
            // GGRS reads the magic number of the last reply only, which the peer sends.
            magic: 0,
            body: Body::SyncReply(random),
        };
        match bincode::serde::encode_to_vec(&reply, codec()) {
            Ok(bytes) => {
                *answered += 1;
                Outgoing::AnswerHere(bytes)
            }
            Err(_) => Outgoing::Send,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u128) -> PeerId {
        PeerId(uuid::Uuid::from_u128(n))
    }

    fn encode(body: Body) -> Vec<u8> {
        bincode::serde::encode_to_vec(&Packet { magic: 7, body }, codec()).expect("encodes")
    }

    fn reply_to(outgoing: &Outgoing) -> Option<u32> {
        let Outgoing::AnswerHere(bytes) = outgoing else {
            return None;
        };
        match bincode::serde::decode_from_slice::<Packet, _>(bytes, codec()) {
            Ok((
                Packet {
                    body: Body::SyncReply(r),
                    ..
                },
                _,
            )) => Some(r),
            _ => None,
        }
    }

    /// The first four requests to each peer are answered here with their own random numbers;
    /// the fifth and any repeat go out; other packets always go out.
    #[test]
    fn all_but_the_last_request_to_each_peer_are_answered_here() {
        let mut shortcut = SyncShortcut::default();
        for p in [peer(1), peer(2)] {
            for random in 0..ANSWERED_HERE {
                let out = shortcut.sent(p, &encode(Body::SyncRequest(1000 + random)));
                assert_eq!(reply_to(&out), Some(1000 + random));
            }
            assert_eq!(
                shortcut.sent(p, &encode(Body::SyncRequest(5))),
                Outgoing::Send
            );
            assert_eq!(
                shortcut.sent(p, &encode(Body::SyncRequest(6))),
                Outgoing::Send
            );
        }
        let mut fresh = SyncShortcut::default();
        assert_eq!(
            fresh.sent(peer(3), &encode(Body::SyncReply(9))),
            Outgoing::Send,
            "a reply to the peer's request is the peer's to read"
        );
        assert_eq!(fresh.sent(peer(3), &[1, 2, 3]), Outgoing::Send);
        let mut trailing = encode(Body::SyncRequest(4));
        trailing.push(0);
        assert_eq!(fresh.sent(peer(3), &trailing), Outgoing::Send);
    }

    /// The peers remembered are bounded: past them, requests go out as they are.
    #[test]
    fn the_peers_remembered_are_bounded() {
        let mut shortcut = SyncShortcut::default();
        for n in 0..PEERS as u128 {
            let out = shortcut.sent(peer(n), &encode(Body::SyncRequest(1)));
            assert!(reply_to(&out).is_some());
        }
        let out = shortcut.sent(peer(10_000), &encode(Body::SyncRequest(1)));
        assert_eq!(out, Outgoing::Send);
        let again = shortcut.sent(peer(0), &encode(Body::SyncRequest(2)));
        assert!(reply_to(&again).is_some(), "a known peer still is");
    }
}
