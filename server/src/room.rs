//! One room's state: its members in join order, its host and the host's heir, and who must hear
//! of whom.
//!
//! A plain state machine: [`Room::join`] and [`Room::leave`] return which peers the caller must tell
//! what, and [`Room::route`] decides whether a signal may pass. The websocket shell holds the room's
//! lock while it sends those events, so every peer sees joins and leaves in one order.

use crate::request::Topology;
use matchbox_protocol::PeerId;

/// A room of peers. `T` is what the shell needs to reach a peer (its websocket sender; with
/// shared rooms, which instance and connection it is on, and the room travels as JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Room<T> {
    topology: Topology,
    capacity: usize,
    private: bool,
    /// Members in join order (by their stamps); the first is the host.
    members: Vec<Member<T>>,
    /// Who the host named to follow it (huddle's election ranks heirs by upload): it becomes
    /// host when the host leaves, instead of the oldest member.
    #[serde(default)]
    heir: Option<PeerId>,
    /// Set once the room emptied: nobody may join it any more, the registry forgets it.
    closed: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Member<T> {
    id: PeerId,
    /// Its place in the join order (see `resume::Stamps`).
    seq: u64,
    handle: T,
    /// Its connection dropped and its place is held for it to resume.
    away: bool,
    /// It joined this room here (not rebuilt into it from a resume token after a restart).
    fresh: bool,
    /// Newcomers introduced while it was away: it calls them when it resumes.
    missed: Vec<PeerId>,
}

/// Why a peer could not join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The room holds as many peers as its capacity allows.
    #[error("room is full (capacity {capacity})")]
    Full {
        /// The room's capacity.
        capacity: usize,
    },
    /// The room emptied and was closed in the meantime: ask the registry again.
    #[error("room was closed")]
    Closed,
    /// The peer is in the room already.
    #[error("peer is in the room already")]
    AlreadyMember,
}

/// What the shell must do after a join: send `NewPeer(newcomer)` to each of `introduce_to`
/// (they are the callers and send the offers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Peers that receive `NewPeer(newcomer)` (members that are away hear of it when they resume).
    pub introduce_to: Vec<PeerId>,
    /// The room's host after the join (the newcomer when the room was empty).
    pub host: PeerId,
}

/// What the shell must do after a peer resumed its place.
#[derive(Debug, PartialEq, Eq)]
pub struct Resumed<T> {
    /// The handle of the connection it replaces, if the room still held one (to close quietly).
    pub replaced: Option<T>,
    /// The resumed peer receives `NewPeer(p)` for each: newcomers it has not called yet.
    pub introduce: Vec<PeerId>,
}

/// What the shell must do after a leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// Peers that receive `PeerLeft(leaver)`: those that were introduced to it (and are here).
    pub notify: Vec<PeerId>,
    /// Set when the leaver was the host and someone remains: the oldest remaining peer.
    pub new_host: Option<PeerId>,
    /// In a star room whose host left: the new host receives `NewPeer(p)` for each of these
    /// (it becomes their caller; when it is away, it hears of them when it resumes).
    pub introduce_to_new_host: Vec<PeerId>,
    /// The room is empty now and closed.
    pub closed: bool,
}

/// Why the room did not take a host's heir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeirError {
    /// Only the host names its heir.
    #[error("only the room's host names its heir")]
    NotHost,
    /// The heir must be another member of the room.
    #[error("the heir is not another member of the room")]
    NotMember,
}

/// Why a signal may not pass between two peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The receiver is not in the sender's room (another room, gone, or never existed).
    #[error("receiver is not in the sender's room")]
    NotInRoom,
    /// In a star room, two clients are never introduced to each other.
    #[error("star room: clients signal only the host")]
    NotIntroduced,
}

impl<T> Room<T> {
    /// An empty room with its settings.
    pub fn new(topology: Topology, capacity: usize, private: bool) -> Self {
        Self {
            topology,
            capacity,
            private,
            members: Vec::new(),
            heir: None,
            closed: false,
        }
    }

