//! Endpoints over a simulated network with a fake clock (quinn-proto's model): lobbies of 2-8
//! with latency, jitter, loss and reordering, hosts that vanish mid-transfer, hello races and
//! hostile members. Deterministic by seed; each scenario runs over many seeds in milliseconds.

mod hostile;
mod lobby;
mod net;
mod star;
mod transfer;
mod uplink;

use huddle_protocol::conditioner::Conditions;
use std::time::Duration;

/// Seeds each scenario runs over.
const SEEDS: std::ops::Range<u64> = 0..24;

/// Latency, jitter and loss.
fn conditions(latency_ms: u64, jitter_ms: u64, loss: f32) -> Conditions {
    Conditions::new(
        Duration::from_millis(latency_ms),
        Duration::from_millis(jitter_ms),
        loss,
    )
}

/// A numbered message: `sender`, `n`, then `len - 8` bytes of a pattern of both.
fn numbered(sender: u32, n: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&sender.to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    v.extend((8..len).map(|i| (i as u32 ^ n ^ sender) as u8));
    v
}

/// The sender and number of a [`numbered`] message, after checking its pattern.
fn read_numbered(bytes: &[u8]) -> (u32, u32) {
    let sender = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let n = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    assert_eq!(bytes, numbered(sender, n, bytes.len()), "payload intact");
    (sender, n)
}
