//! Snapshots of a match's state, so that a spectator starts from the players' latest final frame
//! instead of replaying the match from its first frame.
//!
//! The game says which of its rollback components and resources a snapshot carries, one line
//! each ([`SnapshotAppExt`]; they need serde, and bevy_ggrs's copy or clone strategy as usual).
//! A player captures from bevy_ggrs's own snapshot of a final frame, once every other player
//! holds its inputs of that frame (as for the feed); entities are named by their rank in
//! bevy_ggrs's rollback order, so a spectator whose game spawned the same rollback entities (as
//! a game does when its match starts) maps them one to one. Without registrations, or if a
//! snapshot does not fit the spectator's world, the spectator replays from the first frame.

use super::record::NewestFinalSnapshot;
use super::socket::codec;
use super::{FeedRequest, InputLog, RollbackMatch, RollbackPhase, RollbackSettings, RollbackStats};
use crate::messages::{Incoming, Outgoing, PeerLeft};
use bevy::prelude::*;
use bevy_ggrs::{
    GgrsComponentSnapshots, GgrsResourceSnapshots, RollbackFrameCount, RollbackId, RollbackOrdered,
    Session,
};
use ggrs::Config;
use matchbox_socket::PeerId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A spectator asks a player for a snapshot (then for the feed from the frame after it).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct SnapshotRequest {
    /// Players in the match the spectator expects.
    pub(crate) players: u32,
}

/// A player's answer: a snapshot, or `None` if it has none to give (the spectator replays).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct SnapshotReply {
    /// The match's epoch the snapshot belongs to (the feed that follows is of that epoch).
    pub(crate) epoch: u32,
    pub(crate) snapshot: Option<Snapshot>,
}

/// An entity's rank and its encoded value of one type.
type Ranked = (u32, Vec<u8>);
/// One type's encoded values, by rollback id (as captured, before ranking).
type Captured = Vec<(RollbackId, Vec<u8>)>;

/// The state of one final frame: for each registered type (by name) the encoded values, per
/// entity rank for components.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// The frame (bevy_ggrs numbering) whose state this is.
    pub(crate) frame: i32,
    /// Rollback entities named (ranks `0..entities`).
    pub(crate) entities: u32,
    pub(crate) components: Vec<(String, Vec<Ranked>)>,
    pub(crate) resources: Vec<(String, Option<Vec<u8>>)>,
}

impl Snapshot {
    /// Its size on the wire, bytes.
    pub(crate) fn encoded_len(&self) -> usize {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_or(0, |b| b.len())
    }
}

/// Why a snapshot did not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RestoreError {
    /// It names more rollback entities than our game spawned.
    #[error("the snapshot has {theirs} rollback entities, we have {ours}")]
    Entities { theirs: u32, ours: usize },
    /// A value that does not decode as its type, or a type we do not register.
    #[error("the snapshot's {0} does not decode")]
    Value(String),
}

/// Writes one type's values onto the entities of their ranks (removes it from the others).
type RestoreComponent = fn(&mut World, &[Entity], &[Ranked]) -> Result<(), ()>;

/// How one registered component type goes into and out of a snapshot.
struct ComponentCodec {
    name: &'static str,
    capture: fn(&World, i32) -> Option<Captured>,
    /// Whether every value decodes (checked before anything is written).
    check: fn(&[Ranked]) -> bool,
    restore: RestoreComponent,
}

/// How one registered resource type goes into and out of a snapshot.
struct ResourceCodec {
    name: &'static str,
    capture: fn(&World, i32) -> Option<Option<Vec<u8>>>,
    check: fn(Option<&[u8]>) -> bool,
    restore: fn(&mut World, Option<&[u8]>) -> Result<(), ()>,
}

/// What snapshots carry: the game's registrations.
#[derive(Resource, Default)]
pub(crate) struct SnapshotRegistry {
    components: Vec<ComponentCodec>,
    resources: Vec<ResourceCodec>,
}

impl SnapshotRegistry {
    /// Whether the game registered anything (else there are no snapshots).
    pub(crate) fn is_empty(&self) -> bool {
        self.components.is_empty() && self.resources.is_empty()
    }
}

/// Registers what a match's snapshots carry (feature `ggrs`): one line per rollback component or
/// resource, next to its bevy_ggrs registration (copy or clone strategy).
pub trait SnapshotAppExt {
    /// Snapshots carry component `C` of every rollback entity.
    fn snapshot_component<C>(&mut self) -> &mut Self
    where
        C: Component + Clone + Serialize + DeserializeOwned;