    /// The host `by` names `heir` to host after it. Refused unless `by` hosts and `heir` is
    /// another member.
    pub fn name_heir(&mut self, by: PeerId, heir: PeerId) -> Result<(), HeirError> {
        if self.host() != Some(by) {
            return Err(HeirError::NotHost);
        }
        if heir == by || !self.contains(heir) {
            return Err(HeirError::NotMember);
        }
        self.heir = Some(heir);
        Ok(())
    }

    /// The member that hosts when the host leaves: its heir, else the oldest after it.
    pub fn heir(&self) -> Option<PeerId> {
        self.heir.or_else(|| self.members.get(1).map(|m| m.id))
    }

    /// The place in the join order for a newcomer stamped `stamp`: after every member, whatever
    /// its stamp (a newcomer stamped earlier whose join came later, by a moment on another task
    /// or instance, still joins last: the join order is the order joins happened).
    pub fn place_after(&self, stamp: u64) -> u64 {
        self.members
            .iter()
            .map(|m| m.seq.saturating_add(1))
            .fold(stamp, u64::max)
    }

    /// Adds `peer` at its place `seq` in the join order (after everyone: see
    /// [`Room::place_after`]).
    pub fn join(&mut self, peer: PeerId, seq: u64, handle: T) -> Result<Joined, JoinError> {
        self.admit(peer)?;
        let callers: Vec<usize> = match self.topology {
            Topology::Mesh => (0..self.members.len()).collect(),
            Topology::Star => (!self.members.is_empty())
                .then_some(0)
                .into_iter()
                .collect(),
        };
        let mut introduce_to = Vec::new();
        for i in callers {
            let caller = &mut self.members[i];
            if caller.away {
                caller.missed.push(peer);
            } else {
                introduce_to.push(caller.id);
            }
        }
        self.insert(Member {
            id: peer,
            seq,
            handle,
            away: false,
            fresh: true,
            missed: Vec::new(),
        });
        let host = self.members[0].id;
        Ok(Joined { introduce_to, host })
    }

    /// `peer` comes back with its resume token (its place `seq`): it gets its place back, held
    /// since its connection dropped; or, in a room rebuilt after a restart, it takes its place by
    /// `seq` and calls the newcomers that joined after it. Nobody is told: its links to the others
    /// never closed.
    pub fn resume(&mut self, peer: PeerId, seq: u64, handle: T) -> Result<Resumed<T>, JoinError> {
        if let Some(member) = self.members.iter_mut().find(|m| m.id == peer) {
            member.away = false;
            let replaced = std::mem::replace(&mut member.handle, handle);
            let missed = std::mem::take(&mut member.missed);
            return Ok(Resumed {
                replaced: Some(replaced),
                introduce: missed,
            });
        }
        self.admit(peer)?;
        self.insert(Member {
            id: peer,
            seq,
            handle,
            away: false,
            fresh: false,
            missed: Vec::new(),
        });
        let host = self.host() == Some(peer);
        let introduce = self
            .members
            .iter()
            .filter(|m| m.fresh)
            .filter(|m| match self.topology {
                Topology::Mesh => m.seq > seq,
                Topology::Star => host,
            })
            .map(|m| m.id)
            .collect();
        Ok(Resumed {
            replaced: None,
            introduce,
        })
    }

