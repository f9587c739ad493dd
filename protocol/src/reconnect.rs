//! Reconnecting to the signaling server without leaving the room.
//!
//! The peer-to-peer links do not need the signaling server once they are open; only newcomers do.
//! When a peer's websocket to the server drops, huddle keeps playing on the links and reconnects
//! in the background, resuming its place in the room:
//!
//! 1. A peer that can resume connects with [`RESUMABLE_QUERY`] in its room URL. Right after our
//!    id, huddle_server sends it a [`ServerNotice::Resume`] token (stock servers send nothing, and
//!    stock clients never ask).
//! 2. When the websocket drops (not when the server closed it for a policy), the server holds the
//!    peer's place in the room for a grace period instead of telling the others it left.
//! 3. The peer reconnects with [`RESUME_QUERY`]`=<token>`, on the schedule of a [`Backoff`]. The
//!    server gives it the same id, tells the others nothing, and introduces it to whoever joined
//!    while it was away. A server that restarted rebuilds the room from the peers that resume
//!    (the token, signed with the server's resume secret, names the peer and its place).
//!
//! The token is the server's business (the client stores and echoes it); this module holds what
//! both sides must agree on, and the client's retry schedule as a sans-IO state machine.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The room-URL query parameter a client adds to ask for a resume token.
pub const RESUMABLE_QUERY: &str = "resumable";

/// The room-URL query parameter that carries a resume token when a client reconnects.
pub const RESUME_QUERY: &str = "resume";

/// The longest resume token a client keeps (longer ones are not the server's).
pub const MAX_TOKEN: usize = 512;

/// `url` with `key=value` added to its query.
fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// The room URL a client that can resume first connects with (it asks for a token).
pub fn resumable_url(room_url: &str) -> String {
    with_query(room_url, RESUMABLE_QUERY, "1")
}

/// The room URL a client reconnects with to resume its place with `token` (which the server made
/// of URL-safe characters; anything else in it is percent-encoded).
pub fn resume_url(room_url: &str, token: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    let token: String = token
        .chars()
        .flat_map(|c| {
            let mut buf = [0u8; 4];
            let s: Vec<String> = if safe(c) {
                vec![c.to_string()]
            } else {
                c.encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            };
            s
        })
        .collect();
    with_query(room_url, RESUME_QUERY, &token)
}

/// huddle_server's own messages to a client, beside matchbox's `PeerEvent`s (only to clients that
/// asked with [`RESUMABLE_QUERY`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerNotice {
    /// The token to resume this connection's place with.
    Resume(String),
}

impl ServerNotice {
    /// Reads a server message as a notice; `None` if it is something else (a `PeerEvent`), or a
    /// token too long to be one.
    pub fn parse(text: &str) -> Option<Self> {
        match serde_json::from_str::<Self>(text).ok()? {
            Self::Resume(token) if token.len() > MAX_TOKEN || token.is_empty() => None,
            notice => Some(notice),
        }
    }

    /// The notice as the server sends it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How a client retries the signaling server after its connection dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectSettings {
    /// The wait before the first attempt (later waits double, with jitter).
    pub first_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
    /// How long after the drop the client stops trying (`Duration::ZERO`: never reconnect).
    pub give_up_after: Duration,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
            give_up_after: Duration::from_secs(60),
        }
    }
}

impl ReconnectSettings {
    /// Never reconnect: a dropped signaling connection stays dropped (the links go on).
    pub const NEVER: Self = Self {
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        give_up_after: Duration::ZERO,
    };

    /// Whether a client with these settings reconnects at all.
    pub fn enabled(&self) -> bool {
        !self.give_up_after.is_zero()
    }
}

/// The client gave up reconnecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gave up reconnecting to the signaling server after {attempts} attempts over {waited:?}")]
pub struct GaveUp {
    /// Attempts made.
    pub attempts: u32,
    /// Time since the connection dropped.
    pub waited: Duration,
}

/// When to try the signaling server again, from the moment the connection dropped: exponential
/// waits from `first_delay` up to `max_delay`, each between 3/4 and 5/4 of its nominal length (so
/// a room's peers, dropped together by a server restart, do not all knock at once), until
/// `give_up_after`. Times are `Duration`s on any monotonic clock.
#[derive(Debug, Clone)]
pub struct Backoff {
    settings: ReconnectSettings,
    dropped_at: Duration,
    attempts: u32,
    due: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// The schedule for a connection that dropped at `now`; `seed` makes the jitter (tests pass a
    /// fixed one).
    pub fn new(settings: ReconnectSettings, now: Duration, seed: u64) -> Self {
        let mut backoff = Self {
            settings,
            dropped_at: now,
            attempts: 0,
            due: now,
            rng: fastrand::Rng::with_seed(seed),
        };
        backoff.due = now.saturating_add(backoff.jittered(settings.first_delay));
        backoff
    }

