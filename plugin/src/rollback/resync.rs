//! Resyncing a match (the state machine is `huddle_protocol::resync`): when a player vanished and
//! the remaining players cannot agree on its last input, the leader (the first remaining player)
//! offers its snapshot of its newest final frame ([`ResyncOffer`]); every remaining player and
//! spectator checks the offer, sets its world back to the snapshot and goes on in a fresh GGRS
//! session of the next epoch.
//!
//! Handles never change: a gone player keeps its seat, played by the leader with the default
//! input (a local player of the leader's session, a remote one of the leader's endpoint for the
//! others; the leader's game never sees it among its local players). So the game's own
//! handle-indexed code and the spectators' feed stay as they were.

use super::departures::abandon;
use super::record::NewestFinalSnapshot;
use super::resources::{Departing, NewestInputs, Plan};
use super::snapshot::{self, EpochStart, Snapshot, SnapshotAsks, SnapshotRegistry};
use super::socket::{self, GGRS_NEVER};
use super::spectate::{replace_read_inputs, restore_read_inputs, run_game_read_inputs};
use super::{Abandoning, InputLog, RollbackEvent, RollbackMatch, RollbackPhase};
use super::{RollbackSettings, RollbackStats};
use crate::messages::{Incoming, Outgoing};
use crate::session::HuddleSession;
use bevy::prelude::*;
use bevy_ggrs::{LocalInputs, LocalPlayers, ReadInputs, Session};
use ggrs::{Config, PlayerType};
use huddle_protocol::resync::{self as judge, Judge, Offer, Waiting, Window};
use matchbox_socket::PeerId;
use serde::{Deserialize, Serialize};
use web_time::Instant;

/// The leader's offer: go on from `snapshot` in epoch `epoch`, played by `players` (handle
/// order; the others' seats are played with the default input).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct ResyncOffer {
    pub(crate) epoch: u32,
    pub(crate) players: Vec<PeerId>,
    pub(crate) snapshot: Snapshot,
}

/// Our part in a resync: whether we wait for an offer (and since when), which gone player made
/// it needed, and an offer taken but not yet carried out.
#[derive(Resource, Default, Debug)]
pub(crate) struct Resync {
    waiting: Waiting,
    over: Option<usize>,
    taken: Option<ResyncOffer>,
}

impl Resync {
    /// The match cannot go on as it is since `gone` vanished: a resync is needed.
    pub(crate) fn needed(&mut self, gone: usize, now: Instant) {
        self.waiting.start(now);
        self.over.get_or_insert(gone);
    }

    /// Whether we wait for an offer.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.is_waiting()
    }
}

/// The seats a leader plays for the gone players: their handles.
#[derive(Resource, Default, Debug, Clone)]
struct Ghosts(Vec<usize>);

/// Checks the offers that came: one from our leader, for the next epoch, that drops only players
/// we saw go, near our frame, is taken; the rest are counted and dropped.
pub(crate) fn hear_offers(
    mut offers: MessageReader<Incoming<ResyncOffer>>,
    huddle: Option<Res<HuddleSession>>,
    state: Res<RollbackMatch>,
    log: Res<InputLog>,
    settings: Res<RollbackSettings>,
    mut resync: ResMut<Resync>,
    mut stats: ResMut<RollbackStats>,
) {
    let me = huddle.and_then(|h| h.id());
    for offer in offers.read() {
        let gone: Vec<PeerId> = state
            .disconnected
            .iter()
            .filter_map(|h| state.players.get(*h).copied())
            .collect();
        let window = Window::around(
            log.last_final(),
            settings.max_prediction,
            settings.input_delay,
        );
        let judge = match (state.phase, me) {
            (RollbackPhase::Playing, Some(me)) => Judge::Player {
                me,
                gone: &gone,
                window,
            },
            (RollbackPhase::Spectating, _) => Judge::Spectator,
            _ => {
                stats.resyncs_refused += 1;
                continue;
            }
        };
        let claim = Offer {
            epoch: offer.message.epoch,
            frame: offer.message.snapshot.frame,
            players: offer.message.players.clone(),
        };
        match judge::judge(offer.from, &claim, state.epoch, &state.players, &judge) {
            Ok(()) if resync.taken.is_none() => resync.taken = Some(offer.message.clone()),
            Ok(()) => stats.resyncs_refused += 1,
            Err(e) => {
                warn!("huddle: a resync offer from {} refused: {e}", offer.from);
                stats.resyncs_refused += 1;
            }
        }
    }
}

