//! Members that speak the protocol perfectly and lie: forged origins, acknowledgements of
//! everything, floods before the hello, huge chunk counts, raw bytes from strangers, hellos of
//! another version. Nothing panics, every buffer stays bounded, the lobby goes on.

use crate::net::{Sim, FRAME};
use crate::{conditions, numbered, read_numbered};
use huddle_protocol::control::Control;
use huddle_protocol::endpoint::{Channel, EndpointError, Event, Recipients};
use huddle_protocol::frame::Frame;
use huddle_protocol::relay::{self, Route};
use huddle_protocol::{Lane, Topology};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

fn lobby(topology: Topology, n: usize) -> Sim {
    let mut sim = Sim::new(topology, conditions(5, 2, 0.0), 42);
    for _ in 0..n {
        sim.join();
        sim.run_for(FRAME * 4);
    }
    assert!(sim.run_until(LIMIT, Sim::settled));
    sim
}

fn routed(route: Route, type_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = relay::encode(route);
    Frame::Message { type_id }.encode_header(&mut bytes);
    bytes.extend_from_slice(payload);
    bytes
}

fn message(type_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    Frame::Message { type_id }.encode_header(&mut bytes);
    bytes.extend_from_slice(payload);
    bytes
}

/// A star client that claims to speak for another member: the host refuses the frame, nobody
/// hears it.
#[test]
fn a_client_cannot_speak_for_another() {
    let mut sim = lobby(Topology::Star, 4);
    let forged = Route {
        origin: Some(Sim::id(2)),
        target: None,
        seq: Some(1),
    };
    sim.inject(3, 0, Lane::Reliable, routed(forged, 1, &numbered(2, 0, 16)));
    sim.run_for(Duration::from_millis(200));
    assert!((0..3).all(|i| sim.messages(i).is_empty()));
    assert_eq!(sim.nodes[0].ep.counters().forged_dropped, 1);
}

/// A peer the server took out (a kick) whose WebRTC links still deliver: the others hear it
/// left once, and nothing it sends afterwards (hellos, messages) brings it back or reaches the
/// game: it is dropped and counted.
#[test]
fn a_peer_the_server_took_out_stays_out() {
    for topology in [Topology::Mesh, Topology::Star] {
        let mut sim = lobby(topology, 3);
        let kicked = Sim::id(2);
        sim.kick(2);
        // Node 0 (the host, in a star the only one linked to it) drops what comes.
        let before = sim.nodes[0].ep.counters().frames_dropped;
        sim.inject(2, 0, Lane::Reliable, message(1, &numbered(2, 0, 16)));
        sim.send(
            2,
            1,
            Channel::Reliable,
            &numbered(2, 1, 16),
            Recipients::All,
        );
        sim.run_for(Duration::from_secs(2));
        for i in 0..2 {
            let events = &sim.nodes[i].events;
            let left = |e: &Event| matches!(e, Event::Left { peer, .. } if *peer == kicked);
            let joined = |e: &Event| matches!(e, Event::Joined { peer, .. } if *peer == kicked);
            assert_eq!(
                events.iter().filter(|e| left(e)).count(),
                1,
                "{topology:?}: {i}"
            );
            let at = events.iter().position(left).unwrap_or_default();
            assert!(
                !events[at..].iter().any(joined),
                "{topology:?}: {i} takes it back"
            );
            assert!(sim.messages(i).is_empty(), "{topology:?}: node {i}");
            assert!(!sim.nodes[i].ep.peers().contains(&kicked));
        }
        assert!(sim.nodes[0].ep.counters().frames_dropped > before);
    }
}

/// A host that stamps thousands of invented origins: the client remembers a bounded number of
/// them and refuses the rest, and real members still get through.
#[test]
fn invented_origins_are_bounded() {
    let mut sim = lobby(Topology::Star, 3);
    for k in 0..3000u128 {
        let route = Route {
            origin: Some(huddle_protocol::PeerId(uuid::Uuid::from_u128(1 << 64 | k))),
            target: None,
            seq: Some(7),
        };
        sim.inject(0, 1, Lane::Reliable, routed(route, 1, b"x"));
    }
    sim.run_for(Duration::from_millis(200));
    let refused = sim.nodes[1].ep.counters().forged_dropped;
    assert!(refused >= 3000 - 1024, "{refused} refused");
    sim.send(
        2,
        1,
        Channel::Reliable,
        &numbered(2, 9, 16),
        Recipients::All,
    );
    sim.run_for(Duration::from_millis(200));
    let last = sim.messages(1).pop().expect("a message");
    assert_eq!(
        read_numbered(&last.2),
        (2, 9),
        "a real member still gets through"
    );
}

