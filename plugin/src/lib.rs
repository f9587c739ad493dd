//! # bevy_huddle
//!
//! Multiplayer for Bevy over WebRTC: add [`HuddlePlugin`] with a room URL and get a lobby of
//! peer-to-peer links, an agreed host that survives leaving, and typed game messages on a
//! reliable and an unreliable channel, natively and in the browser.
//!
//! ```no_run
//! use bevy::prelude::*;
//! use bevy_huddle::prelude::*;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Move { x: f32, y: f32 }
//!
//! fn main() {
//!     App::new()
//!         .add_plugins(MinimalPlugins)
//!         .add_plugins(HuddlePlugin::new(HuddleConfig::room("ws://127.0.0.1:3536/lobby")))
//!         .add_huddle_message::<Move>(Channel::Unreliable)
//!         .add_systems(Update, (send_moves, read_moves))
//!         .run();
//! }
//!
//! fn send_moves(mut out: MessageWriter<Outgoing<Move>>) {
//!     out.write(Outgoing::to_all(Move { x: 1.0, y: 2.0 }));
//! }
//!
//! fn read_moves(mut moves: MessageReader<Incoming<Move>>) {
//!     for m in moves.read() {
//!         info!("{} moved to {}, {}", m.from, m.message.x, m.message.y);
//!     }
//! }
//! ```
//!
//! Roles: in every pair of peers the earlier one is the *caller* (it sends the offer), the later
//! one the *receiver*. The host is the first player in the room; when it leaves, the next in join
//! order takes over on every peer (see [`protocol::election`]). The protocol itself is the sans-IO
//! crate [`huddle_protocol`] (re-exported as [`protocol`]); this crate is its Bevy shell.
//!
//! Rollback games (feature `ggrs`): the `rollback` module starts a GGRS session through bevy_ggrs
//! when the lobby is full, with late joiners watching as spectators.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conditioner;
pub mod config;
pub mod diagnostics;
#[cfg(all(feature = "server", not(target_arch = "wasm32")))]
pub mod embedded;
mod http_get;
mod lobby;
#[cfg(feature = "media")]
pub mod media;
pub mod messages;
pub mod registry;
#[cfg(feature = "ggrs")]
pub mod rollback;
pub mod rooms;
mod server_ice;
#[cfg(target_arch = "wasm32")]
mod web_fetch;
#[doc = include_str!("../guide.md")]
pub mod guide {}
pub mod schedule;
mod session;
pub mod signaling;
mod systems;
pub mod visibility;

/// The log filter we recommend (`LogPlugin { filter: LOG_FILTER.into(), .. }`): info for the game
/// and huddle, warnings for the WebRTC stack, and the stack's chatter that is no fault hidden:
/// ICE's `pingAllCandidates called with no candidate pairs` and `discard success message ... no
/// such remote` while candidates still trickle in, the SCTP handler's `there already exists a
/// stream`, DTLS's `conn.remote_addr is empty`, matchbox's `Outgoing message queue closed` as a
/// session ends (what matters of matchbox's reports reaches the game as `HuddleError`s). `RUST_LOG`
/// still overrides it: one env var away (`RUST_LOG=info,rtc_ice=debug`).
pub const LOG_FILTER: &str = "info,rtc=warn,rtc::peer_connection::handler=error,rtc_ice=error,\
rtc_dtls=error,webrtc=warn,matchbox_socket=error,bevy_ggrs=warn";

