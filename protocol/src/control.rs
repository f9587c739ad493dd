//! The plugin's own messages on its reserved reliable control channel.

use crate::election::Succession;
use crate::media::MediaSignal;
use crate::room::Topology;
use serde::{Deserialize, Serialize};

/// Version of the control protocol; peers with another version report a mismatch. 2: hellos
/// name the room's topology; 3: media signals say which tracks are on and wanted; 5: rosters
/// name heirs, hosts measure uploads.
pub const PROTOCOL_VERSION: u16 = 5;

/// The most bytes of a player's metadata ([`Hello::meta`]): a name and a few settings, not a
/// profile picture.
pub const MAX_META: usize = 1024;

/// What a peer speaks: sent first on every new link, repeated until both sides have seen the
/// other's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender. It comes first in every version, so a peer of another
    /// version can still be told apart from garbage.
    pub version: u16,
    /// Hash of the sender's registered message types and their channels.
    pub types_hash: u64,
    /// The registered message types' names, in id order (for a readable mismatch error).
    pub types: Vec<String>,
    /// The topology the sender joined the room as.
    pub topology: Topology,
    /// Whether the sender has received our hello. A message sent the instant a data channel
    /// opens can be lost, so hellos repeat until both sides have seen each other's.
    pub seen: bool,
    /// The sender's player metadata (a name, a colour: the game's own serde blob), at most
    /// [`MAX_META`] bytes; a longer one is dropped and counted, the peer is not.
    pub meta: Vec<u8>,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Sent first on every new link: what this peer speaks.
    Hello(Hello),
    /// The host's succession order.
    Succession(Succession),
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
    /// Negotiation of the media-only peer connection (see [`crate::media`]).
    Media(MediaSignal),
    /// Host to member: send a probe train now, frames marked `id` (see [`crate::uplink`]).
    UploadProbe {
        /// Marks the train's frames.
        id: u32,
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

/// The protocol version of a hello that did not decode as a whole (a peer of another version
/// whose hello has other fields): `Some(version)` if `bytes` starts like a hello.
pub fn hello_version(bytes: &[u8]) -> Option<u16> {
    let config = bincode::config::standard();
    // The enum's variant index (0: Hello), then the version.
    let (variant, n): (u32, usize) = bincode::decode_from_slice(bytes, config).ok()?;
    if variant != 0 {
        return None;
    }
    let (version, _): (u16, usize) = bincode::decode_from_slice(bytes.get(n..)?, config).ok()?;
    Some(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use matchbox_protocol::PeerId;

    #[test]
    fn roundtrip_and_garbage() {
        let c = Control::Succession(Succession {
            epoch: 3,
            order: vec![
                PeerId(uuid::Uuid::from_u128(1)),
                PeerId(uuid::Uuid::from_u128(2)),
            ],
            heirs: vec![PeerId(uuid::Uuid::from_u128(2))],
        });
        assert_eq!(Control::decode(&c.encode()), Some(c));
        assert_eq!(Control::decode(&[0xff, 0xff, 0xff]), None);
        assert_eq!(Control::decode(&[]), None);
        // A huge claimed length must not allocate or panic.
        assert_eq!(Control::decode(&[0, 1, 252, 255, 255, 255, 255]), None);
    }

    #[test]
    fn a_hello_of_another_version_shows_its_version() {
        let hello = Control::Hello(Hello {
            version: PROTOCOL_VERSION,
            types_hash: 7,
            types: vec!["a".into()],
            topology: Topology::Star,
            seen: true,
            meta: b"alice".to_vec(),
        });
        let bytes = hello.encode();
        assert_eq!(Control::decode(&bytes), Some(hello));
        assert_eq!(hello_version(&bytes), Some(PROTOCOL_VERSION));
        // Version 1's hello had no topology: it does not decode, but its version reads.
        let mut v1 = bytes.clone();
        v1[1] = 1;
        v1.remove(v1.len() - 2);
        assert_eq!(Control::decode(&v1), None);
        assert_eq!(hello_version(&v1), Some(1));
        let ack = Control::RelayAck { seq: 1 }.encode();
        assert_eq!(hello_version(&ack), None);
    }
}
