//! Players in the background (a hidden browser tab, a minimised window: [`Backgrounded`]): a
//! player that goes tells the others ([`AwayNotice`]), and they wait
//! [`RollbackSettings::away_timeout`](super::RollbackSettings) for its silence to end instead of
//! `disconnect_timeout` (see `departures::follow_lobby`). When we come back ourselves, the silences
//! we were timing started while our own clock stood still: they start again.

use super::resources::Departing;
use super::{AwayNotice, RollbackMatch, RollbackPhase};
use crate::messages::{Incoming, Outgoing};
use crate::visibility::Backgrounded;
use bevy::prelude::*;
use std::time::Duration;
use web_time::Instant;

/// Tells the other players when we go to the background and come back.
pub(crate) fn announce(
    state: Res<RollbackMatch>,
    mut backgrounded: MessageReader<Backgrounded>,
    mut departing: ResMut<Departing>,
    mut out: MessageWriter<Outgoing<AwayNotice>>,
) {
    for &Backgrounded(away) in backgrounded.read() {
        if !away {
            let now = Instant::now();
            for (_, since) in &mut departing.silent {
                *since = now;
            }
        }
        if state.phase == RollbackPhase::Playing {
            out.write(Outgoing::to_all(AwayNotice { away }));
        }
    }
}

/// Marks the players that said they are in the background, or back from it. Only a player of the
/// match counts, for itself: a notice names nobody, its sender is who it is about.
pub(crate) fn hear(
    state: Res<RollbackMatch>,
    mut notices: MessageReader<Incoming<AwayNotice>>,
    mut departing: ResMut<Departing>,
) {
    for notice in notices.read() {
        let Some(handle) = state.handle_of(notice.from) else {
            continue;
        };
        let was_away = departing.away.contains(&handle);
        departing.away.retain(|h| *h != handle);
        departing.back.retain(|(h, _)| *h != handle);
        if notice.message.away {
            departing.away.push(handle);
        } else if was_away {
            departing.back.push((handle, Instant::now()));
        }
    }
}

/// How long a player silent since `since` may stay silent, at `now`: `disconnect_timeout`'s share
/// (`silent_for`), or `away_for` while it says it is in the background. A player back from the
/// background (`back`: when it said so) has `silent_for` from then for its packets to follow,
/// never past `away_for` from the start of its silence: a player that says "away" and "back" over
/// and over is still gone `away_for` after it fell silent.
pub(crate) fn silence_limit(
    since: Instant,
    away: bool,
    back: Option<Instant>,
    silent_for: Duration,
    away_for: Duration,
) -> Duration {
    let away_for = away_for.max(silent_for);
    if away {
        return away_for;
    }
    match back {
        Some(at) => at
            .saturating_duration_since(since)
            .saturating_add(silent_for)
            .min(away_for),
        None => silent_for,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILENT: Duration = Duration::from_millis(1500);
    const AWAY: Duration = Duration::from_secs(30);

    #[test]
    fn away_players_get_the_away_timeout_and_no_more() {
        let since = Instant::now();
        assert_eq!(silence_limit(since, false, None, SILENT, AWAY), SILENT);
        assert_eq!(silence_limit(since, true, None, SILENT, AWAY), AWAY);
        // Back after 10 s of silence: 1.5 s more for its packets.
        let back = since + Duration::from_secs(10);
        assert_eq!(
            silence_limit(since, false, Some(back), SILENT, AWAY),
            Duration::from_millis(11_500)
        );
        // "Back" at 29.9 s, again and again: never past 30 s from the start of its silence.
        let late = since + Duration::from_millis(29_900);
        assert_eq!(silence_limit(since, false, Some(late), SILENT, AWAY), AWAY);
        // A "back" stamped before the silence began (a stale notice) gives nothing extra.
        let stale = since.checked_sub(Duration::from_secs(5)).unwrap_or(since);
        assert_eq!(
            silence_limit(since, false, Some(stale), SILENT, AWAY),
            SILENT
        );
        // An away timeout set below the disconnect timeout is the disconnect timeout.
        assert_eq!(
            silence_limit(since, true, None, SILENT, Duration::ZERO),
            SILENT
        );
    }
}
