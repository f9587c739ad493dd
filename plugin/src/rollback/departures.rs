//! Players going during a match: who is gone (left the lobby, said farewell, fell silent), and
//! the agreement on their last input before GGRS hears of it (the state machine is
//! `huddle_protocol::departure`).

use super::away::silence_limit;
use super::resources::{Departing, NewestInputs, Plan};
use super::resync::{can_resync, Resync};
use super::snapshot::SnapshotRegistry;
use super::spectate::restore_read_inputs;
use super::RollbackSettings;
use super::{Abandoning, Farewell, LastInput};
use super::{RollbackEvent, RollbackMatch, RollbackPhase, RollbackStats};
use crate::messages::{Incoming, Outgoing, PeerLeft};
use crate::session::HuddleSession;
use bevy::prelude::*;
use bevy_ggrs::Session;
use ggrs::Config;
use huddle_protocol::departure::{Frames, Verdict};
use matchbox_socket::PeerId;
use std::time::Duration;
use web_time::Instant;

/// How long we hold the other players' GGRS packets back at most (see [`settle_departures`]).
const HOLD_AT_MOST: Duration = Duration::from_millis(300);

/// During the match: who is gone. A player that left the lobby, said farewell
/// ([`LeaveRollback`](super::LeaveRollback)) or was silent for
/// [`RollbackSettings::disconnect_timeout`](super::RollbackSettings) is announced at once
/// ([`RollbackEvent::Disconnected`]) and handed to [`settle_departures`]. We leave the match when
/// we leave the lobby.
#[allow(clippy::too_many_arguments)]
pub(crate) fn follow_lobby<C: Config<Address = PeerId>>(
    mut commands: Commands,
    huddle: Option<Res<HuddleSession>>,
    settings: Res<RollbackSettings>,
    mut state: ResMut<RollbackMatch>,
    mut left: MessageReader<PeerLeft>,
    mut farewells: MessageReader<Incoming<Farewell>>,
    mut events: MessageWriter<RollbackEvent>,
    mut time: ResMut<Time<Virtual>>,
    mut departing: ResMut<Departing>,
) {
    if matches!(state.phase, RollbackPhase::Waiting | RollbackPhase::Ended) {
        if state.phase == RollbackPhase::Ended && huddle.is_some() {
            // In a lobby again: a new match can start.
            *state = RollbackMatch::default();
        }
        left.clear();
        farewells.clear();
        return;
    }
    if huddle.is_none() {
        commands.remove_resource::<Session<C>>();
        commands.queue(restore_read_inputs);
        state.phase = RollbackPhase::Ended;
        time.set_relative_speed(1.0);
        return;
    }
    let now = Instant::now();
    let mut gone: Vec<(PeerId, Option<i32>)> = left.read().map(|l| (l.peer, None)).collect();
    let epoch = state.epoch;
    gone.extend(
        farewells
            .read()
            .filter(|f| f.message.epoch == epoch)
            .map(|f| (f.from, Some(f.message.last_frame))),
    );
    let silent_for = settings.gone_after_interruption();
    let players = state.players.clone();
    let (away, back) = (departing.away.clone(), departing.back.clone());
    departing.silent.retain(|(handle, since)| {
        let came_back = back.iter().find(|(h, _)| h == handle).map(|(_, at)| *at);
        let limit = silence_limit(
            *since,
            away.contains(handle),
            came_back,
            silent_for,
            settings.away_timeout,
        );
        let timed_out = now.duration_since(*since) >= limit;
        if let (true, Some(peer)) = (timed_out, players.get(*handle)) {
            gone.push((*peer, None));
        }
        !timed_out
    });
    for (peer, farewell) in gone {
        let Some(handle) = state.handle_of(peer) else {
            continue;
        };
        let known = state.disconnected.contains(&handle);
        if !known {
            state.disconnected.push(handle);
            events.write(RollbackEvent::Disconnected { peer, handle });
        }
        if state.phase != RollbackPhase::Playing || state.local_handle == Some(handle) {
            continue;
        }
        match farewell {
            Some(last) if !known || departing.agree.contains(handle) => {
                departing.agree.farewell(handle, last, now);
            }
            Some(_) => {}
            None if known => {}
            None => {
                let others = state
                    .remaining()
                    .filter(|(h, _)| Some(*h) != state.local_handle)
                    .count();
                if others == 0 {
                    departing.alone.push(handle);
                } else {
                    departing.agree.vanished(handle, now);
                }
            }
        }
    }
}

