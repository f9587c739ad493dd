//! Frames out: game messages (whole or chunked, direct or through the star's host), the bulk
//! window that paces chunks, reliable frames given up when no link comes, pings, the raw lane.

use super::link::Link;
use super::{Channel, Recipients};
use super::{Endpoint, EndpointError, SendError, Unacked, LINK_WAIT, MAX_UNACKED};
use crate::chunk::{chunk_count, CHUNK_BYTES};
use crate::frame::Frame;
use crate::lane::{Lane, MAX_DATA_CHANNEL_MESSAGE};
use crate::media::MediaSignal;
use crate::relay;
use bytes::Bytes;
use matchbox_protocol::PeerId;
use std::time::Duration;

/// Room for the largest routing header in front of a frame: kind, origin, target, sequence.
const ROUTE_HEADER: usize = 1 + 16 + 16 + 4;

impl Endpoint {
    /// Queues an encoded game message of type `type_id` for `to`; it goes out at the next
    /// [`Endpoint::handle_timeout`]. Refused (nothing queued) if it is too large for `channel`.
    pub fn send(
        &mut self,
        type_id: u32,
        channel: Channel,
        payload: &[u8],
        to: &Recipients,
    ) -> Result<(), SendError> {
        let mut frame = Vec::with_capacity(payload.len() + 4);
        Frame::Message { type_id }.encode_header(&mut frame);
        let header = frame.len() + ROUTE_HEADER;
        let fits = header + payload.len() <= MAX_DATA_CHANNEL_MESSAGE;
        let lane = match channel {
            Channel::Unreliable if !fits => {
                return Err(SendError::TooLargeForUnreliable {
                    bytes: header + payload.len(),
                    limit: MAX_DATA_CHANNEL_MESSAGE,
                })
            }
            Channel::Unreliable => Lane::Unreliable,
            Channel::Reliable => Lane::Reliable,
        };
        if payload.len() > self.config.settings.max_message_bytes {
            return Err(SendError::TooLarge {
                bytes: payload.len(),
                limit: self.config.settings.max_message_bytes,
            });
        }
        let destinations = self.destinations(to);
        let missing = self.missing(to);
        if destinations.is_empty() {
            return missing.map_or(Ok(()), Err);
        }
        // The frames to send: the whole message, or its chunks with their payload sizes.
        let frames: Vec<(usize, Bytes)> = if fits {
            frame.extend_from_slice(payload);
            vec![(0, frame.into())]
        } else {
            let count = chunk_count(payload.len()) as u32;
            let seq = self.next_chunk_seq;
            self.next_chunk_seq = self.next_chunk_seq.wrapping_add(1);
            payload
                .chunks(CHUNK_BYTES)
                .enumerate()
                .map(|(index, part)| {
                    let mut f = Vec::with_capacity(part.len() + 16);
                    Frame::Chunk {
                        type_id,
                        seq,
                        index: index as u32,
                        count,
                    }
                    .encode_header(&mut f);
                    f.extend_from_slice(part);
                    (part.len(), f.into())
                })
                .collect()
        };
        if lane == Lane::Reliable {
            let bytes: usize = frames.iter().map(|(_, f)| f.len() + ROUTE_HEADER).sum();
            let limit = self.config.settings.max_queued_bytes;
            for (link, _) in &destinations {
                let queued = self.links.get(link).map_or(0, Link::bulk_bytes);
                if queued.saturating_add(bytes) > limit {
                    return Err(SendError::QueueFull {
                        peer: *link,
                        queued,
                        bytes,
                        limit,
                    });
                }
            }
        }
        for (link, route) in destinations {
            self.link(link).stats.messages_out += 1;
            for (counted, f) in &frames {
                let Some(mut route) = route else {
                    self.push_frame(lane, link, f.clone(), *counted);
                    continue;
                };
                // Relayed reliable frames are numbered and kept until the host acknowledges them.
                let tracked = lane == Lane::Reliable;
                if tracked {
                    route.seq = Some(self.relay_seq);
                    self.relay_seq = self.relay_seq.wrapping_add(1);
                }
                let prefix = relay::encode(route);
                let bytes = Bytes::from([prefix.as_slice(), f.as_ref()].concat());
                if let (true, Some(seq)) = (tracked, route.seq) {
                    self.track_relayed(seq, *counted, bytes.clone());
                }
                self.push_frame(lane, link, bytes, *counted);
            }
        }
        missing.map_or(Ok(()), Err)
    }

    /// The recipients of `to` that a message cannot reach because they are not in our lobby
    /// (not joined yet, or gone), or no host to reach; `None` when all can be reached.
    fn missing(&self, to: &Recipients) -> Option<SendError> {
        let absent = |p: &PeerId| Some(*p) != self.me && !self.joined.contains(p);
        let missing: Vec<PeerId> = match to {
            Recipients::All => return None,
            Recipients::Host => match self.host() {
                Some(host) if Some(host) == self.me || self.joined.contains(&host) => return None,
                host => host.into_iter().collect(),
            },
            Recipients::Peer(p) => std::iter::once(*p).filter(absent).collect(),
            Recipients::Peers(ps) => ps.iter().copied().filter(absent).collect(),
        };
        let no_host = matches!(to, Recipients::Host);
        (no_host || !missing.is_empty()).then_some(SendError::NotInLobby { missing })
    }

