//! All rooms of the server, each behind its own lock.
//!
//! The registry's own lock is held only to find or create a room (O(1)); joins, leaves and signal
//! routing then lock that one room, so one room's traffic never waits on another's and a join costs
//! O(peers in the room), not O(peers on the server).

use crate::request::Admitted;
use crate::room::Room;
pub use huddle_protocol::room::RoomInfo;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A room shared between the tasks of its peers.
pub type SharedRoom<T> = Arc<Mutex<Room<T>>>;

/// Locks a mutex, carrying on if another task panicked while holding it (room state stays
/// consistent between statements, so a poisoned lock is still usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Names one room: its path, and for `?next=N` rooms which group of N arrivals it is.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct RoomKey {
    /// The URL path.
    pub path: String,
    /// `(N, generation)` for match-of-N rooms.
    pub group: Option<(usize, u64)>,
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group {
            None => write!(f, "{}", self.path),
            Some((n, generation)) => write!(f, "{}?next={n}#{generation}", self.path),
        }
    }
}

#[derive(Debug, Default)]
struct NextGroup {
    generation: u64,
    /// Peers in the group still filling (generation `generation`): arrivals less those that left
    /// before it filled, so an early leaver's seat goes to the next arrival.
    arrivals: usize,
    /// Rooms of this path and size held by the registry.
    open_rooms: usize,
}

/// The server's rooms.
#[derive(Debug)]
pub struct Registry<T> {
    rooms: HashMap<RoomKey, SharedRoom<T>>,
    next_groups: HashMap<(String, usize), NextGroup>,
    /// Where `?next=N` generations start: microseconds since the Unix epoch when the registry was
    /// made, so groups a restarted server rebuilds from resume tokens never share a key with
    /// its new groups.
    first_generation: u64,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            rooms: HashMap::new(),
            next_groups: HashMap::new(),
            first_generation: crate::clock::now_us(),
        }
    }
}

impl<T> Registry<T> {
    /// Finds the room an arrival with `request` goes to, creating it if needed. For `?next=N`,
    /// counts the arrival: each N peers on a path form one room (its capacity, if smaller); one
    /// that leaves before its room filled frees its seat ([`Registry::left`]).
    pub fn assign(&mut self, request: &Admitted) -> (RoomKey, SharedRoom<T>) {
        let group = request.next.map(|n| {
            let n = n.get();
            let g = self.next_group(&request.path, n);
            let generation = g.generation;
            g.arrivals += 1;
            if g.arrivals >= request.capacity.min(n) {
                g.generation += 1;
                g.arrivals = 0;
            }
            (n, generation)
        });
        let key = RoomKey {
            path: request.path.clone(),
            group,
        };
        let room = self.open(&key, request);
        (key, room)
    }

    /// The room `key` a peer resumes its place in (one it was in before it dropped, or before the
    /// server restarted): the open room under that key, or a new one with `request`'s settings
    /// (a rebuilt `?next=N` group takes no arrival's seat).
    pub fn resume(&mut self, key: &RoomKey, request: &Admitted) -> SharedRoom<T> {
        self.open(key, request)
    }

    /// The open room under `key`, created with `request`'s settings if there is none.
    fn open(&mut self, key: &RoomKey, request: &Admitted) -> SharedRoom<T> {
        let group = key.group;
        let fresh = || {
            Arc::new(Mutex::new(Room::new(
                request.topology(),
                request.capacity,
                request.private,
            )))
        };
        if !self.rooms.contains_key(key) {
            if let Some((n, _)) = group {
                self.next_group(&key.path, n).open_rooms += 1;
            }
        }
        match self.rooms.entry(key.clone()) {
            Entry::Occupied(entry) => {
                let room = entry.into_mut();
                if lock(room).is_closed() {
                    *room = fresh();
                }
                room.clone()
            }
            Entry::Vacant(entry) => entry.insert(fresh()).clone(),
        }
    }

    /// The arrival counter of `?next=n` rooms on `path` (a new one starts at the registry's
    /// first generation).
    fn next_group(&mut self, path: &str, n: usize) -> &mut NextGroup {
        let first = self.first_generation;
        self.next_groups
            .entry((path.to_string(), n))
            .or_insert_with(|| NextGroup {
                generation: first,
                ..NextGroup::default()
            })
    }

    /// A peer assigned to the room `key` left it (or was refused): if that is a `?next=N` group
    /// still filling, its seat goes to the next arrival.
    pub fn left(&mut self, key: &RoomKey) {
        let Some((n, generation)) = key.group else {
            return;
        };
        let k = (key.path.clone(), n);
        if let Some(g) = self.next_groups.get_mut(&k) {
            if g.generation == generation {
                g.arrivals = g.arrivals.saturating_sub(1);
            }
            if g.open_rooms == 0 && g.arrivals == 0 {
                self.next_groups.remove(&k);
            }
        }
    }

    /// The room with this key, if it is open.
    pub fn get(&self, key: &RoomKey) -> Option<&SharedRoom<T>> {
        self.rooms.get(key)
    }

    /// Forgets `room` if it is still the one under `key` and it has closed.
    pub fn remove_if_closed(&mut self, key: &RoomKey, room: &SharedRoom<T>) {
        let removed = self
            .rooms
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, room) && lock(current).is_closed());
        if !removed {
            return;
        }
        self.rooms.remove(key);
        if let Some((n, _)) = key.group {
            let k = (key.path.clone(), n);
            if let Some(g) = self.next_groups.get_mut(&k) {
                g.open_rooms = g.open_rooms.saturating_sub(1);
                // Forget the arrival counter once no room of that path and size is left.
                if g.open_rooms == 0 && g.arrivals == 0 {
                    self.next_groups.remove(&k);
                }
            }
        }
    }

    /// Number of rooms held.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room is held.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Every room with its key.
    pub fn iter(&self) -> impl Iterator<Item = (&RoomKey, &SharedRoom<T>)> {
        self.rooms.iter()
    }
}

