//! Host election: every peer agrees on the host and on the order of succession, with any matchbox
//! server (no server-side knowledge needed).
//!
//! How it works:
//! - The signaling roles tell each peer who joined before it: the earlier peer of every pair is
//!   the caller (it got `NewPeer` and sends the offer). A peer that no earlier peer offered to
//!   within a grace period after it joined is the first in the room: it is the host.
//! - The host publishes the **roster** (the succession order: itself, then everyone in join order)
//!   whenever it changes, with an increasing epoch.
//! - When the host leaves, every peer takes the next peer of the last roster that has not left.
//!   The new host republishes the roster with a higher epoch.
//! - Conflicts (two peers claiming to host, e.g. after a late offer) resolve to the earlier peer.
//!
//! This is a plain state machine: the caller feeds it events with the current time and carries
//! out the [`Output`]s it returns (sending rosters, announcing host changes).

use matchbox_protocol::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// The succession order as the host published it. `order[0]` is the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Succession {
    /// Grows with every change; a roster with a higher epoch replaces one with a lower.
    pub epoch: u64,
    /// The host, then every other peer in join order.
    pub order: Vec<PeerId>,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The host changed (or became known).
    HostChanged {
        /// The previous host, if there was one.
        old: Option<PeerId>,
        /// The new host.
        new: PeerId,
    },
    /// Send this roster to every connected peer (only ever output by the host).
    Publish(Succession),
}

/// One peer's view of the host election.
#[derive(Debug, Clone)]
pub struct HostElection {
    me: PeerId,
    joined_at: Duration,
    grace: Duration,
    /// Peers that offered to us: they joined before us.
    earlier: BTreeSet<PeerId>,
    /// Peers we offered to, in the order the server introduced them: their join order.
    later: Vec<PeerId>,
    /// Peers with an open link to us.
    connected: BTreeSet<PeerId>,
    /// Peers that left (we saw their link close or the server said so).
    gone: BTreeSet<PeerId>,
    roster: Option<Succession>,
    host: Option<PeerId>,
}

impl HostElection {
    /// A peer that just got its id `me` at time `now`. With no earlier peer showing up within
    /// `grace`, it declares itself host.
    pub fn new(me: PeerId, now: Duration, grace: Duration) -> Self {
        Self {
            me,
            joined_at: now,
            grace,
            earlier: BTreeSet::new(),
            later: Vec::new(),
            connected: BTreeSet::new(),
            gone: BTreeSet::new(),
            roster: None,
            host: None,
        }
    }

    /// Our own id.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// The agreed host, once known.
    pub fn host(&self) -> Option<PeerId> {
        self.host
    }

    /// Whether we are the host.
    pub fn is_host(&self) -> bool {
        self.host == Some(self.me)
    }

    /// The last roster (ours if we host).
    pub fn roster(&self) -> Option<&Succession> {
        self.roster.as_ref()
    }

