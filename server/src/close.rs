//! How the server closes a peer's websocket: the close codes it uses and the frame.

use axum::extract::ws::{CloseFrame, Message};

/// Websocket close code for the server going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Websocket close code for a policy violation (room full, abuse, not reading, idle).
pub const CLOSE_POLICY: u16 = 1008;
/// Websocket close code for a message above the frame limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Websocket close code for a server-side error.
pub const CLOSE_INTERNAL: u16 = 1011;
/// Websocket close code for a connection replaced by the same peer's resumed one.
pub const CLOSE_REPLACED: u16 = 4001;

/// The close frame with `code` and `reason`.
pub(crate) fn frame(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