    /// Snapshots carry resource `R` (or its absence).
    fn snapshot_resource<R>(&mut self) -> &mut Self
    where
        R: Resource + Clone + Serialize + DeserializeOwned;
}

impl SnapshotAppExt for App {
    fn snapshot_component<C>(&mut self) -> &mut Self
    where
        C: Component + Clone + Serialize + DeserializeOwned,
    {
        let mut registry = self
            .world_mut()
            .get_resource_or_insert_with(SnapshotRegistry::default);
        registry.components.push(ComponentCodec {
            name: std::any::type_name::<C>(),
            capture: capture_component::<C>,
            check: |values| values.iter().all(|(_, b)| decode::<C>(b).is_ok()),
            restore: restore_component::<C>,
        });
        self
    }

    fn snapshot_resource<R>(&mut self) -> &mut Self
    where
        R: Resource + Clone + Serialize + DeserializeOwned,
    {
        let mut registry = self
            .world_mut()
            .get_resource_or_insert_with(SnapshotRegistry::default);
        registry.resources.push(ResourceCodec {
            name: std::any::type_name::<R>(),
            capture: capture_resource::<R>,
            check: |bytes| bytes.is_none_or(|b| decode::<R>(b).is_ok()),
            restore: restore_resource::<R>,
        });
        self
    }
}

fn encode<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    bincode::serde::encode_to_vec(value, codec()).ok()
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ()> {
    match bincode::serde::decode_from_slice::<T, _>(bytes, codec()) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        _ => Err(()),
    }
}

fn capture_component<C: Component + Clone + Serialize>(
    world: &World,
    frame: i32,
) -> Option<Captured> {
    let stored = world
        .get_resource::<GgrsComponentSnapshots<C>>()?
        .peek(frame)?;
    stored
        .iter()
        .map(|(id, value)| Some((*id, encode(value)?)))
        .collect()
}

fn restore_component<C: Component + Clone + DeserializeOwned>(
    world: &mut World,
    entities: &[Entity],
    values: &[Ranked],
) -> Result<(), ()> {
    let mut given: BTreeMap<usize, C> = BTreeMap::new();
    for (rank, bytes) in values {
        let rank = usize::try_from(*rank).map_err(|_| ())?;
        if rank >= entities.len() {
            return Err(());
        }
        given.insert(rank, decode::<C>(bytes)?);
    }
    for (rank, entity) in entities.iter().enumerate() {
        let Ok(mut e) = world.get_entity_mut(*entity) else {
            return Err(());
        };
        match given.remove(&rank) {
            Some(value) => {
                e.insert(value);
            }
            None => {
                e.remove::<C>();
            }
        }
    }
    Ok(())
}

fn capture_resource<R: Resource + Clone + Serialize>(
    world: &World,
    frame: i32,
) -> Option<Option<Vec<u8>>> {
    let stored = world
        .get_resource::<GgrsResourceSnapshots<R>>()?
        .peek(frame)?;
    match stored {
        Some(value) => Some(Some(encode(value)?)),
        None => Some(None),
    }
}

fn restore_resource<R: Resource + Clone + DeserializeOwned>(
    world: &mut World,
    bytes: Option<&[u8]>,
) -> Result<(), ()> {
    match bytes {
        Some(bytes) => {
            let value = decode::<R>(bytes)?;
            world.insert_resource(value);
        }
        None => {
            world.remove_resource::<R>();
        }
    }
    Ok(())
}

/// The state of `frame` from bevy_ggrs's snapshots, if every registered type has one for it.
pub(crate) fn capture(world: &World, frame: i32) -> Option<Snapshot> {
    let registry = world.get_resource::<SnapshotRegistry>()?;
    let ordered = world.get_resource::<RollbackOrdered>()?;
    let mut components = Vec::with_capacity(registry.components.len());
    for codec in &registry.components {
        components.push((codec.name, (codec.capture)(world, frame)?));
    }
    // Entities by rank in the rollback order, among those the snapshot names.
    let mut orders: Vec<u64> = components
        .iter()
        .flat_map(|(_, values)| values.iter().map(|(id, _)| ordered.order(*id)))
        .collect();
    orders.sort_unstable();
    orders.dedup();
    let rank = |id: &RollbackId| {
        let order = ordered.order(*id);
        orders
            .binary_search(&order)
            .ok()
            .and_then(|r| u32::try_from(r).ok())
    };
    let components = components
        .into_iter()
        .map(|(name, values)| {
            let values = values
                .into_iter()
                .map(|(id, bytes)| Some((rank(&id)?, bytes)))
                .collect::<Option<Vec<_>>>()?;
            Some((name.to_owned(), values))
        })
        .collect::<Option<Vec<_>>>()?;
    let mut resources = Vec::with_capacity(registry.resources.len());
    for codec in &registry.resources {
        resources.push((codec.name.to_owned(), (codec.capture)(world, frame)?));
    }
    Some(Snapshot {
        frame,
        entities: u32::try_from(orders.len()).ok()?,
        components,
        resources,
    })
}