/// Acknowledging more than was ever sent, forever: the window opens (only the liar's own
/// transfer is affected), nothing overflows.
#[test]
fn acknowledgements_of_everything_overflow_nothing() {
    let mut sim = lobby(Topology::Mesh, 2);
    for received in [u64::MAX, 0, u64::MAX - 1] {
        let ack = Control::ChunkAck { received }.encode();
        sim.inject(1, 0, Lane::Control, ack);
    }
    let ack = Control::RelayAck { seq: u32::MAX }.encode();
    sim.inject(1, 0, Lane::Control, ack);
    sim.step();
    let big = numbered(0, 1, 200 * 1024);
    sim.send(0, 1, Channel::Reliable, &big, Recipients::All);
    assert!(sim.run_until(LIMIT, |s| s.messages(1).len() == 1));
    assert_eq!(read_numbered(&sim.messages(1)[0].2), (0, 1));
}

/// A peer that links up and floods game frames without ever saying hello: a bounded number wait,
/// the rest are counted and dropped, and it never joins.
#[test]
fn a_flood_before_the_hello_is_bounded() {
    let mut sim = lobby(Topology::Mesh, 1);
    sim.config.types_hash = 99; // it will never match: its frames stay early forever
    let intruder = sim.join();
    assert!(sim.run_until(LIMIT, |s| s.sees_link(intruder, 0).is_some()));
    for k in 0..5000u32 {
        sim.inject(intruder, 0, Lane::Unreliable, message(1, &k.to_le_bytes()));
    }
    sim.run_for(Duration::from_millis(300));
    let c = sim.nodes[0].ep.counters();
    assert!(
        c.frames_dropped + c.mismatched_dropped >= 5000 - 1024,
        "{c:?}"
    );
    assert!(sim.messages(0).is_empty());
    assert!(sim.nodes[0].ep.peers().is_empty());
    assert!(sim.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::Error(EndpointError::MessageTypeMismatch { .. }))));
}

/// A member announces a chunked message of four billion chunks and sends chunks out of order:
/// refused at once, without allocating, and its next honest message arrives.
#[test]
fn absurd_chunk_counts_are_refused() {
    let mut sim = lobby(Topology::Mesh, 2);
    for (index, count) in [(0, u32::MAX), (5, 9), (0, 2), (0, 2)] {
        let mut bytes = Vec::new();
        Frame::Chunk {
            type_id: 1,
            seq: 3,
            index,
            count,
        }
        .encode_header(&mut bytes);
        bytes.extend_from_slice(&[0; 100]);
        sim.inject(1, 0, Lane::Reliable, bytes);
    }
    sim.run_for(Duration::from_millis(100));
    assert!(sim.nodes[0].ep.counters().chunks_dropped >= 2);
    sim.send(
        1,
        1,
        Channel::Reliable,
        &numbered(1, 4, 16),
        Recipients::All,
    );
    sim.run_for(Duration::from_millis(100));
    let last = sim.messages(0).pop().expect("a message");
    assert_eq!(read_numbered(&last.2), (1, 4));
}