    /// The succession order without peers known to have left: host first.
    pub fn succession(&self) -> Vec<PeerId> {
        self.roster
            .as_ref()
            .map(|r| {
                r.order
                    .iter()
                    .copied()
                    .filter(|p| !self.gone.contains(p))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `peer` joined before us (it offered to us).
    pub fn is_earlier(&self, peer: PeerId) -> bool {
        self.earlier.contains(&peer)
    }

    /// The server introduced `peer` to us: we call it, so it joined after us.
    pub fn introduced_later(&mut self, peer: PeerId) {
        self.gone.remove(&peer);
        if !self.later.contains(&peer) {
            self.later.push(peer);
        }
    }

    /// `peer` sent us an offer: it joined before us.
    pub fn introduced_earlier(&mut self, peer: PeerId) -> Vec<Output> {
        self.gone.remove(&peer);
        self.earlier.insert(peer);
        Vec::new()
    }

    /// A link to `peer` opened.
    pub fn connected(&mut self, peer: PeerId) -> Vec<Output> {
        self.gone.remove(&peer);
        self.connected.insert(peer);
        if self.is_host() {
            self.republish()
        } else {
            Vec::new()
        }
    }

    /// The link to `peer` closed, or the server said it left.
    pub fn disconnected(&mut self, peer: PeerId) -> Vec<Output> {
        self.connected.remove(&peer);
        self.earlier.remove(&peer);
        self.later.retain(|p| *p != peer);
        self.gone.insert(peer);
        if self.host == Some(peer) {
            self.succeed(peer)
        } else if self.is_host() {
            self.republish()
        } else {
            Vec::new()
        }
    }

    /// When the grace period ends, while we wait to learn whether anyone joined before us.
    pub fn grace_ends(&self) -> Option<Duration> {
        (self.host.is_none() && self.roster.is_none() && self.earlier.is_empty())
            .then_some(self.joined_at.saturating_add(self.grace))
    }

    /// Time passed: a peer with no earlier peer after the grace period is the host.
    pub fn tick(&mut self, now: Duration) -> Vec<Output> {
        let waited = now.saturating_sub(self.joined_at) >= self.grace;
        if self.host.is_none() && self.roster.is_none() && self.earlier.is_empty() && waited {
            return self.become_host(0);
        }
        Vec::new()
    }

    /// A roster arrived from `from`.
    pub fn roster_received(&mut self, from: PeerId, roster: Succession) -> Vec<Output> {
        // Only a host publishes, and it lists itself first.
        if roster.order.first() != Some(&from) || from == self.me {
            return Vec::new();
        }
        let current_epoch = self.roster.as_ref().map_or(0, |r| r.epoch);
        if self.is_host() {
            if self.earlier.contains(&from) {
                // An earlier peer hosts: we claimed too early. Step down.
                return self.adopt(roster);
            }
            // A later peer claims to host: outbid it so everyone converges on us.
            return self.become_host(roster.epoch.max(current_epoch));
        }
        let newer = roster.epoch > current_epoch;
        let host_lost = self.host.is_none_or(|h| self.gone.contains(&h));
        let same_epoch_earlier = roster.epoch == current_epoch
            && self
                .roster
                .as_ref()
                .and_then(|r| {
                    let pos = |p: PeerId| r.order.iter().position(|q| *q == p);
                    Some(pos(from)? < pos(self.host?)?)
                })
                .unwrap_or(false);
        if newer || host_lost || same_epoch_earlier {
            self.adopt(roster)
        } else {
            Vec::new()
        }
    }

    fn adopt(&mut self, roster: Succession) -> Vec<Output> {
        let new = roster.order[0];
        self.roster = Some(roster);
        self.set_host(new)
    }

    fn set_host(&mut self, new: PeerId) -> Vec<Output> {
        let old = self.host.replace(new);
        if old == Some(new) {
            Vec::new()
        } else {
            vec![Output::HostChanged { old, new }]
        }
    }

    /// The host `left` is gone: the next in the last roster takes over.
    fn succeed(&mut self, left: PeerId) -> Vec<Output> {
        let next = self.succession().into_iter().find(|p| *p != left);
        match next {
            Some(next) if next == self.me => {
                let epoch = self.roster.as_ref().map_or(0, |r| r.epoch);
                self.become_host(epoch)
            }
            Some(next) => self.set_host(next),
            None => {
                // No roster yet: if nobody earlier is left, we are first now.
                self.host = None;
                if self.earlier.is_empty() {
                    self.become_host(0)
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Take the host role with an epoch above `above`.
    fn become_host(&mut self, above: u64) -> Vec<Output> {
        let mut out = self.set_host(self.me);
        // A peer may claim any epoch: never overflow on it.
        let epoch = above
            .max(self.roster.as_ref().map_or(0, |r| r.epoch))
            .saturating_add(1);
        self.roster = Some(Succession {
            epoch,
            order: self.order_as_host(),
        });
        if let Some(r) = &self.roster {
            out.push(Output::Publish(r.clone()));
        }
        out
    }

    /// As host: recompute the roster after a change and publish it if it changed.
    fn republish(&mut self) -> Vec<Output> {
        let order = self.order_as_host();
        let epoch = self.roster.as_ref().map_or(0, |r| r.epoch);
        if self.roster.as_ref().is_some_and(|r| r.order == order) {
            return Vec::new();
        }
        let roster = Succession {
            epoch: epoch.saturating_add(1),
            order,
        };
        self.roster = Some(roster.clone());
        vec![Output::Publish(roster)]
    }

    /// Us, then the peers who joined after us in join order (those linked to us, and those of the
    /// last roster, which in a star re-link to a new host), then anyone else of the last roster.
    fn order_as_host(&self) -> Vec<PeerId> {
        let previous = self
            .roster
            .as_ref()
            .map(|r| r.order.as_slice())
            .unwrap_or_default();
        let mut order = vec![self.me];
        for p in &self.later {
            let member = self.connected.contains(p) || previous.contains(p);
            if member && !self.gone.contains(p) && !order.contains(p) {
                order.push(*p);
            }
        }
        for p in previous {
            if !self.gone.contains(p) && !order.contains(p) {
                order.push(*p);
            }
        }
        order
    }
}

#[cfg(test)]
mod tests;
