//! The rollback systems: start the match from the lobby, follow the lobby during it, turn GGRS
//! events into messages, keep and serve the input log, pace spectators.

use super::socket::{self, codec, GGRS_NEVER};
use super::RollbackSettings;
use super::{
    Farewell, FeedFrames, FeedRequest, InputLog, LastInput, MatchPlan, RollbackEvent,
    RollbackMatch, RollbackPhase, RollbackStarted, RollbackStats, StartRollback,
};
use crate::messages::{Incoming, Outgoing, PeerJoined, PeerLeft};
use crate::session::HuddleSession;
use crate::Topology;
use bevy::ecs::schedule::ScheduleLabel;
use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bevy_ggrs::{
    ConfirmedFrameCount, LocalInputs, PlayerInputs, ReadInputs, RollbackFrameCount,
    RollbackFrameRate, Session,
};
use ggrs::{Config, InputStatus, SessionBuilder};
use huddle_protocol::departure::{Departures, Frames, Verdict};
use matchbox_socket::PeerId;
use std::time::Duration;
use web_time::Instant;

/// The host's word on who plays in the match, once heard (forgotten when the match is abandoned
/// or we leave the lobby, so that a new match can start).
#[derive(Resource, Default, Debug)]
pub(crate) struct Plan {
    players: Option<Vec<PeerId>>,
    /// A match of this lobby was abandoned: the next one starts when the game asks
    /// ([`StartRollback`]), not by itself.
    abandoned: bool,
}

/// The spectators we feed: peer -> (players it expects, next frame to send).
#[derive(Default, Debug)]
pub(crate) struct Subscribers(HashMap<PeerId, (usize, i32)>);

/// The game's `ReadInputs` schedule, set aside while we watch.
#[derive(Resource)]
struct GameReadInputs(Schedule);

/// Run condition: we play.
pub(crate) fn playing(m: Res<RollbackMatch>) -> bool {
    m.phase == RollbackPhase::Playing
}

/// Run condition of bevy_ggrs's systems: a spectator may only step when the feed holds every
/// frame this update can step (bevy_ggrs steps `delta / frame time` frames, rounded down, plus
/// one at most).
pub(crate) fn spectator_has_inputs(
    m: Res<RollbackMatch>,
    log: Res<InputLog>,
    frame: Option<Res<RollbackFrameCount>>,
    rate: Option<Res<RollbackFrameRate>>,
    time: Res<Time>,
) -> bool {
    if m.phase != RollbackPhase::Spectating {
        return true;
    }
    let fps = rate.map(|r| r.0).unwrap_or(60).max(1) as f64;
    let steps = (time.delta_secs_f64() * fps).floor() as i32 + 1;
    let at = frame.map(|f| f.0).unwrap_or(0);
    log.last_final() - at >= steps
}

