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
