//! Rollback matches from the lobby (feature `ggrs`): GGRS 0.13 sessions run by bevy_ggrs 0.22.
//!
//! Add [`HuddleRollbackPlugin::new`] with its [`RollbackSettings`] next to
//! [`HuddlePlugin`](crate::HuddlePlugin). When the host's
//! lobby holds [`RollbackSettings::players`] linked peers (or the host's game writes
//! [`StartRollback`]), the host names the players (the first ones in join order) and every peer
//! starts the same GGRS P2P session from that list: handle `i` is the `i`-th player. GGRS
//! traffic runs on the session's raw lane (an unreliable channel of its own) through
//! [`HuddleGgrsSocket`], which drops and counts what is not a GGRS message. Game logic goes in bevy_ggrs's `GgrsSchedule`,
//! inputs in its `ReadInputs`, exactly as with bevy_ggrs alone.
//!
//! - GGRS events arrive as [`RollbackEvent`]s with the peer's id; network stats are in
//!   [`RollbackStats`] and in Bevy diagnostics ([`RollbackDiagnostics`]).
//! - A player that goes is announced at once ([`RollbackEvent::Disconnected`]) and leaves the
//!   GGRS session the same way on every remaining player. To leave cleanly, a player's game
//!   writes [`LeaveRollback`]: it stops adding inputs, tells the others the frame of its last
//!   one, and leaves the lobby once they all hold it; they disconnect it at that frame and play
//!   on. A player that vanishes (left the lobby, crashed, or silent for
//!   [`RollbackSettings::disconnect_timeout`]) makes the remaining players compare the last
//!   input of it each holds: equal, they play on; different, they resync: the first remaining
//!   player sends its snapshot of the newest final frame and everyone goes on from it in a fresh
//!   GGRS session ([`RollbackEvent::Resynced`]; see the `resync` module). Snapshots carry what the
//!   game registered ([`SnapshotAppExt`]); a game that registers nothing cannot resync, and the
//!   match ends ([`RollbackEvent::Abandoned`]). GGRS never times a player out by itself here, so
//!   it cannot decide alone. With one other player left there is nothing to compare: it is
//!   disconnected at once.
//! - Peers that join past the players become spectators: a player (the first one still in the
//!   match) sends them its snapshot of the newest final frame every other player holds the inputs
//!   of, then every frame's final inputs (without registrations, from the first frame: they
//!   replay the match, catching up at up to 4x); GGRS only takes spectators when a session
//!   starts, so huddle feeds late ones itself. A spectator sees every input as
//!   `InputStatus::Confirmed` (a gone player's as the default input); its `ReadInputs` schedule
//!   is set aside while it watches. A spectator's game may ask to play ([`JoinRollback`]): a new
//!   seat, or a gone player's seat when it comes back; it is seated at the leader's next resync.

mod away;
mod departures;
mod events;
mod leave;
mod log;
mod record;
mod resources;
mod resync;
mod seats;
mod snapshot;
pub mod socket;
mod spectate;
mod start;
mod stats;

pub use events::RollbackEvent;
pub use log::InputLog;
pub use seats::JoinRollback;
pub use snapshot::SnapshotAppExt;
pub use socket::HuddleGgrsSocket;
pub use stats::{RollbackDiagnostics, RollbackStats};

use crate::registry::{AddHuddleMessage, Channel};
use crate::schedule::HuddleSystems;
use bevy::prelude::*;
use bevy_ggrs::{
    AdvanceWorld, AdvanceWorldSystems, GgrsPlugin, GgrsSchedule, LoadWorld, LoadWorldSystems,
    RollbackFrameRate, RunGgrsSystems, SaveWorld, SaveWorldSystems,
};
use ggrs::Config;
use matchbox_socket::PeerId;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::time::Duration;

/// A peer id for unit tests.
#[cfg(test)]
pub(crate) fn test_peer(n: u128) -> PeerId {
    PeerId(uuid::Uuid::from_u128(n))
}

