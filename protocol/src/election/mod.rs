//! Host election: every peer agrees on the host and on the order of succession, with any matchbox
//! server (no server-side knowledge needed).
//!
//! How it works:
//! - The signaling roles tell each peer who joined before it: the earlier peer of every pair is
//!   the caller (it got `NewPeer` and sends the offer). A peer that no earlier peer offered to
//!   within a grace period after it joined is the first in the room: it is the host.
//! - The host publishes the **roster** (the succession order: itself, then everyone in join order)
//!   whenever it changes, with an increasing epoch.
//! - When the host leaves, every peer takes the next peer of the last roster that has not left:
//!   the first of its **heirs** still here, else the next in join order. The host names as heirs
//!   the members whose upload it measured ([`HostElection::upload_measured`], see
//!   [`crate::uplink`]), in join order but for members with twice the headroom of those before
//!   them, which go ahead, so the peer best able to relay hosts next; with no measurements there
//!   are none. The new host republishes the roster with a higher epoch.
//! - Conflicts (two peers claiming to host, e.g. after a late offer) resolve to the earlier peer:
//!   a host steps down for the roster of a peer that offered to it (joined before it), and
//!   forwards that roster to everyone, so those who followed it follow the earlier peer too.
//!
//! What a member may say is bounded by what the server and the honest members saw, so a member
//! that speaks the protocol but lies cannot take the room over:
//! - A roster is accepted only from the current host (its own, or the one it hands over to when
//!   it steps down), or, once the host is gone, from its agreed successor; a host accepts none
//!   except from a peer that joined before it. Epochs advance by at most [`MAX_EPOCH_STEP`].
//! - A newcomer, which has no host yet, counts what the peers that joined before it say: the
//!   host publishes its roster, every other member vouches for the roster it follows when a
//!   link opens. The claim most of them back wins (ties keep the first), so one lying member
//!   cannot outvote two honest ones; after [`HostElection::new`]'s grace from the first claim,
//!   the newcomer follows the rules above.
//! - An offer from a peer the server introduced as later (we call it) does not make it earlier.
//! - Everything refused is counted ([`HostElection::refused`]); no arithmetic on a peer's epoch
//!   overflows.
//!
//! This is a plain state machine: the caller feeds it events with the current time and carries
//! out the [`Output`]s it returns (sending rosters, announcing host changes).

use matchbox_protocol::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How far a roster's epoch may go past the one held: a host adds one per change, and every
/// change reaches every member (the control channel is reliable).
pub const MAX_EPOCH_STEP: u64 = 1 << 16;
/// The most peers a roster may name, and the most peers this election tracks as earlier.
pub const MAX_MEMBERS: usize = 4096;

/// The succession order as the host published it. `order[0]` is the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Succession {
    /// Grows with every change; a roster with a higher epoch replaces one with a lower.
    pub epoch: u64,
    /// The host, then every other peer in join order.
    pub order: Vec<PeerId>,
    /// Who hosts next, in this order, before the rest of `order`: members of `order` (never the
    /// host) ranked by the upload headroom the host measured. Empty when nobody was measured.
    pub heirs: Vec<PeerId>,
}

impl Succession {
    /// A roster with no heirs: the host, then everyone in join order.
    pub fn in_join_order(epoch: u64, order: Vec<PeerId>) -> Self {
        Self {
            epoch,
            order,
            heirs: Vec::new(),
        }
    }

