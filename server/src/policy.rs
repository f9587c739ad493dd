//! Room policies: options the operator fixes for every room whose name starts with a prefix
//! (`--room-policy 'duel-?next=2&private=1'`), so the first arrival's query cannot decide them (a
//! `?capacity=1` squatting a well-known room). Options a policy does not name stay the client's.

use crate::request::{RoomError, RoomRequest, Topology};
use std::num::NonZeroUsize;
use std::str::FromStr;

/// Options fixed for the rooms whose name starts with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPolicy {
    /// The room-name prefix (empty: every room).
    pub prefix: String,
    /// `next=N`, if fixed.
    pub next: Option<NonZeroUsize>,
    /// `topology=`, if fixed.
    pub topology: Option<Topology>,
    /// `capacity=N`, if fixed.
    pub capacity: Option<NonZeroUsize>,
    /// `private=`, if fixed.
    pub private: Option<bool>,
}

impl FromStr for RoomPolicy {
    type Err = RoomError;

    /// `PREFIX?name=value&...` with the room URL's options (`next`, `topology`, `capacity`,
    /// `private`); any other name is an error.
    fn from_str(s: &str) -> Result<Self, RoomError> {
        let (prefix, query) = s.split_once('?').unwrap_or((s, ""));
        let pairs: Vec<(&str, &str)> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .collect();
        let options = RoomRequest::from_query(None, pairs.iter().copied())?;
        if let Some((name, value)) = options.extra.first() {
            return Err(RoomError::InvalidParameter {
                name: name.clone(),
                value: value.clone(),
                why: "not a room option (next, topology, capacity, private)",
            });
        }
        Ok(Self {
            prefix: prefix.to_string(),
            next: options.next,
            topology: options.topology,
            capacity: options.capacity,
            private: pairs
                .iter()
                .any(|(k, _)| *k == "private")
                .then_some(options.private),
        })
    }
}

impl RoomPolicy {
    /// The policy for room `path` among `policies`: the longest prefix that matches.
    pub fn for_room<'a>(policies: &'a [RoomPolicy], path: &str) -> Option<&'a RoomPolicy> {
        policies
            .iter()
            .filter(|p| path.starts_with(&p.prefix))
            .max_by_key(|p| p.prefix.len())
    }

    /// Puts the fixed options over what the client asked.
    pub fn apply(&self, request: &mut RoomRequest) {
        request.next = self.next.or(request.next);
        request.topology = self.topology.or(request.topology);
        request.capacity = self.capacity.or(request.capacity);
        request.private = self.private.unwrap_or(request.private);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_fixes_what_it_names_for_its_prefix() {
        let policies: Vec<RoomPolicy> = ["pub-?capacity=8&topology=mesh", "pub-duel-?next=2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let squat = |path: &str, query: &[(&str, &str)]| {
            let mut r = RoomRequest::from_query(Some(path), query.iter().copied()).unwrap();
            if let Some(p) = RoomPolicy::for_room(&policies, &r.path) {
                p.apply(&mut r);
            }
            r
        };
        let r = squat(
            "pub-x",
            &[("capacity", "1"), ("topology", "star"), ("private", "1")],
        );
        assert_eq!(r.capacity.map(NonZeroUsize::get), Some(8));
        assert_eq!(r.topology, Some(Topology::Mesh));
        assert!(r.private, "not named by the policy: the client's");
        let r = squat("pub-duel-1", &[("next", "5")]);
        assert_eq!(r.next.map(NonZeroUsize::get), Some(2), "the longest prefix");
        let r = squat("elsewhere", &[("capacity", "1")]);
        assert_eq!(r.capacity.map(NonZeroUsize::get), Some(1));
        assert!("x?colour=red".parse::<RoomPolicy>().is_err());
        assert!("x?capacity=0".parse::<RoomPolicy>().is_err());
        let fixed: RoomPolicy = "secret-?private=0".parse().unwrap();
        assert_eq!(fixed.private, Some(false));
    }
}
