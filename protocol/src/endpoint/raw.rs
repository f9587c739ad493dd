//! The raw lane (GGRS): opaque bytes between lobby peers. In a mesh they go as they are. In a
//! star, clients are linked to the host only, so every raw packet carries a relay header
//! ([`crate::relay`]) and the host passes a client's packet for another client on, stamping the
//! origin from the link it came on, exactly as it relays game frames (unreliable: nothing is
//! kept or acknowledged). A client believes an origin only on a packet from its host.

use super::{Endpoint, Event};
use crate::lane::Lane;
use crate::relay::{self, Route};
use crate::room::Topology;
use bytes::{BufMut, Bytes, BytesMut};
use matchbox_protocol::PeerId;

impl Endpoint {
    /// Sends `bytes` on the raw lane to `peer` now: directly in a mesh (if its link is ready),
    /// through the host in a star (if `peer` is in the lobby and the host's link is ready).
    /// Returns whether it went.
    pub fn send_raw(&mut self, peer: PeerId, bytes: Bytes) -> bool {
        if self.config.topology != Topology::Star {
            if !self.ready(peer) {
                return false;
            }
            self.send_now(Lane::Raw, peer, bytes);
            return true;
        }
        let Some(host) = self.host() else {
            return false;
        };
        let (link, target) = if self.hosting() || peer == host {
            (peer, None)
        } else if self.joined.contains(&peer) {
            (host, Some(peer))
        } else {
            return false;
        };
        if !self.ready(link) {
            return false;
        }
        let route = Route {
            origin: None,
            target,
            seq: None,
        };
        self.send_now(Lane::Raw, link, with_header(route, &bytes));
        true
    }

    /// A raw packet from `link` (a lobby member): for the driver (its author known), or, on a
    /// star's host, for another client.
    pub(super) fn raw_received(&mut self, link: PeerId, packet: Bytes) {
        if self.config.topology != Topology::Star {
            self.events.push_back(Event::Raw {
                from: link,
                bytes: packet,
            });
            return;
        }
        let Ok((route, header)) = relay::decode(&packet) else {
            self.counters.frames_dropped += 1;
            return;
        };
        let inner = packet.slice(header..);
        let Some(me) = self.me else { return };
        if self.hosting() {
            // A client never names an origin; what it sends is for us or for another client.
            match (route.origin, route.target) {
                (None, None) => self.events.push_back(Event::Raw {
                    from: link,
                    bytes: inner,
                }),
                (None, Some(t)) if t == me => self.events.push_back(Event::Raw {
                    from: link,
                    bytes: inner,
                }),
                (None, Some(t)) if t != link && self.joined.contains(&t) && self.ready(t) => {
                    let stamped = Route {
                        origin: Some(link),
                        target: None,
                        seq: None,
                    };
                    self.counters.relayed += 1;
                    self.send_now(Lane::Raw, t, with_header(stamped, &inner));
                }
                (None, Some(_)) => self.counters.frames_dropped += 1,
                (Some(_), _) => self.counters.forged_dropped += 1,
            }
            return;
        }
        // A client: from the host, its own (no origin) or a member's it passes on.
        let from = match route.origin {
            None if self.host() == Some(link) => Ok(link),
            None => Err(()),
            Some(_) => relay::accept(self.host(), link, route).map_err(|_| ()),
        };
        match from {
            Ok(origin) if origin != me && self.joined.contains(&origin) => {
                self.events.push_back(Event::Raw {
                    from: origin,
                    bytes: inner,
                })
            }
            _ => self.counters.forged_dropped += 1,
        }
    }
}

/// `bytes` behind the relay header `route`.
fn with_header(route: Route, bytes: &[u8]) -> Bytes {
    let header = relay::encode(route);
    let mut out = BytesMut::with_capacity(header.len() + bytes.len());
    out.put_slice(&header);
    out.put_slice(bytes);
    out.freeze()
}
