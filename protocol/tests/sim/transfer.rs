//! Large reliable messages: chunked, paced by the bulk window, reassembled, in order with the
//! small messages around them, under loss and reordering.

use crate::net::{Sim, FRAME};
use crate::{conditions, numbered, read_numbered, SEEDS};
use bytes::Bytes;
use huddle_protocol::chunk::CHUNK_BYTES;
use huddle_protocol::endpoint::{Channel, Recipients};
use huddle_protocol::{PeerId, Topology};
use std::time::Duration;

/// The numbers of the [`numbered`] messages of `type_id` from `sender` among `got`, in order.
fn numbers(got: &[(PeerId, u32, Bytes)], type_id: u32, sender: u32) -> Vec<u32> {
    got.iter()
        .filter(|(_, t, _)| *t == type_id)
        .map(|(_, _, b)| read_numbered(b))
        .filter(|(s, _)| *s == sender)
        .map(|(_, n)| n)
        .collect()
}

const LIMIT: Duration = Duration::from_secs(10);
const BIG: usize = 300 * 1024;

/// Three peers under 10 % loss with 40 ms ± 30 ms (unreliable frames reorder, reliable ones are
/// retransmitted late): every peer sends a 300 KiB message to everyone between small numbered
/// reliable messages, and a stream of unreliable ones. Every reliable message arrives exactly
/// once, intact and in its sender's order; some unreliable ones are lost or reordered.
#[test]
fn chunked_transfers_under_loss_and_reordering_arrive_intact_and_in_order() {
    let (mut reordered, mut lost) = (0, 0);
    for seed in SEEDS {
        let mut sim = Sim::new(Topology::Mesh, conditions(40, 30, 0.10), seed);
        sim.config.settings.bulk_window_bytes = 64 * 1024;
        for _ in 0..3 {
            sim.join();
            sim.run_for(FRAME * 3);
        }
        assert!(sim.run_until(LIMIT, Sim::settled), "seed {seed}");
        let start: Vec<usize> = (0..3).map(|i| sim.messages(i).len()).collect();
        for round in 0..20u32 {
            for i in 0..3 {
                let sender = i as u32;
                let len = if round == 5 { BIG } else { 64 };
                let msg = numbered(sender, round, len);
                sim.send(i, 1, Channel::Reliable, &msg, Recipients::All);
                let moved = numbered(sender, 1000 + round, 32);
                sim.send(i, 2, Channel::Unreliable, &moved, Recipients::All);
            }
            sim.step();
        }
        let done = |s: &Sim| {
            (0..3).all(|i| {
                s.messages(i)[start[i]..]
                    .iter()
                    .filter(|(_, t, _)| *t == 1)
                    .count()
                    == 40
            })
        };
        assert!(sim.run_until(LIMIT, done), "seed {seed}: all reliable in");
        for (i, &first) in start.iter().enumerate() {
            let got = &sim.messages(i)[first..];
            for sender in (0..3u32).filter(|s| *s != i as u32) {
                let reliable = numbers(got, 1, sender);
                assert_eq!(reliable, (0..20).collect::<Vec<_>>(), "seed {seed}");
                let unreliable = numbers(got, 2, sender);
                assert!(unreliable.len() > 10, "seed {seed}: most unreliable in");
                lost += 20 - unreliable.len();
                reordered += unreliable.windows(2).filter(|w| w[0] > w[1]).count();
            }
            let window_left = sim.nodes[i].ep.bulk_pending(Sim::id((i + 1) % 3));
            assert_eq!(
                window_left, 0,
                "seed {seed}: nothing left behind the window"
            );
        }
    }
    assert!(reordered > 0, "the network reordered unreliable frames");
    assert!(lost > 0, "the network lost unreliable frames");
}

