//! A map of keys to the instant they expire, bounded: bans and refused resume tokens.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// Keys that hold until an instant, at most `max` of them: past that, expired keys go first, then
/// the one that would expire soonest.
#[derive(Debug)]
pub(crate) struct Expiring<K> {
    until: HashMap<K, Instant>,
    max: usize,
}

impl<K: Eq + Hash + Clone> Expiring<K> {
    /// An empty map holding at most `max` keys.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            until: HashMap::new(),
            max: max.max(1),
        }
    }

    /// `key` holds until `until` (`now` is the time it is put in).
    pub(crate) fn insert(&mut self, key: K, until: Instant, now: Instant) {
        if self.until.len() >= self.max && !self.until.contains_key(&key) {
            self.until.retain(|_, u| *u > now);
        }
        if self.until.len() >= self.max && !self.until.contains_key(&key) {
            if let Some(soonest) = self
                .until
                .iter()
                .min_by_key(|(_, u)| **u)
                .map(|(k, _)| k.clone())
            {
                self.until.remove(&soonest);
            }
        }
        self.until.insert(key, until);
    }

    /// Until when `key` holds, if it still does at `now` (an expired key is forgotten).
    pub(crate) fn until(&mut self, key: &K, now: Instant) -> Option<Instant> {
        match self.until.get(key).copied() {
            Some(until) if until > now => Some(until),
            Some(_) => {
                self.until.remove(key);
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_expire_and_the_map_stays_bounded() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let mut map = Expiring::new(2);
        map.insert("a", now + s, now);
        map.insert("b", now + 3 * s, now);
        assert_eq!(map.until(&"a", now), Some(now + s));
        assert_eq!(map.until(&"a", now + 2 * s), None, "expired");
        map.insert("a", now + s, now);
        // Full with nothing expired: the soonest to expire makes room.
        map.insert("c", now + 2 * s, now);
        assert_eq!(map.until(&"a", now), None);
        assert!(map.until(&"b", now).is_some() && map.until(&"c", now).is_some());
        // Full, one expired: it goes first.
        map.insert("d", now + 5 * s, now + 2 * s + s / 2);
        assert!(map.until(&"b", now).is_some());
        assert_eq!(map.until.len(), 2);
    }
}
