//! Agreeing on a gone player's last input before GGRS is told it is gone. A plain state machine,
//! driven by unit tests; the systems feed it frames and messages and carry out its verdicts.
//!
//! ggrs 0.13 disconnects a player "at its last input as this peer received it", and every peer
//! then re-disconnects it at the earliest last input any other peer reports. A peer that had
//! received more of its inputs has confirmed frames past that report and panics (or desyncs).
//! So in a match of three or more, the players that remain first agree: each reports the last
//! input of the gone player it holds (a `LastInput` message of the rollback plugin), and only when
//! every remaining player's report is in does anyone disconnect it:
//! - all reports equal: everyone disconnects it at that frame, and GGRS agrees with itself;
//! - reports differ (it vanished while its last inputs were on their way): GGRS cannot go on
//!   without panicking, so every remaining player ends the match (the same verdict everywhere,
//!   since everyone decides from the same reports).
//!
//! A player that sends different reports to different players can make one disconnect and
//! another end the match; with three players, one of them lying, no exchange of messages can
//! prevent that (agreement needs more than three times as many honest players as liars). So
//! ending is contagious: whoever ends the match over a departure says so (the rollback plugin's
//! `Abandoning`), and a player told so ends it too once it sees that player go. A liar can end a
//! match (as it could by leaving), never leave some playing on while others stopped.
//!
//! Others' reports alone decide nothing: only once we see the player go ourselves (it left the
//! lobby, said farewell, or fell silent) does the deadline run, so a report about a player still
//! playing cannot end the match.
//!
//! When does a peer know its own last input of the gone player? A player that leaves on purpose
//! (the rollback plugin's `LeaveRollback`) stops adding inputs and announces its last frame
//! `F` (a `Farewell`): once our confirmed frame reaches `F` we hold all of
//! them, and the reports agree. A player that vanished announces nothing: once we stall at the
//! prediction threshold and our confirmed frame stands still for [`SETTLE`], the confirmed frame
//! is the last input we got from it (every other player's inputs run ahead of it by then).

use web_time::{Duration, Instant};

/// How long the confirmed frame must stand still, at the prediction threshold, before we report
/// the last input of a player that vanished.
pub const SETTLE: Duration = Duration::from_millis(250);

/// How long an agreement may take before the match is given up (a report lost with a peer that
/// went too, or a peer that never stalls).
pub const DEADLINE: Duration = Duration::from_secs(5);

/// How the player went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Going {
    /// It announced its last input.
    Farewell(i32),
    /// It vanished (left the lobby, or fell silent).
    Vanished,
}

/// One gone player.
#[derive(Debug)]
struct Departure {
    handle: usize,
    /// `None` while we only heard others' reports.
    going: Option<Going>,
    /// Each remaining player's report (player handle, frame), ours included.
    reports: Vec<(usize, i32)>,
    /// Our report, once sent.
    ours: Option<i32>,
    /// The confirmed frame and since when it stood still.
    still: Option<(i32, Instant)>,
    /// When we learned it is gone (its farewell, or it vanished from our view): the deadline
    /// runs from then. Others' reports alone decide nothing, so a report about a player still
    /// here (a lie) cannot end the match.
    since: Option<Instant>,
}

/// Our frames in the GGRS session, as [`Departures::due`] needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frames {
    /// GGRS's current frame.
    pub current: i32,
    /// GGRS's confirmed frame.
    pub confirmed: i32,
    /// The prediction window.
    pub max_prediction: usize,
}

/// What to do about a gone player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every remaining player holds its inputs up to `last_frame`: disconnect it (when our
    /// current frame is not `last_frame + 1`, which ggrs 0.13 cannot roll back from).
    Disconnect {
        /// Its handle.
        handle: usize,
        /// Its last input.
        last_frame: i32,
    },
    /// The remaining players hold different last inputs (or did not all report in time): end
    /// the match.
    Abandon {
        /// Its handle.
        handle: usize,
        /// The reports in (player handle, last input).
        reports: Vec<(usize, i32)>,
    },
}

/// The gone players we are agreeing on.
#[derive(Debug, Default)]
pub struct Departures {
    list: Vec<Departure>,
}

impl Departures {
    fn entry(&mut self, handle: usize) -> &mut Departure {
        if let Some(i) = self.list.iter().position(|d| d.handle == handle) {
            return &mut self.list[i];
        }
        self.list.push(Departure {
            handle,
            going: None,
            reports: Vec::new(),
            ours: None,
            still: None,
            since: None,
        });
        let last = self.list.len() - 1;
        &mut self.list[last]
    }

    /// Player `handle` announced that its last input is for `last_frame`.
    pub fn farewell(&mut self, handle: usize, last_frame: i32, now: Instant) {
        let d = self.entry(handle);
        d.going = Some(Going::Farewell(last_frame));
        d.since.get_or_insert(now);
    }

