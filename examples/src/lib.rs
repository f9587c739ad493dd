//! Shared pieces of huddle's examples: the lobby demo's game (squares and chat) and the box game
//! (a rollback match).

pub mod box_game;
#[cfg(any(feature = "window", feature = "webgl"))]
pub mod box_window;
pub mod lobby;
#[cfg(not(target_arch = "wasm32"))]
pub mod lobby_media;
#[cfg(not(target_arch = "wasm32"))]
pub mod local;
#[cfg(any(feature = "window", feature = "webgl"))]
mod view;
#[cfg(target_arch = "wasm32")]
pub mod web;
#[cfg(feature = "window")]
pub mod window;

use bevy::app::{PluginGroup, PluginGroupBuilder, ScheduleRunnerPlugin};
#[cfg(not(target_arch = "wasm32"))]
use bevy::prelude::App;
use std::time::Duration;

/// Logs of the native examples: the plugin's recommended filter (`RUST_LOG` overrides it).
pub use bevy_huddle::LOG_FILTER;

/// The ICE servers the example was given (`--ice` natively, `?ice=` in a page).
static ICE: std::sync::OnceLock<Vec<bevy_huddle::IceServer>> = std::sync::OnceLock::new();

/// Takes the example's ICE servers, one line each (`stun:host:port`,
/// `turn:user:credential@host:port`); the first call wins.
pub fn set_ice<S: AsRef<str>>(specs: &[S]) -> Result<(), bevy_huddle::ConfigError> {
    let servers = specs
        .iter()
        .map(|s| bevy_huddle::IceServer::parse(s.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let _ = ICE.set(servers);
    Ok(())
}

/// The example's ICE servers (none: host candidates only, enough on one network).
pub fn ice() -> Vec<bevy_huddle::IceServer> {
    ICE.get().cloned().unwrap_or_default()
}

/// Bevy's `MinimalPlugins` updating 60 times a second: the examples without a window.
pub fn minimal_plugins_60hz() -> PluginGroupBuilder {
    bevy::prelude::MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_secs_f64(
        1.0 / 60.0,
    )))
}

/// The log plugin with [`LOG_FILTER`].
#[cfg(not(target_arch = "wasm32"))]
fn log_plugin() -> bevy::log::LogPlugin {
    bevy::log::LogPlugin {
        filter: LOG_FILTER.into(),
        ..Default::default()
    }
}

/// A native example's app without a window: [`minimal_plugins_60hz`], logging if `log` (a bot
/// beside a logging player has none of its own).
#[cfg(not(target_arch = "wasm32"))]
pub fn headless_app(log: bool) -> App {
    let mut app = App::new();
    app.add_plugins(minimal_plugins_60hz());
    if log {
        app.add_plugins(log_plugin());
    }
    app
}

/// A native example's app with a window: Bevy's default plugins (logging with [`LOG_FILTER`])
/// and the example's `window` plugin.
#[cfg(feature = "window")]
pub fn window_app(window: impl bevy::prelude::Plugin) -> App {
    let mut app = App::new();
    app.add_plugins(bevy::prelude::DefaultPlugins.set(log_plugin()))
        .add_plugins(window);
    app
}
