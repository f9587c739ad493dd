//! A whole endpoint (mesh or star, host or client) joined with three peers, fed any sequence of
//! what the network and the game can do: raw packets on any lane, well-formed lies (rosters,
//! acknowledgements, chunks, routed frames with any origin, target and sequence number), links
//! and introductions coming and going, game sends, time. Never a panic or an overflow, and the
//! reliable queue for a peer never grows past `max_queued_bytes`.
#![no_main]
use arbitrary::Arbitrary;
use bytes::Bytes;
use huddle_fuzz::peer;
use huddle_protocol::control::{Control, Hello, PROTOCOL_VERSION};
use huddle_protocol::election::Succession;
use huddle_protocol::endpoint::{Channel, Recipients, Role};
use huddle_protocol::frame::Frame;
use huddle_protocol::relay::{self, Route};
use huddle_protocol::{Endpoint, EndpointConfig, Lane, Topology};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

#[derive(Debug, Arbitrary)]
enum Op {
    Raw {
        from: u8,
        lane: u8,
        bytes: Vec<u8>,
    },
    Roster {
        from: u8,
        epoch: u64,
        order: Vec<u8>,
    },
    ChunkAck {
        from: u8,
        received: u64,
    },
    RelayAck {
        from: u8,
        seq: u32,
    },
    Hello {
        from: u8,
        version: u16,
        star: bool,
        seen: bool,
        meta: Vec<u8>,
    },
    Chunk {
        from: u8,
        type_id: u32,
        seq: u32,
        index: u32,
        count: u32,
        len: u16,
    },
    Routed {
        from: u8,
        origin: Option<u8>,
        target: Option<u8>,
        seq: Option<u32>,
        type_id: u8,
        reliable: bool,
    },
    Send {
        to: Option<u8>,
        reliable: bool,
        len: u32,
    },
    LinkUp(u8),
    LinkDown(u8),
    Introduced {
        peer: u8,
        earlier: bool,
    },
    ServerLeft(u8),
    Wait(u16),
}

fn hello(topology: Topology, version: u16, seen: bool, meta: Vec<u8>) -> Vec<u8> {
    Control::Hello(Hello {
        version,
        types_hash: 0,
        types: Vec::new(),
        topology,
        seen,
        meta,
    })
    .encode()
}

fuzz_target!(|input: (bool, bool, Vec<Op>)| {
    let (star, first, ops) = input;
    let topology = if star { Topology::Star } else { Topology::Mesh };
    let config = EndpointConfig {
        topology,
        ..EndpointConfig::default()
    };
    let limit = config.settings.max_queued_bytes;
    let mut ep = Endpoint::new(config);
    let mut now = Duration::from_millis(1);
    ep.id_assigned(peer(0), now);
    // We are the first in the room (the host) or the second (peer 1 is).
    for p in 1..=3u8 {
        let role = if !first && p == 1 {
            Role::Receiver
        } else {
            Role::Caller
        };
        ep.introduced(peer(p), role);
        ep.link_up(peer(p), now);
        ep.receive(
            peer(p),
            Lane::Control,
            hello(topology, PROTOCOL_VERSION, true, Vec::new()).into(),
            now,
        );
    }
    let payload = vec![5u8; 1 << 20];
    for op in ops {
        match op {
            Op::Raw { from, lane, bytes } => {
                let lane = [Lane::Control, Lane::Reliable, Lane::Unreliable, Lane::Raw]
                    [usize::from(lane % 4)];
                ep.receive(peer(from), lane, bytes.into(), now);
            }
            Op::Roster { from, epoch, order } => {
                let order = order.into_iter().map(peer).collect();
                let bytes = Control::Succession(Succession::in_join_order(epoch, order)).encode();
                ep.receive(peer(from), Lane::Control, bytes.into(), now);
            }
            Op::ChunkAck { from, received } => {
                let bytes = Control::ChunkAck { received }.encode();
                ep.receive(peer(from), Lane::Control, bytes.into(), now);
            }
            Op::RelayAck { from, seq } => {
                let bytes = Control::RelayAck { seq }.encode();
                ep.receive(peer(from), Lane::Control, bytes.into(), now);
            }
            Op::Hello {
                from,
                version,
                star,
                seen,
                meta,
            } => {
                let t = if star { Topology::Star } else { Topology::Mesh };
                ep.receive(
                    peer(from),
                    Lane::Control,
                    hello(t, version, seen, meta).into(),
                    now,
                );
            }
            Op::Chunk {
                from,
                type_id,
                seq,
                index,
                count,
                len,
            } => {
                let mut bytes = Frame::Chunk {
                    type_id,
                    seq,
                    index,
                    count,
                }
                .header();
                bytes.extend_from_slice(&payload[..usize::from(len)]);
                ep.receive(peer(from), Lane::Reliable, bytes.into(), now);
            }
            Op::Routed {
                from,
                origin,
                target,
                seq,
                type_id,
                reliable,
            } => {
                let route = Route {
                    origin: origin.map(peer),
                    target: target.map(peer),
                    seq,
                };
                let mut bytes = relay::encode(route);
                bytes.extend(
                    Frame::Message {
                        type_id: u32::from(type_id),
                    }
                    .header(),
                );
                bytes.extend_from_slice(b"move");
                let lane = if reliable {
                    Lane::Reliable
                } else {
                    Lane::Unreliable
                };
                ep.receive(peer(from), lane, Bytes::from(bytes), now);
            }
            Op::Send { to, reliable, len } => {
                let to = to.map_or(Recipients::All, |p| Recipients::Peer(peer(p)));
                let channel = if reliable {
                    Channel::Reliable
                } else {
                    Channel::Unreliable
                };
                let len = (len as usize) % payload.len();
                let _ = ep.send(1, channel, &payload[..len], &to);
            }
            Op::LinkUp(p) => ep.link_up(peer(p), now),
            Op::LinkDown(p) => ep.link_down(peer(p)),
            Op::Introduced { peer: p, earlier } => {
                let role = if earlier {
                    Role::Receiver
                } else {
                    Role::Caller
                };
                ep.introduced(peer(p), role);
            }
            Op::ServerLeft(p) => ep.server_left(peer(p)),
            Op::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms));
                ep.handle_timeout(now);
            }
        }
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
        for p in 0..8 {
            assert!(ep.bulk_pending(peer(p)) <= limit);
        }
    }
});
