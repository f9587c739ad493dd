//! Resyncing a rollback match: its players go on in a fresh GGRS session, started from one
//! player's snapshot of a final frame, with a new player list. A plain state machine, driven by
//! unit tests; the rollback plugin captures and restores the snapshots and carries out what it
//! decides.
//!
//! When a player vanishes and the remaining players hold different last inputs of it (see the
//! [`departure`](crate::departure) module), ggrs 0.13 cannot play on. Instead the *leader* (the
//! first remaining player in handle order, the same one for everyone, since the verdict is the
//! same everywhere) sends every remaining player and spectator an offer: the next epoch, the
//! frame of its newest final state, the players that go on (the remaining ones, in handle order),
//! and that state. Everyone takes it and starts a fresh GGRS session from it; the leader's final
//! state wins over what the others predicted past it.
//!
//! Every offer is checked ([`judge`]) before anything is touched:
//! - it comes from the first player it names, for exactly the epoch after ours;
//! - it names players of our match only, in their order, each once, and (a player's view) it
//!   drops only players we saw go ourselves, and keeps us;
//! - its frame is near ours (within [`Window`]), so a leader cannot throw the match back to its
//!   start or far ahead, and frame arithmetic stays far from `i32::MAX`.
//!
//! A leader that lies about the state can desync the match, as a player that lies about its
//! inputs can; it cannot take a living player out, speak for another epoch, or make a peer drop
//! its match for one it is not in.
//!
//! A player that waits for an offer gives up after [`OFFER_WAIT`] (the leader went too, or has
//! nothing to offer) and the match ends as before.

use web_time::{Duration, Instant};

/// How long a player waits for the leader's offer before the match is given up.
pub const OFFER_WAIT: Duration = Duration::from_secs(5);

/// The highest frame an offer may name: frame counts past it could overflow in a long match's
/// arithmetic (an offset plus a GGRS frame).
pub const MAX_FRAME: i32 = i32::MAX / 2;

/// What an offer says (the snapshot travels beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer<P> {
    /// The epoch it starts (ours plus one).
    pub epoch: u32,
    /// The frame of the state the new session starts from.
    pub frame: i32,
    /// The players that go on, in their new handle order (the leader first).
    pub players: Vec<P>,
}

/// How far from our own newest final frame an offer's frame may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Our newest final frame.
    pub ours: i32,
    /// Frames either side: the prediction window and the input delay, twice (a peer stalls at
    /// most that far from another's confirmed frame).
    pub slack: i32,
}

impl Window {
    /// The window around `ours` for a match predicting `max_prediction` frames with
    /// `input_delay` frames of delay.
    pub fn around(ours: i32, max_prediction: usize, input_delay: usize) -> Self {
        let frames = max_prediction.saturating_add(input_delay).saturating_mul(2);
        Self {
            ours,
            slack: i32::try_from(frames).unwrap_or(i32::MAX).saturating_add(8),
        }
    }

    fn holds(&self, frame: i32) -> bool {
        let distance = (i64::from(frame) - i64::from(self.ours)).abs();
        distance <= i64::from(self.slack)
    }
}

/// Who judges an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judge<'a, P> {
    /// A player: `me`, and the players we saw go (only they may be dropped).
    Player {
        /// Our id.
        me: P,
        /// The players of our match we saw go.
        gone: &'a [P],
        /// Our newest final frame and the slack around it.
        window: Window,
    },
    /// A spectator: it sees no silences, only the players' word. Its frame may be anywhere up to
    /// [`MAX_FRAME`] (a spectator far behind skips ahead).
    Spectator,
}

/// Why an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not for the epoch after ours (old, replayed, or skipping ahead).
    #[error("an offer for epoch {offered}, ours is {ours}")]
    Epoch {
        /// The offer's epoch.
        offered: u32,
        /// Ours.
        ours: u32,
    },
    /// Not sent by the first player it names.
    #[error("an offer not from its leader")]
    NotLeader,
    /// It names a stranger, a player twice, players out of order, or nobody.
    #[error("an offer naming players outside our match, or out of order")]
    Players,
    /// It drops a player we did not see go.
    #[error("an offer dropping a player we still hear")]
    DropsLiving,
    /// It leaves us out.
    #[error("an offer leaving us out")]
    LeavesUsOut,
    /// Its frame is negative, too far from ours, or past [`MAX_FRAME`].
    #[error("an offer at frame {0}, too far from ours")]
    Frame(i32),
}