/// A chunked message paces itself by the window: never more than the window of chunk bytes in
/// flight, and game messages sent meanwhile are not stuck behind the whole transfer.
#[test]
fn the_bulk_window_paces_a_transfer() {
    let mut sim = Sim::new(Topology::Mesh, conditions(50, 0, 0.0), 5);
    sim.config.settings.bulk_window_bytes = 4 * CHUNK_BYTES;
    sim.join();
    sim.run_for(Duration::from_millis(400));
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    let big = numbered(0, 1, 1024 * 1024);
    sim.send(0, 1, Channel::Reliable, &big, Recipients::All);
    sim.step();
    let queued = sim.nodes[0].ep.bulk_pending(Sim::id(1));
    assert!(
        queued >= big.len() - 5 * CHUNK_BYTES,
        "most of the transfer waits behind the window: {queued}"
    );
    sim.send(
        0,
        2,
        Channel::Unreliable,
        &numbered(0, 2, 8),
        Recipients::All,
    );
    sim.run_for(Duration::from_millis(100));
    let got = sim.messages(1);
    assert_eq!(got.len(), 1, "the move overtook the transfer");
    assert!(sim.run_until(LIMIT, |s| s.messages(1).len() == 2));
    assert_eq!(read_numbered(&sim.messages(1)[1].2), (0, 1));
    // 1 MiB through a 64 KiB window on a 100 ms round trip: about 16 round trips.
    assert_eq!(sim.nodes[0].ep.bulk_pending(Sim::id(1)), 0);
}

/// A peer that never acknowledges chunks: the window stays shut, what waits behind it is given
/// up and reported after the link wait, and meanwhile the queue for it cannot grow past
/// `max_queued_bytes` (a send beyond is refused, nothing half-queued).
#[test]
fn a_peer_that_never_acknowledges_cannot_make_us_hold_its_traffic() {
    use huddle_protocol::control::Control;
    use huddle_protocol::endpoint::{EndpointError, Event, SendError};
    let mut sim = Sim::new(Topology::Mesh, conditions(5, 0, 0.0), 8);
    sim.config.settings.bulk_window_bytes = 64 * 1024;
    sim.config.settings.max_queued_bytes = 1024 * 1024;
    sim.join();
    sim.run_for(Duration::from_millis(400));
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    // Peer 1 reads but never acknowledges.
    sim.drop_if = Some(|from, _, lane, bytes| {
        from == 1
            && lane == huddle_protocol::Lane::Control
            && matches!(Control::decode(bytes), Some(Control::ChunkAck { .. }))
    });
    let big = numbered(0, 1, 900 * 1024);
    sim.send(0, 1, Channel::Reliable, &big, Recipients::All);
    sim.run_for(Duration::from_secs(1));
    let queued = sim.nodes[0].ep.bulk_pending(Sim::id(1));
    assert!(queued > 700 * 1024, "the window is shut: {queued} wait");
    let more = numbered(0, 2, 200 * 1024);
    let refused = sim.nodes[0]
        .ep
        .send(1, Channel::Reliable, &more, &Recipients::All);
    assert!(
        matches!(refused, Err(SendError::QueueFull { .. })),
        "{refused:?}"
    );
    assert_eq!(
        sim.nodes[0].ep.bulk_pending(Sim::id(1)),
        queued,
        "nothing half-queued"
    );
    sim.run_for(Duration::from_secs(11));
    let gave_up = sim.nodes[0].events.iter().any(|e| {
        matches!(e, Event::Error(EndpointError::LinkGaveUp { peer, .. }) if *peer == Sim::id(1))
    });
    assert!(gave_up, "reported");
    assert_eq!(sim.nodes[0].ep.bulk_pending(Sim::id(1)), 0);
    assert!(sim.nodes[0].ep.counters().send_failed > 0);
    // A peer that acknowledges again gets messages again.
    sim.drop_if = None;
    sim.send(
        0,
        1,
        Channel::Reliable,
        &numbered(0, 3, 100 * 1024),
        Recipients::All,
    );
    assert!(sim.run_until(LIMIT, |s| s
        .messages(1)
        .iter()
        .any(|(_, _, b)| read_numbered(b) == (0, 3))));
}
