//! One peer's websocket from its upgrade to its end: the I/O shell around
//! [`Room`](crate::room::Room). A writer task drains the peer's bounded queue into the socket; the
//! reader relays the peer's signals; a peer that does not read, stays silent past the idle
//! timeout, floods or sends oversized messages is closed with a reason.

use crate::metrics::{DropReason, RefusalReason};
use crate::rate_limit::TokenBucket;
use crate::registry::{lock, RoomKey, SharedRoom};
use crate::request::Admitted;
use crate::room::{JoinError, RouteError};
use crate::state::{queued_len, Outbound, PeerHandle, QueueLimit, ServerState};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use huddle_protocol::signal;
use matchbox_protocol::{JsonPeerEvent, PeerId};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Websocket close code for the server going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Websocket close code for a policy violation (room full, abuse, not reading, idle).
pub const CLOSE_POLICY: u16 = 1008;
/// Websocket close code for a message above the frame limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Websocket close code for a server-side error.
pub const CLOSE_INTERNAL: u16 = 1011;

/// Messages written out with one flush at most.
const BATCH: usize = 64;

/// How long a closing writer waits for its last frame to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Serves one admitted peer on its upgraded websocket until it ends.
pub(crate) async fn run(state: ServerState, socket: WebSocket, request: Admitted, from: IpAddr) {
    let peer_id = PeerId(uuid::Uuid::new_v4());
    let (sink, stream) = socket.split();
    let limit = QueueLimit {
        messages: state.0.config.max_queued_messages,
        bytes: state.0.config.max_queued_bytes,
    };
    let (handle, outbound) = PeerHandle::new(limit, from, request.claims.clone());
    let (closed_tx, closed) = watch::channel(false);
    let writer = tokio::spawn(write(sink, outbound, closed_tx, state.clone(), peer_id));
    handle.send_text(event(JsonPeerEvent::IdAssigned(peer_id)));
    if let Some((key, room)) = join(&state, peer_id, &handle, &request) {
        serve(&state, peer_id, &handle, stream, (&key, &room), closed).await;
        leave(&state, peer_id, &key, &room);
    }
    // The writer ends once everything queued for this peer went out (or could not).
    drop(handle);
    let _ = writer.await;
}

