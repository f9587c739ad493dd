//! Starting a match: the host decides when and who plays (the first players in join order,
//! once linked), tells everyone, and every peer starts from its plan as a player or a spectator.

use super::record::NewestFinalSnapshot;
use super::resources::{Departing, NewestInputs, Plan};
use super::snapshot::{self, SnapshotRegistry, SnapshotWait};
use super::socket::{self, GGRS_NEVER};
use super::spectate::set_aside_read_inputs;
use super::RollbackSettings;
use super::{
    FeedRequest, InputLog, MatchPlan, RollbackMatch, RollbackPhase, RollbackStarted, RollbackStats,
    StartRollback,
};
use crate::messages::{Incoming, Outgoing, PeerJoined};
use crate::session::HuddleSession;
use bevy::prelude::*;
use bevy_ggrs::{RollbackFrameCount, Session};
use ggrs::{Config, GgrsError, SessionBuilder, SyncTestSession};
use huddle_protocol::resync::MAX_FRAME;
use matchbox_socket::PeerId;

/// Run condition: we play.
pub(crate) fn playing(m: Res<RollbackMatch>) -> bool {
    m.phase == RollbackPhase::Playing
}

/// Run condition: we watch.
pub(crate) fn watching(m: Res<RollbackMatch>) -> bool {
    m.phase == RollbackPhase::Spectating
}

/// The most players a plan may name (more than any GGRS match holds; a host's plan beyond it is
/// refused).
pub(crate) const MAX_PLAYERS: usize = 64;

/// Whether the host's plan can be a match: players named once each, at most [`MAX_PLAYERS`].
pub(crate) fn plan_is_sound(players: &[PeerId]) -> bool {
    let distinct = players
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    !players.is_empty() && players.len() <= MAX_PLAYERS && distinct == players.len()
}

/// The host's rule for who plays a match of `n`: the first `n` of the succession (join order),
/// once the host (`me`) is linked to each of them (in a star room the host's links are the only
/// ones: the players' GGRS packets to each other go through it).
pub(crate) fn who_plays(
    n: usize,
    me: PeerId,
    succession: &[PeerId],
    linked: &[PeerId],
) -> Option<Vec<PeerId>> {
    let players = succession.get(..n).filter(|p| !p.is_empty())?;
    let ready = players.iter().all(|p| *p == me || linked.contains(p));
    ready.then(|| players.to_vec())
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
    (registry, mut wait): (Option<Res<SnapshotRegistry>>, ResMut<SnapshotWait>),
) {
    let asked = asked.read().last().map(|s| s.players);
    let Some(mut session) = session else {
        *plan = Plan::default();
        return;
    };
    let rollback = *settings;
    let (Some(me), Some(host)) = (session.id(), session.host()) else {
        return;
    };
    for p in plans.read() {
        if p.from != host {
            continue;
        }
        if plan_is_sound(&p.message.players) {
            plan.take(p.message.players.clone());
        } else {
            stats.plans_refused += 1;
            warn!(
                "huddle: the host's match plan refused ({} players)",
                p.message.players.len()
            );
        }
    }
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
            if let Some(players) = who_plays(n, me, &members, session.peers()) {
                tell.write(Outgoing::to_all(MatchPlan {
                    players: players.clone(),
                }));
                plan.take(players);
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
        // Wait for our links to every player, for a while.
        if plan
            .since
            .is_some_and(|t| t.elapsed() >= rollback.plan_link_wait)
        {
            stats.plans_refused += 1;
            warn!(
                "huddle: the host's match plan names players we did not link to in {:?}: refused",
                rollback.plan_link_wait
            );
            plan.players = None;
            plan.since = None;
        }
        return;
    }
    // A new match: nothing of the last one counts; frames count from the first one.
    let first = rollback.first_frame.clamp(0, MAX_FRAME);
    log.clear();
    log.start_after(first);
    commands.insert_resource(RollbackFrameCount(first));
    commands.insert_resource(NewestFinalSnapshot(first));
    commands.insert_resource(NewestInputs::default());
    commands.insert_resource(Departing::default());
    commands.insert_resource(snapshot::EpochStart::default());
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
                frame_offset: first,
                ..default()
            };
        }
        None if rollback.spectators => {
            match spectator_session::<C>(players.len()) {
                Ok(replay) => commands.insert_resource(Session::SyncTest(replay)),
                Err(e) => {
                    warn!("huddle: cannot start the spectator session: {e}");
                    return;
                }
            }
            commands.queue(set_aside_read_inputs::<C>);
            if registry.is_some_and(|r| !r.is_empty()) {
                // From the players' latest final frame, if the game says what a snapshot holds.
                wait.passed_over.clear();
                snapshot::ask(&mut wait, host);
            } else {
                feed.write(Outgoing::to_peer(
                    host,
                    FeedRequest {
                        players: players.len() as u32,
                        from: first.saturating_add(1),
                    },
                ));
            }
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

/// A spectator's session of `players`: a sync test that never rolls back, fed the players' final
/// inputs (see the `spectate` module).
pub(crate) fn spectator_session<C: Config<Address = PeerId>>(
    players: usize,
) -> Result<SyncTestSession<C>, GgrsError> {
    SessionBuilder::<C>::new()
        .with_num_players(players)?
        .with_check_distance(0)
        .with_input_delay(0)
        .start_synctest_session()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollback::test_peer as id;

    #[test]
    fn the_first_n_in_join_order_play_once_linked() {
        let (host, a, b, c) = (id(1), id(2), id(3), id(4));
        let order = [host, a, b, c];
        assert_eq!(who_plays(2, host, &order, &[a, b, c]), Some(vec![host, a]));
        assert_eq!(
            who_plays(3, host, &order, &[a, c]),
            None,
            "b is not linked yet"
        );
        assert_eq!(
            who_plays(3, host, &order, &[c, b, a]),
            Some(vec![host, a, b]),
            "join order, not link order"
        );
        assert_eq!(who_plays(5, host, &order, &[a, b, c]), None, "too few");
        assert_eq!(who_plays(0, host, &order, &[a, b, c]), None);
    }

    #[test]
    fn a_plan_names_each_player_once_and_not_too_many() {
        assert!(plan_is_sound(&[id(1), id(2)]));
        assert!(!plan_is_sound(&[]));
        assert!(!plan_is_sound(&[id(1), id(2), id(1)]), "a player twice");
        let crowd: Vec<PeerId> = (0..=MAX_PLAYERS as u128).map(id).collect();
        assert!(!plan_is_sound(&crowd), "{} players", crowd.len());
        assert!(plan_is_sound(&crowd[..MAX_PLAYERS]));
    }
}
