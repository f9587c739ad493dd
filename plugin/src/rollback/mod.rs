//! Rollback matches from the lobby (feature `ggrs`): GGRS 0.13 sessions run by bevy_ggrs 0.22.
//!
//! Add [`HuddleRollbackPlugin`] next to [`HuddlePlugin`](crate::HuddlePlugin). When the host's
//! lobby holds [`RollbackSettings::players`] linked peers (or the host's game writes
//! [`StartRollback`]), the host names the players (the first ones in join order) and every peer
//! starts the same GGRS P2P session from that list: handle `i` is the `i`-th player. GGRS
//! traffic runs on the plugin's own unreliable GGRS channel through [`HuddleGgrsSocket`], which
//! drops and counts what is not a GGRS message. Game logic goes in bevy_ggrs's `GgrsSchedule`,
//! inputs in its `ReadInputs`, exactly as with bevy_ggrs alone.
//!
//! - GGRS events arrive as [`RollbackEvent`]s with the peer's id; network stats are in
//!   [`RollbackStats`] and in Bevy diagnostics ([`RollbackDiagnostics`]).
//! - A player that leaves the lobby is announced at once ([`RollbackEvent::Disconnected`]) and
//!   disconnected from the GGRS session a frame or two later, when that is safe (no GGRS timeout
//!   to wait for). Known limit of ggrs 0.13: in matches of three or more players, when the
//!   others last heard the gone player at different frames, GGRS re-disconnects it at the
//!   earlier frame after having confirmed past it, and panics (gschup/ggrs#119 fixes one case
//!   upstream, unreleased). huddle narrows this (it holds the other players' GGRS packets back
//!   while it disconnects the gone player, and keeps the whole prediction window of snapshots),
//!   but cannot rule it out; 1v1 matches are not affected.
//! - Peers that join past the players become spectators: a player (the first one still in the
//!   match) sends them every frame's confirmed inputs from the first frame on (GGRS only takes spectators when a session starts,
//!   so huddle feeds late ones itself), and they replay the match, catching up at up to 4x speed.
//!   A spectator sees every input as `InputStatus::Confirmed` (a gone player's as the default
//!   input); its `ReadInputs` schedule is set aside while it watches.

mod events;
mod log;
pub(crate) mod socket;
mod stats;
mod systems;

pub use events::RollbackEvent;
pub use log::InputLog;
pub use socket::HuddleGgrsSocket;
pub use stats::{RollbackDiagnostics, RollbackStats};

use crate::registry::{AddHuddleMessage, Channel};
use crate::schedule::HuddleSet;
use bevy::prelude::*;
use bevy_ggrs::{
    GgrsPlugin, GgrsSchedule, RollbackFrameRate, RunGgrsSystems, SaveWorld, SaveWorldSystems,
};
use ggrs::Config;
use matchbox_socket::PeerId;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// Parameters of the rollback sessions (in [`HuddleConfig::rollback`](crate::HuddleConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackSettings {
    /// Players in a match: the first this many peers in join order play, later ones watch.
    pub players: usize,
    /// Start the match as soon as `players` peers are linked (else wait for [`StartRollback`]).
    pub auto_start: bool,
    /// Let peers past the players watch as spectators.
    pub spectators: bool,
    /// Frames of input delay.
    pub input_delay: usize,
    /// How many frames a peer may run ahead of confirmed inputs.
    pub max_prediction: usize,
    /// Compare checksums every this many frames (`None`: no desync detection).
    pub desync_interval: Option<u32>,
    /// Frames per second the game runs at.
    pub fps: usize,
}

impl Default for RollbackSettings {
    fn default() -> Self {
        Self {
            players: 2,
            auto_start: true,
            spectators: true,
            input_delay: 2,
            max_prediction: 8,
            desync_interval: Some(10),
            fps: 60,
        }
    }
}

/// Starts the match now with the first `players` peers in join order. Only the host's counts: it
/// tells the others who plays.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartRollback {
    /// Players in the match.
    pub players: usize,
}

