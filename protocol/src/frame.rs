//! The frame header in front of every game message on the data channels.
//!
//! The first byte holds the frame kind (2 bits) and the message type id (6 bits); type ids from 63
//! on continue in a varint. A whole message of one of the first 63 types costs one byte of
//! header. Chunks of large reliable messages add the message's sequence number, the chunk's index
//! and the chunk count (varints). Link frames (ping/pong for RTT, upload probes) have no type.

use bincode::config::{standard, Configuration};
use thiserror::Error;

const CONFIG: Configuration = standard();
const SMALL_ID_LIMIT: u32 = 63;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of type `type_id`.
    Message {
        /// The registered type's id.
        type_id: u32,
    },
    /// One chunk of a large reliable message.
    Chunk {
        /// The registered type's id.
        type_id: u32,
        /// The message's sequence number (per sender).
        seq: u32,
        /// Which chunk this is, from 0.
        index: u32,
        /// How many chunks the message has.
        count: u32,
    },
    /// A ping (`pong == false`) or pong for RTT and loss.
    Link {
        /// Whether this answers a ping.
        pong: bool,
        /// The ping's sequence number.
        seq: u32,
        /// The pinger's clock when it sent the ping, in µs.
        sent_us: u64,
    },
    /// One frame of an upload probe train (padding follows), see [`crate::uplink`].
    Probe {
        /// The train, as the host asked for it.
        id: u32,
        /// Which frame of the train this is, from 0.
        index: u32,
    },
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Nothing at all.
    #[error("empty frame")]
    Empty,
    /// The header ends early or a number in it is malformed.
    #[error("truncated or malformed frame header")]
    Header,
    /// The frame kind is not one we know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

const KIND_MESSAGE: u8 = 0;
const KIND_CHUNK: u8 = 1;
const KIND_LINK: u8 = 2;
/// The low bits of a link frame: a ping, a pong, a probe frame.
const LINK_PING: u8 = 0;
const LINK_PONG: u8 = 1;
const LINK_PROBE: u8 = 2;

fn push_varint(out: &mut Vec<u8>, v: impl bincode::Encode) {
    // Encoding an integer into a Vec cannot fail.
    let _ = bincode::encode_into_std_write(v, out, CONFIG);
}

fn read_varint<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<(T, usize), FrameError> {
    bincode::decode_from_slice(bytes, CONFIG).map_err(|_| FrameError::Header)
}

fn push_kind_and_id(out: &mut Vec<u8>, kind: u8, type_id: u32) {
    out.push((kind << 6) | type_id.min(SMALL_ID_LIMIT) as u8);
    if type_id >= SMALL_ID_LIMIT {
        push_varint(out, type_id - SMALL_ID_LIMIT);
    }
}

impl Frame {
    /// Appends this frame's header to `out`; the payload follows it.
    pub fn encode_header(&self, out: &mut Vec<u8>) {
        match *self {
            Frame::Message { type_id } => push_kind_and_id(out, KIND_MESSAGE, type_id),
            Frame::Chunk {
                type_id,
                seq,
                index,
                count,
            } => {
                push_kind_and_id(out, KIND_CHUNK, type_id);
                push_varint(out, seq);
                push_varint(out, index);
                push_varint(out, count);
            }
            Frame::Link { pong, seq, sent_us } => {
                let which = if pong { LINK_PONG } else { LINK_PING };
                out.push((KIND_LINK << 6) | which);
                push_varint(out, seq);
                push_varint(out, sent_us);
            }
            Frame::Probe { id, index } => {
                out.push((KIND_LINK << 6) | LINK_PROBE);
                push_varint(out, id);
                push_varint(out, index);
            }
        }
    }

