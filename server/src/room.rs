//! One room's state: its members in join order, its host, and who must hear of whom.
//!
//! A plain state machine: [`Room::join`] and [`Room::leave`] return which peers the caller must tell
//! what, and [`Room::route`] decides whether a signal may pass. The websocket shell holds the room's
//! lock while it sends those events, so every peer sees joins and leaves in one order.

use crate::request::Topology;
use matchbox_protocol::PeerId;

/// A room of peers. `T` is what the shell needs to reach a peer (its websocket sender).
#[derive(Debug)]
pub struct Room<T> {
    topology: Topology,
    capacity: usize,
    private: bool,
    /// Members in join order; the first is the host.
    members: Vec<(PeerId, T)>,
    /// Set once the room emptied: nobody may join it any more, the registry forgets it.
    closed: bool,
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
    /// Peers that receive `NewPeer(newcomer)`.
    pub introduce_to: Vec<PeerId>,
    /// The room's host after the join (the newcomer when the room was empty).
    pub host: PeerId,
}

/// What the shell must do after a leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// Peers that receive `PeerLeft(leaver)`: those that were introduced to it.
    pub notify: Vec<PeerId>,
    /// Set when the leaver was the host and someone remains: the oldest remaining peer.
    pub new_host: Option<PeerId>,
    /// In a star room whose host left: the new host receives `NewPeer(p)` for each of these
    /// (it becomes their caller).
    pub introduce_to_new_host: Vec<PeerId>,
    /// The room is empty now and closed.
    pub closed: bool,
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
            closed: false,
        }
    }

    /// Adds `peer` as the newest member.
    pub fn join(&mut self, peer: PeerId, handle: T) -> Result<Joined, JoinError> {
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
        let introduce_to = match self.topology {
            Topology::Mesh => self.ids().collect(),
            Topology::Star => self.host().into_iter().collect(),
        };
        self.members.push((peer, handle));
        let host = self.members[0].0;
        Ok(Joined { introduce_to, host })
    }

    /// Removes `peer`. Returns `None` when it was not a member.
    pub fn leave(&mut self, peer: PeerId) -> Option<(T, Left)> {
        let index = self.members.iter().position(|(id, _)| *id == peer)?;
        let (_, handle) = self.members.remove(index);
        let was_host = index == 0;
        let new_host = if was_host { self.host() } else { None };
        let (notify, introduce_to_new_host) = match self.topology {
            Topology::Mesh => (self.ids().collect(), Vec::new()),
            Topology::Star if was_host => (self.ids().collect(), self.ids().skip(1).collect()),
            Topology::Star => (self.host().into_iter().collect(), Vec::new()),
        };
        self.closed = self.members.is_empty();
        Some((
            handle,
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
            .find(|(id, _)| *id == peer)
            .map(|(_, h)| h)
    }

    /// Whether `peer` is a member.
    pub fn contains(&self, peer: PeerId) -> bool {
        self.members.iter().any(|(id, _)| *id == peer)
    }

    /// The host: the member that has been in the room longest.
    pub fn host(&self) -> Option<PeerId> {
        self.members.first().map(|(id, _)| *id)
    }

    /// Members in join order.
    pub fn ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.members.iter().map(|(id, _)| *id)
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
        assert_eq!(room.join(p[0], ()).unwrap().introduce_to, vec![]);
        assert_eq!(room.join(p[1], ()).unwrap().introduce_to, vec![p[0]]);
        let j = room.join(p[2], ()).unwrap();
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
            room.join(id, ()).unwrap();
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
        assert_eq!(room.join(p[0], ()), Err(JoinError::Closed));
        assert!(room.leave(p[1]).is_none());
    }

    #[test]
    fn star_introduces_to_host_only_and_migrates() {
        let p = peers(4);
        let mut room = Room::new(Topology::Star, 8, false);
        assert_eq!(room.join(p[0], ()).unwrap().introduce_to, vec![]);
        for &id in &p[1..] {
            assert_eq!(room.join(id, ()).unwrap().introduce_to, vec![p[0]]);
        }
        assert!(room.route(p[1], p[0]).is_ok());
        assert!(room.route(p[0], p[2]).is_ok());
        assert_eq!(room.route(p[1], p[2]), Err(RouteError::NotIntroduced));

        // A client leaving is news to the host only.
        let (_, left) = room.leave(p[3]).unwrap();
        assert_eq!(left.notify, vec![p[0]]);
        assert_eq!(left.new_host, None);

        room.join(p[3], ()).unwrap();
        // The host leaving: everyone hears, the oldest client becomes host and calls the rest.
        let (_, left) = room.leave(p[0]).unwrap();
        assert_eq!(left.notify, vec![p[1], p[2], p[3]]);
        assert_eq!(left.new_host, Some(p[1]));
        assert_eq!(left.introduce_to_new_host, vec![p[2], p[3]]);
        assert!(room.route(p[2], p[1]).is_ok());
        assert_eq!(room.route(p[2], p[3]), Err(RouteError::NotIntroduced));
    }

    #[test]
    fn capacity_is_enforced_and_frees_up_on_leave() {
        let p = peers(3);
        let mut room = Room::new(Topology::Mesh, 2, false);
        room.join(p[0], ()).unwrap();
        assert_eq!(room.join(p[0], ()), Err(JoinError::AlreadyMember));
        room.join(p[1], ()).unwrap();
        assert!(room.is_full());
        assert_eq!(room.join(p[2], ()), Err(JoinError::Full { capacity: 2 }));
        room.leave(p[0]).unwrap();
        assert!(room.join(p[2], ()).is_ok());
    }
}
