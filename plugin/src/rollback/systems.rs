//! The rollback systems: start the match from the lobby, follow the lobby during it, turn GGRS
//! events into messages, keep and serve the input log, pace spectators.

use super::socket::codec;
use super::{
    FeedFrames, FeedRequest, InputLog, MatchPlan, RollbackEvent, RollbackMatch, RollbackPhase,
    RollbackStarted, RollbackStats, StartRollback,
};
use crate::messages::{Incoming, Outgoing, PeerJoined, PeerLeft};
use crate::session::HuddleSession;
use crate::{HuddleSettings, Topology};
use bevy::ecs::schedule::ScheduleLabel;
use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bevy_ggrs::{
    ConfirmedFrameCount, LocalInputs, PlayerInputs, ReadInputs, RollbackFrameCount,
    RollbackFrameRate, Session,
};
use ggrs::{Config, InputStatus, SessionBuilder};
use matchbox_socket::PeerId;

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
    settings: Res<HuddleSettings>,
    mut state: ResMut<RollbackMatch>,
    mut asked: MessageReader<StartRollback>,
    mut plans: MessageReader<Incoming<MatchPlan>>,
    mut joined: MessageReader<PeerJoined>,
    mut tell: MessageWriter<Outgoing<MatchPlan>>,
    mut started: MessageWriter<RollbackStarted>,
    mut feed: MessageWriter<Outgoing<FeedRequest>>,
    mut log: ResMut<InputLog>,
    mut stats: ResMut<RollbackStats>,
    mut plan: Local<Option<Vec<PeerId>>>,
) {
    let asked = asked.read().last().map(|s| s.players);
    let Some(mut session) = session else {
        *plan = None;
        return;
    };
    let (Some(me), Some(host)) = (session.id(), session.host()) else {
        return;
    };
    for p in plans.read() {
        if p.from == host {
            *plan = Some(p.message.players.clone());
        }
    }
    let rollback = settings.0.rollback;
    if me == host {
        // Newcomers learn the plan (they watch).
        for j in joined.read() {
            if let Some(players) = plan.as_ref() {
                tell.write(Outgoing::to_peer(
                    j.peer,
                    MatchPlan {
                        players: players.clone(),
                    },
                ));
            }
        }
        let wanted = asked.or(rollback.auto_start.then_some(rollback.players));
        if let (None, Some(n)) = (plan.as_ref(), wanted) {
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
                *plan = Some(players);
            }
        }
    } else {
        joined.clear();
    }
    if state.phase != RollbackPhase::Waiting {
        return;
    }
    let Some(players) = plan.clone() else {
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
    *stats = RollbackStats::default();
    match players.iter().position(|p| *p == me) {
        Some(local) => {
            let kinds = session.ggrs_players_of(&players);
            match session.start_p2p_session_of::<C>(kinds, rollback) {
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

/// Players that left the lobby and wait to be disconnected from the GGRS session, and since when.
#[derive(Default)]
pub(crate) struct Leaving {
    handles: Vec<usize>,
    since: Option<web_time::Instant>,
}

/// How long we hold the other players' GGRS packets back at most, waiting to disconnect a gone
/// player safely (see [`follow_lobby`]).
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_millis(300);

/// During the match: a player that leaves the lobby is announced at once
/// ([`RollbackEvent::Disconnected`]) and disconnected from the GGRS session as soon as that is
/// safe; we leave the match when we leave the lobby.
///
/// "Safe": ggrs 0.13 panics ("must load frame in the past") when a player is disconnected while
/// our frame is exactly one past its last input (fixed upstream in gschup/ggrs#119, not yet
/// released). So we wait until the newest frame we simulated had to predict the gone player's
/// input: then we are two frames past its last one, and GGRS resimulates just one frame.
///
/// In matches of three or more, the other players report the gone player's last input as they
/// saw it, and GGRS re-disconnects it at the earliest report, hitting the same panic if that
/// report arrives while we are one frame past it. So while we wait, the other players' GGRS
/// packets are held back (a few frames of extra latency, at most [`HOLD_AT_MOST`]); once we
/// disconnected the gone player ourselves, every earlier report is at least a frame behind us.
#[allow(clippy::too_many_arguments)]
pub(crate) fn follow_lobby<C: Config<Address = PeerId>>(
    mut commands: Commands,
    huddle: Option<Res<HuddleSession>>,
    mut session: Option<ResMut<Session<C>>>,
    mut state: ResMut<RollbackMatch>,
    mut left: MessageReader<PeerLeft>,
    mut events: MessageWriter<RollbackEvent>,
    mut time: ResMut<Time<Virtual>>,
    newest: Res<NewestInputs>,
    stats: Res<RollbackStats>,
    mut leaving: Local<Leaving>,
) {
    if matches!(state.phase, RollbackPhase::Waiting | RollbackPhase::Ended) {
        if state.phase == RollbackPhase::Ended && huddle.is_some() {
            // In a lobby again: a new match can start.
            *state = RollbackMatch::default();
        }
        left.clear();
        *leaving = Leaving::default();
        return;
    }
    if huddle.is_none() {
        commands.remove_resource::<Session<C>>();
        commands.queue(restore_read_inputs);
        state.phase = RollbackPhase::Ended;
        time.set_relative_speed(1.0);
        return;
    }
    for gone in left.read() {
        let Some(handle) = state.handle_of(gone.peer) else {
            continue;
        };
        if state.disconnected.contains(&handle) {
            continue;
        }
        state.disconnected.push(handle);
        leaving.handles.push(handle);
        leaving.since.get_or_insert_with(web_time::Instant::now);
        events.write(RollbackEvent::Disconnected {
            peer: gone.peer,
            handle,
        });
    }
    let Some(Session::P2P(p2p)) = session.as_deref_mut() else {
        *leaving = Leaving::default();
        return;
    };
    let Some(since) = leaving.since else {
        return;
    };
    let overdue = since.elapsed() >= HOLD_AT_MOST;
    leaving.handles.retain(|&handle| {
        let predicted = newest.predicted.get(handle).copied().unwrap_or(false);
        if !predicted && !overdue {
            return true;
        }
        // Already disconnected by GGRS itself is fine.
        let _ = p2p.disconnect_player(handle);
        false
    });
    let hold = !leaving.handles.is_empty();
    if !hold {
        leaving.since = None;
    }
    if let Some(socket) = &stats.socket {
        socket.hold(hold);
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
    let feeder = state
        .players
        .iter()
        .enumerate()
        .find(|(handle, _)| !state.disconnected.contains(handle))
        .map(|(_, p)| *p);
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

/// GGRS events as [`RollbackEvent`]s; a player GGRS timed out counts as disconnected.
pub(crate) fn events<C: Config<Address = PeerId>>(
    session: Option<ResMut<Session<C>>>,
    mut state: ResMut<RollbackMatch>,
    mut out: MessageWriter<RollbackEvent>,
) {
    let Some(mut session) = session else { return };
    let Session::P2P(p2p) = &mut *session else {
        return;
    };
    let players = state.players.clone();
    let handle_of = |peer: PeerId| players.iter().position(|p| *p == peer);
    for event in p2p.events() {
        let Some(event) = RollbackEvent::from_ggrs::<C>(event, handle_of) else {
            continue;
        };
        if let RollbackEvent::Disconnected { handle, .. } = event {
            if state.disconnected.contains(&handle) {
                continue;
            }
            state.disconnected.push(handle);
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
/// that frame jumps past the gone player's last input; if another peer then reports an earlier
/// last input for it, GGRS rolls back to that earlier frame, and its snapshot would be gone
/// (bevy_ggrs panics). Keeping `max_prediction` frames costs what the snapshot ring holds anyway.
pub(crate) fn keep_prediction_window(
    frame: Res<RollbackFrameCount>,
    settings: Res<HuddleSettings>,
    confirmed: Option<ResMut<ConfirmedFrameCount>>,
) {
    let Some(mut confirmed) = confirmed else {
        return;
    };
    let floor = frame.0 - settings.0.rollback.max_prediction as i32;
    if confirmed.0 > floor {
        confirmed.0 = floor;
    }
}

/// Sends each subscribed spectator the final frames it has not had yet.
pub(crate) fn serve_feed(
    mut requests: MessageReader<Incoming<FeedRequest>>,
    state: Res<RollbackMatch>,
    log: Res<InputLog>,
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
    if state.phase != RollbackPhase::Playing {
        return;
    }
    for (peer, (players, next)) in subscribers.0.iter_mut() {
        if *players != state.players.len() {
            continue;
        }
        while let Some((first, frames)) = log.batch_from(*next) {
            *next = first + frames.len() as i32;
            out.write(Outgoing::to_peer(*peer, FeedFrames { first, frames }));
        }
    }
}
