//! The plugin's own messages on its reserved reliable control channel.

use super::election::Roster;
use serde::{Deserialize, Serialize};

/// Version of the control protocol; peers with another version report a mismatch.
pub const PROTOCOL_VERSION: u16 = 1;

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Sent first on every new link: what this peer speaks.
    Hello {
        /// [`PROTOCOL_VERSION`] of the sender.
        version: u16,
        /// Hash of the sender's registered message types and their channels.
        types_hash: u64,
        /// The registered message types' names, in id order (for a readable mismatch error).
        types: Vec<String>,
        /// Whether the sender has received our hello. A message sent the instant a data channel
        /// opens can be lost, so hellos repeat until both sides have seen each other's.
        seen: bool,
    },
    /// The host's succession order.
    Roster(Roster),
    /// Flow control for chunked transfers: total chunk payload bytes received from the peer.
    ChunkAck {
        /// Cumulative bytes.
        received: u64,
    },
    /// Star host to client: your relayed reliable frames up to this sequence number were passed on.
    RelayAck {
        /// The highest sequence number passed on.
        seq: u32,
    },
}

impl Control {
    /// Encodes with bincode 2.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain types into a Vec cannot fail.
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    /// Decodes, refusing trailing bytes.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let config = bincode::config::standard().with_limit::<65536>();
        match bincode::serde::decode_from_slice(bytes, config) {
            Ok((c, n)) if n == bytes.len() => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matchbox_protocol::PeerId;

    #[test]
    fn roundtrip_and_garbage() {
        let c = Control::Roster(Roster {
            epoch: 3,
            order: vec![PeerId(uuid::Uuid::from_u128(1))],
        });
        assert_eq!(Control::decode(&c.encode()), Some(c));
        assert_eq!(Control::decode(&[0xff, 0xff, 0xff]), None);
        assert_eq!(Control::decode(&[]), None);
        // A huge claimed length must not allocate or panic.
        assert_eq!(Control::decode(&[0, 1, 252, 255, 255, 255, 255]), None);
    }
}
