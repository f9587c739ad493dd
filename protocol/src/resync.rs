//! Resyncing a rollback match: its players go on in a fresh GGRS session, started from one
//! player's snapshot of a final frame, with new seats. A plain state machine, driven by
//! unit tests; the rollback plugin captures and restores the snapshots and carries out what it
//! decides.
//!
//! When a player vanishes and the remaining players hold different last inputs of it (see the
//! [`departure`](crate::departure) module), ggrs 0.13 cannot play on; and a running GGRS session
//! cannot take a new player. In both cases the *leader* (the first seat somebody plays, the same
//! one for everyone) sends every player and spectator an offer: the next epoch, the frame of its
//! newest final state, the seats (who plays each handle: ours in order, a gone seat possibly taken
//! by a player coming back, new seats at the end for players dropping in), the seats nobody plays,
//! and that state. Everyone takes it and starts a fresh GGRS session from it; the leader's final
//! state wins over what the others predicted past it.
//!
//! Every offer is checked ([`judge`]) before anything is touched:
//! - it comes from its leader, for exactly the epoch after ours;
//! - its seats follow ours: each of ours keeps its player unless a newcomer takes it, and (a
//!   player's view) only a gone seat; no peer twice; at most [`MAX_SEATS`];
//! - a player's own seat stays its own, and it marks gone only players we saw go;
//! - it seats a spectator only if the spectator asked;
//! - its frame is near ours (within [`Window`]), so a leader cannot throw the match back to its
//!   start or far ahead, and frame arithmetic stays far from `i32::MAX`.
//!
//! A leader that lies about the state can desync the match, as a player that lies about its
//! inputs can; it cannot take a living player's seat, speak for another epoch, or seat a peer
//! that did not ask.
//!
//! A player that waits for an offer gives up after [`OFFER_WAIT`] (the leader went too, or has
//! nothing to offer) and the match ends as before.

use web_time::{Duration, Instant};

/// How long a player waits for the leader's offer before the match is given up.
pub const OFFER_WAIT: Duration = Duration::from_secs(5);

/// The highest frame an offer may name: frame counts past it could overflow in a long match's
/// arithmetic (an offset plus a GGRS frame).
pub const MAX_FRAME: i32 = i32::MAX / 2;

/// The most seats a match may have (more than any GGRS match holds).
pub const MAX_SEATS: usize = 64;

/// What an offer says (the snapshot travels beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer<P> {
    /// The epoch it starts (ours plus one).
    pub epoch: u32,
    /// The frame of the state the new session starts from.
    pub frame: i32,
    /// Who sits at each handle in the new session: ours, in their order, then players that drop
    /// in; a gone player's seat may go to a player that comes back (a new peer).
    pub seats: Vec<P>,
    /// The seats nobody plays (their players are gone: the leader plays the default input).
    pub gone: Vec<usize>,
}