    /// Player `handle` vanished. A farewell heard before stays (it knows better).
    pub fn vanished(&mut self, handle: usize, now: Instant) {
        let d = self.entry(handle);
        if d.going.is_none() {
            d.going = Some(Going::Vanished);
        }
        d.since.get_or_insert(now);
    }

    /// Player `from` holds the inputs of the gone player `gone` up to `frame`. A second report
    /// of the same player replaces the first. Kept until we learn ourselves that `gone` went.
    pub fn report(&mut self, gone: usize, from: usize, frame: i32) {
        let d = self.entry(gone);
        d.reports.retain(|(p, _)| *p != from);
        d.reports.push((from, frame));
    }

    /// Whether we are agreeing on `handle`.
    pub fn contains(&self, handle: usize) -> bool {
        self.list.iter().any(|d| d.handle == handle)
    }

    /// Our reports that are due now (each once): `(gone handle, frame)`. They count as received
    /// from `me` too.
    pub fn due(&mut self, me: usize, frames: Frames, now: Instant) -> Vec<(usize, i32)> {
        let mut due = Vec::new();
        for d in &mut self.list {
            if d.ours.is_some() {
                continue;
            }
            let frame = match d.going {
                None => continue,
                Some(Going::Farewell(last)) => {
                    if frames.confirmed < last {
                        continue;
                    }
                    last
                }
                Some(Going::Vanished) => {
                    let behind = i64::from(frames.current) - i64::from(frames.confirmed);
                    let stalled =
                        behind >= i64::try_from(frames.max_prediction).unwrap_or(i64::MAX);
                    match d.still {
                        Some((c, at)) if c == frames.confirmed => {
                            if !stalled || now.duration_since(at) < SETTLE {
                                continue;
                            }
                        }
                        _ => {
                            d.still = Some((frames.confirmed, now));
                            continue;
                        }
                    }
                    frames.confirmed
                }
            };
            d.ours = Some(frame);
            d.reports.retain(|(p, _)| *p != me);
            d.reports.push((me, frame));
            due.push((d.handle, frame));
        }
        due
    }

