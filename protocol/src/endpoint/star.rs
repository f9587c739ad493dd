//! Star rooms: clients are linked to the host only. The host relays what they send (stamping the
//! origin from the link it came on), and clients know the other members from the host's
//! succession. Relayed reliable frames are numbered by their origin, acknowledged by the host
//! once passed on, kept until then (and [`RETAIN_ACKED`](super::RETAIN_ACKED) after), resent
//! through the next host when the host changes, and dropped by receivers that saw them.

use super::link::Link;
use super::{Endpoint, Event, LeaveReason, Recipients, Role, MAX_ORIGINS, RETAIN_ACKED};
use crate::control::Control;
use crate::frame::Frame;
use crate::lane::Lane;
use crate::relay::{self, Route};
use bytes::Bytes;
use matchbox_protocol::PeerId;
use std::collections::HashMap;
use std::time::Duration;

impl Endpoint {
    /// Where a message for `to` goes: the link to send it on, and the routing header in front.
    pub(super) fn destinations(&self, to: &Recipients) -> Vec<(PeerId, Option<Route>)> {
        let members: Vec<PeerId> = match to {
            Recipients::All => self.joined.clone(),
            Recipients::Host => self
                .host()
                .filter(|h| Some(*h) != self.me && self.joined.contains(h))
                .into_iter()
                .collect(),
            Recipients::Peer(p) => self.joined.iter().copied().filter(|j| j == p).collect(),
            Recipients::Peers(ps) => self
                .joined
                .iter()
                .copied()
                .filter(|j| ps.contains(j))
                .collect(),
        };
        let Some(host) = self.host().filter(|_| self.star_client()) else {
            return members.into_iter().map(|m| (m, None)).collect();
        };
        let unrouted = Route {
            origin: None,
            target: None,
            seq: None,
        };
        if matches!(to, Recipients::All) {
            // One copy up to the host, which delivers it and passes it to everyone else.
            return if members.is_empty() {
                Vec::new()
            } else {
                vec![(host, Some(unrouted))]
            };
        }
        members
            .into_iter()
            .map(|m| {
                let route = (m != host).then_some(Route {
                    target: Some(m),
                    ..unrouted
                });
                (host, route)
            })
            .collect()
    }

    /// A routed frame that came on `link`: relay it (host) or read it with its origin (client).
    pub(super) fn routed_frame(&mut self, lane: Lane, link: PeerId, packet: Bytes) {
        let Ok((route, header)) = relay::decode(&packet) else {
            self.counters.frames_dropped += 1;
            return;
        };
        let inner = packet.slice(header..);
        // Chunk payload bytes count toward the sender's window on this link whatever becomes
        // of the frame (a resent duplicate too), or its window would close for good.
        let chunk = match Frame::decode(&inner) {
            Ok((Frame::Chunk { index, count, .. }, payload)) => {
                Some((payload.len(), index + 1 == count))
            }
            Ok(_) => None,
            Err(_) => {
                self.counters.frames_dropped += 1;
                return;
            }
        };
        let count_chunk = |this: &mut Self| {
            if let Some((len, last)) = chunk {
                this.chunk_received(link, len, last);
            }
        };
        let hosting = self.config.topology == crate::room::Topology::Star && self.hosting();
        let Some(me) = self.me else { return };
        if !hosting {
            match relay::accept(self.host(), link, route) {
                Ok(origin) if origin != me => {
                    if !self.known_origin(origin) {
                        self.counters.forged_dropped += 1;
                        count_chunk(self);
                    } else if !self.stranger_may_hold(origin, chunk) {
                        self.counters.chunks_dropped += 1;
                        count_chunk(self);
                    } else if self.seen_before(origin, route.seq) {
                        count_chunk(self);
                    } else {
                        self.inner_frame(lane, link, origin, inner);
                    }
                }
                Ok(_) => self.counters.frames_dropped += 1,
                Err(_) => self.counters.forged_dropped += 1,
            }
            return;
        }
        let Ok(decision) = relay::relay(me, link, route, &self.joined) else {
            self.counters.forged_dropped += 1;
            return;
        };
        if let Some(seq) = route.seq {
            let acked = self.relay_acks.entry(link).or_insert(seq);
            *acked = (*acked).max(seq);
        }
        let fresh = !self.seen_before(link, route.seq);
        match decision.deliver_from {
            Some(from) if fresh => self.inner_frame(lane, link, from, inner.clone()),
            // A duplicate, or not for us: its chunk bytes count all the same.
            _ => count_chunk(self),
        }
        if decision.forward.is_empty() {
            return;
        }
        let mut prefixed = relay::encode(decision.header);
        prefixed.extend_from_slice(&inner);
        let prefixed = Bytes::from(prefixed);
        let counted = chunk.map_or(0, |(len, _)| len);
        for target in decision.forward {
            self.counters.relayed += 1;
            self.push_frame(lane, target, prefixed.clone(), counted);
        }
    }