/// Raw-lane bytes from a peer outside the lobby are dropped and counted; from a member they are
/// handed on (the driver bounds what it keeps).
#[test]
fn raw_bytes_only_from_members() {
    let mut sim = lobby(Topology::Mesh, 2);
    sim.config.types_hash = 99;
    let stranger = sim.join();
    assert!(sim.run_until(LIMIT, |s| s.sees_link(stranger, 0).is_some()));
    sim.inject(stranger, 0, Lane::Raw, vec![1, 2, 3]);
    sim.inject(1, 0, Lane::Raw, vec![4, 5, 6]);
    sim.run_for(Duration::from_millis(100));
    let raw: Vec<_> = sim.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Raw { from, bytes } => Some((*from, bytes.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(raw, [(Sim::id(1), vec![4, 5, 6])]);
    assert!(sim.nodes[0].ep.counters().frames_dropped >= 1);
}

/// A hello of another protocol version (with fields this version does not know) is reported as
/// a version mismatch, not counted as garbage, and the peer never joins.
#[test]
fn a_hello_of_another_version_is_a_clear_error() {
    let mut sim = lobby(Topology::Mesh, 1);
    let other = sim.join();
    sim.lossy_opening = Duration::from_secs(3600); // its real hellos never arrive
    assert!(sim.run_until(LIMIT, |s| s.sees_link(0, other).is_some()));
    sim.run_for(Duration::from_millis(30));
    sim.lossy_opening = Duration::ZERO; // before its hello repeats, 200 ms after the first
                                        // Version 9: the version first, then fields of its own.
    let mut hello = vec![0u8, 9];
    hello.extend_from_slice(&[1, 2, 3, 4, 5]);
    sim.inject(other, 0, Lane::Control, hello);
    sim.run_for(Duration::from_millis(50));
    assert!(sim.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::Error(EndpointError::ProtocolMismatch { theirs: 9, .. })
    )));
    assert!(sim.nodes[0].ep.peers().is_empty());
}

/// A peer without media answers a media offer "unsupported" once, however many come, and drops
/// media signals from outside the lobby; a peer with media hands them to its driver.
#[test]
fn media_signals_without_media_are_refused_once() {
    use huddle_protocol::media::MediaSignal;
    let mut sim = lobby(Topology::Mesh, 1);
    sim.config.media = true;
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    let offer = Control::Media(MediaSignal::Offer {
        session: 1,
        round: 1,
        sdp: "v=0".into(),
    });
    for _ in 0..5 {
        sim.inject(1, 0, Lane::Control, offer.encode());
    }
    sim.run_for(Duration::from_millis(100));
    let refusals = sim.nodes[1]
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Media {
                    signal: MediaSignal::Unsupported,
                    ..
                }
            )
        })
        .count();
    assert_eq!(refusals, 1, "one answer, not one per offer");
    assert_eq!(sim.nodes[0].ep.counters().media_dropped, 5);
    // The peer with media gets its signals as events.
    let back = Control::Media(MediaSignal::Renegotiate { session: 1 });
    sim.inject(0, 1, Lane::Control, back.encode());
    sim.run_for(Duration::from_millis(100));
    assert!(sim.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::Media {
            signal: MediaSignal::Renegotiate { session: 1 },
            ..
        }
    )));
}

/// A member that starts thousands of chunked messages and never ends them: each new one ends the
/// last (only one is ever held), and its honest messages still arrive.
#[test]
fn unfinished_messages_cannot_pile_up() {
    let mut sim = lobby(Topology::Mesh, 2);
    for seq in 0..5000u32 {
        let mut bytes = Vec::new();
        Frame::Chunk {
            type_id: 1,
            seq,
            index: 0,
            count: 2,
        }
        .encode_header(&mut bytes);
        sim.inject(1, 0, Lane::Reliable, bytes);
    }
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.nodes[0].ep.counters().chunks_dropped, 4999);
    sim.send(
        1,
        1,
        Channel::Reliable,
        &numbered(1, 7, 16),
        Recipients::All,
    );
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        read_numbered(&sim.messages(0).pop().expect("a message").2),
        (1, 7)
    );
}

