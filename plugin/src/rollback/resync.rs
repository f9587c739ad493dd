//! Resyncing a match (the checks are `huddle_protocol::resync`): the leader (the first seat
//! somebody plays) offers everyone its snapshot of the newest final frame ([`ResyncOffer`]) with
//! the seats of the next epoch; every player and spectator checks the offer, sets its world back
//! to the snapshot and goes on in a fresh GGRS session. It happens when a player vanished and the
//! remaining players cannot agree on its last input, and when the leader seats players that drop
//! in or come back (see the `seats` module).
//!
//! Handles never change: a gone player keeps its seat, played by the leader with the default
//! input (a local player of the leader's session, a remote one of the leader's endpoint for the
//! others; the leader's game never sees it among its local players), until a player that comes
//! back takes it. Players that drop in get new seats at the end. So the game's own handle-indexed
//! code goes on; it spawns what a new seat needs when [`RollbackEvent::Resynced`] names more
//! players than before.

use super::departures::abandon;
use super::record::NewestFinalSnapshot;
use super::resources::{Departing, NewestInputs, Plan};
use super::seats::{self, Seating};
use super::snapshot::{self, EpochStart, Snapshot, SnapshotAsks, SnapshotRegistry};
use super::socket::{self, GGRS_NEVER};
use super::spectate::{replace_read_inputs, restore_read_inputs, run_game_read_inputs};
use super::{Abandoning, InputLog, RollbackEvent, RollbackMatch, RollbackPhase};
use super::{RollbackSettings, RollbackStats};
use crate::messages::{Incoming, Outgoing};
use crate::session::HuddleSession;
use bevy::prelude::*;
use bevy_ggrs::{LocalInputs, LocalPlayers, ReadInputs, Session};
use ggrs::{Config, PlayerType, SessionState};
use huddle_protocol::resync::{self as judge, Judge, Offer, Waiting, Window};
use matchbox_socket::PeerId;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use web_time::Instant;

/// The leader's offer: go on from `snapshot` in epoch `epoch`, with `seats` (handle order) of
/// which `gone` nobody plays.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct ResyncOffer {
    pub(crate) epoch: u32,
    pub(crate) seats: Vec<PeerId>,
    pub(crate) gone: Vec<u32>,
    pub(crate) snapshot: Snapshot,
}

impl ResyncOffer {
    /// What the checks read.
    fn claim(&self) -> Offer<PeerId> {
        Offer {
            epoch: self.epoch,
            frame: self.snapshot.frame,
            seats: self.seats.clone(),
            gone: self.gone.iter().map(|h| *h as usize).collect(),
        }
    }
}

