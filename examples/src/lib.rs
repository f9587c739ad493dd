//! Shared pieces of huddle's examples: the lobby demo's game (squares and chat).

pub mod lobby;
#[cfg(feature = "window")]
pub mod window;