/// The leader makes its offer once a resync is needed; anyone carries out an offer taken; a
/// player that waited in vain ends the match.
pub(crate) fn run<C: Config<Address = PeerId>>(world: &mut World) {
    if lead(world).is_err() {
        give_up::<C>(world);
        return;
    }
    if let Some(offer) = world.resource_mut::<Resync>().taken.take() {
        if let Err(why) = carry_out::<C>(world, &offer) {
            warn!("huddle: cannot resync ({why}): the match is abandoned");
            give_up::<C>(world);
        }
        return;
    }
    if world.resource::<Resync>().waiting.given_up(Instant::now()) {
        warn!("huddle: no resync offer came in time: the match is abandoned");
        give_up::<C>(world);
    }
}

/// The leader's part: capture the newest final state bevy_ggrs holds (every player's inputs up to
/// it known) and offer it to everyone (ourselves too). An error: nothing to offer.
fn lead(world: &mut World) -> Result<(), ()> {
    let state = world.resource::<RollbackMatch>();
    let resync = world.resource::<Resync>();
    if !resync.waiting.is_waiting()
        || resync.taken.is_some()
        || state.phase != RollbackPhase::Playing
    {
        return Ok(());
    }
    let players: Vec<PeerId> = state.remaining().map(|(_, p)| p).collect();
    let leader = judge::leader(&players);
    let me = world.get_resource::<HuddleSession>().and_then(|h| h.id());
    if leader.is_none() || leader != me {
        return Ok(());
    }
    let epoch = state.epoch.saturating_add(1);
    let frame = world.resource::<NewestFinalSnapshot>().0;
    let captured = snapshot::capture(world, frame);
    let Some(snapshot) = captured.or_else(|| world.resource::<EpochStart>().of(frame)) else {
        warn!("huddle: no snapshot of frame {frame} to resync from: the match is abandoned");
        return Err(());
    };
    let offer = ResyncOffer {
        epoch,
        players,
        snapshot,
    };
    world.write_message(Outgoing::to_all(offer.clone()));
    world.resource_mut::<Resync>().taken = Some(offer);
    Ok(())
}

/// Sets the world back to the offer's snapshot and goes on in a fresh session of its epoch.
fn carry_out<C: Config<Address = PeerId>>(
    world: &mut World,
    offer: &ResyncOffer,
) -> Result<(), String> {
    snapshot::restore(world, &offer.snapshot).map_err(|e| e.to_string())?;
    let frame = offer.snapshot.frame;
    let settings = *world.resource::<RollbackSettings>();
    let mut state = world.resource::<RollbackMatch>().clone();
    let me = world.get_resource::<HuddleSession>().and_then(|h| h.id());
    let ghosts: Vec<usize> = (0..state.players.len())
        .filter(|h| !offer.players.contains(&state.players[*h]))
        .collect();
    for h in &ghosts {
        if !state.disconnected.contains(h) {
            state.disconnected.push(*h);
        }
    }
    state.epoch = offer.epoch;
    state.feeder = None;
    restore_read_inputs(world);
    if state.phase == RollbackPhase::Playing {
        let leader = offer.players[0];
        let kinds = seats(me, leader, &state.players, &ghosts);
        let Some(mut huddle) = world.get_resource_mut::<HuddleSession>() else {
            return Err("we left the lobby".to_owned());
        };
        let (p2p, socket) = socket::start_p2p_session_in::<C>(
            &mut huddle,
            kinds,
            settings,
            GGRS_NEVER,
            state.epoch,
        )
        .map_err(|e| e.to_string())?;
        world.insert_resource(Session::P2P(p2p));
        let mut stats = world.resource_mut::<RollbackStats>();
        let old = stats.socket.replace(socket);
        if let Some(old) = old {
            let (bytes_in, bytes_out) = old.bytes();
            let [d, i, o] = &mut stats.before_resync;
            *d = d.saturating_add(old.dropped());
            *i = i.saturating_add(bytes_in);
            *o = o.saturating_add(bytes_out);
        }
        state.frame_offset = frame;
        if me == Some(leader) && !ghosts.is_empty() {
            world.insert_resource(Ghosts(ghosts));
            let mut read = Schedule::new(ReadInputs);
            read.add_systems(read_with_ghosts::<C>);
            replace_read_inputs(world, read);
        } else {
            world.remove_resource::<Ghosts>();
        }
    } else {
        // A spectator: the feed goes on from the frame after the snapshot.
        super::spectate::set_aside_read_inputs::<C>(world);
    }
    world.insert_resource(state);
    world.insert_resource(Departing::default());
    world.insert_resource(NewestInputs::default());
    world.insert_resource(Resync::default());
    world.resource_mut::<SnapshotAsks>().captured = None;
    let mut log = world.resource_mut::<InputLog>();
    log.clear();
    log.start_after(frame);
    let mut stats = world.resource_mut::<RollbackStats>();
    stats.newest_frame = frame;
    stats.resyncs = stats.resyncs.saturating_add(1);
    stats.snapshot_bytes = offer.snapshot.encoded_len();
    world.write_message(RollbackEvent::Resynced {
        frame,
        players: offer.players.clone(),
    });
    Ok(())
}