/// Puts `snapshot` into our world: every registered type, onto our rollback entities by rank,
/// and the frame count. Nothing is changed if it does not fit.
pub(crate) fn restore(world: &mut World, snapshot: &Snapshot) -> Result<(), RestoreError> {
    let Some(registry) = world.remove_resource::<SnapshotRegistry>() else {
        return Err(RestoreError::Value("registry".to_owned()));
    };
    let result = restore_with(world, &registry, snapshot);
    world.insert_resource(registry);
    result
}

fn restore_with(
    world: &mut World,
    registry: &SnapshotRegistry,
    snapshot: &Snapshot,
) -> Result<(), RestoreError> {
    let entities = ranked_entities(world);
    let ours = entities.len();
    let theirs = snapshot.entities;
    if usize::try_from(theirs).map_or(true, |t| t > ours) {
        return Err(RestoreError::Entities { theirs, ours });
    }
    let named = &entities[..theirs as usize];
    // Everything is checked (every value decodes) before anything is written.
    for (name, values) in &snapshot.components {
        let codec = registry.components.iter().find(|c| c.name == name);
        let fits = codec.is_some_and(|c| (c.check)(values))
            && values.iter().all(|(rank, _)| *rank < theirs);
        if !fits {
            return Err(RestoreError::Value(name.clone()));
        }
    }
    for (name, bytes) in &snapshot.resources {
        let codec = registry.resources.iter().find(|c| c.name == name);
        if !codec.is_some_and(|c| (c.check)(bytes.as_deref())) {
            return Err(RestoreError::Value(name.clone()));
        }
    }
    for codec in &registry.components {
        let values = snapshot
            .components
            .iter()
            .find(|(n, _)| n == codec.name)
            .map_or(&[][..], |(_, v)| v.as_slice());
        (codec.restore)(world, named, values)
            .map_err(|()| RestoreError::Value(codec.name.to_owned()))?;
    }
    for codec in &registry.resources {
        if let Some((_, bytes)) = snapshot.resources.iter().find(|(n, _)| n == codec.name) {
            (codec.restore)(world, bytes.as_deref())
                .map_err(|()| RestoreError::Value(codec.name.to_owned()))?;
        }
    }
    world.insert_resource(RollbackFrameCount(snapshot.frame));
    Ok(())
}

/// Our rollback entities, in bevy_ggrs's rollback order.
fn ranked_entities(world: &mut World) -> Vec<Entity> {
    let mut query = world.query::<(Entity, &RollbackId)>();
    let Some(ordered) = world.get_resource::<RollbackOrdered>() else {
        return Vec::new();
    };
    let ordered = ordered.clone();
    let mut entities: Vec<(u64, Entity)> = query
        .iter(world)
        .map(|(e, id)| (ordered.order(*id), e))
        .collect();
    entities.sort_unstable();
    entities.into_iter().map(|(_, e)| e).collect()
}

/// Our snapshot of the epoch's first frame (the match's start, or a resync's): bevy_ggrs keeps the
/// prediction window only, and a resync needed before any later frame was final (a player gone
/// before its first inputs came) starts from here.
#[derive(Resource, Default, Debug)]
pub(crate) struct EpochStart {
    epoch: Option<u32>,
    snapshot: Option<Snapshot>,
}

impl EpochStart {
    /// The snapshot `snapshot` starts epoch `epoch` (a resync's offer).
    pub(crate) fn at(epoch: u32, snapshot: Snapshot) -> Self {
        Self {
            epoch: Some(epoch),
            snapshot: Some(snapshot),
        }
    }

    /// The snapshot of `frame`, if it is the epoch's first.
    pub(crate) fn of(&self, frame: i32) -> Option<Snapshot> {
        self.snapshot.clone().filter(|s| s.frame == frame)
    }
}

/// `SaveWorld`, after bevy_ggrs saved: the first save of an epoch is kept ([`EpochStart`]).
pub(crate) fn keep_epoch_start(world: &mut World) {
    let state = world.resource::<RollbackMatch>();
    let (epoch, first) = (state.epoch, state.frame_offset);
    let kept = world.resource::<EpochStart>().epoch == Some(epoch);
    let at_first = world
        .get_resource::<RollbackFrameCount>()
        .is_some_and(|f| f.0 == first);
    if kept || !at_first {
        return;
    }
    let snapshot = capture(world, first);
    *world.resource_mut::<EpochStart>() = EpochStart {
        epoch: Some(epoch),
        snapshot,
    };
}