/// Whether we take `offer`, sent by `from`, in epoch `ours` of a match of `players` (in handle
/// order), judged as `judge` says. Nothing is changed: the caller carries it out.
pub fn judge<P: Copy + Eq>(
    from: P,
    offer: &Offer<P>,
    ours: u32,
    players: &[P],
    judge: &Judge<'_, P>,
) -> Result<(), Refused> {
    if ours.checked_add(1) != Some(offer.epoch) {
        return Err(Refused::Epoch {
            offered: offer.epoch,
            ours,
        });
    }
    if offer.players.first() != Some(&from) {
        return Err(Refused::NotLeader);
    }
    if !in_order_within(&offer.players, players) {
        return Err(Refused::Players);
    }
    if !(0..=MAX_FRAME).contains(&offer.frame) {
        return Err(Refused::Frame(offer.frame));
    }
    if let Judge::Player { me, gone, window } = judge {
        if !offer.players.contains(me) {
            return Err(Refused::LeavesUsOut);
        }
        let dropped = players.iter().filter(|p| !offer.players.contains(p));
        if dropped.into_iter().any(|p| !gone.contains(p)) {
            return Err(Refused::DropsLiving);
        }
        if !window.holds(offer.frame) {
            return Err(Refused::Frame(offer.frame));
        }
    }
    Ok(())
}

/// Whether `named` is non-empty and a subsequence of `players`: each of ours at most once, in
/// our order.
fn in_order_within<P: Eq>(named: &[P], players: &[P]) -> bool {
    let mut rest = players.iter();
    !named.is_empty() && named.iter().all(|p| rest.any(|q| q == p))
}

/// A player's wait for the leader's offer after the match could not go on as it was.
#[derive(Debug, Default)]
pub struct Waiting {
    since: Option<Instant>,
}