/// GGRS players of a resynced session: ours local, a gone player's seat local to the leader and
/// remote (at the leader) to everyone else, the others remote.
fn seats(
    me: Option<PeerId>,
    leader: PeerId,
    players: &[PeerId],
    ghosts: &[usize],
) -> Vec<(usize, PlayerType<PeerId>)> {
    socket::ggrs_players(me, players)
        .into_iter()
        .map(|(handle, kind)| match ghosts.contains(&handle) {
            true if me == Some(leader) => (handle, PlayerType::Local),
            true => (handle, PlayerType::Remote(leader)),
            false => (handle, kind),
        })
        .collect()
}

/// The leader's `ReadInputs`: the game's, with the gone players' seats hidden from its local
/// players, then the default input for each of them.
fn read_with_ghosts<C: Config<Address = PeerId>>(world: &mut World) {
    let ghosts = world.get_resource::<Ghosts>().cloned().unwrap_or_default();
    if let Some(mut local) = world.get_resource_mut::<LocalPlayers>() {
        local.0.retain(|h| !ghosts.0.contains(h));
    }
    run_game_read_inputs(world);
    let mut inputs = world
        .remove_resource::<LocalInputs<C>>()
        .map(|i| i.0)
        .unwrap_or_default();
    for handle in ghosts.0 {
        inputs.insert(handle, C::Input::default());
    }
    world.insert_resource(LocalInputs::<C>(inputs));
}

/// Ends the match: no resync could be made (the others end it too: each waits in vain, or is
/// told).
fn give_up<C: Config<Address = PeerId>>(world: &mut World) {
    let over = world.resource::<Resync>().over;
    let mut state = world.resource::<RollbackMatch>().clone();
    let handle = over
        .or_else(|| state.disconnected.first().copied())
        .unwrap_or(0);
    let peer = state.players.get(handle).copied();
    world.write_message(Outgoing::to_all(Abandoning {
        epoch: state.epoch,
        handle: u32::try_from(handle).unwrap_or(u32::MAX),
    }));
    let mut plan = std::mem::take(&mut *world.resource_mut::<Plan>());
    let mut departing = std::mem::take(&mut *world.resource_mut::<Departing>());
    let stats = std::mem::take(&mut *world.resource_mut::<RollbackStats>());
    let mut commands = world.commands();
    abandon::<C>(&mut commands, &mut state, &mut plan, &mut departing, &stats);
    world.flush();
    world.insert_resource(plan);
    world.insert_resource(departing);
    world.insert_resource(stats);
    world.insert_resource(state);
    world.insert_resource(Resync::default());
    if let Some(peer) = peer {
        world.write_message(RollbackEvent::Abandoned { peer, handle });
    }
}

/// Whether the game registered what a snapshot holds (else a vanish the players disagree on ends
/// the match, as without resync).
pub(crate) fn can_resync(registry: Option<&SnapshotRegistry>) -> bool {
    registry.is_some_and(|r| !r.is_empty())
}