/// Hellos from the other sides of the host's links, counted by the network.
static HELLOS_TO_2: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A member that floods the host with hellos (each asking for an answer): the host answers one
/// per gap, not one per hello, and counts the rest.
#[test]
fn a_hello_flood_gets_few_answers() {
    use huddle_protocol::control::{Hello, PROTOCOL_VERSION};
    use std::sync::atomic::Ordering;
    let mut sim = lobby(Topology::Mesh, 3);
    sim.drop_if = Some(|from, to, lane, bytes| {
        if (from, to, lane) == (0, 2, Lane::Control)
            && matches!(Control::decode(bytes), Some(Control::Hello(_)))
        {
            HELLOS_TO_2.fetch_add(1, Ordering::Relaxed);
        }
        false
    });
    let hello = Control::Hello(Hello {
        version: PROTOCOL_VERSION,
        types_hash: 0,
        types: vec![],
        topology: Topology::Mesh,
        seen: false,
        meta: Vec::new(),
    })
    .encode();
    // Past the handshake's own hellos.
    sim.run_for(Duration::from_millis(200));
    for _ in 0..500 {
        sim.inject(2, 0, Lane::Control, hello.clone());
    }
    sim.run_for(Duration::from_millis(300));
    let answers = HELLOS_TO_2.load(Ordering::Relaxed);
    assert!(answers <= 4, "{answers} answers to 500 hellos");
    assert!(answers >= 1, "the first is answered");
    assert!(sim.nodes[0].ep.counters().control_limited >= 496);
    // The lobby goes on.
    assert!(sim.run_until(LIMIT, Sim::settled));
}

/// A host that starts a chunked message from each of a hundred invented origins: together they
/// hold no more than `max_pending_bytes` at the client (each could hold that much alone), the
/// rest is dropped and counted, and the next roster frees what they held; a member's chunked
/// message still arrives.
#[test]
fn unfinished_messages_of_invented_origins_share_one_budget() {
    let mut sim = Sim::new(Topology::Star, conditions(5, 2, 0.0), 42);
    sim.config.settings.max_pending_bytes = 1 << 20;
    for _ in 0..3 {
        sim.join();
        sim.run_for(FRAME * 4);
    }
    assert!(sim.run_until(LIMIT, Sim::settled));
    let part = vec![3u8; 60 * 1024];
    for k in 0..100u128 {
        let route = Route {
            origin: Some(huddle_protocol::PeerId(uuid::Uuid::from_u128(1 << 64 | k))),
            target: None,
            seq: Some(1),
        };
        let mut bytes = relay::encode(route);
        Frame::Chunk {
            type_id: 1,
            seq: 0,
            index: 0,
            count: 100,
        }
        .encode_header(&mut bytes);
        bytes.extend_from_slice(&part);
        sim.inject(0, 1, Lane::Reliable, bytes);
    }
    sim.run_for(Duration::from_millis(200));
    let held = sim.nodes[1].ep.pending_chunk_bytes();
    assert!(held <= 1 << 20, "{held} bytes held");
    assert!(held >= 15 * 60 * 1024, "some were kept: {held}");
    assert!(sim.nodes[1].ep.counters().chunks_dropped >= 80);
    // A newcomer: the host's next roster, and the strangers' bytes go.
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    assert_eq!(sim.nodes[1].ep.pending_chunk_bytes(), 0);
    let big = numbered(2, 5, 200 * 1024);
    sim.send(2, 1, Channel::Reliable, &big, Recipients::Peer(Sim::id(1)));
    assert!(sim.run_until(LIMIT, |s| s
        .messages(1)
        .iter()
        .any(|m| m.2.len() == big.len())));
}

/// Each peer's hello carries its player metadata (a name): the others read it once it joined. A
/// member whose metadata is over `MAX_META` joins without it, and the drop is counted.
#[test]
fn hellos_carry_player_metadata_within_a_bound() {
    use huddle_protocol::control::MAX_META;
    let mut sim = Sim::new(Topology::Mesh, conditions(5, 2, 0.0), 3);
    for name in ["ann", "bob"] {
        sim.config.meta = name.as_bytes().to_vec();
        sim.join();
        sim.run_for(FRAME * 4);
    }
    assert!(sim.run_until(LIMIT, Sim::settled));
    assert_eq!(sim.nodes[0].ep.peer_meta(Sim::id(1)), Some(&b"bob"[..]));
    assert_eq!(sim.nodes[1].ep.peer_meta(Sim::id(0)), Some(&b"ann"[..]));
    sim.config.meta = vec![7; MAX_META + 1];
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    for i in 0..2 {
        assert_eq!(sim.nodes[i].ep.peer_meta(Sim::id(2)), Some(&[][..]));
        assert_eq!(sim.nodes[i].ep.counters().control_dropped, 1);
    }
}
