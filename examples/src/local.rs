//! One command, one match: a signaling server in this process and a bot player on a thread, so
//! an example with no arguments shows a real session (native only).

use bevy_huddle::EmbeddedServer;
use std::time::Duration;

/// Starts a server in-process, then `bot` (given the room URL) on a thread of its own after
/// `delay`, so the caller joins first and hosts. Returns the server (keep it alive) and the
/// room URL to join.
pub fn host_with_bot(
    room: &str,
    delay: Duration,
    bot: impl FnOnce(String) + Send + 'static,
) -> Result<(EmbeddedServer, String), String> {
    let server = EmbeddedServer::start(huddle_server::ServerConfig::loopback())
        .map_err(|e| format!("cannot start the embedded server: {e}"))?;
    let url = server.room_url(room);
    let bot_url = url.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        bot(bot_url);
    });
    Ok((server, url))
}