/// Gone players leave the GGRS session, the same way on every remaining player.
///
/// With other players left, we first agree with them on the gone player's last input (see the
/// `departure` module): we report ours ([`LastInput`]), and once every remaining player's report
/// is in, we disconnect it at that frame, or end the match if the reports differ
/// ([`RollbackEvent::Abandoned`]). Whoever ends the match over a departure tells the others
/// ([`Abandoning`]), and a player told so ends it too once it sees that player go: a player that
/// sends different reports to different players (or different agreements to them) can end the
/// match, as it could by leaving, but cannot leave some players playing on while others stop. A player gone while we were the only other one is
/// disconnected as soon as the newest frame we simulated predicted its input.
///
/// ggrs 0.13 panics ("must load frame in the past") when a player is disconnected while our
/// frame is exactly one past its last input (fixed upstream in gschup/ggrs#119, not released),
/// also when another player's GGRS packet tells it of the disconnect. So we never disconnect at
/// that frame, and while it could happen we hold the other players' GGRS packets back (a few
/// frames of extra latency, at most [`HOLD_AT_MOST`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn settle_departures<C: Config<Address = PeerId>>(
    mut commands: Commands,
    mut session: Option<ResMut<Session<C>>>,
    settings: Res<RollbackSettings>,
    mut state: ResMut<RollbackMatch>,
    mut plan: ResMut<Plan>,
    mut reports: MessageReader<Incoming<LastInput>>,
    mut tell: MessageWriter<Outgoing<LastInput>>,
    (mut notices, mut ending): (
        MessageReader<Incoming<Abandoning>>,
        MessageWriter<Outgoing<Abandoning>>,
    ),
    mut events: MessageWriter<RollbackEvent>,
    mut departing: ResMut<Departing>,
    newest: Res<NewestInputs>,
    stats: Res<RollbackStats>,
    (registry, mut resync): (Option<Res<SnapshotRegistry>>, ResMut<Resync>),
) {
    let now = Instant::now();
    // Without snapshots there is nothing to resync from: a vanish the players disagree on ends
    // the match.
    let resyncs = can_resync(registry.as_deref());
    let (Some(me), RollbackPhase::Playing, Some(Session::P2P(p2p))) =
        (state.local_handle, state.phase, session.as_deref_mut())
    else {
        reports.clear();
        notices.clear();
        return;
    };
    for notice in notices.read().filter(|n| n.message.epoch == state.epoch) {
        let over = notice.message.handle as usize;
        let from_another = state.handle_of(notice.from).is_some_and(|h| h != over);
        if from_another && over < state.players.len() && !departing.abandoned_over.contains(&over) {
            departing.abandoned_over.push(over);
        }
    }
    if let Some(&handle) = departing
        .abandoned_over
        .iter()
        .find(|h| state.disconnected.contains(h))
    {
        let peer = state.players[handle];
        warn!("huddle: the match is abandoned: another player ended it over {peer}'s departure");
        abandon::<C>(&mut commands, &mut state, &mut plan, &mut departing, &stats);
        events.write(RollbackEvent::Abandoned { peer, handle });
        return;
    }
    for report in reports.read().filter(|r| r.message.epoch == state.epoch) {
        let gone = report.message.handle as usize;
        match state.handle_of(report.from) {
            Some(from) if gone != me && gone < state.players.len() => {
                departing.agree.report(gone, from, report.message.frame);
            }
            _ => {}
        }
    }
    let current = p2p.current_frame();
    let frames = Frames {
        current,
        confirmed: p2p.confirmed_frame(),
        max_prediction: settings.max_prediction,
    };
    for (gone, frame) in departing.agree.due(me, frames, now) {
        tell.write(Outgoing::to_all(LastInput {
            epoch: state.epoch,
            handle: gone as u32,
            frame,
        }));
    }
    let remaining: Vec<usize> = state.remaining().map(|(h, _)| h).collect();
    for verdict in departing.agree.verdicts(&remaining, now) {
        match verdict {
            Verdict::Disconnect { handle, last_frame } => {
                departing.agreed.push((handle, last_frame));
            }
            Verdict::Abandon { handle, reports } => {
                let peer = state.players[handle];
                if resyncs {
                    info!(
                        "huddle: {peer} vanished and the players hold different last inputs of \
                         it, (player, frame): {reports:?}: resyncing"
                    );
                    resync.needed(handle, now);
                    continue;
                }
                warn!(
                    "huddle: the match is abandoned: {peer} vanished and the players hold \
                     different last inputs of it, (player, frame): {reports:?} (ggrs 0.13 \
                     cannot play on)"
                );
                ending.write(Outgoing::to_all(Abandoning {
                    epoch: state.epoch,
                    handle: handle as u32,
                }));
                abandon::<C>(&mut commands, &mut state, &mut plan, &mut departing, &stats);
                events.write(RollbackEvent::Abandoned { peer, handle });
                return;
            }
        }
    }
    // GGRS replays from the frame after the gone player's last input, and bevy_ggrs holds
    // snapshots of the prediction window only (it panics further back): a player gone before
    // its first inputs came (one that synchronized and never played) is that far. End the
    // match instead, the same way for everyone (they agreed on the same last frame).
    let window = i32::try_from(settings.max_prediction).unwrap_or(i32::MAX);
    let too_far = departing
        .agreed
        .iter()
        .find(|&&(_, last)| current.saturating_sub(last.saturating_add(1)) >= window)
        .copied();
    if let Some((handle, last)) = too_far {
        let peer = state.players[handle];
        if resyncs {
            departing.agreed.retain(|&(h, _)| h != handle);
            resync.needed(handle, now);
            return;
        }
        warn!(
            "huddle: the match is abandoned: {peer} vanished at frame {last}, further back than \
             the rollback window ({window} frames from {current})"
        );
        ending.write(Outgoing::to_all(Abandoning {
            epoch: state.epoch,
            handle: handle as u32,
        }));
        abandon::<C>(&mut commands, &mut state, &mut plan, &mut departing, &stats);
        events.write(RollbackEvent::Abandoned { peer, handle });
        return;
    }
    if resync.is_waiting() {
        // The old session stands still until the leader's offer comes.
        return;
    }
    departing.agreed.retain(|&(handle, last)| {
        if current == last + 1 {
            return true;
        }
        // Already disconnected by GGRS itself (told by another player) is fine.
        let _ = p2p.disconnect_player(handle);
        false
    });
    let overdue = departing
        .holding
        .is_some_and(|since| now.duration_since(since) >= HOLD_AT_MOST);
    departing.alone.retain(|&handle| {
        let predicted = newest.predicted.get(handle).copied().unwrap_or(false);
        if !predicted && !overdue {
            return true;
        }
        let _ = p2p.disconnect_player(handle);
        false
    });
    let hold = !departing.alone.is_empty()
        || !departing.agreed.is_empty()
        || departing.agree.reported().any(|last| current <= last + 1);
    if hold {
        departing.holding.get_or_insert(now);
    } else {
        departing.holding = None;
    }
    if let Some(socket) = &stats.socket {
        socket.hold(hold && !overdue);
    }
}

/// Ends the match for good (the host's game may start another with `StartRollback`).
pub(super) fn abandon<C: Config<Address = PeerId>>(
    commands: &mut Commands,
    state: &mut RollbackMatch,
    plan: &mut Plan,
    departing: &mut Departing,
    stats: &RollbackStats,
) {
    commands.remove_resource::<Session<C>>();
    commands.queue(restore_read_inputs);
    state.phase = RollbackPhase::Ended;
    *plan = Plan {
        abandoned: true,
        ..Plan::default()
    };
    *departing = Departing::default();
    if let Some(socket) = &stats.socket {
        socket.hold(false);
    }
}
