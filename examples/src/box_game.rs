//! The box game: every player pushes a box around an arena. Inputs go through GGRS rollback
//! (bevy_ggrs), and the simulation is integer math, so every peer computes the same world.

use crate::lobby::Pilot;
use bevy::prelude::*;
use bevy_huddle::bevy_ggrs::prelude::*;
use bevy_huddle::bevy_ggrs::{LocalInputs, LocalPlayers, RollbackFrameCount};
use bevy_huddle::prelude::*;
use bevy_huddle::{
    HuddleConfig, HuddlePlugin, HuddleRollbackPlugin, RollbackEvent, RollbackSettings,
    RollbackStarted,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// The GGRS config: [`BoxInput`] between [`PeerId`]s.
pub type BoxConfig = GgrsConfig<BoxInput, PeerId>;

/// A player's input in one frame: bit 0 left, 1 right, 2 up, 3 down.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BoxInput(pub u8);

impl BoxInput {
    /// Left.
    pub const LEFT: u8 = 1;
    /// Right.
    pub const RIGHT: u8 = 2;
    /// Up.
    pub const UP: u8 = 4;
    /// Down.
    pub const DOWN: u8 = 8;
}

/// A player's box. Positions and speeds in 1/100 px, so the simulation is exact; every field
/// has the same size on every platform (no `usize`), so hashes agree between wasm32 and native.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BoxBody {
    /// The player's handle.
    pub handle: u32,
    /// Position.
    pub x: i32,
    /// Position.
    pub y: i32,
    /// Speed.
    pub vx: i32,
    /// Speed.
    pub vy: i32,
}

/// Half the arena's side, in 1/100 px.
pub const ARENA: i32 = 30_000;
const PUSH: i32 = 60;
const MAX_SPEED: i32 = 800;

/// The world checksum of each simulated frame (a frame is final once confirmed).
#[derive(Resource, Debug, Default)]
pub struct FrameChecksums(pub BTreeMap<i32, u64>);

/// How many frames of checksums are kept.
const KEEP: usize = 1200;

/// The game's systems in `GgrsSchedule`.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct BoxSystems;

/// The game on top of huddle's rollback plugin (add `HuddlePlugin` first).
pub struct BoxGame {
    /// Who steers our box.
    pub pilot: Pilot,
    /// The match settings.
    pub rollback: RollbackSettings,
    /// Whether the boxes go into snapshots (a late spectator starts from the players' newest
    /// final frame; resyncs): `false` plays the game as one without snapshot registrations
    /// (spectators replay from the first frame; the benchmarks' anchor).
    pub snapshots: bool,
}

impl BoxGame {
    /// A match of `players` with `pilot` at our keys, other settings at their defaults.
    pub fn new(pilot: Pilot, players: usize) -> Self {
        Self {
            pilot,
            rollback: RollbackSettings {
                players,
                ..RollbackSettings::default()
            },
            snapshots: true,
        }
    }
}

impl Plugin for BoxGame {
    fn build(&self, app: &mut App) {
        app.add_plugins(HuddleRollbackPlugin::<BoxConfig>::new(self.rollback))
            .rollback_component_with_copy::<BoxBody>()
            .checksum_component_with_hash::<BoxBody>()
            .insert_resource(self.pilot)
            .init_resource::<FrameChecksums>()
            .init_resource::<Steering>()
            .add_systems(Update, spawn_boxes)
            .add_systems(ReadInputs, read_inputs)
            .add_systems(
                GgrsSchedule,
                (move_boxes, record_checksum).chain().in_set(BoxSystems),
            );
        if self.snapshots {
            // A late spectator starts from the players' latest final frame.
            app.snapshot_component::<BoxBody>();
        }
    }
}

/// Where the boxes start: integer points around the center (no floating point, so every platform
/// agrees to the bit).
const STARTS: [(i32, i32); 8] = [
    (-1, 0),
    (1, 0),
    (0, 1),
    (0, -1),
    (-1, 1),
    (1, -1),
    (1, 1),
    (-1, -1),
];

/// The boxes, one per player, where the match starts them.
pub fn start_positions(players: usize) -> Vec<BoxBody> {
    (0..players)
        .map(|handle| {
            let (sx, sy) = STARTS[handle % STARTS.len()];
            let ring = 2 + (handle / STARTS.len()) as i32;
            BoxBody {
                handle: handle as u32,
                x: sx * ARENA / ring,
                y: sy * ARENA / ring,
                vx: 0,
                vy: 0,
            }
        })
        .collect()
}

/// A match started: a box per player (a new match replaces the last one's boxes). A player
/// dropped in: a box for its new seat, at its start position.
fn spawn_boxes(
    mut commands: Commands,
    mut started: MessageReader<RollbackStarted>,
    mut events: MessageReader<RollbackEvent>,
    old: Query<Entity, With<BoxBody>>,
    mut sums: ResMut<FrameChecksums>,
) {
    let mut boxes = old.iter().count();
    for start in started.read() {
        old.iter().for_each(|e| commands.entity(e).despawn());
        sums.0.clear();
        boxes = start.players.len();
        for body in start_positions(boxes) {
            commands.spawn((body, Rollback));
        }
    }
    for event in events.read() {
        if let RollbackEvent::Resynced { players, .. } = event {
            for body in start_positions(players.len()).into_iter().skip(boxes) {
                commands.spawn((body, Rollback));
            }
            boxes = boxes.max(players.len());
        }
    }
}

