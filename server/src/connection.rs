//! One peer's websocket from its upgrade to its end: the I/O shell around
//! [`Room`](crate::room::Room). A writer task drains the peer's bounded queue into the socket; the
//! reader relays the peer's signals; a peer that does not read, stays silent past the idle
//! timeout, floods or sends oversized messages is closed with a reason.

use crate::metrics::{DropReason, RefusalReason};
use crate::rate_limit::TokenBucket;
use crate::registry::{lock, RoomKey, SharedRoom};
use crate::request::Admitted;
use crate::resume::ResumeToken;
use crate::room::{JoinError, RouteError};
use crate::state::{queued_len, Outbound, PeerHandle, QueueLimit, ServerState};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use huddle_protocol::reconnect::ServerNotice;
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

/// Websocket close code for a connection replaced by the same peer's resumed one.
pub const CLOSE_REPLACED: u16 = 4001;

/// How a peer's connection ended, as far as its place in the room goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client closed it (it left).
    Closed,
    /// It dropped: the stream ended or failed without a close (its place may be held).
    Dropped,
    /// The server closed it (a policy, a limit, shutdown).
    Server,
}

/// What the writer task did last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Writing what comes.
    Running,
    /// It wrote a close (the server ended the connection).
    Closed,
    /// A write failed: the socket is gone.
    Failed,
}

/// A peer's place in a room: which room, and its place in the join order.
struct Place {
    key: RoomKey,
    room: SharedRoom<PeerHandle>,
    seq: u64,
}

/// Serves one admitted peer on its upgraded websocket until it ends.
pub(crate) async fn run(state: ServerState, socket: WebSocket, request: Admitted, from: IpAddr) {
    let peer_id = request
        .resume
        .map_or_else(|| PeerId(uuid::Uuid::new_v4()), |token| token.peer);
    let (sink, stream) = socket.split();
    let limit = QueueLimit {
        messages: state.0.config.max_queued_messages,
        bytes: state.0.config.max_queued_bytes,
    };
    let (handle, outbound) = PeerHandle::new(limit, from, request.claims.clone());
    let (writer_tx, writer_state) = watch::channel(Writer::Running);
    let writer = tokio::spawn(write(sink, outbound, writer_tx, state.clone(), peer_id));
    handle.send_text(event(JsonPeerEvent::IdAssigned(peer_id)));
    let place = match request.resume {
        Some(token) => resume(&state, token, &handle, &request),
        None => join(&state, peer_id, &handle, &request),
    };
    if let Some(place) = place {
        if request.resumable && request.resume.is_none() {
            send_token(&state, peer_id, &place, &handle);
        }
        let ending = serve(&state, peer_id, &handle, stream, &place, writer_state).await;
        state.0.metrics.connections.dec();
        let grace = Duration::from_secs(state.0.config.resume_grace_secs);
        let shutting_down = *state.0.shutdown.borrow();
        if ending == Ending::Dropped && request.resumable && !grace.is_zero() && !shutting_down {
            hold(&state, peer_id, place, &handle, grace);
            // Wakes the writer, which finds the socket gone (or closes it) and ends.
            handle.send(Message::Close(None));
        } else {
            leave(&state, peer_id, &place, handle.conn());
        }
    }
    // The writer ends once everything queued for this peer went out (or could not).
    drop(handle);
    let _ = writer.await;
}

/// Sends the peer the token to resume its `place` with.
fn send_token(state: &ServerState, peer_id: PeerId, place: &Place, handle: &PeerHandle) {
    let token = ResumeToken {
        peer: peer_id,
        seq: place.seq,
        group: place.key.group,
    };
    let text = state.resume_token(&place.key.path, &token);
    handle.send_text(ServerNotice::Resume(text).to_json());
}

/// Holds `peer_id`'s place for `grace` after its connection dropped: it may resume it; if it has
/// not by then, it is gone (the others hear it left, its token is refused from then on).
fn hold(state: &ServerState, peer_id: PeerId, place: Place, handle: &PeerHandle, grace: Duration) {
    let conn = handle.conn();
    if !lock(&place.room).set_away(peer_id, |h| h.conn() == conn) {
        // It resumed on another connection before this one noticed it dropped.
        return;
    }
    state.0.metrics.held.inc();
    info!(%peer_id, room = %place.key, "dropped: holding its place for {grace:?}");
    let state = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if leave(&state, peer_id, &place, conn) {
            state.0.metrics.held.dec();
            state.tombstone(peer_id);
            info!(%peer_id, room = %place.key, "did not resume within {grace:?}");
        }
    });
}