    fn admit(&self, peer: PeerId) -> Result<(), JoinError> {
        if self.closed {
            return Err(JoinError::Closed);
        }
        if self.contains(peer) {
            return Err(JoinError::AlreadyMember);
        }
        if self.members.len() >= self.capacity {
            return Err(JoinError::Full {
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    fn insert(&mut self, member: Member<T>) {
        let at = self.members.partition_point(|m| m.seq <= member.seq);
        self.members.insert(at, member);
    }

    /// `peer`'s connection dropped: its place is held (see [`Room::resume`]) if `is_current`
    /// says the handle the room has is that connection's. Whether it is held now.
    pub fn set_away(&mut self, peer: PeerId, is_current: impl Fn(&T) -> bool) -> bool {
        match self.members.iter_mut().find(|m| m.id == peer) {
            Some(member) if is_current(&member.handle) => {
                member.away = true;
                true
            }
            _ => false,
        }
    }

    /// Whether `peer` is a member whose place is held while it is away.
    pub fn is_away(&self, peer: PeerId) -> bool {
        self.members.iter().any(|m| m.id == peer && m.away)
    }

    /// Removes `peer`. Returns `None` when it was not a member.
    pub fn leave(&mut self, peer: PeerId) -> Option<(T, Left)> {
        self.leave_if(peer, |_| true)
    }

    /// Removes `peer` if `is_current` holds for its handle (the connection that ends is the one
    /// the room has: a resumed peer's old connection ending takes nothing away). Returns `None`
    /// when it was not removed.
    pub fn leave_if(&mut self, peer: PeerId, is_current: impl Fn(&T) -> bool) -> Option<(T, Left)> {
        let index = self.members.iter().position(|m| m.id == peer)?;
        if !is_current(&self.members[index].handle) {
            return None;
        }
        let member = self.members.remove(index);
        for m in &mut self.members {
            m.missed.retain(|p| *p != peer);
        }
        let was_host = index == 0;
        let heir = self.heir.take().filter(|h| *h != peer);
        if !was_host {
            self.heir = heir;
        } else if let Some(at) = heir.and_then(|h| self.members.iter().position(|m| m.id == h)) {
            // The heir takes the host's place, first in the join order.
            let mut heir = self.members.remove(at);
            heir.seq = member.seq;
            self.members.insert(0, heir);
        }
        let new_host = if was_host { self.host() } else { None };
        let present = |m: &&Member<T>| !m.away;
        let (notify, mut introduce_to_new_host): (Vec<PeerId>, Vec<PeerId>) = match self.topology {
            Topology::Mesh => (
                self.members.iter().filter(present).map(|m| m.id).collect(),
                Vec::new(),
            ),
            Topology::Star if was_host => (
                self.members.iter().filter(present).map(|m| m.id).collect(),
                self.ids().skip(1).collect(),
            ),
            Topology::Star => (
                self.members
                    .first()
                    .filter(present)
                    .map(|m| m.id)
                    .into_iter()
                    .collect(),
                Vec::new(),
            ),
        };
        if let Some(host) = self.members.first_mut().filter(|h| h.away) {
            host.missed.append(&mut introduce_to_new_host);
        }
        self.closed = self.members.is_empty();
        Some((
            member.handle,
            Left {
                notify,
                new_host,
                introduce_to_new_host,
                closed: self.closed,
            },
        ))
    }

    /// Whether a signal from `from` may be relayed to `to`; gives the receiver's handle.
    pub fn route(&self, from: PeerId, to: PeerId) -> Result<&T, RouteError> {
        let handle = self.get(to).ok_or(RouteError::NotInRoom)?;
        if from == to || !self.contains(from) {
            return Err(RouteError::NotInRoom);
        }
        if self.topology == Topology::Star {
            let host = self.host();
            if host != Some(from) && host != Some(to) {
                return Err(RouteError::NotIntroduced);
            }
        }
        Ok(handle)
    }

    /// The handle of a member.
    pub fn get(&self, peer: PeerId) -> Option<&T> {
        self.members
            .iter()
            .find(|m| m.id == peer)
            .map(|m| &m.handle)
    }

    /// The handle of a member, to change.
    pub fn get_mut(&mut self, peer: PeerId) -> Option<&mut T> {
        self.members
            .iter_mut()
            .find(|m| m.id == peer)
            .map(|m| &mut m.handle)
    }

    /// Every member's id and handle, in join order.
    pub fn handles(&self) -> impl DoubleEndedIterator<Item = (PeerId, &T)> + '_ {
        self.members.iter().map(|m| (m.id, &m.handle))
    }

    /// Whether `peer` is a member.
    pub fn contains(&self, peer: PeerId) -> bool {
        self.members.iter().any(|m| m.id == peer)
    }

    /// The host: the member that has been in the room longest.
    pub fn host(&self) -> Option<PeerId> {
        self.members.first().map(|m| m.id)
    }

    /// Members in join order.
    pub fn ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.members.iter().map(|m| m.id)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the room has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether the room emptied and was closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the room holds as many peers as it may.
    pub fn is_full(&self) -> bool {
        self.members.len() >= self.capacity
    }

    /// The room's topology.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The most peers the room holds at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the room is hidden from the room listing.
    pub fn is_private(&self) -> bool {
        self.private
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn peers(n: u128) -> Vec<PeerId> {
        (1..=n).map(|i| PeerId(Uuid::from_u128(i))).collect()
    }

    #[test]
    fn mesh_introduces_newcomer_to_everyone_in_join_order() {
        let p = peers(4);
        let mut room = Room::new(Topology::Mesh, 8, false);
        assert_eq!(room.join(p[0], 0, ()).unwrap().introduce_to, vec![]);
        assert_eq!(room.join(p[1], 0, ()).unwrap().introduce_to, vec![p[0]]);
        let j = room.join(p[2], 0, ()).unwrap();
        assert_eq!(j.introduce_to, vec![p[0], p[1]]);
        assert_eq!(j.host, p[0]);
        assert!(room.route(p[1], p[2]).is_ok());
        assert_eq!(room.route(p[1], p[3]), Err(RouteError::NotInRoom));
        assert_eq!(room.route(p[3], p[1]), Err(RouteError::NotInRoom));
        assert_eq!(room.route(p[1], p[1]), Err(RouteError::NotInRoom));
    }

    #[test]
    fn mesh_host_leaving_promotes_the_oldest() {
        let p = peers(3);
        let mut room = Room::new(Topology::Mesh, 8, false);
        for &id in &p {
            room.join(id, 0, ()).unwrap();
        }
        let (_, left) = room.leave(p[0]).unwrap();
        assert_eq!(left.notify, vec![p[1], p[2]]);
        assert_eq!(left.new_host, Some(p[1]));
        assert!(left.introduce_to_new_host.is_empty());
        let (_, left) = room.leave(p[2]).unwrap();
        assert_eq!(left.new_host, None, "a non-host leaving changes no host");
        assert_eq!(left.notify, vec![p[1]]);
        let (_, left) = room.leave(p[1]).unwrap();
        assert!(left.closed);
        assert_eq!(room.join(p[0], 0, ()), Err(JoinError::Closed));
        assert!(room.leave(p[1]).is_none());
    }

    #[test]
    fn star_introduces_to_host_only_and_migrates() {
        let p = peers(4);
        let mut room = Room::new(Topology::Star, 8, false);
        assert_eq!(room.join(p[0], 0, ()).unwrap().introduce_to, vec![]);
        for &id in &p[1..] {
            assert_eq!(room.join(id, 0, ()).unwrap().introduce_to, vec![p[0]]);
        }
        assert!(room.route(p[1], p[0]).is_ok());
        assert!(room.route(p[0], p[2]).is_ok());
        assert_eq!(room.route(p[1], p[2]), Err(RouteError::NotIntroduced));

        // A client leaving is news to the host only.
        let (_, left) = room.leave(p[3]).unwrap();
        assert_eq!(left.notify, vec![p[0]]);
        assert_eq!(left.new_host, None);

        room.join(p[3], 0, ()).unwrap();
        // The host leaving: everyone hears, the oldest client becomes host and calls the rest.
        let (_, left) = room.leave(p[0]).unwrap();
        assert_eq!(left.notify, vec![p[1], p[2], p[3]]);
        assert_eq!(left.new_host, Some(p[1]));
        assert_eq!(left.introduce_to_new_host, vec![p[2], p[3]]);
        assert!(room.route(p[2], p[1]).is_ok());
        assert_eq!(room.route(p[2], p[3]), Err(RouteError::NotIntroduced));
    }

    /// The host names an heir: when it leaves, the heir hosts (and, in a star, is introduced to
    /// the others) instead of the oldest client; it keeps the host's place, so it stays host
    /// whoever joins next. Nobody else names heirs, and only members are heirs.
    #[test]
    fn the_hosts_heir_hosts_next() {
        let p = peers(5);
        let mut room = Room::new(Topology::Star, 8, false);
        for (seq, &id) in p[..4].iter().enumerate() {
            room.join(id, seq as u64, ()).unwrap();
        }
        assert_eq!(room.heir(), Some(p[1]));
        assert_eq!(room.name_heir(p[1], p[2]), Err(HeirError::NotHost));
        assert_eq!(room.name_heir(p[0], p[0]), Err(HeirError::NotMember));
        assert_eq!(room.name_heir(p[0], p[4]), Err(HeirError::NotMember));
        room.name_heir(p[0], p[3]).unwrap();
        assert_eq!(room.heir(), Some(p[3]));
        // A client leaving changes nothing; the heir leaving does.
        room.leave(p[2]).unwrap();
        assert_eq!(room.heir(), Some(p[3]));
        room.join(p[2], 10, ()).unwrap();
        let (_, left) = room.leave(p[0]).unwrap();
        assert_eq!(left.new_host, Some(p[3]));
        assert_eq!(left.introduce_to_new_host, vec![p[1], p[2]]);
        assert_eq!(room.route(p[1], p[3]), Ok(&()));
        assert_eq!(room.route(p[1], p[2]), Err(RouteError::NotIntroduced));
        let late = room.place_after(0);
        assert_eq!(room.join(p[4], late, ()).unwrap().introduce_to, vec![p[3]]);
        // Its own heir, gone before it: the oldest next.
        room.name_heir(p[3], p[4]).unwrap();
        room.leave(p[4]).unwrap();
        assert_eq!(room.heir(), Some(p[1]));
        assert_eq!(room.leave(p[3]).unwrap().1.new_host, Some(p[1]));
    }

    /// A newcomer stamped before a member that joined first (its join came later, by a moment on
    /// another task or instance) still joins last: the one already there stays host and calls it.
    #[test]
    fn a_newcomer_stamped_early_still_joins_last() {
        let p = peers(2);
        let mut room = Room::new(Topology::Star, 8, false);
        let first = room.place_after(200);
        room.join(p[0], first, ()).unwrap();
        let late = room.place_after(100);
        assert!(late > first);
        let joined = room.join(p[1], late, ()).unwrap();
        assert_eq!(joined.host, p[0]);
        assert_eq!(joined.introduce_to, vec![p[0]]);
        assert_eq!(room.place_after(u64::MAX), u64::MAX, "no overflow");
    }

    #[test]
    fn capacity_is_enforced_and_frees_up_on_leave() {
        let p = peers(3);
        let mut room = Room::new(Topology::Mesh, 2, false);
        room.join(p[0], 0, ()).unwrap();
        assert_eq!(room.join(p[0], 0, ()), Err(JoinError::AlreadyMember));
        room.join(p[1], 0, ()).unwrap();
        assert!(room.is_full());
        assert_eq!(room.join(p[2], 0, ()), Err(JoinError::Full { capacity: 2 }));
        room.leave(p[0]).unwrap();
        assert!(room.join(p[2], 0, ()).is_ok());
    }

    /// A member whose connection dropped keeps its place: newcomers meanwhile are introduced to
    /// it when it resumes (not lost, not sent into a closed socket), the others are not told, and
    /// the old connection ending later takes nothing away.
    #[test]
    fn an_away_member_keeps_its_place_and_hears_of_newcomers_on_resume() {
        let p = peers(4);
        let mut room = Room::new(Topology::Mesh, 8, false);
        room.join(p[0], 1, 10).unwrap();
        room.join(p[1], 2, 11).unwrap();
        assert!(
            !room.set_away(p[0], |h| *h == 99),
            "not its current connection"
        );
        assert!(room.set_away(p[0], |h| *h == 10));
        assert!(room.is_away(p[0]));
        let joined = room.join(p[2], 3, 12).unwrap();
        assert_eq!(
            joined.introduce_to,
            vec![p[1]],
            "the away member is not written to"
        );
        room.join(p[3], 4, 13).unwrap();
        // p[3] leaves before p[0] is back: p[0] must not call it.
        let (_, left) = room.leave(p[3]).unwrap();
        assert_eq!(left.notify, vec![p[1], p[2]]);
        let resumed = room.resume(p[0], 1, 20).unwrap();
        assert_eq!(resumed.replaced, Some(10));
        assert_eq!(resumed.introduce, vec![p[2]]);
        assert_eq!(room.host(), Some(p[0]), "the host stays the host");
        assert!(!room.is_away(p[0]));
        // The dropped connection's own cleanup comes late: it is not the current one.
        assert!(room.leave_if(p[0], |h| *h == 10).is_none());
        assert!(room.contains(p[0]));
        assert!(room.leave_if(p[0], |h| *h == 20).is_some());
    }

    /// After a restart the room is rebuilt from the tokens of the peers that come back, in
    /// whatever order they come: they take their places by stamp, are not introduced to each
    /// other (their links are open), and call the newcomers that joined after them.
    #[test]
    fn a_rebuilt_room_orders_by_stamp_and_introduces_only_newcomers() {
        let p = peers(4);
        let mut room = Room::new(Topology::Mesh, 8, false);
        let late = room.resume(p[1], 200, ()).unwrap();
        assert!(late.introduce.is_empty() && late.replaced.is_none());
        // A newcomer joins before the first peer is back (stamps of this process are later).
        let joined = room.join(p[3], 1_000, ()).unwrap();
        assert_eq!(joined.introduce_to, vec![p[1]]);
        let first = room.resume(p[0], 100, ()).unwrap();
        assert_eq!(first.introduce, vec![p[3]], "it calls the newcomer only");
        assert_eq!(room.host(), Some(p[0]), "the oldest is first again");
        assert_eq!(room.ids().collect::<Vec<_>>(), vec![p[0], p[1], p[3]]);
        assert_eq!(room.resume(p[2], 300, ()).unwrap().introduce, vec![p[3]]);
        // Capacity holds for rebuilt places too.
        let mut small = Room::new(Topology::Mesh, 1, false);
        small.join(p[0], 1, ()).unwrap();
        assert_eq!(
            small.resume(p[1], 0, ()).map(|_| ()),
            Err(JoinError::Full { capacity: 1 })
        );
    }

    /// In a star whose host is away when it leaves for good, the new host hears of its clients
    /// when it resumes.
    #[test]
    fn a_star_host_away_hears_of_its_clients_on_resume() {
        let p = peers(3);
        let mut room = Room::new(Topology::Star, 8, false);
        for (i, &id) in p.iter().enumerate() {
            room.join(id, i as u64, ()).unwrap();
        }
        assert!(room.set_away(p[1], |_| true));
        let (_, left) = room.leave(p[0]).unwrap();
        assert_eq!(left.new_host, Some(p[1]));
        assert_eq!(left.notify, vec![p[2]], "the away member is not written to");
        assert_eq!(room.resume(p[1], 1, ()).unwrap().introduce, vec![p[2]]);
    }
}