/// A match started: spawn the players' rollback entities now.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct RollbackStarted {
    /// The players, handle `i` at index `i`.
    pub players: Vec<PeerId>,
    /// Our handle (`None`: we watch).
    pub local_handle: Option<usize>,
}

/// Where we are in the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RollbackPhase {
    /// No match yet.
    #[default]
    Waiting,
    /// Playing in a GGRS P2P session.
    Playing,
    /// Watching: replaying the inputs a player sends.
    Spectating,
    /// The match ended for us (we left the lobby; joining a lobby again waits for a new match).
    Ended,
}

/// The match as this peer sees it.
#[derive(Resource, Debug, Clone, Default, PartialEq, Eq)]
pub struct RollbackMatch {
    /// The phase.
    pub phase: RollbackPhase,
    /// The players, handle `i` at index `i`.
    pub players: Vec<PeerId>,
    /// Our handle, if we play.
    pub local_handle: Option<usize>,
    /// Handles of players that are gone.
    pub disconnected: Vec<usize>,
    /// The player that feeds us inputs, if we watch.
    pub feeder: Option<PeerId>,
}

impl RollbackMatch {
    /// The handle of `peer`, if it plays.
    pub fn handle_of(&self, peer: PeerId) -> Option<usize> {
        self.players.iter().position(|p| *p == peer)
    }
}

/// The host's word on who plays: every peer starts its match from this list (handle `i` at index
/// `i`), so a roster still settling cannot make two peers disagree.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct MatchPlan {
    pub(crate) players: Vec<PeerId>,
}

/// A spectator asks for every frame's inputs from `from` on.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct FeedRequest {
    pub(crate) players: u32,
    pub(crate) from: i32,
}

/// Final inputs of frames `first..first + frames.len()` (each: the players' inputs, bincode).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct FeedFrames {
    pub(crate) first: i32,
    pub(crate) frames: Vec<Vec<u8>>,
}

/// Rollback matches from the lobby, for the GGRS config `C` (see the module docs). Adds
/// bevy_ggrs's `GgrsPlugin<C>` if the app has none.
pub struct HuddleRollbackPlugin<C>(PhantomData<C>);

impl<C> Default for HuddleRollbackPlugin<C> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<C> HuddleRollbackPlugin<C> {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C: Config<Address = PeerId>> Plugin for HuddleRollbackPlugin<C> {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<GgrsPlugin<C>>() {
            app.add_plugins(GgrsPlugin::<C>::default());
        }
        let fps = app
            .world()
            .get_resource::<crate::HuddleSettings>()
            .map(|s| s.0.rollback.fps)
            .unwrap_or(60);
        app.insert_resource(RollbackFrameRate(fps))
            .init_resource::<RollbackMatch>()
            .init_resource::<RollbackStats>()
            .init_resource::<InputLog>()
            .init_resource::<systems::NewestInputs>()
            .add_message::<RollbackEvent>()
            .add_message::<RollbackStarted>()
            .add_message::<StartRollback>()
            .add_huddle_message::<MatchPlan>(Channel::Reliable)
            .add_huddle_message::<FeedRequest>(Channel::Reliable)
            .add_huddle_message::<FeedFrames>(Channel::Reliable)
            .configure_sets(
                PreUpdate,
                RunGgrsSystems
                    .after(HuddleSet::Receive)
                    .run_if(systems::spectator_has_inputs),
            )
            .add_systems(
                PreUpdate,
                (
                    (
                        systems::start::<C>,
                        systems::follow_lobby::<C>,
                        systems::follow_feed,
                    )
                        .chain()
                        .after(HuddleSet::Receive)
                        .before(RunGgrsSystems),
                    (
                        systems::events::<C>,
                        stats::measure::<C>,
                        systems::serve_feed,
                    )
                        .chain()
                        .after(RunGgrsSystems),
                ),
            )
            .add_systems(GgrsSchedule, systems::record::<C>.run_if(systems::playing))
            .add_systems(
                SaveWorld,
                systems::keep_prediction_window
                    .run_if(systems::playing)
                    .before(SaveWorldSystems::Snapshot),
            );
        RollbackDiagnostics::register(app);
    }
}