    /// The last input we reported for each gone player still being agreed on.
    pub fn reported(&self) -> impl Iterator<Item = i32> + '_ {
        self.list.iter().filter_map(|d| d.ours)
    }

    /// The verdicts reached now, given the players that remain (ourselves included). Decided
    /// departures are forgotten.
    pub fn verdicts(&mut self, remaining: &[usize], now: Instant) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        self.list.retain(|d| {
            let Some(since) = d.since else {
                // Only others say it went: nothing to decide yet.
                return true;
            };
            let frames: Vec<i32> = remaining
                .iter()
                .filter(|p| **p != d.handle)
                .map(|p| d.reports.iter().find(|(q, _)| q == p).map(|(_, f)| *f))
                .collect::<Option<_>>()
                .unwrap_or_default();
            let complete = d.ours.is_some() && !frames.is_empty();
            let verdict = if complete && frames.iter().all(|f| *f == frames[0]) {
                Verdict::Disconnect {
                    handle: d.handle,
                    last_frame: frames[0],
                }
            } else if complete || now.duration_since(since) >= DEADLINE {
                Verdict::Abandon {
                    handle: d.handle,
                    reports: d.reports.clone(),
                }
            } else {
                return true;
            };
            verdicts.push(verdict);
            false
        });
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(current: i32, confirmed: i32) -> Frames {
        Frames {
            current,
            confirmed,
            max_prediction: 8,
        }
    }

    #[test]
    fn a_farewell_is_reported_once_its_last_input_is_confirmed() {
        let t = Instant::now();
        let mut d = Departures::default();
        d.farewell(2, 100, t);
        assert!(d.due(0, frames(101, 99), t).is_empty());
        assert_eq!(d.due(0, frames(103, 100), t), vec![(2, 100)]);
        assert!(d.due(0, frames(104, 100), t).is_empty(), "once");
        assert_eq!(d.reported().collect::<Vec<_>>(), vec![100]);
    }

    #[test]
    fn all_reports_equal_disconnect_at_that_frame() {
        let t = Instant::now();
        let mut d = Departures::default();
        d.report(2, 1, 100); // a report before we heard of the departure
        assert!(d.verdicts(&[0, 1], t).is_empty());
        d.farewell(2, 100, t);
        assert!(
            d.verdicts(&[0, 1], t).is_empty(),
            "our own report is missing"
        );
        d.due(0, frames(102, 100), t);
        assert_eq!(
            d.verdicts(&[0, 1], t),
            vec![Verdict::Disconnect {
                handle: 2,
                last_frame: 100
            }]
        );
        assert!(!d.contains(2), "forgotten once decided");
    }

    /// Found by the `departure` fuzz target: frames far apart overflowed the stall check.
    #[test]
    fn frames_at_the_ends_of_the_range_do_not_overflow() {
        let t = Instant::now();
        let mut d = Departures::default();
        d.vanished(1, t);
        let far = Frames {
            current: i32::MAX,
            confirmed: i32::MIN,
            max_prediction: usize::MAX,
        };
        assert!(d.due(0, far, t).is_empty());
        assert!(
            d.due(0, far, t + SETTLE).is_empty(),
            "not stalled: under usize::MAX"
        );
    }

    #[test]
    fn reports_that_differ_abandon_the_match() {
        let t = Instant::now();
        let mut d = Departures::default();
        d.vanished(1, t);
        d.report(1, 2, 97);
        d.due(0, frames(106, 98), t);
        let later = t + SETTLE;
        assert_eq!(d.due(0, frames(106, 98), later), vec![(1, 98)]);
        assert_eq!(
            d.verdicts(&[0, 2], later),
            vec![Verdict::Abandon {
                handle: 1,
                reports: vec![(2, 97), (0, 98)]
            }]
        );
    }

    #[test]
    fn a_vanished_player_is_reported_when_the_confirmed_frame_stands_still_at_the_threshold() {
        let t = Instant::now();
        let mut d = Departures::default();
        d.vanished(1, t);
        assert!(d.due(0, frames(100, 95), t).is_empty());
        let later = t + SETTLE;
        assert!(
            d.due(0, frames(100, 95), later).is_empty(),
            "not stalled: 5 frames ahead of 8"
        );
        assert!(
            d.due(0, frames(104, 96), later).is_empty(),
            "the confirmed frame moved: wait again"
        );
        assert!(d.due(0, frames(104, 96), later + SETTLE / 2).is_empty());
        assert_eq!(d.due(0, frames(104, 96), later + SETTLE), vec![(1, 96)]);
    }

    #[test]
    fn only_remaining_players_count_and_a_player_gone_meanwhile_is_not_waited_for() {
        let t = Instant::now();
        let mut d = Departures::default();
        d.farewell(3, 50, t);
        d.due(0, frames(52, 50), t);
        d.report(3, 1, 50);
        assert!(
            d.verdicts(&[0, 1, 2], t).is_empty(),
            "player 2 has not reported"
        );
        assert_eq!(
            d.verdicts(&[0, 1], t),
            vec![Verdict::Disconnect {
                handle: 3,
                last_frame: 50
            }],
            "player 2 went too"
        );
    }

    #[test]
    fn no_agreement_before_the_deadline_abandons() {
        let t = Instant::now();
        let mut d = Departures::default();
        d.vanished(1, t);
        assert!(d.verdicts(&[0, 2], t + DEADLINE / 2).is_empty());
        assert_eq!(
            d.verdicts(&[0, 2], t + DEADLINE),
            vec![Verdict::Abandon {
                handle: 1,
                reports: vec![]
            }]
        );
    }

    #[test]
    fn a_farewell_after_vanishing_counts_and_a_late_report_replaces_the_first() {
        let t = Instant::now();
        let mut d = Departures::default();
        d.vanished(1, t);
        d.farewell(1, 70, t);
        d.vanished(1, t);
        d.report(1, 2, 60);
        d.report(1, 2, 70);
        assert_eq!(d.due(0, frames(72, 70), t), vec![(1, 70)]);
        assert_eq!(
            d.verdicts(&[0, 2], t),
            vec![Verdict::Disconnect {
                handle: 1,
                last_frame: 70
            }]
        );
    }

    /// A player that lies that another is gone (well-formed reports, the other still plays):
    /// nothing is decided, whatever time passes, until we see it go ourselves.
    #[test]
    fn a_report_about_a_player_still_here_ends_nothing() {
        let t = Instant::now();
        let mut d = Departures::default();
        d.report(2, 1, 40);
        d.report(2, 1, i32::MAX);
        assert!(d.due(0, frames(60, 55), t).is_empty(), "we report nothing");
        assert!(d.verdicts(&[0, 1, 2], t + DEADLINE * 10).is_empty());
        assert!(d.contains(2), "kept, in case it does go");
        // It does go, and says so: the reports agree with its farewell.
        d.farewell(2, 80, t + DEADLINE * 10);
        d.report(2, 1, 80);
        d.due(0, frames(82, 80), t + DEADLINE * 10);
        assert_eq!(
            d.verdicts(&[0, 1], t + DEADLINE * 10),
            vec![Verdict::Disconnect {
                handle: 2,
                last_frame: 80
            }]
        );
    }
}
