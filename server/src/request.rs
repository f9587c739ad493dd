//! A connecting peer's room request (the room-URL contract of [`huddle_protocol::room`]), checked
//! against this server's limits.

use crate::policy::RoomPolicy;
use crate::resume::ResumeToken;
use crate::token::Claims;
use huddle_protocol::reconnect::{RESUMABLE_QUERY, RESUME_QUERY};
pub use huddle_protocol::room::{RoomError, RoomRequest, Topology, DEFAULT_ROOM};
use std::collections::HashMap;
use std::ops::Deref;

/// A room request this server admits: what the peer asked for, and the seats the room gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// What the peer asked for.
    pub request: RoomRequest,
    /// The most peers the room holds at once: as asked, else the server's maximum, never more
    /// than a match-of-N needs.
    pub capacity: usize,
    /// Who the peer's join token says it is (none without `--auth-secret`).
    pub claims: Claims,
    /// The place it resumes (a valid `?resume=` token), if it comes back.
    pub resume: Option<ResumeToken>,
    /// Whether it asked for a resume token (`?resumable`), or came back with one.
    pub resumable: bool,
}

impl Admitted {
    /// Reads a request from the URL path (without the leading `/`) and query parameters;
    /// `max_capacity` is the server's limit of peers per room.
    pub fn check(
        path: Option<&str>,
        query: &HashMap<String, String>,
        max_capacity: usize,
    ) -> Result<Self, RoomError> {
        Self::check_with(path, query, max_capacity, &[])
    }

    /// [`Admitted::check`], with the operator's room `policies` over what the client asked.
    pub fn check_with(
        path: Option<&str>,
        query: &HashMap<String, String>,
        max_capacity: usize,
        policies: &[RoomPolicy],
    ) -> Result<Self, RoomError> {
        let pairs = query.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let mut request = RoomRequest::from_query(path, pairs)?;
        if let Some(policy) = RoomPolicy::for_room(policies, &request.path) {
            policy.apply(&mut request);
        }
        let capacity = request.capacity_within(max_capacity)?;
        Ok(Self {
            request,
            capacity,
            claims: Claims::default(),
            resume: None,
            resumable: query.contains_key(RESUMABLE_QUERY) || query.contains_key(RESUME_QUERY),
        })
    }
}

impl Deref for Admitted {
    type Target = RoomRequest;

    fn deref(&self) -> &RoomRequest {
        &self.request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_limit_applies() {
        let q = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        let a = Admitted::check(Some("a"), &q("next", "4"), 64).unwrap();
        assert_eq!((a.capacity, a.path.as_str()), (4, "a"));
        assert_eq!(
            Admitted::check(None, &HashMap::new(), 64).unwrap().capacity,
            64
        );
        assert_eq!(
            Admitted::check(Some("a"), &q("capacity", "65"), 64),
            Err(RoomError::CapacityTooLarge { asked: 65, max: 64 })
        );
        assert!(Admitted::check(Some("a"), &q("topology", "ring"), 64).is_err());
        assert_eq!(
            Admitted::check(Some("a"), &q("next", "65"), 64),
            Err(RoomError::NextTooLarge { asked: 65, max: 64 }),
            "a group that could never meet"
        );
    }
}