/// How long a spectator waits for the snapshot it asked for, then takes the feed from the first
/// frame instead (or asks the next player, if it has no link to this one). A player answers once
/// every other player holds its inputs of the snapshot's frame: on a loaded machine that took
/// more than 2 s now and then.
pub(crate) const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(6);

/// A spectator's wait for a snapshot: whom it asked, and the answer once it came.
#[derive(Resource, Default, Debug)]
pub(crate) struct SnapshotWait {
    pub(crate) asked: Option<PeerId>,
    /// When we asked.
    pub(crate) since: Option<web_time::Instant>,
    /// The answer: its epoch and snapshot.
    pub(crate) reply: Option<(u32, Option<Snapshot>)>,
    /// Players that did not answer and that we have no link to, passed over for the next one
    /// (at most one per seat).
    pub(crate) passed_over: Vec<PeerId>,
    /// A request we owe a player, sent once our link to it is up (`spectate::follow_feed`): a
    /// message to a peer we have no link to yet is refused, and the request would be lost.
    pub(crate) owed: Option<Owed>,
}

/// A spectator's request not sent yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owed {
    /// Ask this player for a snapshot.
    Snapshot(PeerId),
    /// Ask this player for the feed after our newest final frame.
    Feed(PeerId),
}

impl SnapshotWait {
    /// Passes `player` over (it did not answer and we have no link to it, or its snapshot does
    /// not fit) for the next remaining player not passed over yet, whose snapshot
    /// `spectate::follow_feed` asks for; `false` if there is none (at most one per seat).
    pub(crate) fn pass_over(&mut self, player: PeerId, state: &mut RollbackMatch) -> bool {
        let another = state
            .remaining()
            .any(|(_, p)| p != player && !self.passed_over.contains(&p));
        if !another || self.passed_over.len() >= state.players.len() {
            return false;
        }
        self.passed_over.push(player);
        self.asked = Some(player);
        self.since = None;
        self.owed = None;
        state.feeder = None;
        true
    }
}

/// A player's snapshot service: who asked (spectators, at most [`MAX_ASKING`]), the snapshot
/// captured for them, and how many updates we have tried to capture one.
#[derive(Resource, Default, Debug)]
pub(crate) struct SnapshotAsks {
    asking: Vec<(PeerId, u32)>,
    pub(crate) captured: Option<Snapshot>,
    tries: u32,
}

/// Spectators waiting for a snapshot from one player at most (more are told "none").
const MAX_ASKING: usize = 64;
/// Updates a player tries to capture a snapshot before it answers "none" (bevy_ggrs keeps the
/// frames from the confirmed one on; a final frame is nearly always among them).
const CAPTURE_TRIES: u32 = 120;

/// A spectator asks `feeder` for a snapshot (instead of the feed from the first frame), as soon
/// as its link to it is up (`spectate::follow_feed` sends it).
pub(crate) fn ask(wait: &mut SnapshotWait, feeder: PeerId) {
    wait.asked = Some(feeder);
    wait.since = Some(web_time::Instant::now());
    wait.reply = None;
    wait.owed = Some(Owed::Snapshot(feeder));
}

/// A spectator takes its feeder's answer (nothing from anyone else, nothing unasked).
pub(crate) fn hear_replies(
    mut replies: MessageReader<Incoming<SnapshotReply>>,
    mut wait: ResMut<SnapshotWait>,
    mut stats: ResMut<RollbackStats>,
) {
    for reply in replies.read() {
        if wait.asked == Some(reply.from) && wait.reply.is_none() {
            wait.reply = Some((reply.message.epoch, reply.message.snapshot.clone()));
        } else {
            stats.snapshots_refused += 1;
        }
    }
}