/// Starts the match. The host decides when (the lobby holds `players` linked peers, or its game
/// wrote [`StartRollback`]) and who plays (the first `players` in join order), and tells everyone
/// ([`MatchPlan`]; newcomers get it when they join). Every peer starts from the host's plan: as a
/// player once it is linked to all players, else as a spectator.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start<C: Config<Address = PeerId>>(
    mut commands: Commands,
    session: Option<ResMut<HuddleSession>>,
    settings: Res<RollbackSettings>,
    mut state: ResMut<RollbackMatch>,
    mut asked: MessageReader<StartRollback>,
    mut plans: MessageReader<Incoming<MatchPlan>>,
    mut joined: MessageReader<PeerJoined>,
    mut tell: MessageWriter<Outgoing<MatchPlan>>,
    mut started: MessageWriter<RollbackStarted>,
    mut feed: MessageWriter<Outgoing<FeedRequest>>,
    mut log: ResMut<InputLog>,
    mut stats: ResMut<RollbackStats>,
    mut plan: ResMut<Plan>,
) {
    let asked = asked.read().last().map(|s| s.players);
    let Some(mut session) = session else {
        *plan = Plan::default();
        return;
    };
    let (Some(me), Some(host)) = (session.id(), session.host()) else {
        return;
    };
    for p in plans.read() {
        if p.from == host {
            plan.players = Some(p.message.players.clone());
        }
    }
    let rollback = *settings;
    if me == host {
        // Newcomers learn the plan (they watch).
        for j in joined.read() {
            if let Some(players) = plan.players.as_ref() {
                tell.write(Outgoing::to_peer(
                    j.peer,
                    MatchPlan {
                        players: players.clone(),
                    },
                ));
            }
        }
        let auto = rollback.auto_start && !plan.abandoned;
        let wanted = asked.or(auto.then_some(rollback.players));
        if let (None, Some(n)) = (plan.players.as_ref(), wanted) {
            let members = session.succession();
            let ready = n > 0
                && members.len() >= n
                && session.topology() != Topology::Star
                && members[..n]
                    .iter()
                    .all(|p| *p == me || session.peers().contains(p));
            if ready {
                let players = members[..n].to_vec();
                tell.write(Outgoing::to_all(MatchPlan {
                    players: players.clone(),
                }));
                plan.players = Some(players);
            }
        }
    } else {
        joined.clear();
    }
    if state.phase != RollbackPhase::Waiting {
        return;
    }
    let Some(players) = plan.players.clone() else {
        return;
    };
    if !players
        .iter()
        .all(|p| *p == me || session.peers().contains(p))
        && players.contains(&me)
    {
        return; // wait for our links to every player
    }
    // A new match: nothing of the last one counts.
    log.clear();
    commands.insert_resource(NewestInputs::default());
    commands.insert_resource(Departing::default());
    *stats = RollbackStats::default();
    match players.iter().position(|p| *p == me) {
        Some(local) => {
            let kinds = socket::ggrs_players(session.id(), &players);
            match socket::start_p2p_session::<C>(&mut session, kinds, rollback, GGRS_NEVER) {
                Ok((p2p, socket)) => {
                    commands.insert_resource(Session::P2P(p2p));
                    stats.socket = Some(socket);
                }
                Err(e) => {
                    warn!("huddle: cannot start the GGRS session: {e}");
                    return;
                }
            }
            *state = RollbackMatch {
                phase: RollbackPhase::Playing,
                players,
                local_handle: Some(local),
                ..default()
            };
        }
        None if rollback.spectators => {
            let replay = SessionBuilder::<C>::new()
                .with_num_players(players.len())
                .and_then(|b| {
                    b.with_check_distance(0)
                        .with_input_delay(0)
                        .start_synctest_session()
                });
            match replay {
                Ok(replay) => commands.insert_resource(Session::SyncTest(replay)),
                Err(e) => {
                    warn!("huddle: cannot start the spectator session: {e}");
                    return;
                }
            }
            commands.queue(set_aside_read_inputs::<C>);
            feed.write(Outgoing::to_peer(
                host,
                FeedRequest {
                    players: players.len() as u32,
                    from: 1,
                },
            ));
            *state = RollbackMatch {
                phase: RollbackPhase::Spectating,
                players,
                feeder: Some(host),
                ..default()
            };
        }
        None => return,
    }
    started.write(RollbackStarted {
        players: state.players.clone(),
        local_handle: state.local_handle,
    });
}

/// A spectator has no inputs of its own: its `ReadInputs` replays the feed instead of the game's.
fn set_aside_read_inputs<C: Config<Address = PeerId>>(world: &mut World) {
    let mut schedules = world.resource_mut::<Schedules>();
    let game = schedules
        .remove(ReadInputs.intern())
        .unwrap_or_else(|| Schedule::new(ReadInputs));
    let mut replay = Schedule::new(ReadInputs);
    replay.add_systems(replay_inputs::<C>);
    schedules.insert(replay);
    world.insert_resource(GameReadInputs(game));
}