/// Drains the peer's queue into its socket. When a message finds the queue full the peer is not
/// reading: it is closed with a reason, and nothing more is kept for it.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound: Outbound,
    closed: watch::Sender<bool>,
    state: ServerState,
    peer_id: PeerId,
) {
    let mut overflowed = false;
    loop {
        let message = tokio::select! {
            m = outbound.queue.recv() => m,
            () = outbound.overflow.notified() => {
                overflowed = true;
                None
            }
        };
        let Some(message) = message else { break };
        // This message and whatever else already waits, written out with one flush.
        let mut batch = vec![message];
        while batch.len() < BATCH {
            match outbound.queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let last = batch.iter().any(|m| matches!(m, Message::Close(_)));
        // The batch counts against the queue's bytes until it is written.
        let bytes: usize = batch.iter().map(queued_len).sum();
        let write = async {
            for message in batch {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        let sent = tokio::select! {
            r = write => r.is_ok(),
            () = outbound.overflow.notified() => {
                overflowed = true;
                false
            }
        };
        outbound.written(bytes);
        if !sent || last {
            break;
        }
    }
    if overflowed {
        let config = &state.0.config;
        let (messages, bytes) = (config.max_queued_messages, config.max_queued_bytes);
        state.0.metrics.refused(RefusalReason::SlowReader);
        let why = format!("not reading: its queue is full ({messages} messages or {bytes} bytes)");
        warn!(%peer_id, "closing: {why}");
        let frame = close_frame(CLOSE_POLICY, why);
        let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(frame)).await;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
    let _ = closed.send(true);
}

fn event(e: JsonPeerEvent) -> String {
    e.to_string()
}

/// A matchbox `PeerRequest`, with the signal payload left as raw JSON: it is checked once and
/// relayed as it came, never rebuilt.
#[derive(Deserialize)]
enum Request<'a> {
    Signal {
        receiver: PeerId,
        #[serde(borrow)]
        data: &'a RawValue,
    },
    KeepAlive,
    /// huddle's extension (stock clients never send it): the room's host removes `peer`, and
    /// bans its address from the room for `ban_secs`.
    Kick {
        peer: PeerId,
        #[serde(default)]
        ban_secs: u64,
    },
}

/// The `Signal` event for the receiver, built around the raw payload.
fn signal_event(sender: PeerId, data: &RawValue) -> String {
    format!(
        r#"{{"Signal":{{"sender":"{sender}","data":{}}}}}"#,
        data.get()
    )
}

fn close_frame(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Closes the peer's websocket with `code` and `reason` once what was queued before went out.
fn close(handle: &PeerHandle, code: u16, reason: String) {
    handle.send(close_frame(code, reason));
}

/// Puts the peer in its room and introduces it; `None` when it was refused (and told why).
fn join(
    state: &ServerState,
    peer_id: PeerId,
    handle: &PeerHandle,
    request: &Admitted,
) -> Option<(RoomKey, SharedRoom<PeerHandle>)> {
    let shared = &state.0;
    loop {
        let (key, room) = {
            let mut registry = lock(&shared.registry);
            let assigned = registry.assign(request);
            shared.metrics.rooms.set(registry.len() as i64);
            assigned
        };
        let mut guard = lock(&room);
        match guard.join(peer_id, handle.clone()) {
            Ok(joined) => {
                let announce = event(JsonPeerEvent::NewPeer(peer_id));
                for caller in &joined.introduce_to {
                    if let Some(h) = guard.get(*caller) {
                        h.send_text(announce.clone());
                    }
                }
                drop(guard);
                shared.metrics.joins.inc();
                shared.metrics.connections.inc();
                info!(%peer_id, room = %key, host = %joined.host, "joined");
                return Some((key, room));
            }
            // The room emptied between lookup and join: the registry gives a fresh one.
            Err(JoinError::Closed) => continue,
            Err(e) => {
                drop(guard);
                lock(&shared.registry).left(&key);
                shared.metrics.refused(RefusalReason::RoomFull);
                info!(%peer_id, room = %key, "refused: {e}");
                close(handle, CLOSE_POLICY, format!("{e}"));
                return None;
            }
        }
    }
}

/// Relays the peer's signals until its websocket ends, its writer closed it, the server shuts
/// down, or it is closed for abuse or silence.
async fn serve(
    state: &ServerState,
    peer_id: PeerId,
    handle: &PeerHandle,
    mut receiver: SplitStream<WebSocket>,
    (key, room): (&RoomKey, &SharedRoom<PeerHandle>),
    mut closed: watch::Receiver<bool>,
) {
    let shared = &state.0;
    let config = &shared.config;
    let metrics = &shared.metrics;
    let mut bucket = TokenBucket::new(config.signal_rate, config.signal_burst, Instant::now());
    let mut violations: u32 = 0;
    let mut violation = |reason: DropReason| -> bool {
        metrics.dropped(reason);
        violations += 1;
        violations > config.max_violations
    };
    let idle = Duration::from_secs(config.idle_timeout_secs);
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        if *shutdown.borrow_and_update() {
            close(
                handle,
                CLOSE_GOING_AWAY,
                "the server is shutting down".into(),
            );
            break;
        }
        let message = tokio::select! {
            m = tokio::time::timeout(idle, receiver.next()) => m,
            _ = closed.changed() => break,
            _ = shutdown.changed() => continue,
        };
        let message = match message {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(_) => {
                metrics.refused(RefusalReason::Idle);
                info!(%peer_id, "closing: silent for {idle:?}");
                close(handle, CLOSE_POLICY, format!("silent for {idle:?}"));
                break;
            }
        };
        let (text, len) = match message {
            Ok(Message::Text(t)) => {
                let len = t.len();
                (Some(t), len)
            }
            Ok(Message::Binary(b)) => (None, b.len()),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => break,
            Err(e) => {
                if too_long(e) {
                    too_big(state, peer_id, handle, "a message".into());
                } else {
                    debug!(%peer_id, "websocket error");
                }
                break;
            }
        };
        if len > config.max_frame_bytes {
            // The websocket layer refuses these as they arrive; this holds if it ever did not.
            too_big(state, peer_id, handle, format!("message of {len} bytes"));
            break;
        }
        let parsed = text
            .as_ref()
            .and_then(|t| serde_json::from_str::<Request<'_>>(t.as_str()).ok());
        let abusive = match parsed {
            None => violation(DropReason::MalformedRequest),
            Some(Request::KeepAlive) => false,
            Some(Request::Kick { peer, ban_secs }) => {
                // The room's host, or a moderator (its token's role), may kick.
                let by = if lock(room).host() == Some(peer_id) {
                    Some("the host")
                } else if handle.claims().is_moderator() {
                    Some("a moderator")
                } else {
                    None
                };
                if let (Some(by), true) = (by, peer != peer_id) {
                    kick(state, key, room, peer, Duration::from_secs(ban_secs), by);
                    false
                } else {
                    violation(DropReason::NotHost)
                }
            }
            Some(Request::Signal { receiver: to, data }) => {
                if !bucket.try_take(Instant::now()) {
                    violation(DropReason::RateLimited)
                } else if let Err(e) = signal::check_json(data.get()) {
                    debug!(%peer_id, %to, "dropping signal: {e}");
                    violation(DropReason::InvalidSignal)
                } else {
                    let text = signal_event(peer_id, data);
                    match lock(room).route(peer_id, to) {
                        Ok(h) => {
                            h.send_text(text);
                            metrics.signals_relayed.inc();
                        }
                        Err(e) => {
                            debug!(%peer_id, %to, "dropping signal: {e}");
                            metrics.dropped(match e {
                                RouteError::NotInRoom => DropReason::NotInRoom,
                                RouteError::NotIntroduced => DropReason::NotIntroduced,
                            });
                        }
                    }
                    false
                }
            }
        };
        if abusive {
            metrics.refused(RefusalReason::Abuse);
            warn!(%peer_id, "closing: too many dropped signals");
            close(
                handle,
                CLOSE_POLICY,
                "too many malformed, invalid or rate-limited signals".into(),
            );
            break;
        }
    }
}

/// Closes `peer`'s connection in `room` ("kicked by `by`") and bans its address (and its token's
/// name) from the room for `ban`; its own task then takes it out of the room and tells the
/// others. Whether it was there.
pub(crate) fn kick(
    state: &ServerState,
    key: &RoomKey,
    room: &SharedRoom<PeerHandle>,
    peer: PeerId,
    ban: Duration,
    by: &str,
) -> bool {
    let Some(target) = lock(room).get(peer).cloned() else {
        return false;
    };
    state.ban(&key.path, &target, ban);
    state.0.metrics.refused(RefusalReason::Kicked);
    info!(%peer, room = %key, "kicked by {by}, banned for {ban:?}");
    close(&target, CLOSE_POLICY, format!("kicked by {by}"));
    true
}

/// Closes the connection of a peer that sent `what` over the size limit, with the reason.
fn too_big(state: &ServerState, peer_id: PeerId, handle: &PeerHandle, what: String) {
    state.0.metrics.refused(RefusalReason::FrameTooLarge);
    let limit = state.0.config.max_frame_bytes;
    let why = format!("{what} exceeds the limit of {limit} bytes");
    warn!(%peer_id, "closing: {why}");
    close(handle, CLOSE_TOO_BIG, why);
}

/// Whether a websocket error is a message over the size limit (refused as it arrived, before it
/// was buffered whole).
fn too_long(e: axum::Error) -> bool {
    let inner = e.into_inner();
    matches!(
        inner.downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Takes the peer out of its room and tells those who knew it; promotes a new host if needed.
/// While the server shuts down nobody is told: the peers did not leave each other, the server
/// went away, and their peer-to-peer links go on without it.
fn leave(state: &ServerState, peer_id: PeerId, key: &RoomKey, room: &SharedRoom<PeerHandle>) {
    let shared = &state.0;
    let shutting_down = *shared.shutdown.borrow();
    let closed = {
        let guard = &mut *lock(room);
        let Some((_, left)) = guard.leave(peer_id) else {
            return;
        };
        if !shutting_down {
            let gone = event(JsonPeerEvent::PeerLeft(peer_id));
            for p in &left.notify {
                if let Some(h) = guard.get(*p) {
                    h.send_text(gone.clone());
                }
            }
            if let Some(new_host) = left.new_host {
                shared.metrics.host_changes.inc();
                info!(room = %key, %new_host, "host left, promoted the oldest peer");
                if let Some(h) = guard.get(new_host) {
                    for p in &left.introduce_to_new_host {
                        h.send_text(event(JsonPeerEvent::NewPeer(*p)));
                    }
                }
            }
        }
        left.closed
    };
    shared.metrics.leaves.inc();
    shared.metrics.connections.dec();
    info!(%peer_id, room = %key, "left");
    if closed || key.group.is_some() {
        let mut registry = lock(&shared.registry);
        registry.left(key);
        registry.remove_if_closed(key, room);
        shared.metrics.rooms.set(registry.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_event_is_what_matchbox_expects() {
        let peer = PeerId(uuid::Uuid::from_u128(7));
        let text = r#"{"Signal":{"receiver":"00000000-0000-0000-0000-000000000007","data":{"IceCandidate":"null"}}}"#;
        let Ok(Request::Signal { receiver, data }) = serde_json::from_str::<Request<'_>>(text)
        else {
            panic!("parses");
        };
        assert_eq!(receiver, peer);
        let event: JsonPeerEvent = signal_event(peer, data).parse().unwrap();
        assert_eq!(
            event,
            JsonPeerEvent::Signal {
                sender: peer,
                data: serde_json::json!({ "IceCandidate": "null" })
            }
        );
        assert!(matches!(
            serde_json::from_str::<Request<'_>>(r#""KeepAlive""#),
            Ok(Request::KeepAlive)
        ));
    }
}