/// Parameters of the rollback matches: give them to [`HuddleRollbackPlugin::new`]; they are a
/// resource from then on.
#[derive(Resource, Debug, Clone, Copy, PartialEq, Eq)]
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
    /// A player GGRS has not heard from for this long counts as gone (as if it left the lobby).
    pub disconnect_timeout: Duration,
    /// How long a player that said it went to the background (a hidden browser tab, a minimised
    /// window: [`Backgrounded`](crate::Backgrounded)) may stay silent before it counts as gone.
    /// The match waits for it meanwhile.
    pub away_timeout: Duration,
    /// Whether the match seats spectators that ask to play ([`JoinRollback`]): a drop-in, or a
    /// player back after its connection dropped. The leader's setting decides.
    pub drop_ins: bool,
    /// How long a player of the host's plan waits for its links to the other players it names;
    /// then the plan is refused (counted in [`RollbackStats::plans_refused`]): a plan naming
    /// peers that never link cannot hold the lobby forever.
    pub plan_link_wait: Duration,
    /// The match frame a match starts at: 0 for a new match. A game that continues a saved
    /// match restores the saved state before the match starts and gives the frame it was saved
    /// at (every peer the same, like the other settings); frames count on from it. Frames before
    /// it were never played here: a spectator starts from the players' snapshot, or from the
    /// frame after it. At most [`MAX_FRAME`](huddle_protocol::resync::MAX_FRAME).
    pub first_frame: i32,
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
            disconnect_timeout: Duration::from_secs(2),
            away_timeout: Duration::from_secs(30),
            plan_link_wait: Duration::from_secs(20),
            drop_ins: true,
            first_frame: 0,
        }
    }
}

impl RollbackSettings {
    /// How long a player GGRS calls silent (`RollbackEvent::NetworkInterrupted`) has left before
    /// it counts as gone.
    pub(crate) fn gone_after_interruption(&self) -> Duration {
        self.disconnect_timeout.saturating_sub(socket::NOTIFY_AFTER)
    }
}

/// Starts the match now with the first `players` peers in join order. Only the host's counts: it
/// tells the others who plays.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartRollback {
    /// Players in the match.
    pub players: usize,
}

/// Leaves the match cleanly, then the lobby: we stop adding inputs, tell the other players our
/// last one, and leave once every one of them holds it (at most two seconds), so they all
/// disconnect us at the same frame and play on. Leaving the lobby directly
/// (`commands.leave_huddle()`, or quitting the app) is a vanishing to them: they play on when
/// they can agree on our last input, and end the match when they cannot (see
/// [`RollbackEvent::Abandoned`]).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaveRollback;

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
    /// Leaving ([`LeaveRollback`]): our game no longer steps; we wait for the other players to
    /// hold our last input, then leave the lobby.
    Leaving,
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
    /// Resyncs so far (0: the session the match started with; see [`RollbackEvent::Resynced`]).
    pub epoch: u32,
    /// The match frame at which this epoch's GGRS session started (its frame 0; bevy_ggrs's
    /// `RollbackFrameCount` counts match frames throughout).
    pub frame_offset: i32,
}

impl RollbackMatch {
    /// The handle of `peer`, if it plays.
    pub fn handle_of(&self, peer: PeerId) -> Option<usize> {
        self.players.iter().position(|p| *p == peer)
    }

    /// The players still in the match, `(handle, peer)` in handle order, ourselves included.
    pub fn remaining(&self) -> impl Iterator<Item = (usize, PeerId)> + '_ {
        self.players
            .iter()
            .copied()
            .enumerate()
            .filter(|(handle, _)| !self.disconnected.contains(handle))
    }
}

/// The host's word on who plays: every peer starts its match from this list (handle `i` at index
/// `i`), so a roster still settling cannot make two peers disagree.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct MatchPlan {
    pub(crate) players: Vec<PeerId>,
}

/// A player leaves the match: its last input is for GGRS frame `last_frame`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Farewell {
    pub(crate) epoch: u32,
    pub(crate) last_frame: i32,
}

/// The sender holds the inputs of the gone player `handle` up to GGRS frame `frame` (see the
/// `departure` module). To a player that said farewell it is the acknowledgement.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastInput {
    pub(crate) epoch: u32,
    pub(crate) handle: u32,
    pub(crate) frame: i32,
}

/// The sender ended the match over the departure of player `handle` (the remaining players held
/// different last inputs of it, or did not all report in time). Every player that sees that
/// player go ends the match too, so one player's lies cannot leave some playing on and the others
/// out (see the `departures` module).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Abandoning {
    pub(crate) epoch: u32,
    pub(crate) handle: u32,
}

/// The sender went to the background (`away`) or came back: its silence may last
/// [`RollbackSettings::away_timeout`] meanwhile.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AwayNotice {
    pub(crate) away: bool,
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
    /// The epoch whose frames these are (a spectator takes its own epoch's only).
    pub(crate) epoch: u32,
    pub(crate) first: i32,
    pub(crate) frames: Vec<Vec<u8>>,
}

/// Rollback matches from the lobby, for the GGRS config `C` (see the module docs). Adds
/// bevy_ggrs's `GgrsPlugin<C>` if the app has none.
pub struct HuddleRollbackPlugin<C> {
    /// The match settings.
    pub settings: RollbackSettings,
    config: PhantomData<C>,
}