    /// Sends a media signal to `peer` on the control lane now, if its link is ready; returns
    /// whether it went.
    pub fn send_media(&mut self, peer: PeerId, signal: MediaSignal) -> bool {
        if !self.ready(peer) {
            return false;
        }
        let bytes = crate::control::Control::Media(signal).encode();
        self.send_now(Lane::Control, peer, bytes);
        true
    }

    /// Keeps a relayed reliable frame until it is known to have arrived; over the bound the
    /// oldest is given up and reported.
    fn track_relayed(&mut self, seq: u32, counted: usize, bytes: Bytes) {
        self.unacked.push_back(Unacked {
            seq,
            counted,
            bytes,
            acked_at: None,
        });
        if self.unacked.len() > MAX_UNACKED {
            self.unacked.pop_front();
            self.counters.send_failed += 1;
            self.events
                .push_back(super::Event::Error(EndpointError::RelayOverflow {
                    frames: 1,
                }));
        }
    }

    /// Queues a frame for `peer` on `lane`: reliable frames wait behind a chunked transfer (and
    /// chunks count against the window); the rest go out with the next flush.
    pub(super) fn push_frame(&mut self, lane: Lane, peer: PeerId, bytes: Bytes, counted: usize) {
        let limit = self.config.settings.max_queued_bytes;
        let link = self.link(peer);
        if lane == Lane::Reliable && (counted > 0 || link.has_bulk()) {
            if link.bulk_bytes().saturating_add(bytes.len()) > limit {
                // Only relayed frames get here over the limit (our own are refused at send).
                self.counters.send_failed += 1;
                let error = EndpointError::QueueFull { peer, frames: 1 };
                self.events.push_back(super::Event::Error(error));
                return;
            }
            link.queue_bulk(counted, bytes);
        } else {
            self.outbox.push((lane, peer, bytes));
        }
    }

    /// Sends what was queued: messages, then bulk chunks within each peer's window; gives up
    /// reliable frames whose link never came; relay acknowledgements, hellos and pings when due.
    pub(super) fn flush(&mut self, now: Duration) {
        for (lane, peer, bytes) in std::mem::take(&mut self.outbox) {
            let member = self.joined.contains(&peer) || self.host() == Some(peer);
            if self.ready(peer) {
                self.send_now(lane, peer, bytes);
            } else if lane == Lane::Reliable && member {
                // No working link yet (a star's new host is still connecting): wait for it.
                self.link(peer).queue_bulk(0, bytes);
            }
            // Otherwise the peer is gone: what was for it is moot (relayed frames it had not
            // passed on are sent again through the next host).
        }
        self.give_up_waiting(now);
        self.send_bulk();
        self.send_relay_acks();
        self.repeat_hellos(now);
        self.ping(now);
    }

    /// Bulk frames within each ready peer's window.
    fn send_bulk(&mut self) {
        let window = self.config.settings.bulk_window_bytes as u64;
        let peers: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| l.has_bulk() && l.ready())
            .map(|(p, _)| *p)
            .collect();
        for peer in peers {
            while let Some(link) = self.links.get_mut(&peer) {
                if link.bulk_sent.saturating_sub(link.bulk_acked) >= window {
                    break;
                }
                let Some((counted, frame)) = link.pop_bulk() else {
                    break;
                };
                // Only chunk payload counts against the window: that is what the peer acks.
                link.bulk_sent += counted as u64;
                self.send_now(Lane::Reliable, peer, frame);
            }
        }
    }

    /// Reliable frames waiting for a link that has not come up, or behind a window the peer has
    /// not opened any further, for [`LINK_WAIT`] are given up and reported, never dropped in
    /// silence.
    fn give_up_waiting(&mut self, now: Duration) {
        let window = self.config.settings.bulk_window_bytes as u64;
        let mut failed = Vec::new();
        for (peer, link) in &mut self.links {
            let closed = link.bulk_sent.saturating_sub(link.bulk_acked) >= window;
            let waiting = link.has_bulk() && (!link.ready() || closed);
            match (waiting, link.waiting_since) {
                (false, _) => link.waiting_since = None,
                (true, None) => link.waiting_since = Some(now),
                (true, Some(since)) if now.saturating_sub(since) >= LINK_WAIT => {
                    failed.push((*peer, link.clear_bulk()));
                    link.waiting_since = None;
                    // What was sent counts as acknowledged: a window shut by acknowledgements
                    // that never came opens again for what is sent next.
                    link.bulk_acked = link.bulk_acked.max(link.bulk_sent);
                }
                (true, Some(_)) => {}
            }
        }
        for (peer, frames) in failed {
            self.counters.send_failed += frames as u64;
            self.events
                .push_back(super::Event::Error(EndpointError::LinkGaveUp {
                    peer,
                    frames,
                    waited: LINK_WAIT,
                }));
        }
    }

    /// Pings every ready peer once per `ping_interval`.
    fn ping(&mut self, now: Duration) {
        if self
            .last_ping
            .is_some_and(|t| now.saturating_sub(t) < self.config.settings.ping_interval)
        {
            return;
        }
        self.last_ping = Some(now);
        let sent_us = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        let peers: Vec<PeerId> = self
            .joined
            .iter()
            .copied()
            .filter(|p| self.ready(*p))
            .collect();
        for peer in peers {
            let seq = self.link(peer).ping(now);
            let ping = Frame::Link {
                pong: false,
                seq,
                sent_us,
            };
            self.send_now(Lane::Unreliable, peer, ping.header());
        }
    }
}
