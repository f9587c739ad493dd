//! Shared pieces of huddle's examples: the lobby demo's game (squares and chat) and the box game
//! (a rollback match).

pub mod box_game;
#[cfg(feature = "window")]
pub mod box_window;
pub mod lobby;
#[cfg(not(target_arch = "wasm32"))]
pub mod local;
#[cfg(target_arch = "wasm32")]
pub mod web;
#[cfg(feature = "window")]
pub mod window;

use bevy::app::{PluginGroup, PluginGroupBuilder, ScheduleRunnerPlugin};
use std::time::Duration;

/// Logs of the native examples: ours at info, the WebRTC stack's chatter at warn.
pub const LOG_FILTER: &str =
    "info,rtc=warn,rtc_ice=warn,rtc_dtls=warn,webrtc=warn,matchbox_socket=warn,bevy_ggrs=warn";

/// Bevy's `MinimalPlugins` updating 60 times a second: the examples without a window.
pub fn minimal_plugins_60hz() -> PluginGroupBuilder {
    bevy::prelude::MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_secs_f64(
        1.0 / 60.0,
    )))
}