    /// Whether the roster is well formed: a host, nobody twice, at most [`MAX_MEMBERS`], heirs
    /// that are members other than the host.
    fn is_well_formed(&self) -> bool {
        let members = self.order.iter().collect::<BTreeSet<_>>();
        let heirs = self.heirs.iter().collect::<BTreeSet<_>>();
        !self.order.is_empty()
            && self.order.len() <= MAX_MEMBERS
            && members.len() == self.order.len()
            && heirs.len() == self.heirs.len()
            && self
                .heirs
                .iter()
                .all(|h| members.contains(h) && Some(h) != self.order.first())
    }
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
    /// Send this roster to every connected peer (output by the host, and by a host stepping
    /// down, which forwards the roster it now follows).
    Publish(Succession),
    /// Send this roster to one peer whose link just opened: the roster we follow, so a newcomer
    /// can count who backs which host.
    Vouch {
        /// The peer whose link opened.
        to: PeerId,
        /// The roster we follow.
        roster: Succession,
    },
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
    /// While a newcomer settles: the roster each earlier peer said it follows.
    claims: BTreeMap<PeerId, Succession>,
    /// When the newcomer stops counting claims (a grace after the first).
    settle_until: Option<Duration>,
    /// A roster from the agreed successor that came before we saw the host go.
    successor_claim: Option<(PeerId, Succession)>,
    /// As host: the upload headroom we measured per member, bits per second (see
    /// [`crate::uplink`]).
    uploads: BTreeMap<PeerId, u64>,
    /// Rosters and offers refused.
    refused: u64,
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
            claims: BTreeMap::new(),
            settle_until: None,
            successor_claim: None,
            uploads: BTreeMap::new(),
            refused: 0,
        }
    }

    /// Rosters and offers refused so far: rosters from peers that may not publish one, epochs
    /// that jump, offers from peers that joined after us.
    pub fn refused(&self) -> u64 {
        self.refused
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

    /// Who hosts if the host leaves now: the first heir still here, else the next in join order.
    pub fn next_host(&self) -> Option<PeerId> {
        self.host.and_then(|h| self.successor_of(h))
    }

    /// As host: we measured `peer`'s upload headroom as `bits_per_second`. Ranks our heirs; a
    /// peer not in the room is ignored.
    pub fn upload_measured(&mut self, peer: PeerId, bits_per_second: u64) -> Vec<Output> {
        let member = self.connected.contains(&peer)
            || self
                .roster
                .as_ref()
                .is_some_and(|r| r.order.contains(&peer));
        if !self.is_host() || !member || self.gone.contains(&peer) {
            return Vec::new();
        }
        self.uploads.insert(peer, bits_per_second);
        self.republish()
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

    /// `peer` sent us an offer: it joined before us. Refused (and counted) if the server
    /// introduced it as later, or past [`MAX_MEMBERS`].
    pub fn introduced_earlier(&mut self, peer: PeerId) -> Vec<Output> {
        if self.later.contains(&peer)
            || (self.earlier.len() >= MAX_MEMBERS && !self.earlier.contains(&peer))
        {
            self.refused += 1;
            return Vec::new();
        }
        self.gone.remove(&peer);
        self.earlier.insert(peer);
        Vec::new()
    }

    /// A link to `peer` opened.
    pub fn connected(&mut self, peer: PeerId) -> Vec<Output> {
        self.gone.remove(&peer);
        self.connected.insert(peer);
        if self.is_host() {
            return self.republish();
        }
        match (&self.roster, self.host) {
            (Some(roster), Some(host)) if host != peer && !self.gone.contains(&host) => {
                vec![Output::Vouch {
                    to: peer,
                    roster: roster.clone(),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// The link to `peer` closed, or the server said it left.
    pub fn disconnected(&mut self, peer: PeerId) -> Vec<Output> {
        self.connected.remove(&peer);
        self.earlier.remove(&peer);
        self.later.retain(|p| *p != peer);
        self.claims.remove(&peer);
        self.uploads.remove(&peer);
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

    /// A roster arrived from `from` at `now`.
    pub fn roster_received(
        &mut self,
        from: PeerId,
        roster: Succession,
        now: Duration,
    ) -> Vec<Output> {
        let Some(&claimed) = roster.order.first() else {
            self.refused += 1;
            return Vec::new();
        };
        if from == self.me || !roster.is_well_formed() {
            self.refused += 1;
            return Vec::new();
        }
        if claimed == self.me {
            // A member vouching for us (its link opened after it followed us): nothing new.
            return Vec::new();
        }
        if self.is_host() {
            // Only a peer that joined before us hosts instead of us (we claimed too early).
            if claimed == from && self.earlier.contains(&from) {
                return self.step_down(roster);
            }
            self.refused += 1;
            return Vec::new();
        }
        if self.settling(now) {
            return self.claim(from, roster, now);
        }
        self.claims.clear();
        let current = self.roster.as_ref().map_or(0, |r| r.epoch);
        let within = roster.epoch <= current.saturating_add(MAX_EPOCH_STEP);
        match self.host.filter(|h| !self.gone.contains(h)) {
            // The host's own next roster, or the roster of the peer it hands over to.
            Some(host) if from == host && within && (claimed != host || roster.epoch > current) => {
                self.adopt(roster)
            }
            // A stale or jumping roster of the host.
            Some(host) if from == host => {
                self.refused += 1;
                Vec::new()
            }
            // Another member vouching for the host it follows: for newcomers only.
            Some(_) if claimed != from => Vec::new(),
            Some(host) => {
                // The successor, before we saw the host go: kept until we do.
                if self.successor_of(host) == Some(from) && within && roster.epoch > current {
                    self.successor_claim = Some((from, roster));
                } else {
                    self.refused += 1;
                }
                Vec::new()
            }
            // No host: the earliest peer still here speaks.
            None if claimed == from && self.earlier.contains(&from) && within => self.adopt(roster),
            None => {
                self.refused += 1;
                Vec::new()
            }
        }
    }

    /// Whether we still count claims: no roster yet, or within the grace after the first claim.
    fn settling(&self, now: Duration) -> bool {
        self.roster.is_none() || self.settle_until.is_some_and(|until| now < until)
    }

    /// A newcomer's count: each earlier peer's latest claim; the host most of them back wins.
    fn claim(&mut self, from: PeerId, roster: Succession, now: Duration) -> Vec<Output> {
        if !self.earlier.contains(&from) {
            self.refused += 1;
            return Vec::new();
        }
        self.settle_until
            .get_or_insert(now.saturating_add(self.grace));
        // A sender's latest word, unless it is an older roster of the same host.
        let older = self
            .claims
            .get(&from)
            .is_some_and(|c| c.order[0] == roster.order[0] && c.epoch > roster.epoch);
        if !older {
            self.claims.insert(from, roster);
        }
        let mut backing: BTreeMap<PeerId, usize> = BTreeMap::new();
        for claim in self.claims.values() {
            *backing.entry(claim.order[0]).or_default() += 1;
        }
        let held = self
            .host
            .and_then(|h| backing.get(&h).copied())
            .unwrap_or(0);
        let Some((&winner, &votes)) = backing.iter().max_by_key(|(_, v)| **v) else {
            return Vec::new();
        };
        if self.host.is_some() && votes <= held {
            // A tie keeps the host we follow; its newest roster may have come.
            let host = self.host;
            return self.adopt_best(host);
        }
        self.adopt_best(Some(winner))
    }

    /// Adopts the newest roster claimed for `host`.
    fn adopt_best(&mut self, host: Option<PeerId>) -> Vec<Output> {
        let best = self
            .claims
            .values()
            .filter(|c| Some(c.order[0]) == host)
            .max_by_key(|c| c.epoch)
            .cloned();
        match best {
            Some(best) if self.roster.as_ref() != Some(&best) => self.adopt(best),
            _ => Vec::new(),
        }
    }

    /// The next host after `host` in the roster we follow: its first heir still here, else the
    /// next in join order.
    fn successor_of(&self, host: PeerId) -> Option<PeerId> {
        let heirs = self.roster.iter().flat_map(|r| r.heirs.iter().copied());
        heirs
            .filter(|p| !self.gone.contains(p))
            .chain(self.succession())
            .find(|p| *p != host)
    }

    /// We hosted too early: follow the earlier peer, and forward its roster to everyone (they
    /// followed us, and accept the host we hand over to).
    fn step_down(&mut self, roster: Succession) -> Vec<Output> {
        let mut out = self.adopt(roster.clone());
        out.push(Output::Publish(roster));
        out
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
        let next = self.successor_of(left);
        if let Some((from, roster)) = self.successor_claim.take() {
            if Some(from) == next {
                return self.adopt(roster);
            }
        }
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
        // Measurements were of uploads to the last host.
        self.uploads.clear();
        let order = self.order_as_host();
        self.roster = Some(Succession {
            epoch,
            heirs: self.heirs_as_host(&order),
            order,
        });
        if let Some(r) = &self.roster {
            out.push(Output::Publish(r.clone()));
        }
        out
    }

    /// As host: recompute the roster after a change and publish it if it changed.
    fn republish(&mut self) -> Vec<Output> {
        let order = self.order_as_host();
        let heirs = self.heirs_as_host(&order);
        let epoch = self.roster.as_ref().map_or(0, |r| r.epoch);
        if self
            .roster
            .as_ref()
            .is_some_and(|r| r.order == order && r.heirs == heirs)
        {
            return Vec::new();
        }
        let roster = Succession {
            epoch: epoch.saturating_add(1),
            order,
            heirs,
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

    /// As host: the members of `order` we measured, in join order except that a member goes
    /// ahead of those before it with clearly less headroom ([`crate::uplink::clearly_more`]).
    /// Before we measured anyone, the last roster's heirs still here (the last host measured
    /// them).
    fn heirs_as_host(&self, order: &[PeerId]) -> Vec<PeerId> {
        let members = order.get(1..).unwrap_or_default();
        if self.uploads.is_empty() {
            let previous = self.roster.iter().flat_map(|r| r.heirs.iter());
            return previous.filter(|p| members.contains(p)).copied().collect();
        }
        let mut heirs: Vec<(PeerId, u64)> = Vec::new();
        for p in members {
            let Some(&up) = self.uploads.get(p) else {
                continue;
            };
            let passes = heirs
                .iter()
                .rev()
                .take_while(|(_, before)| crate::uplink::clearly_more(up, *before))
                .count();
            heirs.insert(heirs.len() - passes, (*p, up));
        }
        heirs.into_iter().map(|(p, _)| p).collect()
    }
}

#[cfg(test)]
mod tests;