    /// This frame's header alone (a link frame has nothing behind it).
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        self.encode_header(&mut out);
        out
    }

    /// Reads a header; returns the frame and the payload after it.
    pub fn decode(bytes: &[u8]) -> Result<(Frame, &[u8]), FrameError> {
        let (&first, mut rest) = bytes.split_first().ok_or(FrameError::Empty)?;
        let kind = first >> 6;
        let small = u32::from(first & 0x3f);
        let mut type_id = || -> Result<u32, FrameError> {
            if small < SMALL_ID_LIMIT {
                return Ok(small);
            }
            let (more, n): (u32, usize) = read_varint(rest)?;
            rest = &rest[n..];
            more.checked_add(SMALL_ID_LIMIT).ok_or(FrameError::Header)
        };
        let frame = match kind {
            KIND_MESSAGE => Frame::Message {
                type_id: type_id()?,
            },
            KIND_CHUNK => {
                let type_id = type_id()?;
                let (seq, n): (u32, usize) = read_varint(rest)?;
                rest = &rest[n..];
                let (index, n): (u32, usize) = read_varint(rest)?;
                rest = &rest[n..];
                let (count, n): (u32, usize) = read_varint(rest)?;
                rest = &rest[n..];
                if count == 0 || index >= count {
                    return Err(FrameError::Header);
                }
                Frame::Chunk {
                    type_id,
                    seq,
                    index,
                    count,
                }
            }
            KIND_LINK if small == u32::from(LINK_PROBE) => {
                let (id, n): (u32, usize) = read_varint(rest)?;
                rest = &rest[n..];
                let (index, n): (u32, usize) = read_varint(rest)?;
                rest = &rest[n..];
                Frame::Probe { id, index }
            }
            KIND_LINK => {
                if small > u32::from(LINK_PONG) {
                    return Err(FrameError::Header);
                }
                let (seq, n): (u32, usize) = read_varint(rest)?;
                rest = &rest[n..];
                let (sent_us, n): (u64, usize) = read_varint(rest)?;
                rest = &rest[n..];
                Frame::Link {
                    pong: small == u32::from(LINK_PONG),
                    seq,
                    sent_us,
                }
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok((frame, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) -> usize {
        let mut buf = Vec::new();
        f.encode_header(&mut buf);
        let header = buf.len();
        buf.extend_from_slice(b"payload");
        let (back, rest) = Frame::decode(&buf).unwrap();
        assert_eq!(back, f);
        assert_eq!(rest, b"payload");
        header
    }

    #[test]
    fn small_message_header_is_one_byte() {
        assert_eq!(roundtrip(Frame::Message { type_id: 0 }), 1);
        assert_eq!(roundtrip(Frame::Message { type_id: 62 }), 1);
        assert_eq!(roundtrip(Frame::Message { type_id: 63 }), 2);
        assert!(roundtrip(Frame::Message { type_id: 300 }) <= 3);
        roundtrip(Frame::Message { type_id: u32::MAX });
    }

    #[test]
    fn chunks_and_links_roundtrip() {
        roundtrip(Frame::Chunk {
            type_id: 5,
            seq: 70_000,
            index: 3,
            count: 19,
        });
        roundtrip(Frame::Link {
            pong: true,
            seq: 9,
            sent_us: 123_456_789,
        });
        roundtrip(Frame::Probe {
            id: u32::MAX,
            index: 63,
        });
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::decode(&[0xC0]), Err(FrameError::UnknownKind(3)));
        assert_eq!(Frame::decode(&[0x7f]), Err(FrameError::Header));
        // Chunk with index >= count.
        let mut buf = Vec::new();
        Frame::Chunk {
            type_id: 1,
            seq: 1,
            index: 0,
            count: 1,
        }
        .encode_header(&mut buf);
        let last = buf.len() - 1;
        buf[last] = 0;
        assert_eq!(Frame::decode(&buf), Err(FrameError::Header));
        // Every byte string up to 3 bytes decodes or errors.
        for a in 0..=255u8 {
            for b in [0u8, 1, 63, 64, 250, 251, 252, 253, 254, 255] {
                let _ = Frame::decode(&[a, b]);
                let _ = Frame::decode(&[a, b, 0xff]);
            }
        }
    }
}