/// How `GET /rooms` shows room `key`: `None` if it is private or closed.
pub fn listed<T>(key: &RoomKey, room: &Room<T>) -> Option<RoomInfo> {
    (!room.is_private() && !room.is_closed() && !room.is_empty()).then(|| RoomInfo {
        path: key.path.clone(),
        next: key.group.map(|(n, _)| n),
        peers: room.len(),
        capacity: room.capacity(),
        topology: room.topology(),
        host: room.host().map(|h| h.to_string()),
    })
}

impl<T> Registry<T> {
    /// The public rooms, sorted by key.
    pub fn list_public(&self) -> Vec<RoomInfo> {
        let mut rooms: Vec<(&RoomKey, RoomInfo)> = self
            .rooms
            .iter()
            .filter_map(|(key, room)| {
                let room = lock(room);
                listed(key, &room).map(|info| (key, info))
            })
            .collect();
        rooms.sort_by(|a, b| a.0.cmp(b.0));
        rooms.into_iter().map(|(_, info)| info).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Topology;
    use matchbox_protocol::PeerId;
    use std::collections::HashMap;
    use uuid::Uuid;

    fn req(path: &str, query: &[(&str, &str)]) -> Admitted {
        let q: HashMap<String, String> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Admitted::check(Some(path), &q, 64).unwrap()
    }

    fn id(i: u128) -> PeerId {
        PeerId(Uuid::from_u128(i))
    }

    /// A peer that arrives and leaves before its `?next=2` group filled frees its seat: the next
    /// two arrivals meet in one room (they used to be split, each alone), and the group's entry
    /// goes once its rooms are gone.
    #[test]
    fn an_early_leaver_of_a_next_group_strands_nobody() {
        let mut reg = Registry::<()>::default();
        let pair = req("duel", &[("next", "2")]);
        let (ka, room_a) = reg.assign(&pair);
        lock(&room_a).join(id(1), 0, ()).unwrap();
        lock(&room_a).leave(id(1)).unwrap();
        reg.left(&ka);
        reg.remove_if_closed(&ka, &room_a);
        let (kb, room_b) = reg.assign(&pair);
        let (kc, room_c) = reg.assign(&pair);
        assert_eq!(kb, kc, "b and c meet");
        assert!(Arc::ptr_eq(&room_b, &room_c));
        let (kd, room_d) = reg.assign(&pair);
        assert_ne!(kd, kb, "the next arrival starts the next pair");
        // Everyone goes: nothing of the group is left.
        let seats = [(&kb, &room_b), (&kc, &room_c), (&kd, &room_d)];
        for (i, (_, room)) in seats.iter().enumerate() {
            lock(room).join(id(10 + i as u128), 0, ()).unwrap();
        }
        for (i, (key, room)) in seats.into_iter().enumerate() {
            lock(room).leave(id(10 + i as u128)).unwrap();
            reg.left(key);
            reg.remove_if_closed(key, room);
        }
        assert!(reg.is_empty());
        assert!(reg.next_groups.is_empty(), "{:?}", reg.next_groups);
    }

    #[test]
    fn same_path_same_room_other_path_other_room() {
        let mut reg = Registry::<()>::default();
        let (ka, a1) = reg.assign(&req("a", &[]));
        let (_, a2) = reg.assign(&req("a", &[]));
        let (kb, b) = reg.assign(&req("b", &[]));
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b));
        assert_ne!(ka, kb);
    }

    #[test]
    fn next_groups_each_n_arrivals() {
        let mut reg = Registry::<()>::default();
        let keys: Vec<RoomKey> = (0..5)
            .map(|_| reg.assign(&req("m", &[("next", "2")])).0)
            .collect();
        assert_eq!(keys[0], keys[1]);
        assert_eq!(keys[2], keys[3]);
        assert_ne!(keys[1], keys[2]);
        assert_ne!(keys[3], keys[4]);
        // A plain room on the same path is a room of its own.
        assert_eq!(reg.assign(&req("m", &[])).0.group, None);
    }

    #[test]
    fn closed_room_is_replaced_and_forgotten() {
        let mut reg = Registry::<()>::default();
        let (key, room) = reg.assign(&req("a", &[("topology", "star")]));
        lock(&room).join(id(1), 0, ()).unwrap();
        lock(&room).leave(id(1)).unwrap();
        // A newcomer that raced the last leaver gets a fresh room, with its own settings.
        let (_, fresh) = reg.assign(&req("a", &[]));
        assert!(!Arc::ptr_eq(&room, &fresh));
        assert_eq!(lock(&fresh).topology(), Topology::Mesh);
        reg.remove_if_closed(&key, &room);
        assert_eq!(reg.len(), 1, "the fresh room is not removed");
        lock(&fresh).join(id(2), 0, ()).unwrap();
        lock(&fresh).leave(id(2)).unwrap();
        reg.remove_if_closed(&key, &fresh);
        assert!(reg.is_empty());
    }

    #[test]
    fn listing_hides_private_rooms() {
        let mut reg = Registry::<()>::default();
        let (_, a) = reg.assign(&req("open", &[("capacity", "4")]));
        lock(&a).join(id(1), 0, ()).unwrap();
        let (_, b) = reg.assign(&req("secret", &[("private", "1")]));
        lock(&b).join(id(2), 0, ()).unwrap();
        let list = reg.list_public();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].path, "open");
        assert_eq!(list[0].capacity, 4);
        assert_eq!(list[0].peers, 1);
        assert_eq!(list[0].host, Some(id(1).to_string()));
    }
}