    /// Whether the host may speak for `origin`: a member we know of, or (while few origins are
    /// remembered) one whose roster entry may still be on its way. Bounds what a lying host can
    /// make us remember.
    fn known_origin(&self, origin: PeerId) -> bool {
        self.joined.contains(&origin)
            || self.relay_seen.contains_key(&origin)
            || self.relay_seen.len() < MAX_ORIGINS
    }

    /// Whether a chunk from `origin` may be kept for reassembly: any from a member; from an
    /// origin not (yet) in the roster only while all such origins together hold less than
    /// `max_pending_bytes` (a lying host naming a thousand strangers cannot make us hold a
    /// thousand unfinished messages).
    fn stranger_may_hold(&self, origin: PeerId, chunk: Option<(usize, bool)>) -> bool {
        let Some((len, _)) = chunk else { return true };
        if self.joined.contains(&origin) {
            return true;
        }
        let held: usize = self
            .links
            .iter()
            .filter(|(id, l)| !self.joined.contains(id) && !l.connected)
            .map(|(_, l)| l.reassembler.pending_bytes())
            .sum();
        held.saturating_add(len) <= self.config.settings.max_pending_bytes
    }

    /// Whether a relayed reliable frame with `seq` from `origin` was seen already (a resend after
    /// a host change); records it otherwise.
    fn seen_before(&mut self, origin: PeerId, seq: Option<u32>) -> bool {
        let Some(seq) = seq else { return false };
        match self.relay_seen.get(&origin) {
            Some(seen) if seq <= *seen => {
                self.counters.duplicates_dropped += 1;
                true
            }
            _ => {
                self.relay_seen.insert(origin, seq);
                false
            }
        }
    }

    /// The host passed our relayed frames up to `seq` on: mark them, and forget those marked
    /// long enough ago to have arrived.
    pub(super) fn relay_acked(&mut self, from: PeerId, seq: u32, now: Duration) {
        if self.host() != Some(from) {
            return;
        }
        for entry in self.unacked.iter_mut() {
            if entry.seq <= seq && entry.acked_at.is_none() {
                entry.acked_at = Some(now);
            }
        }
        self.unacked.retain(|e| {
            e.acked_at
                .is_none_or(|t| now.saturating_sub(t) < RETAIN_ACKED)
        });
    }

    /// The host changed: our relayed frames it had not acknowledged go again, through the new
    /// host, or straight to their targets if the new host is us. Receivers drop what they had.
    pub(super) fn resend_unacked(&mut self) {
        let Some(host) = self.host() else { return };
        let frames: Vec<_> = self.unacked.drain(..).collect();
        if self.me != Some(host) {
            for mut frame in frames {
                frame.acked_at = None;
                self.push_frame(Lane::Reliable, host, frame.bytes.clone(), frame.counted);
                self.unacked.push_back(frame);
            }
            return;
        }
        for frame in frames {
            let Ok((route, header)) = relay::decode(&frame.bytes) else {
                continue;
            };
            let Ok(decision) = relay::relay(host, host, route, &self.joined) else {
                continue;
            };
            let mut prefixed = relay::encode(decision.header);
            prefixed.extend_from_slice(&frame.bytes[header..]);
            let prefixed = Bytes::from(prefixed);
            for target in decision.forward {
                self.push_frame(Lane::Reliable, target, prefixed.clone(), frame.counted);
            }
        }
    }

