//! What the match produces: GGRS events as rollback events, the input log spectators are fed
//! from, rollback counts, and the snapshots a departure needs kept.

use super::resources::{Departing, NewestInputs};
use super::resync::Synced;
use super::socket::codec;
use super::RollbackSettings;
use super::{InputLog, RollbackEvent, RollbackMatch, RollbackStats};
use bevy::prelude::*;
use bevy_ggrs::{ConfirmedFrameCount, PlayerInputs, RollbackFrameCount, Session};
use ggrs::{Config, InputStatus};
use matchbox_socket::PeerId;
use web_time::Instant;

/// GGRS events as [`RollbackEvent`]s. A player GGRS tells of as silent counts as gone after
/// [`RollbackSettings::disconnect_timeout`](super::RollbackSettings) (see [`follow_lobby`]).
pub(crate) fn events<C: Config<Address = PeerId>>(
    session: Option<ResMut<Session<C>>>,
    mut synced: ResMut<Synced>,
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
            RollbackEvent::Synchronized { peer }
                if !synced.0.contains(peer) && synced.0.len() < players.len() =>
            {
                synced.0.push(*peer);
            }
            RollbackEvent::NetworkResumed { peer } => {
                let handle = handle_of(*peer);
                departing.silent.retain(|(h, _)| Some(*h) != handle);
                departing.back.retain(|(h, _)| Some(*h) != handle);
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

/// `GgrsSchedule`, watching: counts the frames we replayed (a spectator never rolls back).
pub(crate) fn count_watched(frame: Res<RollbackFrameCount>, mut stats: ResMut<RollbackStats>) {
    stats.frames_simulated += 1;
    stats.newest_frame = stats.newest_frame.max(frame.0);
}

/// The newest match frame whose bevy_ggrs snapshot holds every player's confirmed inputs, as of
/// the last GGRS step (bevy_ggrs keeps `max_prediction` snapshots: at a stall, this is the oldest).
#[derive(Resource, Default, Debug)]
pub(crate) struct NewestFinalSnapshot(pub(crate) i32);

/// `AdvanceWorld`, first: bevy_ggrs gives GGRS's confirmed frame, which counts from this epoch's
/// first frame; the game, the input log and bevy_ggrs's snapshots count match frames.
pub(crate) fn shift_confirmed_frame(
    state: Res<RollbackMatch>,
    confirmed: Option<ResMut<ConfirmedFrameCount>>,
) {
    if let Some(mut confirmed) = confirmed.filter(|_| state.frame_offset != 0) {
        confirmed.0 = confirmed.0.saturating_add(state.frame_offset);
    }
}

/// `LoadWorld`, first: bevy_ggrs sets the frame count to the GGRS frame it loads; the snapshot
/// of that frame is stored under its match frame.
pub(crate) fn shift_loaded_frame(state: Res<RollbackMatch>, mut frame: ResMut<RollbackFrameCount>) {
    frame.0 = frame.0.saturating_add(state.frame_offset);
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
    state: Res<RollbackMatch>,
    confirmed: Option<ResMut<ConfirmedFrameCount>>,
    mut newest_final: ResMut<NewestFinalSnapshot>,
) {
    let Some(mut confirmed) = confirmed else {
        return;
    };
    confirmed.0 = confirmed.0.saturating_add(state.frame_offset);
    // GGRS confirmed its frame `c` in the step that asked for this save, and rolled back first
    // if a prediction before it was wrong: the snapshot of the frame after `c` holds final inputs
    // only (GGRS frame `g`'s inputs run in match frame `g + 1`).
    newest_final.0 = confirmed.0.saturating_add(1).min(frame.0);
    let floor = frame.0 - settings.max_prediction as i32;
    if confirmed.0 > floor {
        confirmed.0 = floor;
    }
}