/// `ReadInputs` of a spectator: every player's inputs of the next frame, from the log.
fn replay_inputs<C: Config<Address = PeerId>>(
    mut commands: Commands,
    frame: Res<RollbackFrameCount>,
    log: Res<InputLog>,
    state: Res<RollbackMatch>,
    mut stats: ResMut<RollbackStats>,
) {
    let players = state.players.len();
    let decoded = log.get(frame.0 + 1).and_then(|bytes| {
        bincode::serde::decode_from_slice::<Vec<C::Input>, _>(bytes, codec())
            .ok()
            .map(|(inputs, _)| inputs)
            .filter(|inputs| inputs.len() == players)
    });
    let inputs = decoded.unwrap_or_else(|| {
        // Cannot happen while `spectator_has_inputs` paces us; bevy_ggrs needs inputs anyway.
        stats.spectator_starved += 1;
        vec![C::Input::default(); players]
    });
    commands.insert_resource(LocalInputs::<C>(inputs.into_iter().enumerate().collect()));
}

/// Whether each player's input was predicted in the newest frame we simulated
/// ([`RollbackStats::newest_frame`]).
#[derive(Resource, Default, Debug)]
pub(crate) struct NewestInputs {
    predicted: Vec<bool>,
}

/// The players that are going: what we agree on with the other players, and what waits to be
/// disconnected from the GGRS session.
#[derive(Resource, Default, Debug)]
pub(crate) struct Departing {
    /// Agreements on gone players' last inputs.
    agree: Departures,
    /// Agreed (handle, last input): disconnected once our frame is not one past it.
    agreed: Vec<(usize, i32)>,
    /// Gone while we were the only other player left: nobody to agree with.
    alone: Vec<usize>,
    /// Since when we hold the other players' GGRS packets back.
    holding: Option<Instant>,
    /// Players GGRS has not heard from for a while, and since when it tells so.
    silent: Vec<(usize, Instant)>,
}

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
    gone.extend(
        farewells
            .read()
            .map(|f| (f.from, Some(f.message.last_frame))),
    );
    let silent_for = settings.gone_after_interruption();
    let players = state.players.clone();
    departing.silent.retain(|(handle, since)| {
        let timed_out = now.duration_since(*since) >= silent_for;
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
/// ([`RollbackEvent::Abandoned`]). A player gone while we were the only other one is
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
    mut events: MessageWriter<RollbackEvent>,
    mut departing: ResMut<Departing>,
    newest: Res<NewestInputs>,
    stats: Res<RollbackStats>,
) {
    let now = Instant::now();
    let (Some(me), RollbackPhase::Playing, Some(Session::P2P(p2p))) =
        (state.local_handle, state.phase, session.as_deref_mut())
    else {
        reports.clear();
        return;
    };
    for report in reports.read() {
        let gone = report.message.handle as usize;
        match state.handle_of(report.from) {
            Some(from) if gone != me && gone < state.players.len() => {
                departing
                    .agree
                    .report(gone, from, report.message.frame, now);
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
                warn!(
                    "huddle: the match is abandoned: {peer} vanished and the players hold \
                     different last inputs of it, (player, frame): {reports:?} (ggrs 0.13 \
                     cannot play on)"
                );
                events.write(RollbackEvent::Abandoned { peer, handle });
                commands.remove_resource::<Session<C>>();
                state.phase = RollbackPhase::Ended;
                *plan = Plan {
                    players: None,
                    abandoned: true,
                };
                *departing = Departing::default();
                if let Some(socket) = &stats.socket {
                    socket.hold(false);
                }
                return;
            }
        }
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

/// A spectator takes in the feed, keeps a player feeding it (the first one still in the match:
/// every player keeps the whole log; after a host change the host may be a spectator), and
/// catches up: while far behind, the app's virtual clock runs up to 4x so bevy_ggrs steps several
/// frames an update.
pub(crate) fn follow_feed(
    mut state: ResMut<RollbackMatch>,
    mut frames: MessageReader<Incoming<FeedFrames>>,
    mut feed: MessageWriter<Outgoing<FeedRequest>>,
    mut log: ResMut<InputLog>,
    frame: Option<Res<RollbackFrameCount>>,
    mut time: ResMut<Time<Virtual>>,
) {
    if state.phase != RollbackPhase::Spectating {
        frames.clear();
        return;
    }
    for batch in frames.read() {
        if Some(batch.from) != state.feeder {
            continue;
        }
        let FeedFrames { first, frames } = batch.message.clone();
        if !log.receive(first, frames) {
            debug!("huddle: a feed batch out of order from {}", batch.from);
        }
    }
    let feeder = state.remaining().next().map(|(_, p)| p);
    if let Some(player) = feeder.filter(|p| Some(*p) != state.feeder) {
        state.feeder = Some(player);
        feed.write(Outgoing::to_peer(
            player,
            FeedRequest {
                players: state.players.len() as u32,
                from: log.last_final() + 1,
            },
        ));
    }
    let behind = log.last_final() - frame.map_or(0, |f| f.0);
    let speed = (behind as f32 / 30.0).clamp(1.0, 4.0);
    if (time.relative_speed() - speed).abs() > 0.05 {
        time.set_relative_speed(speed);
    }
}

/// Puts the game's `ReadInputs` back (after watching).
fn restore_read_inputs(world: &mut World) {
    if let Some(GameReadInputs(game)) = world.remove_resource::<GameReadInputs>() {
        world.resource_mut::<Schedules>().insert(game);
    }
}

/// GGRS events as [`RollbackEvent`]s. A player GGRS tells of as silent counts as gone after
/// [`RollbackSettings::disconnect_timeout`](super::RollbackSettings) (see [`follow_lobby`]).
pub(crate) fn events<C: Config<Address = PeerId>>(
    session: Option<ResMut<Session<C>>>,
    settings: Res<RollbackSettings>,
    mut state: ResMut<RollbackMatch>,
    mut departing: ResMut<Departing>,
    mut out: MessageWriter<RollbackEvent>,
) {
    let Some(mut session) = session else { return };
    let Session::P2P(p2p) = &mut *session else {
        return;
    };
    let players = state.players.clone();
    let handle_of = |peer: PeerId| players.iter().position(|p| *p == peer);
    for event in p2p.events() {
        let Some(mut event) = RollbackEvent::from_ggrs::<C>(event, handle_of) else {
            continue;
        };
        match &mut event {
            RollbackEvent::Disconnected { handle, .. } => {
                if state.disconnected.contains(handle) {
                    continue;
                }
                state.disconnected.push(*handle);
            }
            RollbackEvent::NetworkInterrupted {
                peer,
                disconnect_timeout,
            } => {
                *disconnect_timeout = settings.gone_after_interruption();
                if let Some(handle) = handle_of(*peer) {
                    departing.silent.push((handle, Instant::now()));
                }
            }
            RollbackEvent::NetworkResumed { peer } => {
                let handle = handle_of(*peer);
                departing.silent.retain(|(h, _)| Some(*h) != handle);
            }
            _ => {}
        }
        out.write(event);
    }
}

/// `GgrsSchedule`: logs the inputs each frame ran with (for spectators) and counts rollbacks.
pub(crate) fn record<C: Config<Address = PeerId>>(
    frame: Res<RollbackFrameCount>,
    confirmed: Res<ConfirmedFrameCount>,
    inputs: Res<PlayerInputs<C>>,
    mut log: ResMut<InputLog>,
    mut stats: ResMut<RollbackStats>,
    mut newest: ResMut<NewestInputs>,
) {
    if frame.0 >= stats.newest_frame {
        newest.predicted.clear();
        newest
            .predicted
            .extend(inputs.iter().map(|(_, s)| *s == InputStatus::Predicted));
    }
    let values: Vec<C::Input> = inputs.iter().map(|(input, _)| *input).collect();
    if let Ok(bytes) = bincode::serde::encode_to_vec(&values, codec()) {
        log.record(frame.0, bytes, confirmed.0);
    }
    stats.frames_simulated += 1;
    if frame.0 <= stats.newest_frame {
        stats.frames_resimulated += 1;
    } else {
        stats.newest_frame = frame.0;
    }
}

/// `SaveWorld`, before bevy_ggrs drops old snapshots: keep the whole prediction window.
///
/// bevy_ggrs drops snapshots older than GGRS's confirmed frame. When a player is disconnected,
/// that frame jumps past the gone player's last input while GGRS rolls back to just after it, and
/// that snapshot must still be there (else bevy_ggrs panics). Keeping `max_prediction` frames
/// costs what the snapshot ring holds anyway.
pub(crate) fn keep_prediction_window(
    frame: Res<RollbackFrameCount>,
    settings: Res<RollbackSettings>,
    confirmed: Option<ResMut<ConfirmedFrameCount>>,
) {
    let Some(mut confirmed) = confirmed else {
        return;
    };
    let floor = frame.0 - settings.max_prediction as i32;
    if confirmed.0 > floor {
        confirmed.0 = floor;
    }
}

/// The newest frame (bevy_ggrs numbering) whose inputs of ours every other remaining player has
/// acknowledged. Our final frames past it must not reach a spectator: we hold our own input of a
/// frame at once, the others only once it arrives, and if we vanished before it did, they play
/// that frame with our input as disconnected, not as we sent it.
///
/// GGRS keeps our inputs a player has not acknowledged (`send_queue_len`); our newest input is
/// for GGRS frame `current + input_delay - 1` (one more at a stall, which only makes this lower
/// than it could be). GGRS frame `g`'s inputs run in bevy_ggrs frame `g + 1`.
fn held_by_all<C: Config<Address = PeerId>>(
    p2p: &ggrs::P2PSession<C>,
    state: &RollbackMatch,
    input_delay: usize,
) -> i32 {
    let newest = p2p.current_frame() + input_delay as i32 - 1;
    p2p.remote_player_handles()
        .into_iter()
        .filter(|h| !state.disconnected.contains(h))
        .map(|h| match p2p.network_stats(h) {
            Ok(stats) => newest - stats.send_queue_len as i32 + 1,
            // No stats in the first second: nothing is known to be held yet.
            Err(_) => 0,
        })
        .min()
        .unwrap_or(i32::MAX)
}

/// Sends each subscribed spectator the final frames it has not had yet (and every other player
/// holds our inputs of, see [`held_by_all`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve_feed<C: Config<Address = PeerId>>(
    mut requests: MessageReader<Incoming<FeedRequest>>,
    state: Res<RollbackMatch>,
    log: Res<InputLog>,
    session: Option<Res<Session<C>>>,
    settings: Res<RollbackSettings>,
    mut subscribers: Local<Subscribers>,
    mut out: MessageWriter<Outgoing<FeedFrames>>,
    mut left: MessageReader<PeerLeft>,
) {
    for gone in left.read() {
        subscribers.0.remove(&gone.peer);
    }
    for request in requests.read() {
        // A request may come before our match started: keep it.
        let players = request.message.players as usize;
        subscribers
            .0
            .insert(request.from, (players, request.message.from.max(1)));
    }
    // Only players keep a log, and only of a match of the size the spectator expects.
    let (RollbackPhase::Playing, Some(Session::P2P(p2p))) = (state.phase, session.as_deref())
    else {
        return;
    };
    let upto = held_by_all(p2p, &state, settings.input_delay);
    for (peer, (players, next)) in subscribers.0.iter_mut() {
        if *players != state.players.len() {
            continue;
        }
        while let Some((first, frames)) = log.batch_from(*next, upto) {
            *next = first + frames.len() as i32;
            out.write(Outgoing::to_peer(*peer, FeedFrames { first, frames }));
        }
    }
}