    /// Acknowledges each client's relayed frames up to the last one passed on: received, and no
    /// copy still waiting in a queue here (behind a viewer's shut window, or for a link). A frame
    /// acknowledged is one the client may forget; one still queued is sent again through the
    /// next host if we go.
    pub(super) fn send_relay_acks(&mut self) {
        let mut due: HashMap<PeerId, (u32, Option<u32>)> = std::mem::take(&mut self.relay_held);
        for (peer, seq) in std::mem::take(&mut self.relay_acks) {
            let entry = due.entry(peer).or_insert((seq, None));
            entry.0 = entry.0.max(seq);
        }
        if due.is_empty() {
            return;
        }
        let queued = self.first_queued_relayed(&due);
        for (peer, (received, acked)) in due {
            let (upto, held) = match queued.get(&peer) {
                None => (Some(received), false),
                Some(first) => (first.checked_sub(1).map(|s| s.min(received)), true),
            };
            if let Some(upto) = upto.filter(|u| acked.is_none_or(|a| *u > a)) {
                self.send_now(
                    Lane::Control,
                    peer,
                    Control::RelayAck { seq: upto }.encode(),
                );
                if held {
                    self.relay_held.insert(peer, (received, Some(upto)));
                }
            } else if held {
                self.relay_held.insert(peer, (received, acked));
            }
        }
    }

    /// The lowest sequence number of each of `clients`' relayed frames still waiting in our
    /// queues.
    fn first_queued_relayed<V>(&self, clients: &HashMap<PeerId, V>) -> HashMap<PeerId, u32> {
        let mut first: HashMap<PeerId, u32> = HashMap::new();
        for frame in self.links.values().flat_map(Link::bulk_frames) {
            let Ok((route, _)) = relay::decode(frame) else {
                continue;
            };
            if let (Some(origin), Some(seq)) = (route.origin, route.seq) {
                if clients.contains_key(&origin) {
                    let f = first.entry(origin).or_insert(seq);
                    *f = (*f).min(seq);
                }
            }
        }
        first
    }

    /// In a star, a client knows the members it has no link to from the host's succession: it
    /// announces them as they appear and leave there.
    pub(super) fn sync_star_members(&mut self) {
        if !self.star_client() {
            return;
        }
        let members = self.succession();
        let Some(me) = self.me else { return };
        let my_place = members.iter().position(|m| *m == me);
        for (i, m) in members.iter().enumerate() {
            if *m == me || self.joined.contains(m) {
                continue;
            }
            if self.links.get(m).is_some_and(|l| l.connected) {
                continue; // joins by its hello
            }
            // The earlier of a pair is its caller.
            let role = if my_place.is_some_and(|me| i < me) {
                Role::Receiver
            } else {
                Role::Caller
            };
            self.lobby_changed();
            self.joined.push(*m);
            self.events.push_back(Event::Joined { peer: *m, role });
        }
        let gone: Vec<PeerId> = self
            .joined
            .iter()
            .copied()
            .filter(|j| !members.contains(j) && !self.links.get(j).is_some_and(|l| l.connected))
            .collect();
        // Origins the host spoke for that never made the roster: what we kept for them goes.
        let joined = &self.joined;
        self.links.retain(|id, l| {
            l.connected || l.role.is_some() || joined.contains(id) || members.contains(id)
        });
        for peer in gone {
            self.lobby_changed();
            self.joined.retain(|j| *j != peer);
            // What we kept for it (its unfinished relayed messages) goes with it.
            self.links.remove(&peer);
            self.relay_seen.remove(&peer);
            self.events.push_back(Event::Left {
                peer,
                reason: LeaveReason::Left,
            });
        }
    }
}
