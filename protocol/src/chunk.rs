//! Large reliable messages: split into chunks on the way out, reassembled with bounded memory on
//! the way in. The reliable channel is ordered, so a message's chunks arrive in order.

use std::collections::HashMap;
use thiserror::Error;

/// Payload bytes per chunk: well under the data channel's 64 KiB message limit, and small enough
/// that game messages interleave with a bulk transfer.
pub const CHUNK_BYTES: usize = 16 * 1024;

/// Why a chunk was dropped (the partial message it belonged to is dropped with it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
    /// A chunk arrived out of order, or a message's chunk count changed mid-way.
    #[error("chunk {index} of message {seq} out of order")]
    OutOfOrder {
        /// The message.
        seq: u32,
        /// The chunk.
        index: u32,
    },
    /// The message would exceed the largest message allowed.
    #[error("message {seq} exceeds {limit} bytes")]
    TooLarge {
        /// The message.
        seq: u32,
        /// The limit.
        limit: usize,
    },
    /// Too many bytes of unfinished messages from this peer.
    #[error("more than {limit} bytes of unfinished messages")]
    TooMuchPending {
        /// The limit.
        limit: usize,
    },
}

#[derive(Debug)]
struct Partial {
    type_id: u32,
    count: u32,
    next: u32,
    bytes: Vec<u8>,
}

/// Reassembles one peer's chunked messages.
#[derive(Debug)]
pub struct Reassembler {
    max_message: usize,
    max_pending: usize,
    pending: usize,
    partial: HashMap<u32, Partial>,
    abandoned: u64,
}

impl Reassembler {
    /// A reassembler that accepts messages up to `max_message` bytes, holding at most
    /// `max_pending` bytes of unfinished messages at once.
    pub fn new(max_message: usize, max_pending: usize) -> Self {
        Self {
            max_message,
            max_pending,
            pending: 0,
            partial: HashMap::new(),
            abandoned: 0,
        }
    }

    /// Unfinished messages dropped because their sender started another, since the last call.
    pub fn take_abandoned(&mut self) -> u64 {
        std::mem::take(&mut self.abandoned)
    }

    /// Bytes held for unfinished messages.
    pub fn pending_bytes(&self) -> usize {
        self.pending
    }

    /// Takes one chunk; returns `(type_id, message)` when it completes one.
    pub fn push(
        &mut self,
        type_id: u32,
        seq: u32,
        index: u32,
        count: u32,
        data: &[u8],
    ) -> Result<Option<(u32, Vec<u8>)>, ChunkError> {
        if index == 0 {
            // A new message. A sender's chunks arrive in order, one message after the other, so
            // an unfinished one is one it gave up: it goes (and a peer that starts messages it
            // never ends cannot pile them up).
            let abandoned = std::mem::take(&mut self.partial);
            self.abandoned += abandoned.len() as u64;
            self.pending = 0;
            if (count as usize)
                .saturating_sub(1)
                .saturating_mul(CHUNK_BYTES)
                > self.max_message
            {
                return Err(ChunkError::TooLarge {
                    seq,
                    limit: self.max_message,
                });
            }
            self.partial.insert(
                seq,
                Partial {
                    type_id,
                    count,
                    next: 0,
                    bytes: Vec::new(),
                },
            );
        }
        let Some(p) = self.partial.get_mut(&seq) else {
            return Err(ChunkError::OutOfOrder { seq, index });
        };
        if p.next != index || p.count != count || p.type_id != type_id {
            self.drop_partial(seq);
            return Err(ChunkError::OutOfOrder { seq, index });
        }
        if p.bytes.len() + data.len() > self.max_message {
            self.drop_partial(seq);
            return Err(ChunkError::TooLarge {
                seq,
                limit: self.max_message,
            });
        }
        if self.pending + data.len() > self.max_pending {
            self.drop_partial(seq);
            return Err(ChunkError::TooMuchPending {
                limit: self.max_pending,
            });
        }
        p.bytes.extend_from_slice(data);
        p.next += 1;
        self.pending += data.len();
        if p.next < p.count {
            return Ok(None);
        }
        let done = self.partial.remove(&seq).map(|p| {
            self.pending -= p.bytes.len();
            (p.type_id, p.bytes)
        });
        Ok(done)
    }

    fn drop_partial(&mut self, seq: u32) {
        if let Some(p) = self.partial.remove(&seq) {
            self.pending -= p.bytes.len();
        }
    }
}

/// How many chunks a payload of `len` bytes needs.
pub fn chunk_count(len: usize) -> usize {
    len.div_ceil(CHUNK_BYTES).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(data: &[u8]) -> Vec<&[u8]> {
        data.chunks(CHUNK_BYTES).collect()
    }

    #[test]
    fn reassembles_in_order() {
        let data: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
        let parts = chunks(&data);
        assert_eq!(parts.len(), chunk_count(data.len()));
        let mut r = Reassembler::new(1 << 20, 1 << 20);
        let n = parts.len() as u32;
        for (i, part) in parts.iter().enumerate() {
            let out = r.push(7, 1, i as u32, n, part).unwrap();
            if i + 1 < parts.len() {
                assert!(out.is_none());
            } else {
                assert_eq!(out, Some((7, data.clone())));
            }
        }
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn bad_sequences_are_dropped_and_memory_freed() {
        let mut r = Reassembler::new(64 * 1024, 40 * 1024);
        let part = vec![1u8; CHUNK_BYTES];
        assert!(r.push(1, 1, 0, 4, &part).unwrap().is_none());
        assert_eq!(
            r.push(1, 1, 2, 4, &part),
            Err(ChunkError::OutOfOrder { seq: 1, index: 2 })
        );
        assert_eq!(r.pending_bytes(), 0);
        assert_eq!(
            r.push(1, 9, 1, 4, &part),
            Err(ChunkError::OutOfOrder { seq: 9, index: 1 })
        );
        // A message announcing more than the limit is refused at once.
        assert!(matches!(
            r.push(1, 2, 0, 100, &part),
            Err(ChunkError::TooLarge { .. })
        ));
        // An unfinished message past the pending limit is dropped, its memory freed.
        r.push(1, 3, 0, 4, &part).unwrap();
        r.push(1, 3, 1, 4, &part).unwrap();
        assert!(matches!(
            r.push(1, 3, 2, 4, &part),
            Err(ChunkError::TooMuchPending { .. })
        ));
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn a_new_message_ends_an_unfinished_one() {
        let mut r = Reassembler::new(1 << 20, 1 << 20);
        for seq in 0..100 {
            assert_eq!(r.push(1, seq, 0, 2, b"ab"), Ok(None));
        }
        assert_eq!(r.take_abandoned(), 99);
        assert_eq!(r.pending_bytes(), 2, "only the newest is held");
        assert!(
            r.push(1, 5, 1, 2, b"x").is_err(),
            "an abandoned one cannot go on"
        );
        assert_eq!(r.push(1, 7, 0, 2, b"a"), Ok(None));
        assert_eq!(r.push(1, 7, 1, 2, b"b"), Ok(Some((1, b"ab".to_vec()))));
        assert_eq!(r.pending_bytes(), 0);
    }
}