/// Our part in a resync: whether we wait for an offer after a vanish (and since when), which
/// gone player made it needed, and an offer taken but not yet carried out.
#[derive(Resource, Default, Debug)]
pub(crate) struct Resync {
    waiting: Waiting,
    over: Option<usize>,
    taken: Option<ResyncOffer>,
    /// An offer marking gone a player we still hear, and since when: we may see it go soon (a
    /// player that never synchronized a resynced session is seen gone by each player on its own
    /// clock), so it is judged again until [`OFFER_WAIT`](judge::OFFER_WAIT) has passed.
    deferred: Option<(PeerId, ResyncOffer, Instant)>,
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

/// Checks the offers that came (see `huddle_protocol::resync::judge`): one is taken, the rest are
/// counted and dropped.
pub(crate) fn hear_offers(
    mut offers: MessageReader<Incoming<ResyncOffer>>,
    huddle: Option<Res<HuddleSession>>,
    state: Res<RollbackMatch>,
    (log, settings): (Res<InputLog>, Res<RollbackSettings>),
    seating: Res<Seating>,
    mut resync: ResMut<Resync>,
    mut stats: ResMut<RollbackStats>,
) {
    let me = huddle.and_then(|h| h.id());
    let now = Instant::now();
    let again = resync
        .deferred
        .take()
        .filter(|(_, _, since)| now.saturating_duration_since(*since) < judge::OFFER_WAIT);
    let heard = offers
        .read()
        .map(|o| (o.from, o.message.clone(), now))
        .collect::<Vec<_>>();
    for (from, offer, since) in again.into_iter().chain(heard) {
        let window = Window::around(
            log.last_final(),
            settings.max_prediction,
            settings.input_delay,
        );
        let judge = match (state.phase, me) {
            (RollbackPhase::Playing, Some(me)) => Judge::Player { me, window },
            (RollbackPhase::Spectating, Some(me)) => Judge::Spectator {
                me,
                asked: seating.wish.is_some(),
            },
            _ => {
                stats.resyncs_refused += 1;
                continue;
            }
        };
        let claim = offer.claim();
        let checked = judge::judge(
            from,
            &claim,
            state.epoch,
            &state.players,
            &state.disconnected,
            &judge,
        );
        match checked {
            Ok(()) if resync.taken.is_none() => resync.taken = Some(offer),
            Err(judge::Refused::DropsLiving) if resync.deferred.is_none() => {
                resync.deferred = Some((from, offer, since));
            }
            Ok(()) => stats.resyncs_refused += 1,
            Err(e) => {
                warn!("huddle: a resync offer from {from} refused: {e}");
                stats.resyncs_refused += 1;
            }
        }
    }
}

/// The leader makes its offer when a resync is needed or players wait for a seat; anyone carries
/// out an offer taken; a player that waited in vain ends the match.
pub(crate) fn run<C: Config<Address = PeerId>>(world: &mut World) {
    if lead::<C>(world).is_err() {
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
/// it known) and offer it to everyone (ourselves too), with the seats: the gone ones, and the
/// requests seated. An error: a resync is needed and there is nothing to offer.
fn lead<C: Config<Address = PeerId>>(world: &mut World) -> Result<(), ()> {
    let now = Instant::now();
    let state = world.resource::<RollbackMatch>();
    let resync = world.resource::<Resync>();
    let vanished = resync.waiting.is_waiting();
    let seating = world.resource::<Seating>();
    let running = matches!(
        world.get_resource::<Session<C>>(),
        Some(Session::P2P(p2p)) if p2p.current_state() == SessionState::Running
    );
    let seat_now = !vanished && running && seating.due(now);
    if !(vanished || seat_now) || resync.taken.is_some() || state.phase != RollbackPhase::Playing {
        return Ok(());
    }
    let Some(huddle) = world.get_resource::<HuddleSession>() else {
        return Ok(());
    };
    if huddle.id().is_none() || seats::leader(state, huddle) != huddle.id() {
        return Ok(());
    }
    let requests = if seat_now {
        seating.requests.clone()
    } else {
        Vec::new()
    };
    let (seats, gone) = seats::seat(
        &state.players,
        &state.disconnected,
        &requests,
        huddle.peers(),
    );
    let epoch = state.epoch.saturating_add(1);
    let frame = world.resource::<NewestFinalSnapshot>().0;
    let captured = snapshot::capture(world, frame);
    let Some(snapshot) = captured.or_else(|| world.resource::<EpochStart>().of(frame)) else {
        if vanished {
            warn!("huddle: no snapshot of frame {frame} to resync from: the match is abandoned");
            return Err(());
        }
        // Seating waits for a frame bevy_ggrs still holds.
        return Ok(());
    };
    world.resource_mut::<Seating>().requests.clear();
    let offer = ResyncOffer {
        epoch,
        seats,
        gone: gone.iter().map(|h| *h as u32).collect(),
        snapshot,
    };
    world.write_message(Outgoing::to_all(offer.clone()));
    world.resource_mut::<Resync>().taken = Some(offer);
    Ok(())
}

/// Sets the world back to the offer's snapshot and goes on in a fresh session of its epoch, in
/// our seat (if the offer seats us) or watching.
fn carry_out<C: Config<Address = PeerId>>(
    world: &mut World,
    offer: &ResyncOffer,
) -> Result<(), String> {
    snapshot::restore(world, &offer.snapshot).map_err(|e| e.to_string())?;
    let frame = offer.snapshot.frame;
    let settings = *world.resource::<RollbackSettings>();
    let me = world.get_resource::<HuddleSession>().and_then(|h| h.id());
    let claim = offer.claim();
    let leader = claim.leader().ok_or("no leader")?;
    let gone = claim.gone;
    let mine = (0..offer.seats.len()).find(|h| Some(offer.seats[*h]) == me && !gone.contains(h));
    let mut state = world.resource::<RollbackMatch>().clone();
    state.players = offer.seats.clone();
    state.disconnected = gone.clone();
    state.local_handle = mine;
    state.epoch = offer.epoch;
    state.feeder = None;
    restore_read_inputs(world);
    if mine.is_some() {
        let kinds = ggrs_seats(me, leader, &state.players, &gone);
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
        state.phase = RollbackPhase::Playing;
        state.frame_offset = frame;
        if me == Some(leader) && !gone.is_empty() {
            world.insert_resource(Ghosts(gone));
            let mut read = Schedule::new(ReadInputs);
            read.add_systems(read_with_ghosts::<C>);
            replace_read_inputs(world, read);
        } else {
            world.remove_resource::<Ghosts>();
        }
    } else {
        // Watching: the feed goes on from the frame after the snapshot, as wide as the seats.
        world.remove_resource::<Ghosts>();
        let replay =
            super::start::spectator_session::<C>(state.players.len()).map_err(|e| e.to_string())?;
        world.insert_resource(Session::SyncTest(replay));
        super::spectate::set_aside_read_inputs::<C>(world);
        state.phase = RollbackPhase::Spectating;
        state.frame_offset = 0;
    }
    if let Some(players) = world.resource_mut::<Plan>().players.as_mut() {
        // Newcomers learn the seats as they are now.
        *players = state.players.clone();
    }
    world.insert_resource(state);
    world.insert_resource(Departing::default());
    world.insert_resource(NewestInputs::default());
    world.insert_resource(Resync::default());
    world.insert_resource(Synced::default());
    // The epoch's first state is the offer's: a resync before any later frame is final (a
    // seated player that never synchronizes) goes on from it.
    world.insert_resource(EpochStart::at(offer.epoch, offer.snapshot.clone()));
    world.insert_resource(NewestFinalSnapshot(frame));
    let mut seating = world.resource_mut::<Seating>();
    seating.asked = None;
    seating.last_resync = Some(Instant::now());
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
        players: offer.seats.clone(),
    });
    Ok(())
}

/// The players a resynced session synchronized with (GGRS's `Synchronized` events).
#[derive(Resource, Default, Debug)]
pub(crate) struct Synced(pub(crate) Vec<PeerId>);

/// How long a resynced session waits for every seated player to synchronize, at least (longer if
/// `disconnect_timeout` is): GGRS's handshake is five round trips, a lost packet retried after
/// 200 ms, and on a lossy link or a loaded machine it outlasts a 2 s `disconnect_timeout` now and
/// then (a player that was playing counted gone then ends the match for the one that counted it).
pub(crate) const SYNC_WAIT: Duration = Duration::from_secs(6);

/// A resynced session that has not synchronized with every seated player after [`SYNC_WAIT`]
/// (a newcomer that crashed, or a member that asked for a seat and never plays): those players
/// are gone, as if they vanished, and the leader resyncs without them (it
/// seats none of them again). Each player decides on its own clock; an offer that comes first is
/// judged again until it agrees (see [`Resync`]).
pub(crate) fn watch_sync<C: Config<Address = PeerId>>(
    session: Option<Res<Session<C>>>,
    settings: Res<RollbackSettings>,
    synced: Res<Synced>,
    mut state: ResMut<RollbackMatch>,
    mut seating: ResMut<Seating>,
    mut resync: ResMut<Resync>,
    mut events: MessageWriter<RollbackEvent>,
) {
    let now = Instant::now();
    let stuck = matches!(
        session.as_deref(),
        Some(Session::P2P(p2p)) if p2p.current_state() == SessionState::Synchronizing
    );
    let waited = seating.last_resync.is_some_and(|at| {
        now.saturating_duration_since(at) >= settings.disconnect_timeout.max(SYNC_WAIT)
    });
    if state.epoch == 0 || !stuck || !waited || resync.is_waiting() {
        return;
    }
    let silent: Vec<(usize, PeerId)> = state
        .remaining()
        .filter(|(h, p)| Some(*h) != state.local_handle && !synced.0.contains(p))
        .collect();
    for (handle, peer) in silent {
        warn!("huddle: {peer} never synchronized the resynced session: it is gone");
        state.disconnected.push(handle);
        seating.bar(peer);
        resync.needed(handle, now);
        events.write(RollbackEvent::Disconnected { peer, handle });
    }
}

/// GGRS players of a resynced session: ours local, a gone seat local to the leader and remote
/// (at the leader) to everyone else, the others remote.
fn ggrs_seats(
    me: Option<PeerId>,
    leader: PeerId,
    seats: &[PeerId],
    gone: &[usize],
) -> Vec<(usize, PlayerType<PeerId>)> {
    socket::ggrs_players(me, seats)
        .into_iter()
        .map(|(handle, kind)| match gone.contains(&handle) {
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
