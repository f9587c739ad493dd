//! Star rooms: clients are linked to the host only. The host relays what they send (stamping the
//! origin from the link it came on), and clients know the other members from the host's roster.

use super::{HuddleSession, SessionEvent, RELIABLE};
use crate::messages::{LeaveReason, PeerJoined, PeerLeft, Recipients, Role};
use crate::protocol::frame::Frame;
use crate::protocol::relay::{self, Route};
use bevy::prelude::*;
use bytes::Bytes;
use matchbox_socket::PeerId;

impl HuddleSession {
    /// Whether we are a client of a star (send through the host, learn members from the roster).
    pub(super) fn star_client(&self) -> bool {
        self.star && self.host().is_some_and(|h| Some(h) != self.me)
    }

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
        if matches!(to, Recipients::All) {
            // One copy up to the host, which delivers it and passes it to everyone else.
            return vec![(
                host,
                Some(Route {
                    origin: None,
                    target: None,
                    seq: None,
                }),
            )];
        }
        members
            .into_iter()
            .map(|m| {
                let route = (m != host).then_some(Route {
                    origin: None,
                    target: Some(m),
                    seq: None,
                });
                (host, route)
            })
            .collect()
    }

    /// A routed frame that came on `link`: relay it (host) or read it with its origin (client).
    pub(super) fn routed_frame(
        &mut self,
        ch: usize,
        link: PeerId,
        packet: Bytes,
        events: &mut Vec<SessionEvent>,
    ) {
        let (route, header) = match relay::decode(&packet) {
            Ok(r) => r,
            Err(e) => {
                self.stats.frames_dropped += 1;
                debug!("dropped a routed frame from {link}: {e}");
                return;
            }
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
                self.stats.frames_dropped += 1;
                return;
            }
        };
        let me = self.me;
        let hosting = self.star && self.host().is_some() && self.host() == me;
        if !hosting {
            match relay::accept(self.host(), link, route) {
                Ok(origin) if Some(origin) != me => {
                    if self.seen_before(origin, route.seq) {
                        if let Some((len, last)) = chunk {
                            self.chunk_received(link, len, last);
                        }
                        return;
                    }
                    self.inner_frame(ch, link, origin, inner, events)
                }
                Ok(_) => self.stats.frames_dropped += 1,
                Err(e) => {
                    self.stats.forged_dropped += 1;
                    debug!("dropped a routed frame from {link}: {e}");
                }
            }
            return;
        }
        let Some(me) = me else { return };
        let decision = match relay::relay(me, link, route, &self.joined) {
            Ok(d) => d,
            Err(e) => {
                self.stats.forged_dropped += 1;
                debug!("dropped a routed frame from {link}: {e}");
                return;
            }
        };
        if let Some(seq) = route.seq {
            let acked = self.relay_acks.entry(link).or_insert(seq);
            *acked = (*acked).max(seq);
        }
        let fresh = !self.seen_before(link, route.seq);
        match decision.deliver_from {
            Some(from) if fresh => self.inner_frame(ch, link, from, inner.clone(), events),
            // A duplicate, or not for us: its chunk bytes count all the same.
            _ => {
                if let Some((len, last)) = chunk {
                    self.chunk_received(link, len, last);
                }
            }
        }
        if decision.forward.is_empty() {
            return;
        }
        let mut prefixed = relay::encode(decision.header);
        prefixed.extend_from_slice(&inner);
        let prefixed = Bytes::from(prefixed);
        for target in decision.forward {
            self.stats.relayed += 1;
            let counted = chunk.map_or(0, |(len, _)| len);
            self.push_frame(ch, target, prefixed.clone(), counted);
        }
    }

    /// Whether a relayed reliable frame with `seq` from `origin` was seen already (a resend after
    /// a host change); records it otherwise.
    fn seen_before(&mut self, origin: PeerId, seq: Option<u32>) -> bool {
        let Some(seq) = seq else { return false };
        match self.relay_seen.get(&origin) {
            Some(seen) if seq <= *seen => {
                self.stats.duplicates_dropped += 1;
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
    pub(super) fn relay_acked(&mut self, from: PeerId, seq: u32) {
        if self.host() != Some(from) {
            return;
        }
        let now = web_time::Instant::now();
        for entry in self.unacked.iter_mut() {
            if entry.0 <= seq && entry.3.is_none() {
                entry.3 = Some(now);
            }
        }
        self.unacked.retain(|e| {
            e.3.is_none_or(|t| now.duration_since(t) < super::RETAIN_ACKED)
        });
    }

    /// The host changed: our relayed frames it had not acknowledged go again, through the new
    /// host, or straight to their targets if the new host is us. Receivers drop what they had.
    pub(super) fn resend_unacked(&mut self) {
        let Some(host) = self.host() else { return };
        let frames: Vec<(u32, usize, Bytes, Option<web_time::Instant>)> =
            self.unacked.drain(..).collect();
        if self.me != Some(host) {
            for (seq, counted, bytes, _) in frames {
                self.unacked.push_back((seq, counted, bytes.clone(), None));
                self.push_frame(RELIABLE, host, bytes, counted);
            }
            return;
        }
        for (_, counted, bytes, _) in frames {
            let Ok((route, header)) = relay::decode(&bytes) else {
                continue;
            };
            let Ok(decision) = relay::relay(host, host, route, &self.joined) else {
                continue;
            };
            let mut prefixed = relay::encode(decision.header);
            prefixed.extend_from_slice(&bytes[header..]);
            let prefixed = Bytes::from(prefixed);
            for target in decision.forward {
                self.push_frame(RELIABLE, target, prefixed.clone(), counted);
            }
        }
    }

    /// Sends the acknowledgements of relayed frames passed on since the last flush.
    pub(super) fn send_relay_acks(&mut self) {
        for (peer, seq) in std::mem::take(&mut self.relay_acks) {
            let ack = crate::protocol::control::Control::RelayAck { seq };
            self.send_now(super::CONTROL, peer, ack.encode());
        }
    }

    /// In a star, a client knows the members it has no link to from the host's roster: it
    /// announces them as they appear and leave there.
    pub(super) fn sync_star_members(&mut self, events: &mut Vec<SessionEvent>) {
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
            let linked = self.links.get(m).is_some_and(|l| l.connected);
            if linked {
                continue; // joins by its hello
            }
            // The earlier of a pair is its caller.
            let role = if my_place.is_some_and(|me| i < me) {
                Role::Receiver
            } else {
                Role::Caller
            };
            self.joined.push(*m);
            events.push(SessionEvent::Joined(PeerJoined { peer: *m, role }));
        }
        let gone: Vec<PeerId> = self
            .joined
            .iter()
            .copied()
            .filter(|j| !members.contains(j) && !self.links.get(j).is_some_and(|l| l.connected))
            .collect();
        for peer in gone {
            self.joined.retain(|j| *j != peer);
            events.push(SessionEvent::Left(PeerLeft {
                peer,
                reason: LeaveReason::Left,
            }));
        }
    }

    /// Queues a frame for `peer` on `ch`: reliable frames wait behind a chunked transfer (and
    /// chunks count against the window); the rest go out with this frame.
    pub(super) fn push_frame(&mut self, ch: usize, peer: PeerId, bytes: Bytes, counted: usize) {
        let link = self.link(peer);
        if ch == RELIABLE && (counted > 0 || !link.bulk.is_empty()) {
            link.bulk.push_back((counted, bytes));
        } else {
            self.outbox.push((ch, peer, bytes));
        }
    }
}
