//! Packets in: control messages, game frames (whole, chunked, relayed), pings, the raw lane.

use super::{Endpoint, Event};
use crate::control::{hello_version, Control};
use crate::frame::Frame;
use crate::lane::Lane;
use crate::media::MediaSignal;
use crate::relay;
use bytes::Bytes;
use matchbox_protocol::PeerId;
use std::time::Duration;

impl Endpoint {
    /// A packet from `peer` on `lane` at `now`.
    pub fn receive(&mut self, peer: PeerId, lane: Lane, packet: Bytes, now: Duration) {
        self.advance(now);
        // Nothing from ourselves, nor from a peer whose link closed (the server took it out of the
        // room, e.g. a kick, while its WebRTC link still delivers).
        if Some(peer) == self.me || self.departed.contains(peer) {
            self.counters.frames_dropped += 1;
            return;
        }
        match lane {
            Lane::Control => self.control_received(peer, &packet, now),
            Lane::Reliable | Lane::Unreliable => {
                self.link(peer).stats.bytes_in += packet.len() as u64;
                self.data_received(lane, peer, packet);
            }
            // Raw bytes only from peers in the lobby; always read, so nobody can fill our memory
            // through this lane.
            Lane::Raw if self.joined.contains(&peer) => self.raw_received(peer, packet),
            Lane::Raw => self.counters.frames_dropped += 1,
        }
    }

    fn control_received(&mut self, peer: PeerId, packet: &[u8], now: Duration) {
        let Some(control) = Control::decode(packet) else {
            match hello_version(packet) {
                Some(version) if version != crate::control::PROTOCOL_VERSION => {
                    self.version_mismatch(peer, version)
                }
                _ => self.counters.control_dropped += 1,
            }
            return;
        };
        match control {
            Control::Hello(hello) => self.hello_received(peer, hello, now),
            Control::Succession(succession) => {
                self.lobby_changed();
                if let Some(e) = self.election.as_mut() {
                    let before = e.refused();
                    let outs = e.roster_received(peer, succession, now);
                    self.counters.election_refused += e.refused() - before;
                    self.apply(outs);
                }
                self.sync_star_members();
            }
            Control::RelayAck { seq } => self.relay_acked(peer, seq, now),
            Control::Media(signal) => self.media_received(peer, signal),
            Control::UploadProbe { id } => self.probe_asked(peer, id, now),
            Control::ChunkAck { received } => {
                if let Some(link) = self.links.get_mut(&peer) {
                    if received > link.bulk_acked {
                        // Progress: the window is not stuck.
                        link.bulk_acked = received;
                        link.waiting_since = None;
                    }
                }
            }
        }
    }

    /// A media signal: for the driver when we do media; else a peer's first offer is answered
    /// "unsupported" (once), and the rest is dropped.
    fn media_received(&mut self, peer: PeerId, signal: MediaSignal) {
        if !self.joined.contains(&peer) {
            self.counters.media_dropped += 1;
            return;
        }
        if self.config.media {
            self.events.push_back(Event::Media { from: peer, signal });
            return;
        }
        self.counters.media_dropped += 1;
        let asks = matches!(
            signal,
            MediaSignal::Offer { .. } | MediaSignal::Renegotiate { .. }
        );
        let link = self.link(peer);
        if asks && !std::mem::replace(&mut link.media_refused, true) {
            let refusal = Control::Media(MediaSignal::Unsupported).encode();
            self.send_now(Lane::Control, peer, refusal);
        }
    }

    /// A data frame from a peer whose hello matched.
    pub(super) fn data_frame(&mut self, lane: Lane, peer: PeerId, packet: Bytes) {
        if relay::is_routed(&packet) {
            self.routed_frame(lane, peer, packet);
        } else {
            self.inner_frame(lane, peer, peer, packet);
        }
    }

    /// Counts chunk bytes that came on `link` and acknowledges them now and then (always at the
    /// end of a message), which opens the sender's window.
    pub(super) fn chunk_received(&mut self, link: PeerId, len: usize, message_done: bool) {
        let l = self.link(link);
        l.chunk_bytes_in = l.chunk_bytes_in.saturating_add(len as u64);
        let unacked = l.chunk_bytes_in - l.chunk_acked_out;
        if message_done || unacked >= (crate::chunk::CHUNK_BYTES * 4) as u64 {
            l.chunk_acked_out = l.chunk_bytes_in;
            let ack = Control::ChunkAck {
                received: l.chunk_bytes_in,
            };
            self.send_now(Lane::Control, link, ack.encode());
        }
    }

    /// A frame (not routed) that came on `link` from `from` (the same peer, unless relayed).
    pub(super) fn inner_frame(&mut self, lane: Lane, link: PeerId, from: PeerId, packet: Bytes) {
        let (frame, payload) = match Frame::decode(&packet) {
            Ok(f) => f,
            Err(_) => {
                self.counters.frames_dropped += 1;
                return;
            }
        };
        match frame {
            Frame::Message { type_id } => {
                self.link(from).stats.messages_in += 1;
                let bytes = packet.slice(packet.len() - payload.len()..);
                self.events.push_back(Event::Message {
                    type_id,
                    from,
                    bytes,
                });
            }
            Frame::Chunk {
                type_id,
                seq,
                index,
                count,
            } if lane == Lane::Reliable => {
                let reassembler = &mut self.link(from).reassembler;
                let result = reassembler.push(type_id, seq, index, count, payload);
                self.counters.chunks_dropped += reassembler.take_abandoned();
                self.chunk_received(link, payload.len(), index + 1 == count);
                match result {
                    Ok(Some((type_id, bytes))) => {
                        self.link(from).stats.messages_in += 1;
                        self.events.push_back(Event::Message {
                            type_id,
                            from,
                            bytes: bytes.into(),
                        });
                    }
                    Ok(None) => {}
                    Err(_) => self.counters.chunks_dropped += 1,
                }
            }
            Frame::Link {
                pong: false,
                seq,
                sent_us,
            } if lane == Lane::Unreliable && link == from => {
                let pong = Frame::Link {
                    pong: true,
                    seq,
                    sent_us,
                };
                self.send_now(Lane::Unreliable, from, pong.header());
            }
            Frame::Link {
                pong: true, seq, ..
            } if lane == Lane::Unreliable && link == from => {
                // The round trip comes from our own record of the ping, not the echoed time.
                let now = self.now;
                self.link(from).pong(seq, now);
            }
            Frame::Probe { id, index } if lane == Lane::Unreliable && link == from => {
                self.probe_frame(from, id, index, packet.len());
            }
            _ => self.counters.frames_dropped += 1,
        }
    }
}