impl Waiting {
    /// We need an offer from now on (once: a second call keeps the first deadline).
    pub fn start(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// Whether we are waiting.
    pub fn is_waiting(&self) -> bool {
        self.since.is_some()
    }

    /// Whether we have waited [`OFFER_WAIT`] in vain.
    pub fn given_up(&self, now: Instant) -> bool {
        self.since
            .is_some_and(|since| now.saturating_duration_since(since) >= OFFER_WAIT)
    }

    /// An offer came (or the match ended): no more waiting.
    pub fn stop(&mut self) {
        self.since = None;
    }
}

/// The leader among `remaining` players (in handle order): the first.
pub fn leader<P: Copy>(remaining: &[P]) -> Option<P> {
    remaining.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [u8; 4] = [1, 2, 3, 4];

    fn offer(epoch: u32, frame: i32, players: &[u8]) -> Offer<u8> {
        Offer {
            epoch,
            frame,
            players: players.to_vec(),
        }
    }

    fn player<'a>(me: u8, gone: &'a [u8]) -> Judge<'a, u8> {
        Judge::Player {
            me,
            gone,
            window: Window::around(300, 8, 2),
        }
    }

    #[test]
    fn the_leaders_offer_dropping_the_gone_player_is_taken() {
        let o = offer(1, 298, &[1, 2, 4]);
        assert_eq!(judge(1, &o, 0, &ALL, &player(2, &[3])), Ok(()));
        assert_eq!(judge(1, &o, 0, &ALL, &player(4, &[3])), Ok(()));
        assert_eq!(judge(1, &o, 0, &ALL, &Judge::Spectator), Ok(()));
        // The first player gone: the second leads.
        let o = offer(1, 300, &[2, 3, 4]);
        assert_eq!(judge(2, &o, 0, &ALL, &player(3, &[1])), Ok(()));
    }

    #[test]
    fn an_offer_from_anyone_but_its_leader_is_refused() {
        let o = offer(1, 298, &[1, 2, 4]);
        assert_eq!(
            judge(2, &o, 0, &ALL, &player(4, &[3])),
            Err(Refused::NotLeader)
        );
        assert_eq!(
            judge(3, &o, 0, &ALL, &Judge::Spectator),
            Err(Refused::NotLeader),
            "the gone player itself"
        );
        // A player naming itself first to lead.
        let o = offer(1, 298, &[2, 1, 4]);
        assert_eq!(
            judge(2, &o, 0, &ALL, &player(4, &[3])),
            Err(Refused::Players)
        );
    }

    #[test]
    fn an_offer_must_be_for_the_next_epoch() {
        for epoch in [0, 2, u32::MAX] {
            let o = offer(epoch, 298, &[1, 2, 4]);
            assert!(matches!(
                judge(1, &o, 0, &ALL, &player(2, &[3])),
                Err(Refused::Epoch { .. })
            ));
        }
        let o = offer(0, 298, &[1, 2, 4]);
        assert!(
            matches!(
                judge(1, &o, u32::MAX, &ALL, &player(2, &[3])),
                Err(Refused::Epoch { .. })
            ),
            "no wrap past the last epoch"
        );
    }

    #[test]
    fn an_offer_cannot_drop_a_living_player_or_us() {
        let o = offer(1, 298, &[1, 2]);
        assert_eq!(
            judge(1, &o, 0, &ALL, &player(2, &[3])),
            Err(Refused::DropsLiving),
            "4 is still here"
        );
        assert_eq!(
            judge(1, &o, 0, &ALL, &player(4, &[3])),
            Err(Refused::LeavesUsOut)
        );
        // A spectator cannot tell who is silent: it follows the players' word.
        assert_eq!(judge(1, &o, 0, &ALL, &Judge::Spectator), Ok(()));
    }

    #[test]
    fn an_offer_names_our_players_once_each_in_order() {
        for players in [&[1, 5, 2][..], &[1, 2, 2], &[1, 4, 2]] {
            let o = offer(1, 298, players);
            let from = players.first().copied().unwrap_or(1);
            assert_eq!(
                judge(from, &o, 0, &ALL, &Judge::Spectator),
                Err(Refused::Players),
                "{players:?}"
            );
        }
        let nobody = offer(1, 298, &[]);
        assert_eq!(
            judge(1, &nobody, 0, &ALL, &Judge::Spectator),
            Err(Refused::NotLeader),
            "an offer naming nobody has no leader"
        );
        assert!(!in_order_within::<u8>(&[], &ALL));
    }

    #[test]
    fn an_offer_frame_stays_near_ours() {
        let slack = Window::around(300, 8, 2).slack;
        for frame in [300 - slack, 300 + slack] {
            let o = offer(1, frame, &[1, 2, 4]);
            assert_eq!(judge(1, &o, 0, &ALL, &player(2, &[3])), Ok(()), "{frame}");
        }
        for frame in [0, 300 - slack - 1, 300 + slack + 1, -1, i32::MIN, i32::MAX] {
            let o = offer(1, frame, &[1, 2, 4]);
            assert_eq!(
                judge(1, &o, 0, &ALL, &player(2, &[3])),
                Err(Refused::Frame(frame)),
                "{frame}"
            );
        }
        // A spectator takes any frame a match can reach.
        let o = offer(1, MAX_FRAME, &[1, 2, 4]);
        assert_eq!(judge(1, &o, 0, &ALL, &Judge::Spectator), Ok(()));
        let o = offer(1, MAX_FRAME + 1, &[1, 2, 4]);
        assert_eq!(
            judge(1, &o, 0, &ALL, &Judge::Spectator),
            Err(Refused::Frame(MAX_FRAME + 1))
        );
        // The window's own arithmetic at the edges.
        let w = Window::around(i32::MAX, usize::MAX, usize::MAX);
        assert!(w.holds(i32::MAX) && w.holds(0) && !w.holds(-1));
    }

    #[test]
    fn a_wait_for_an_offer_gives_up_after_its_deadline() {
        let t0 = Instant::now();
        let mut wait = Waiting::default();
        assert!(!wait.is_waiting() && !wait.given_up(t0 + OFFER_WAIT));
        wait.start(t0);
        wait.start(t0 + OFFER_WAIT);
        assert!(wait.is_waiting());
        assert!(!wait.given_up(t0 + OFFER_WAIT - Duration::from_millis(1)));
        assert!(wait.given_up(t0 + OFFER_WAIT), "the first start counts");
        wait.stop();
        assert!(!wait.is_waiting() && !wait.given_up(t0 + OFFER_WAIT * 2));
        assert_eq!(leader(&[3u8, 1]), Some(3));
        assert_eq!(leader::<u8>(&[]), None);
    }
}
