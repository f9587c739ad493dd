//! The raw lane as the session exposes it: two bounded queues that the session fills and drains
//! each frame (in `HuddleSystems::Receive` and `HuddleSystems::Flush`), for an engine that owns
//! its own socket object (GGRS: see the rollback module). Opaque bytes: the session only checks
//! that they come from, and go to, peers in the lobby.

use bytes::Bytes;
use matchbox_socket::PeerId;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Packets held for the reader at most (it reads them every frame).
const INBOX_LIMIT: usize = 4096;
/// Packets queued to send at most between two flushes.
const OUTBOX_LIMIT: usize = 4096;

/// The queues of a raw lane.
#[derive(Debug, Default)]
pub struct RawQueues {
    /// Received packets, oldest first.
    pub inbox: Vec<(PeerId, Bytes)>,
    /// Packets to send at the next flush.
    pub outbox: Vec<(PeerId, Bytes)>,
    /// Packets dropped: the inbox or outbox was full, or the reader said they were garbage.
    pub dropped: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes handed to the data channel.
    pub bytes_out: u64,
    /// Received packets are held back from the reader (they wait in the inbox).
    pub held: bool,
}

/// A handle on the raw lane's queues, shared between the session and the reader.
#[derive(Debug, Clone, Default)]
pub struct RawLane(Arc<Mutex<RawQueues>>);

impl RawLane {
    /// The queues, locked.
    pub fn queues(&self) -> MutexGuard<'_, RawQueues> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `bytes` for `peer` (dropped and counted when the outbox is full).
    pub fn send(&self, peer: PeerId, bytes: Bytes) {
        let mut q = self.queues();
        if q.outbox.len() < OUTBOX_LIMIT {
            q.outbox.push((peer, bytes));
        } else {
            q.dropped += 1;
        }
    }

    /// A packet from `peer`.
    pub(crate) fn received(&self, peer: PeerId, packet: Bytes) {
        let mut q = self.queues();
        q.bytes_in += packet.len() as u64;
        if q.inbox.len() < INBOX_LIMIT {
            q.inbox.push((peer, packet));
        } else {
            q.dropped += 1;
        }
    }

    /// The packets received since the last call, unless they are held back.
    pub fn take_received(&self) -> Vec<(PeerId, Bytes)> {
        let mut q = self.queues();
        if q.held {
            return Vec::new();
        }
        std::mem::take(&mut q.inbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_bounded_and_holding_keeps_packets() {
        let lane = RawLane::default();
        let peer = PeerId(uuid::Uuid::from_u128(1));
        for _ in 0..INBOX_LIMIT + 5 {
            lane.received(peer, Bytes::from_static(b"x"));
        }
        assert_eq!(lane.queues().dropped, 5);
        lane.queues().held = true;
        assert!(lane.take_received().is_empty());
        lane.queues().held = false;
        assert_eq!(lane.take_received().len(), INBOX_LIMIT);
        for _ in 0..OUTBOX_LIMIT + 1 {
            lane.send(peer, Bytes::new());
        }
        assert_eq!(lane.queues().dropped, 6);
    }
}