    /// When the next attempt is due.
    pub fn due(&self) -> Duration {
        self.due
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// An attempt made at `now` failed: schedules the next, or gives up once `give_up_after`
    /// has passed since the drop (the next attempt never starts later than that).
    pub fn failed(&mut self, now: Duration) -> Result<Duration, GaveUp> {
        self.attempts = self.attempts.saturating_add(1);
        let deadline = self.dropped_at.saturating_add(self.settings.give_up_after);
        if now >= deadline {
            return Err(GaveUp {
                attempts: self.attempts,
                waited: now.saturating_sub(self.dropped_at),
            });
        }
        let doublings = self.attempts.min(16);
        let nominal = self
            .settings
            .first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.settings.max_delay);
        self.due = now.saturating_add(self.jittered(nominal)).min(deadline);
        Ok(self.due)
    }

    /// `nominal` times a factor in [3/4, 5/4].
    fn jittered(&mut self, nominal: Duration) -> Duration {
        let quarter = nominal / 4;
        let extra = quarter.mul_f64(2.0 * self.rng.f64());
        nominal.saturating_sub(quarter).saturating_add(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Over a simulated outage on a fake clock: the waits grow to the cap, stay within the
    /// jitter's bounds, and the schedule gives up at the deadline, never past it.
    #[test]
    fn waits_grow_to_the_cap_and_stop_at_the_deadline() {
        let settings = ReconnectSettings {
            first_delay: Duration::from_millis(200),
            max_delay: 2 * SECOND,
            give_up_after: 10 * SECOND,
        };
        let start = 100 * SECOND;
        let mut backoff = Backoff::new(settings, start, 7);
        let first = backoff.due() - start;
        assert!(first >= Duration::from_millis(150) && first <= Duration::from_millis(250));
        let mut now = backoff.due();
        let mut waits = Vec::new();
        let gave_up = loop {
            match backoff.failed(now) {
                Ok(due) => {
                    assert!(due > now);
                    waits.push(due - now);
                    now = due;
                }
                Err(gave_up) => break gave_up,
            }
        };
        assert!(waits.iter().all(|w| *w <= settings.max_delay * 5 / 4));
        assert!(waits[0] >= Duration::from_millis(300), "{waits:?}");
        let (_, before_last) = waits.split_last().expect("attempts");
        assert!(before_last
            .iter()
            .skip(3)
            .all(|w| *w >= settings.max_delay * 3 / 4));
        assert_eq!(
            now,
            start + 10 * SECOND,
            "the last attempt is at the deadline"
        );
        assert_eq!(gave_up.waited, 10 * SECOND);
        assert_eq!(gave_up.attempts as usize, waits.len() + 1);
        assert!((7..=14).contains(&gave_up.attempts), "{gave_up:?}");
    }

    /// Two peers dropped at the same instant do not retry in step.
    #[test]
    fn jitter_spreads_peers() {
        let settings = ReconnectSettings::default();
        let a = Backoff::new(settings, Duration::ZERO, 1);
        let b = Backoff::new(settings, Duration::ZERO, 2);
        assert_ne!(a.due(), b.due());
    }

    /// Huge settings and clocks saturate instead of overflowing.
    #[test]
    fn no_overflow() {
        let settings = ReconnectSettings {
            first_delay: Duration::MAX,
            max_delay: Duration::MAX,
            give_up_after: Duration::MAX,
        };
        let mut backoff = Backoff::new(settings, Duration::MAX - SECOND, 3);
        for _ in 0..40 {
            let now = backoff.due();
            if backoff.failed(now).is_err() {
                break;
            }
        }
        assert!(!ReconnectSettings::NEVER.enabled());
        assert!(ReconnectSettings::default().enabled());
    }

    #[test]
    fn urls_carry_the_query() {
        assert_eq!(resumable_url("ws://h/r"), "ws://h/r?resumable=1");
        assert_eq!(
            resumable_url("ws://h/r?next=2"),
            "ws://h/r?next=2&resumable=1"
        );
        assert_eq!(
            resume_url("ws://h/r?next=2", "ab.1.-.ff"),
            "ws://h/r?next=2&resume=ab.1.-.ff"
        );
        assert_eq!(resume_url("ws://h/r", "a&b=c"), "ws://h/r?resume=a%26b%3Dc");
    }

    #[test]
    fn notices_round_trip_and_refuse_what_is_not_theirs() {
        let notice = ServerNotice::Resume("abc.1.2".into());
        assert_eq!(ServerNotice::parse(&notice.to_json()), Some(notice));
        assert_eq!(ServerNotice::parse(r#"{"IdAssigned":"x"}"#), None);
        assert_eq!(ServerNotice::parse(r#"{"Resume":""}"#), None);
        let long = format!(r#"{{"Resume":"{}"}}"#, "a".repeat(MAX_TOKEN + 1));
        assert_eq!(ServerNotice::parse(&long), None);
    }
}
