//! Leaving a match cleanly ([`LeaveRollback`]): the leaving player's side of the agreement in
//! the `departure` module.
//!
//! We add one last input, stop stepping the game, tell every player the frame of that input
//! ([`Farewell`]) and keep GGRS polled, so that it sends the inputs again until they arrive.
//! Each remaining player acknowledges once its confirmed frame reached ours ([`LastInput`]).
//! When all did, or after [`PARTING_AT_MOST`], we leave the lobby.

use super::RollbackSettings;
use super::{Farewell, LastInput, LeaveRollback, RollbackMatch, RollbackPhase};
use crate::messages::{Incoming, Outgoing};
use crate::HuddleCommandsExt;
use bevy::prelude::*;
use bevy_ggrs::Session;
use ggrs::{Config, SessionState};
use matchbox_socket::PeerId;
use std::time::Duration;
use web_time::Instant;

/// How long a leaving player waits at most for the others to hold its last input.
pub(crate) const PARTING_AT_MOST: Duration = Duration::from_secs(2);

/// Our leaving: the frame of our last input, since when we wait, who holds it.
#[derive(Default, Debug)]
pub(crate) struct Parting {
    last_frame: i32,
    since: Option<Instant>,
    acked: Vec<PeerId>,
}

/// Run condition of bevy_ggrs's systems: our game does not step while we leave.
pub(crate) fn not_leaving(m: Res<RollbackMatch>) -> bool {
    m.phase != RollbackPhase::Leaving
}

/// Carries out [`LeaveRollback`] (see the module docs). Outside a running match it leaves the
/// lobby at once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn leave<C: Config<Address = PeerId>>(
    mut commands: Commands,
    mut asked: MessageReader<LeaveRollback>,
    mut acks: MessageReader<Incoming<LastInput>>,
    mut farewell: MessageWriter<Outgoing<Farewell>>,
    mut session: Option<ResMut<Session<C>>>,
    settings: Res<RollbackSettings>,
    mut state: ResMut<RollbackMatch>,
    mut parting: Local<Parting>,
) {
    let asked = asked.read().count() > 0;
    if state.phase == RollbackPhase::Leaving {
        if let Some(Session::P2P(p2p)) = session.as_deref_mut() {
            p2p.poll_remote_clients();
        }
        let me = state.local_handle;
        for ack in acks.read() {
            let ours = Some(ack.message.handle as usize) == me && ack.message.epoch == state.epoch;
            if ours && ack.message.frame == parting.last_frame && !parting.acked.contains(&ack.from)
            {
                parting.acked.push(ack.from);
            }
        }
        let waiting = state
            .remaining()
            .any(|(handle, peer)| Some(handle) != me && !parting.acked.contains(&peer));
        let overdue = parting
            .since
            .is_none_or(|since| since.elapsed() >= PARTING_AT_MOST);
        if !waiting || overdue {
            if waiting {
                warn!("huddle: left the match before every player held our last input");
            }
            commands.leave_huddle();
            *parting = Parting::default();
        }
        return;
    }
    acks.clear();
    if !asked {
        return;
    }
    if let (RollbackPhase::Playing, Some(me), Some(Session::P2P(p2p))) =
        (state.phase, state.local_handle, session.as_deref_mut())
    {
        if p2p.current_state() == SessionState::Running {
            // GGRS takes one local input per frame, queued `input_delay` frames ahead; at a
            // stall it has taken this frame's already and drops ours. Either way our last input
            // is for this frame plus the delay. The requests are not run: our game has ended.
            let last_frame = p2p.current_frame() + settings.input_delay as i32;
            let added = p2p.add_local_input(me, C::Input::default()).is_ok();
            if added && p2p.advance_frame().is_ok() {
                farewell.write(Outgoing::to_all(Farewell {
                    epoch: state.epoch,
                    last_frame,
                }));
                state.phase = RollbackPhase::Leaving;
                *parting = Parting {
                    last_frame,
                    since: Some(Instant::now()),
                    acked: Vec::new(),
                };
                return;
            }
        }
    }
    commands.leave_huddle();
}
