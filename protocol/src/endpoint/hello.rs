//! The hello handshake: the first thing on every new link. Each side says what it speaks
//! (protocol version, message types, topology) and whether it has the other's hello; hellos
//! repeat until both sides have seen each other's, since a message sent the instant a data
//! channel opens can be lost. Frames that arrive before the peer's hello wait (bounded), and a
//! peer whose hello differs is reported once and ignored from then on.

use super::{Endpoint, EndpointError, Event, Role, EARLY_FRAMES};
use crate::control::{Control, Hello, PROTOCOL_VERSION};
use crate::lane::Lane;
use bytes::Bytes;
use matchbox_protocol::PeerId;
use std::time::Duration;

/// How often a peer's repeated hello is answered at most.
const HELLO_ANSWER_GAP: Duration = Duration::from_millis(100);

impl Endpoint {
    /// Sends our hello, saying whether we have the peer's.
    pub(super) fn send_hello(&mut self, peer: PeerId, now: Duration) {
        let link = self.link(peer);
        let seen = link.has_hello();
        link.hello_sent = Some(now);
        let hello = Control::Hello(Hello {
            version: PROTOCOL_VERSION,
            types_hash: self.config.types_hash,
            types: self.config.type_names.clone(),
            topology: self.config.topology,
            seen,
            meta: self.config.meta.clone(),
        });
        self.send_now(Lane::Control, peer, hello.encode());
    }

    /// A hello from `peer`.
    pub(super) fn hello_received(&mut self, peer: PeerId, hello: Hello, now: Duration) {
        let seen = hello.seen;
        if seen {
            self.link(peer).hello_acked = true;
        }
        let first = !self.link(peer).has_hello();
        if first {
            self.check_hello(peer, hello);
        }
        // Tell it we have its hello (again, if it did not get that yet): a repeat at most once
        // per [`HELLO_ANSWER_GAP`], so a member that floods hellos gets one answer per gap, not
        // one per hello (it repeats every `HELLO_REPEAT` when honest).
        let recent = self
            .link(peer)
            .hello_sent
            .is_some_and(|t| now.saturating_sub(t) < HELLO_ANSWER_GAP);
        if first || (!seen && !recent) {
            self.send_hello(peer, now);
        } else if !seen {
            self.counters.control_limited += 1;
        }
    }

    /// A hello from a peer that speaks another version (only its version could be read).
    pub(super) fn version_mismatch(&mut self, peer: PeerId, theirs: u16) {
        let link = self.link(peer);
        if link.has_hello() {
            return;
        }
        link.mismatched = true;
        self.events
            .push_back(Event::Error(EndpointError::ProtocolMismatch {
                peer,
                ours: PROTOCOL_VERSION,
                theirs,
            }));
    }

    fn check_hello(&mut self, peer: PeerId, hello: Hello) {
        let mismatch = if hello.version != PROTOCOL_VERSION {
            Some(EndpointError::ProtocolMismatch {
                peer,
                ours: PROTOCOL_VERSION,
                theirs: hello.version,
            })
        } else if hello.topology != self.config.topology {
            Some(EndpointError::TopologyMismatch {
                peer,
                ours: self.config.topology,
                theirs: hello.topology,
            })
        } else if hello.types_hash != self.config.types_hash {
            Some(EndpointError::MessageTypeMismatch {
                peer,
                ours: self.config.type_names.clone(),
                theirs: hello.types,
            })
        } else {
            None
        };
        self.lobby_changed();
        if let Some(error) = mismatch {
            let link = self.link(peer);
            link.mismatched = true;
            link.early.clear();
            self.events.push_back(Event::Error(error));
            return;
        }
        let meta = if hello.meta.len() > crate::control::MAX_META {
            self.counters.control_dropped += 1;
            Vec::new()
        } else {
            hello.meta
        };
        let link = self.link(peer);
        if link.announced {
            return;
        }
        link.announced = true;
        link.meta = meta;
        // Our role is known from the signaling; a peer we did not see offered to us.
        let role = *link.role.get_or_insert(Role::Receiver);
        let early = std::mem::take(&mut link.early);
        // In a star, a member we knew by roster is now linked (a new host): no second join.
        if !self.joined.contains(&peer) {
            self.joined.push(peer);
            self.events.push_back(Event::Joined { peer, role });
        }
        // Its control channel works now: as host, make sure it has the succession (one sent the
        // instant the link opened may have been lost).
        if let Some(succession) = self
            .election
            .as_ref()
            .filter(|e| e.is_host())
            .and_then(|e| e.roster().cloned())
        {
            self.send_now(
                Lane::Control,
                peer,
                Control::Succession(succession).encode(),
            );
        }
        for (lane, packet) in early {
            self.data_frame(lane, peer, packet);
        }
    }

    /// A data frame from `peer` before or after its hello: held until the hello (up to
    /// [`EARLY_FRAMES`]), dropped after a mismatched hello, read otherwise.
    pub(super) fn data_received(&mut self, lane: Lane, peer: PeerId, packet: Bytes) {
        let link = self.link(peer);
        if link.mismatched {
            self.counters.mismatched_dropped += 1;
            return;
        }
        if !link.announced {
            if link.early.len() < EARLY_FRAMES {
                link.early.push((lane, packet));
            } else {
                self.counters.frames_dropped += 1;
            }
            return;
        }
        self.data_frame(lane, peer, packet);
    }

    /// The repeats due at `now`: to every link whose handshake is not complete.
    pub(super) fn repeat_hellos(&mut self, now: Duration) {
        let due: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.hello_pending()
                    && l.hello_sent
                        .is_none_or(|t| now.saturating_sub(t) >= super::HELLO_REPEAT)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.send_hello(peer, now);
        }
    }
}