impl<P: Copy + Eq> Offer<P> {
    /// The leader: the first seat somebody plays.
    pub fn leader(&self) -> Option<P> {
        (0..self.seats.len())
            .find(|h| !self.gone.contains(h))
            .map(|h| self.seats[h])
    }
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
pub enum Judge<P> {
    /// A player of the match: `me`, at a seat that stays ours.
    Player {
        /// Our id.
        me: P,
        /// Our newest final frame and the slack around it.
        window: Window,
    },
    /// A spectator: it sees no silences, only the players' word. Its frame may be anywhere up to
    /// [`MAX_FRAME`] (a spectator far behind skips ahead).
    Spectator {
        /// Our id.
        me: P,
        /// Whether we asked for a seat (else an offer seating us is refused).
        asked: bool,
    },
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
    /// Not sent by its leader (the first seat somebody plays).
    #[error("an offer not from its leader")]
    NotLeader,
    /// Seats that do not follow ours: one of ours changed hands without being gone, a peer in
    /// two seats, fewer seats than ours, or more than [`MAX_SEATS`]; or a gone seat out of range.
    #[error("an offer whose seats do not follow ours")]
    Seats,
    /// It marks gone a player we still hear.
    #[error("an offer dropping a player we still hear")]
    DropsLiving,
    /// It takes our seat, or marks us gone.
    #[error("an offer leaving us out")]
    LeavesUsOut,
    /// It seats us, a spectator that did not ask.
    #[error("an offer seating us uninvited")]
    Uninvited,
    /// Its frame is negative, too far from ours, or past [`MAX_FRAME`].
    #[error("an offer at frame {0}, too far from ours")]
    Frame(i32),
}

/// Whether we take `offer`, sent by `from`, in epoch `ours` of a match seated as `seats` (handle
/// order) with `gone` seats nobody plays (as we see it), judged as `judge` says. Nothing is
/// changed: the caller carries it out.
pub fn judge<P: Copy + Eq>(
    from: P,
    offer: &Offer<P>,
    ours: u32,
    seats: &[P],
    gone: &[usize],
    judge: &Judge<P>,
) -> Result<(), Refused> {
    if ours.checked_add(1) != Some(offer.epoch) {
        return Err(Refused::Epoch {
            offered: offer.epoch,
            ours,
        });
    }
    let n = offer.seats.len();
    let distinct = offer
        .seats
        .iter()
        .enumerate()
        .all(|(i, p)| !offer.seats[..i].contains(p));
    let gone_in_range = offer.gone.iter().all(|h| *h < n)
        && offer
            .gone
            .iter()
            .enumerate()
            .all(|(i, h)| !offer.gone[..i].contains(h));
    if n < seats.len() || n > MAX_SEATS || !distinct || !gone_in_range {
        return Err(Refused::Seats);
    }
    if offer.leader() != Some(from) {
        return Err(Refused::NotLeader);
    }
    let player = matches!(judge, Judge::Player { .. });
    for (h, ours) in seats.iter().enumerate() {
        let theirs = offer.seats[h];
        // A seat changes hands only to a newcomer, and (as a player sees it) only a gone one.
        let newcomer = !seats.contains(&theirs);
        if theirs != *ours && !(newcomer && (!player || gone.contains(&h))) {
            return Err(Refused::Seats);
        }
    }
    if !(0..=MAX_FRAME).contains(&offer.frame) {
        return Err(Refused::Frame(offer.frame));
    }
    match judge {
        Judge::Player { me, window } => {
            let mine = seats.iter().position(|p| p == me);
            let kept = mine.is_some_and(|h| offer.seats[h] == *me && !offer.gone.contains(&h));
            if !kept {
                return Err(Refused::LeavesUsOut);
            }
            // A seat marked gone keeps its player: one we saw go, or one that was never ours.
            let living = offer
                .gone
                .iter()
                .any(|h| *h < seats.len() && !gone.contains(h));
            if living {
                return Err(Refused::DropsLiving);
            }
            if !window.holds(offer.frame) {
                return Err(Refused::Frame(offer.frame));
            }
        }
        Judge::Spectator { me, asked } => {
            let seated = offer
                .seats
                .iter()
                .enumerate()
                .any(|(h, p)| p == me && !offer.gone.contains(&h));
            if seated && !asked {
                return Err(Refused::Uninvited);
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [u8; 4] = [1, 2, 3, 4];

    fn offer(epoch: u32, frame: i32, seats: &[u8], gone: &[usize]) -> Offer<u8> {
        Offer {
            epoch,
            frame,
            seats: seats.to_vec(),
            gone: gone.to_vec(),
        }
    }

    fn player(me: u8) -> Judge<u8> {
        Judge::Player {
            me,
            window: Window::around(300, 8, 2),
        }
    }

    const WATCHER: Judge<u8> = Judge::Spectator {
        me: 9,
        asked: false,
    };

    #[test]
    fn the_leaders_offer_marking_the_gone_player_is_taken() {
        let o = offer(1, 298, &ALL, &[2]);
        assert_eq!(judge(1, &o, 0, &ALL, &[2], &player(2)), Ok(()));
        assert_eq!(judge(1, &o, 0, &ALL, &[2], &player(4)), Ok(()));
        assert_eq!(judge(1, &o, 0, &ALL, &[], &WATCHER), Ok(()));
        // The first player gone: the second leads.
        let o = offer(1, 300, &ALL, &[0]);
        assert_eq!(judge(2, &o, 0, &ALL, &[0], &player(3)), Ok(()));
        // Gone before, gone still, and another one now.
        let o = offer(2, 300, &ALL, &[0, 3]);
        assert_eq!(judge(2, &o, 1, &ALL, &[0, 3], &player(3)), Ok(()));
    }

    #[test]
    fn an_offer_from_anyone_but_its_leader_is_refused() {
        let o = offer(1, 298, &ALL, &[2]);
        assert_eq!(
            judge(2, &o, 0, &ALL, &[2], &player(4)),
            Err(Refused::NotLeader)
        );
        assert_eq!(
            judge(3, &o, 0, &ALL, &[], &WATCHER),
            Err(Refused::NotLeader),
            "the gone player itself"
        );
        // A player marking the ones before it gone, to lead.
        let o = offer(1, 298, &ALL, &[0]);
        assert_eq!(
            judge(2, &o, 0, &ALL, &[], &player(4)),
            Err(Refused::DropsLiving)
        );
        let nobody = offer(1, 298, &ALL, &[0, 1, 2, 3]);
        assert_eq!(
            judge(1, &nobody, 0, &ALL, &[0, 1, 2, 3], &WATCHER),
            Err(Refused::NotLeader),
            "nobody plays: no leader"
        );
    }

    #[test]
    fn an_offer_must_be_for_the_next_epoch() {
        for epoch in [0, 2, u32::MAX] {
            let o = offer(epoch, 298, &ALL, &[2]);
            assert!(matches!(
                judge(1, &o, 0, &ALL, &[2], &player(2)),
                Err(Refused::Epoch { .. })
            ));
        }
        let o = offer(0, 298, &ALL, &[2]);
        assert!(
            matches!(
                judge(1, &o, u32::MAX, &ALL, &[2], &player(2)),
                Err(Refused::Epoch { .. })
            ),
            "no wrap past the last epoch"
        );
    }

    #[test]
    fn an_offer_cannot_drop_a_living_player_or_us() {
        let o = offer(1, 298, &ALL, &[2, 3]);
        assert_eq!(
            judge(1, &o, 0, &ALL, &[2], &player(2)),
            Err(Refused::DropsLiving),
            "4 is still here"
        );
        assert_eq!(
            judge(1, &o, 0, &ALL, &[2, 3], &player(4)),
            Err(Refused::LeavesUsOut)
        );
        // Our seat to someone else.
        let o = offer(1, 298, &[1, 2, 3, 7], &[2]);
        assert_eq!(
            judge(1, &o, 0, &ALL, &[2, 3], &player(4)),
            Err(Refused::LeavesUsOut)
        );
        // A spectator cannot tell who is silent: it follows the players' word.
        let o = offer(1, 298, &ALL, &[2, 3]);
        assert_eq!(judge(1, &o, 0, &ALL, &[], &WATCHER), Ok(()));
    }

    #[test]
    fn seats_follow_ours_each_peer_once() {
        for (seats, gone) in [
            (&[1, 2, 4, 3][..], &[][..]),
            (&[1, 2, 3], &[]),
            (&[1, 2, 3, 4, 2], &[]),
            (&[1, 2, 3, 4], &[4]),
            (&[1, 2, 3, 4], &[2, 2]),
        ] {
            let o = offer(1, 298, seats, gone);
            assert_eq!(
                judge(1, &o, 0, &ALL, &[2], &WATCHER),
                Err(Refused::Seats),
                "{seats:?} {gone:?}"
            );
        }
        let crowd: Vec<u8> = (1..=MAX_SEATS as u8 + 1).collect();
        let o = offer(1, 298, &crowd, &[]);
        assert_eq!(
            judge(1, &o, 0, &ALL, &[], &WATCHER),
            Err(Refused::Seats),
            "{} seats",
            crowd.len()
        );
    }

    #[test]
    fn a_newcomer_drops_in_or_takes_a_gone_seat() {
        // Drop-in: a new seat at the end.
        let o = offer(1, 298, &[1, 2, 3, 4, 9], &[]);
        assert_eq!(judge(1, &o, 0, &ALL, &[], &player(3)), Ok(()));
        let asked = Judge::Spectator { me: 9, asked: true };
        assert_eq!(judge(1, &o, 0, &ALL, &[], &asked), Ok(()));
        assert_eq!(
            judge(1, &o, 0, &ALL, &[], &WATCHER),
            Err(Refused::Uninvited),
            "seated without asking"
        );
        // Rejoin: a new peer in the gone seat 2.
        let o = offer(2, 298, &[1, 2, 9, 4], &[]);
        assert_eq!(judge(1, &o, 1, &ALL, &[2], &player(4)), Ok(()));
        assert_eq!(judge(1, &o, 1, &ALL, &[2], &asked), Ok(()));
        // Not into a living player's seat, and not another player of ours.
        assert_eq!(judge(1, &o, 1, &ALL, &[], &player(4)), Err(Refused::Seats));
        let o = offer(2, 298, &[1, 2, 4, 4], &[]);
        assert_eq!(judge(1, &o, 1, &ALL, &[2], &player(2)), Err(Refused::Seats));
    }

    #[test]
    fn an_offer_frame_stays_near_ours() {
        let slack = Window::around(300, 8, 2).slack;
        for frame in [300 - slack, 300 + slack] {
            let o = offer(1, frame, &ALL, &[2]);
            assert_eq!(judge(1, &o, 0, &ALL, &[2], &player(2)), Ok(()), "{frame}");
        }
        for frame in [0, 300 - slack - 1, 300 + slack + 1, -1, i32::MIN, i32::MAX] {
            let o = offer(1, frame, &ALL, &[2]);
            assert_eq!(
                judge(1, &o, 0, &ALL, &[2], &player(2)),
                Err(Refused::Frame(frame)),
                "{frame}"
            );
        }
        // A spectator takes any frame a match can reach.
        let o = offer(1, MAX_FRAME, &ALL, &[2]);
        assert_eq!(judge(1, &o, 0, &ALL, &[], &WATCHER), Ok(()));
        let o = offer(1, MAX_FRAME + 1, &ALL, &[2]);
        assert_eq!(
            judge(1, &o, 0, &ALL, &[], &WATCHER),
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
    }
}