/// A bot's input: a walk that depends only on the frame and the handle.
pub fn bot_input(frame: i32, handle: usize) -> BoxInput {
    let phase = (frame / 45) as usize + handle * 3;
    BoxInput(match phase % 6 {
        0 => BoxInput::LEFT,
        1 => BoxInput::UP,
        2 => BoxInput::RIGHT | BoxInput::UP,
        3 => BoxInput::DOWN,
        4 => 0,
        _ => BoxInput::RIGHT,
    })
}

/// What the keyboard says this frame (the window fills it; `Pilot::Player` plays it).
#[derive(Resource, Debug, Default, Clone, Copy)]
pub struct Steering(pub BoxInput);

fn read_inputs(
    mut commands: Commands,
    local: Res<LocalPlayers>,
    frame: Res<RollbackFrameCount>,
    pilot: Res<Pilot>,
    steering: Res<Steering>,
) {
    let inputs = local
        .0
        .iter()
        .map(|&handle| {
            let input = match *pilot {
                Pilot::Player => steering.0,
                Pilot::Bot => bot_input(frame.0, handle),
            };
            (handle, input)
        })
        .collect();
    commands.insert_resource(LocalInputs::<BoxConfig>(inputs));
}

/// One step of a box under an input (pure: the rollback-safe core of the game).
pub fn step(body: &mut BoxBody, input: BoxInput) {
    let b = input.0;
    let ax = i32::from(b & BoxInput::RIGHT != 0) - i32::from(b & BoxInput::LEFT != 0);
    let ay = i32::from(b & BoxInput::UP != 0) - i32::from(b & BoxInput::DOWN != 0);
    body.vx = ((body.vx + ax * PUSH) * 15 / 16).clamp(-MAX_SPEED, MAX_SPEED);
    body.vy = ((body.vy + ay * PUSH) * 15 / 16).clamp(-MAX_SPEED, MAX_SPEED);
    body.x += body.vx;
    body.y += body.vy;
    if body.x.abs() > ARENA {
        body.x = body.x.clamp(-ARENA, ARENA);
        body.vx = -body.vx;
    }
    if body.y.abs() > ARENA {
        body.y = body.y.clamp(-ARENA, ARENA);
        body.vy = -body.vy;
    }
}

fn move_boxes(inputs: Res<PlayerInputs<BoxConfig>>, mut boxes: Query<&mut BoxBody>) {
    for mut body in &mut boxes {
        let input = inputs
            .get(body.handle as usize)
            .map(|(i, _)| *i)
            .unwrap_or_default();
        step(&mut body, input);
    }
}

/// The checksum of a world: every box, in handle order.
pub fn checksum<'a>(bodies: impl IntoIterator<Item = &'a BoxBody>) -> u64 {
    let mut sorted: Vec<&BoxBody> = bodies.into_iter().collect();
    sorted.sort_by_key(|b| b.handle);
    // SipHash with fixed keys, fed only fixed-size fields (a slice's hash would add its length
    // as a `usize`, which is 4 bytes on wasm32): the same on every peer and platform.
    let mut h = std::hash::DefaultHasher::new();
    for body in sorted {
        body.hash(&mut h);
    }
    h.finish()
}

fn record_checksum(
    frame: Res<RollbackFrameCount>,
    boxes: Query<&BoxBody>,
    mut sums: ResMut<FrameChecksums>,
) {
    sums.0.insert(frame.0, checksum(boxes));
    while sums.0.len() > KEEP {
        sums.0.pop_first();
    }
}

/// The world checksum of `frame` once it is final (confirmed, and simulated with the confirmed
/// inputs), else `None`.
pub fn final_checksum(world: &World, frame: i32) -> Option<u64> {
    let last_final = world
        .get_resource::<bevy_huddle::rollback::InputLog>()?
        .last_final();
    let phase = world.get_resource::<bevy_huddle::RollbackMatch>()?.phase;
    // A spectator never rolls back: every frame it simulated is final.
    if phase != bevy_huddle::RollbackPhase::Spectating && frame > last_final {
        return None;
    }
    world
        .get_resource::<FrameChecksums>()?
        .0
        .get(&frame)
        .copied()
}

/// A headless app that runs the game's systems in a GGRS SyncTest session (every frame is
/// rolled back `check_distance` frames and resimulated; checksums must match). Mismatches are
/// counted in [`SyncTestFailures`].
pub fn synctest_app(
    players: usize,
    check_distance: usize,
) -> Result<App, bevy_huddle::ggrs::GgrsError> {
    let session = SessionBuilder::<BoxConfig>::new()
        .with_num_players(players)
        .and_then(|b| {
            b.with_check_distance(check_distance)
                .with_max_prediction_window(check_distance + 1)
                .start_synctest_session()
        })?;
    let mut app = App::new();
    app.add_plugins(MinimalPlugins)
        .add_plugins(HuddlePlugin::new(HuddleConfig::default()))
        .add_plugins(BoxGame::new(Pilot::Bot, players))
        .init_resource::<SyncTestFailures>()
        .insert_resource(Session::SyncTest(session));
    app.world_mut()
        .add_observer(|_: On<SyncTestMismatch>, mut f: ResMut<SyncTestFailures>| f.0 += 1);
    let players = (0..players)
        .map(|i| PeerId(uuid::Uuid::from_u128(i as u128 + 1)))
        .collect();
    app.world_mut().write_message(RollbackStarted {
        players,
        local_handle: None,
    });
    Ok(app)
}

/// SyncTest mismatches seen.
#[derive(Resource, Debug, Default)]
pub struct SyncTestFailures(pub u32);