#[cfg(feature = "ggrs")]
pub use bevy_ggrs;
pub use conditioner::{Conditions, LinkConditioner};
pub use config::{
    ConfigError, HuddleConfig, IceServer, ProtocolSettings, ReconnectSettings, Topology,
};
pub use diagnostics::{HuddleDiagnostics, PeerLinks};
#[cfg(all(feature = "server", not(target_arch = "wasm32")))]
pub use embedded::{EmbeddedServer, EmbeddedServerError};
#[cfg(feature = "ggrs")]
pub use ggrs;
pub use huddle_protocol as protocol;
pub use huddle_protocol::endpoint::{CandidateKind, LinkPath, LinkStats};
#[cfg(all(feature = "server", not(target_arch = "wasm32")))]
pub use huddle_server;
pub use lobby::{HuddleCommandsExt, Roster};
pub use matchbox_socket::PeerId;
pub use messages::{
    HostChanged, HuddleError, Incoming, JoinRefusal, LeaveReason, Outgoing, PeerJoined, PeerLeft,
    Recipients, Role,
};
pub use registry::{AddHuddleMessage, Channel, HuddleMessage, MessageRegistry};
#[cfg(feature = "ggrs")]
pub use rollback::{
    HuddleGgrsSocket, HuddleRollbackPlugin, JoinRollback, LeaveRollback, RollbackEvent,
    RollbackMatch, RollbackPhase, RollbackSettings, RollbackStarted, RollbackStats, SnapshotAppExt,
    StartRollback,
};
pub use rooms::{RoomInfo, RoomList};
pub use schedule::{HuddleSystems, LobbyState, SignalingState};
pub use session::{HuddleSession, HuddleStats, RawLane, RawQueues};
pub use visibility::Backgrounded;

use bevy::prelude::*;
use bevy::state::app::StatesPlugin;

/// The things a game needs: `use bevy_huddle::prelude::*;`.
pub mod prelude {
    pub use crate::{
        AddHuddleMessage, Backgrounded, Channel, Conditions, HostChanged, HuddleCommandsExt,
        HuddleConfig, HuddleError, HuddlePlugin, HuddleSystems, Incoming, LinkConditioner,
        LobbyState, Outgoing, PeerId, PeerJoined, PeerLeft, Recipients, Role, RoomInfo, RoomList,
        Roster, SignalingState, Topology,
    };
    #[cfg(feature = "ggrs")]
    pub use crate::{
        HuddleRollbackPlugin, JoinRollback, LeaveRollback, RollbackEvent, RollbackMatch,
        RollbackPhase, RollbackStarted, SnapshotAppExt, StartRollback,
    };
}

/// The plugin's configuration as a resource (read when connecting).
#[derive(Resource, Debug, Clone, Default)]
pub struct HuddleSettings(pub HuddleConfig);

/// Adds huddle to an app: lobby state, roster, messages, and the systems that run the network.
#[derive(Debug, Clone, Default)]
pub struct HuddlePlugin {
    /// The settings.
    pub config: HuddleConfig,
}

impl HuddlePlugin {
    /// The plugin with `config`.
    pub fn new(config: HuddleConfig) -> Self {
        Self { config }
    }
}

impl Plugin for HuddlePlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<StatesPlugin>() {
            app.add_plugins(StatesPlugin);
        }
        app.insert_resource(HuddleSettings(self.config.clone()))
            .init_resource::<MessageRegistry>()
            .init_resource::<Roster>()
            .init_resource::<HuddleStats>()
            .init_resource::<LinkConditioner>()
            .init_resource::<PeerLinks>()
            .init_state::<LobbyState>()
            .init_state::<SignalingState>()
            .add_message::<PeerJoined>()
            .add_message::<PeerLeft>()
            .add_message::<HostChanged>()
            .add_message::<HuddleError>()
            .add_message::<RoomList>()
            .init_resource::<rooms::RoomListAnswers>()
            .init_resource::<server_ice::ServerIce>()
            .configure_sets(PostUpdate, HuddleSystems::Send.before(HuddleSystems::Flush))
            .add_systems(Startup, systems::auto_connect)
            .add_systems(
                PreUpdate,
                (
                    server_ice::deliver,
                    systems::receive,
                    diagnostics::measure,
                    rooms::deliver,
                )
                    .chain()
                    .in_set(HuddleSystems::Receive),
            )
            .add_systems(PostUpdate, systems::flush.in_set(HuddleSystems::Flush));
        HuddleDiagnostics::register(app);
        visibility::register(app);
        #[cfg(feature = "media")]
        media::build(app);
    }
}