impl<C> Default for HuddleRollbackPlugin<C> {
    fn default() -> Self {
        Self::new(RollbackSettings::default())
    }
}

impl<C> HuddleRollbackPlugin<C> {
    /// The plugin with `settings` (they become the [`RollbackSettings`] resource).
    pub fn new(settings: RollbackSettings) -> Self {
        Self {
            settings,
            config: PhantomData,
        }
    }
}

impl<C: Config<Address = PeerId>> Plugin for HuddleRollbackPlugin<C> {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<GgrsPlugin<C>>() {
            app.add_plugins(GgrsPlugin::<C>::default());
        }
        app.insert_resource(RollbackFrameRate(self.settings.fps))
            .insert_resource(self.settings)
            .init_resource::<RollbackMatch>()
            .init_resource::<RollbackStats>()
            .init_resource::<InputLog>()
            .init_resource::<resources::NewestInputs>()
            .init_resource::<resources::Departing>()
            .init_resource::<resources::Plan>()
            .init_resource::<snapshot::SnapshotWait>()
            .init_resource::<snapshot::SnapshotAsks>()
            .init_resource::<resync::Resync>()
            .init_resource::<seats::Seating>()
            .init_resource::<resync::Synced>()
            .init_resource::<record::NewestFinalSnapshot>()
            .init_resource::<snapshot::EpochStart>()
            .add_message::<RollbackEvent>()
            .add_message::<RollbackStarted>()
            .add_message::<StartRollback>()
            .add_message::<LeaveRollback>()
            .add_message::<JoinRollback>()
            .add_huddle_message::<MatchPlan>(Channel::Reliable)
            .add_huddle_message::<Farewell>(Channel::Reliable)
            .add_huddle_message::<LastInput>(Channel::Reliable)
            .add_huddle_message::<Abandoning>(Channel::Reliable)
            .add_huddle_message::<FeedRequest>(Channel::Reliable)
            .add_huddle_message::<FeedFrames>(Channel::Reliable)
            .add_huddle_message::<AwayNotice>(Channel::Reliable)
            .add_huddle_message::<snapshot::SnapshotRequest>(Channel::Reliable)
            .add_huddle_message::<snapshot::SnapshotReply>(Channel::Reliable)
            .add_huddle_message::<resync::ResyncOffer>(Channel::Reliable)
            .add_huddle_message::<seats::SeatRequest>(Channel::Reliable)
            .configure_sets(
                PreUpdate,
                RunGgrsSystems
                    .after(HuddleSystems::Receive)
                    .run_if(spectate::spectator_has_inputs)
                    .run_if(leave::not_leaving),
            )
            .add_systems(
                PreUpdate,
                (
                    (
                        start::start::<C>,
                        away::announce,
                        away::hear,
                        departures::follow_lobby::<C>,
                        departures::settle_departures::<C>,
                        seats::ask,
                        seats::hear,
                        resync::watch_sync::<C>,
                        resync::hear_offers,
                        resync::run::<C>,
                        leave::leave::<C>,
                        snapshot::hear_replies,
                        snapshot::start_from_reply,
                        spectate::follow_feed,
                    )
                        .chain()
                        .after(HuddleSystems::Receive)
                        .before(RunGgrsSystems),
                    (
                        record::events::<C>,
                        stats::measure::<C>,
                        spectate::serve_feed::<C>,
                        snapshot::hear_requests,
                        snapshot::serve_requests::<C>,
                    )
                        .chain()
                        .after(RunGgrsSystems),
                ),
            )
            .add_systems(
                GgrsSchedule,
                (
                    record::record::<C>.run_if(start::playing),
                    record::count_watched.run_if(start::watching),
                )
                    .chain(),
            )
            .add_systems(
                SaveWorld,
                record::keep_prediction_window
                    .run_if(start::playing)
                    .before(SaveWorldSystems::Snapshot),
            )
            .add_systems(
                SaveWorld,
                snapshot::keep_epoch_start
                    .run_if(start::playing)
                    .after(SaveWorldSystems::Snapshot),
            )
            // After a resync GGRS counts frames from the epoch's first; the world counts match
            // frames.
            .add_systems(
                AdvanceWorld,
                record::shift_confirmed_frame
                    .run_if(start::playing)
                    .in_set(AdvanceWorldSystems::First),
            )
            .add_systems(
                LoadWorld,
                record::shift_loaded_frame
                    .run_if(start::playing)
                    .before(LoadWorldSystems::EntityResurrect),
            );
        RollbackDiagnostics::register(app);
    }
}