/// A spectator starts from the answer: the snapshot's state and the feed from the frame after
/// it, or (no snapshot) the feed from the first frame. A snapshot that does not fit (the player's
/// game differs from ours, or it lies) passes that player over for the next one's; when no
/// player is left to ask, the feed from the first frame.
pub(crate) fn start_from_reply(world: &mut World) {
    let Some(feeder) = world.resource::<SnapshotWait>().asked else {
        return;
    };
    let Some((epoch, reply)) = world.resource_mut::<SnapshotWait>().reply.take() else {
        return;
    };
    world.resource_mut::<SnapshotWait>().asked = None;
    world.resource_mut::<SnapshotWait>().since = None;
    let players = world.resource::<RollbackMatch>().players.len();
    // The match's first frame on (the log starts after `RollbackSettings::first_frame`).
    let mut from = world.resource::<InputLog>().last_final().saturating_add(1);
    if let Some(snapshot) = reply {
        let taken = (0..=huddle_protocol::resync::MAX_FRAME).contains(&snapshot.frame)
            && world.resource::<InputLog>().holds_none();
        match taken.then(|| restore(world, &snapshot)) {
            Some(Ok(())) => {
                world.resource_mut::<InputLog>().start_after(snapshot.frame);
                world.resource_mut::<RollbackMatch>().epoch = epoch;
                let mut stats = world.resource_mut::<RollbackStats>();
                stats.snapshot_frame = Some(snapshot.frame);
                stats.snapshot_bytes = snapshot.encoded_len();
                from = snapshot.frame.saturating_add(1);
            }
            Some(Err(e)) => {
                world.resource_mut::<RollbackStats>().snapshots_refused += 1;
                let passed = world.resource_scope(|world, mut wait: Mut<SnapshotWait>| {
                    wait.pass_over(feeder, &mut world.resource_mut::<RollbackMatch>())
                });
                if passed {
                    warn!("huddle: {feeder}'s snapshot does not fit ({e}); asking the next player");
                    return;
                }
                warn!("huddle: the snapshot does not fit ({e}); replaying from the first frame");
            }
            None => world.resource_mut::<RollbackStats>().snapshots_refused += 1,
        }
    }
    world.write_message(Outgoing::to_peer(
        feeder,
        FeedRequest {
            players: u32::try_from(players).unwrap_or(u32::MAX),
            from,
        },
    ));
}

/// A player takes spectators' requests for a snapshot (not from players of its match).
pub(crate) fn hear_requests(
    mut requests: MessageReader<Incoming<SnapshotRequest>>,
    mut asks: ResMut<SnapshotAsks>,
    state: Res<RollbackMatch>,
    mut left: MessageReader<PeerLeft>,
) {
    for gone in left.read() {
        asks.asking.retain(|(p, _)| *p != gone.peer);
    }
    for request in requests.read() {
        let known = asks.asking.iter().any(|(p, _)| *p == request.from);
        if state.players.contains(&request.from) || known {
            continue;
        }
        if asks.asking.len() < MAX_ASKING {
            asks.asking.push((request.from, request.message.players));
        }
    }
}

/// A player answers the spectators that asked: once a snapshot of a final frame is captured and
/// every other player holds our inputs of that frame (as the feed waits for), each gets it; with
/// nothing registered, or no capture after [`CAPTURE_TRIES`] updates, "none".
pub(crate) fn serve_requests<C: Config<Address = PeerId>>(world: &mut World) {
    if world.resource::<SnapshotAsks>().asking.is_empty() {
        return;
    }
    let state = world.resource::<RollbackMatch>();
    let epoch = state.epoch;
    let (RollbackPhase::Playing, Some(Session::P2P(p2p))) =
        (state.phase, world.get_resource::<Session<C>>())
    else {
        return;
    };
    let players = state.players.len();
    let delay = world.resource::<RollbackSettings>().input_delay;
    let upto = super::spectate::held_by_all(p2p, state, delay);
    let registered = world
        .get_resource::<SnapshotRegistry>()
        .is_some_and(|r| !r.is_empty());
    // Not the log's newest final frame: GGRS's confirmed frame can be the oldest of the
    // prediction window, whose snapshot bevy_ggrs no longer holds (with the default window of 8
    // every capture failed and spectators replayed from the first frame).
    let frame = world.resource::<NewestFinalSnapshot>().0;
    let mut captured = world.resource::<SnapshotAsks>().captured.clone();
    if captured.is_none() && registered && frame >= 1 {
        captured = capture(world, frame);
    }
    let mut service = world.resource_mut::<SnapshotAsks>();
    service.captured = captured;
    service.tries = service.tries.saturating_add(1);
    let answer = match &service.captured {
        Some(snapshot) if snapshot.frame <= upto => Some(Some(snapshot.clone())),
        Some(_) => None,
        None if !registered || service.tries >= CAPTURE_TRIES => Some(None),
        None => None,
    };
    let Some(snapshot) = answer else {
        return;
    };
    let asking = std::mem::take(&mut service.asking);
    service.captured = None;
    service.tries = 0;
    for (peer, expects) in asking {
        // A spectator that expects another match gets nothing to start from.
        let fits = usize::try_from(expects).is_ok_and(|e| e == players);
        let snapshot = snapshot.clone().filter(|_| fits);
        world.write_message(Outgoing::to_peer(peer, SnapshotReply { epoch, snapshot }));
    }
}