/// Drains the peer's queue into its socket. When a message finds the queue full the peer is not
/// reading: it is closed with a reason, and nothing more is kept for it.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound: Outbound,
    writer: watch::Sender<Writer>,
    state: ServerState,
    peer_id: PeerId,
) {
    let mut overflowed = false;
    let mut failed = false;
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
            failed = !sent && !overflowed;
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
    let _ = writer.send(if failed {
        Writer::Failed
    } else {
        Writer::Closed
    });
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
) -> Option<Place> {
    let shared = &state.0;
    let seq = shared.stamps.next();
    loop {
        let (key, room) = {
            let mut registry = lock(&shared.registry);
            let assigned = registry.assign(request);
            shared.metrics.rooms.set(registry.len() as i64);
            assigned
        };
        let mut guard = lock(&room);
        match guard.join(peer_id, seq, handle.clone()) {
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
                return Some(Place { key, room, seq });
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

/// Gives a peer that came back with its resume `token` its place: the one its room held since it
/// dropped, or (after a restart) one in the room rebuilt from the tokens; introduces it to the
/// newcomers it missed. `None` when it was refused (and told why).
fn resume(
    state: &ServerState,
    token: ResumeToken,
    handle: &PeerHandle,
    request: &Admitted,
) -> Option<Place> {
    let shared = &state.0;
    let peer_id = token.peer;
    let key = token.room(&request.path);
    loop {
        let room = {
            let mut registry = lock(&shared.registry);
            let room = registry.resume(&key, request);
            shared.metrics.rooms.set(registry.len() as i64);
            room
        };
        let mut guard = lock(&room);
        let was_away = guard.is_away(peer_id);
        match guard.resume(peer_id, token.seq, handle.clone()) {
            Ok(resumed) => {
                if was_away {
                    shared.metrics.held.dec();
                } else if let Some(old) = resumed.replaced {
                    // Its old connection has not noticed it is dead yet.
                    close(&old, CLOSE_REPLACED, "resumed on another connection".into());
                }
                let place = Place {
                    key: key.clone(),
                    room: room.clone(),
                    seq: token.seq,
                };
                // Its next token first, then the newcomers it calls.
                send_token(state, peer_id, &place, handle);
                for p in resumed.introduce {
                    handle.send_text(event(JsonPeerEvent::NewPeer(p)));
                }
                drop(guard);
                shared.metrics.resumes.inc();
                shared.metrics.connections.inc();
                info!(%peer_id, room = %key, "resumed its place");
                return Some(place);
            }
            Err(JoinError::Closed) => continue,
            Err(e) => {
                drop(guard);
                shared.metrics.refused(RefusalReason::RoomFull);
                info!(%peer_id, room = %key, "refused to resume: {e}");
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
    place: &Place,
    mut writer: watch::Receiver<Writer>,
) -> Ending {
    let (key, room) = (&place.key, &place.room);
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
            return Ending::Server;
        }
        let message = tokio::select! {
            m = tokio::time::timeout(idle, receiver.next()) => m,
            _ = writer.changed() => {
                return match *writer.borrow() {
                    Writer::Failed => Ending::Dropped,
                    _ => Ending::Server,
                };
            }
            _ = shutdown.changed() => continue,
        };
        let message = match message {
            Ok(Some(m)) => m,
            Ok(None) => return Ending::Dropped,
            Err(_) => {
                metrics.refused(RefusalReason::Idle);
                info!(%peer_id, "closing: silent for {idle:?}");
                close(handle, CLOSE_POLICY, format!("silent for {idle:?}"));
                return Ending::Server;
            }
        };
        let (text, len) = match message {
            Ok(Message::Text(t)) => {
                let len = t.len();
                (Some(t), len)
            }
            Ok(Message::Binary(b)) => (None, b.len()),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => return Ending::Closed,
            Err(e) => {
                if too_long(e) {
                    too_big(state, peer_id, handle, "a message".into());
                    return Ending::Server;
                }
                debug!(%peer_id, "websocket error");
                return Ending::Dropped;
            }
        };
        if len > config.max_frame_bytes {
            // The websocket layer refuses these as they arrive; this holds if it ever did not.
            too_big(state, peer_id, handle, format!("message of {len} bytes"));
            return Ending::Server;
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
            return Ending::Server;
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
    let (target, away) = {
        let guard = lock(room);
        let Some(target) = guard.get(peer).cloned() else {
            return false;
        };
        (target, guard.is_away(peer))
    };
    state.ban(&key.path, &target, ban);
    state.tombstone(peer);
    state.0.metrics.refused(RefusalReason::Kicked);
    info!(%peer, room = %key, "kicked by {by}, banned for {ban:?}");
    if away {
        // No connection to close: its held place goes now.
        let place = Place {
            key: key.clone(),
            room: room.clone(),
            seq: 0,
        };
        if leave(state, peer, &place, target.conn()) {
            state.0.metrics.held.dec();
        }
    } else {
        close(&target, CLOSE_POLICY, format!("kicked by {by}"));
    }
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

/// Takes the peer out of its room, if the room still has it on connection `conn` (a peer that
/// resumed on a new connection stays), and tells those who knew it; promotes a new host if
/// needed. While the server shuts down nobody is told: the peers did not leave each other, the
/// server went away, and their peer-to-peer links go on without it. Whether it was taken out.
fn leave(state: &ServerState, peer_id: PeerId, place: &Place, conn: u64) -> bool {
    let (key, room) = (&place.key, &place.room);
    let shared = &state.0;
    let shutting_down = *shared.shutdown.borrow();
    let closed = {
        let guard = &mut *lock(room);
        let Some((_, left)) = guard.leave_if(peer_id, |h| h.conn() == conn) else {
            return false;
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
    info!(%peer_id, room = %key, "left");
    if closed || key.group.is_some() {
        let mut registry = lock(&shared.registry);
        registry.left(key);
        registry.remove_if_closed(key, room);
        shared.metrics.rooms.set(registry.len() as i64);
    }
    true
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
