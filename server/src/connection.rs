//! One peer's websocket from its upgrade to its end: the I/O shell around
//! [`Room`](crate::room::Room). A writer task drains the peer's bounded queue into the socket; the
//! reader relays the peer's signals; a peer that does not read, stays silent past the idle
//! timeout, floods or sends oversized messages is closed with a reason.

use crate::close::{CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_REPLACED, CLOSE_TOO_BIG};
use crate::cluster::{Cluster, ClusterError, What};
use crate::metrics::{DropReason, RefusalReason};
use crate::rate_limit::TokenBucket;
use crate::registry::{lock, RoomKey, SharedRoom};
use crate::request::Admitted;
use crate::resume::ResumeToken;
use crate::room::{HeirError, JoinError, RouteError};
use crate::state::{queued_len, Outbound, PeerHandle, QueueLimit, ServerState};
use axum::extract::ws::{Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use huddle_protocol::reconnect::ServerNotice;
use huddle_protocol::signal;
use matchbox_protocol::{JsonPeerEvent, PeerId};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The first pause before a leave from a shared room is tried again (Redis unreachable); it
/// doubles up to [`LEAVE_RETRY_MAX`] (about 25 s of tries in all).
const LEAVE_RETRY: Duration = Duration::from_millis(200);
/// The longest pause between tries of a leave.
const LEAVE_RETRY_MAX: Duration = Duration::from_secs(13);

/// Messages written out with one flush at most.
const BATCH: usize = 64;

/// How long a closing writer waits for its last frame to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

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
    room: Held,
    seq: u64,
}

/// Where a room is held.
#[derive(Clone)]
pub(crate) enum Held {
    /// In this server's memory.
    Here(SharedRoom<PeerHandle>),
    /// In Redis, shared by every instance (`--redis`).
    Shared(Arc<Cluster>),
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
    let cluster = state.0.cluster.clone();
    if let Some(cluster) = &cluster {
        cluster.attach(peer_id, handle.clone());
    }
    let (writer_tx, writer_state) = watch::channel(Writer::Running);
    let writer = tokio::spawn(write(sink, outbound, writer_tx, state.clone(), peer_id));
    handle.send_text(event(JsonPeerEvent::IdAssigned(peer_id)));
    let place = match (&cluster, request.resume) {
        (Some(c), token) => enter_shared(&state, c, peer_id, &handle, &request, token).await,
        (None, Some(token)) => resume(&state, token, &handle, &request),
        (None, None) => join(&state, peer_id, &handle, &request),
    };
    if let Some(place) = place {
        if request.resumable && request.resume.is_none() {
            send_token(&state, peer_id, &place, &handle);
        }
        let ending = serve(&state, peer_id, &handle, stream, &place, writer_state).await;
        state.0.metrics.connections.dec();
        let grace = Duration::from_secs(state.0.config.resume_grace_secs);
        let shutting_down = *state.0.shutdown.borrow();
        // With shared rooms an instance that stops is one of many: its peers come back through
        // the others, so their places are held as for a dropped connection.
        let shared = cluster.is_some();
        let holds = request.resumable
            && !grace.is_zero()
            && match ending {
                Ending::Dropped => !shutting_down || shared,
                Ending::Server => shutting_down && shared,
                Ending::Closed => false,
            };
        if holds {
            hold(&state, peer_id, place, &handle, grace).await;
            // Wakes the writer, which finds the socket gone (or closes it) and ends.
            handle.send(Message::Close(None));
        } else {
            leave(&state, peer_id, &place, handle.conn()).await;
        }
    }
    if let Some(cluster) = &cluster {
        cluster.detach(peer_id, handle.conn());
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
async fn hold(
    state: &ServerState,
    peer_id: PeerId,
    place: Place,
    handle: &PeerHandle,
    grace: Duration,
) {
    let conn = handle.conn();
    let held = match &place.room {
        Held::Here(room) => lock(room).set_away(peer_id, |h| h.conn() == conn),
        Held::Shared(cluster) => {
            let until = crate::clock::now_ms()
                .saturating_add(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
            cluster
                .hold(&place.key, peer_id, conn, until)
                .await
                .unwrap_or_else(|e| {
                    warn!(%peer_id, room = %place.key, "cannot hold its place: {e}");
                    false
                })
        }
    };
    if !held {
        // It resumed on another connection before this one noticed it dropped.
        return;
    }
    state.0.metrics.held.inc();
    info!(%peer_id, room = %place.key, "dropped: holding its place for {grace:?}");
    let state = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let gone = leave(&state, peer_id, &place, conn).await;
        // A shared room's held place counts here until its grace ends, wherever it resumed.
        if gone || matches!(place.room, Held::Shared(_)) {
            state.0.metrics.held.dec();
        }
        if gone {
            state.tombstone(peer_id).await;
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
        let frame = crate::close::frame(CLOSE_POLICY, why);
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
    /// huddle's extension: the room's host names the member that hosts after it (its election's
    /// first heir), so a star's new host is the one its peers elect.
    Heir {
        peer: PeerId,
    },
}

/// The `Signal` event for the receiver, built around the raw payload.
fn signal_event(sender: PeerId, data: &RawValue) -> String {
    format!(
        r#"{{"Signal":{{"sender":"{sender}","data":{}}}}}"#,
        data.get()
    )
}

/// Closes the peer's websocket with `code` and `reason` once what was queued before went out.
fn close(handle: &PeerHandle, code: u16, reason: String) {
    handle.send(crate::close::frame(code, reason));
}

/// How a peer got its place.
enum Entry {
    /// It joined; the room's host.
    Joined(PeerId),
    /// It resumed the place it had.
    Resumed,
}

/// Counts and logs a peer that got its place in room `key`.
fn entered(state: &ServerState, peer_id: PeerId, key: &RoomKey, entry: Entry) {
    let metrics = &state.0.metrics;
    metrics.connections.inc();
    match entry {
        Entry::Joined(host) => {
            metrics.joins.inc();
            info!(%peer_id, room = %key, %host, "joined");
        }
        Entry::Resumed => {
            metrics.resumes.inc();
            info!(%peer_id, room = %key, "resumed its place");
        }
    }
}

/// Why a peer got no place.
enum Refused {
    /// Its room would not take it.
    Room(JoinError),
    /// The shared rooms could not be reached or changed.
    Shared(ClusterError),
}

/// Refuses a peer a place in room `key`: counted, logged, and its connection closed with the
/// reason.
fn refuse(state: &ServerState, peer_id: PeerId, key: &RoomKey, handle: &PeerHandle, why: Refused) {
    let metrics = &state.0.metrics;
    match why {
        Refused::Room(e) => {
            metrics.refused(RefusalReason::RoomFull);
            info!(%peer_id, room = %key, "refused: {e}");
            close(handle, CLOSE_POLICY, format!("{e}"));
        }
        Refused::Shared(e) => {
            metrics.refused(RefusalReason::Unavailable);
            warn!(%peer_id, room = %key, "refused: {e}");
            close(handle, CLOSE_INTERNAL, format!("rooms unavailable: {e}"));
        }
    }
}

/// [`join`] or [`resume`] in the rooms shared through Redis.
async fn enter_shared(
    state: &ServerState,
    cluster: &Arc<Cluster>,
    peer_id: PeerId,
    handle: &PeerHandle,
    request: &Admitted,
    token: Option<ResumeToken>,
) -> Option<Place> {
    let seat = cluster.seat(handle);
    let outcome = match token {
        Some(token) => {
            let key = token.room(&request.path);
            // Its next token first, then (through its channel) the newcomers it calls.
            let place = Place {
                key: key.clone(),
                room: Held::Shared(cluster.clone()),
                seq: token.seq,
            };
            send_token(state, peer_id, &place, handle);
            match cluster.resume(token, seat, request).await {
                Ok(Ok(_)) => Ok((key, token.seq, Entry::Resumed)),
                Ok(Err(e)) => Err((key, Refused::Room(e))),
                Err(e) => Err((key, Refused::Shared(e))),
            }
        }
        None => {
            let asked = RoomKey {
                path: request.path.clone(),
                group: None,
            };
            match cluster.join(peer_id, seat, request).await {
                Ok(Ok((key, seq, host))) => Ok((key, seq, Entry::Joined(host))),
                Ok(Err(e)) => Err((asked, Refused::Room(e))),
                Err(e) => Err((asked, Refused::Shared(e))),
            }
        }
    };
    match outcome {
        Ok((key, seq, entry)) => {
            entered(state, peer_id, &key, entry);
            let room = Held::Shared(cluster.clone());
            Some(Place { key, room, seq })
        }
        Err((key, why)) => {
            refuse(state, peer_id, &key, handle, why);
            None
        }
    }
}

/// Puts the peer in its room and introduces it; `None` when it was refused (and told why).
fn join(
    state: &ServerState,
    peer_id: PeerId,
    handle: &PeerHandle,
    request: &Admitted,
) -> Option<Place> {
    let shared = &state.0;
    let stamp = shared.stamps.next();
    loop {
        let (key, room) = {
            let mut registry = lock(&shared.registry);
            let assigned = registry.assign(request);
            shared.metrics.rooms.set(registry.len() as i64);
            assigned
        };
        let mut guard = lock(&room);
        let seq = guard.place_after(stamp);
        match guard.join(peer_id, seq, handle.clone()) {
            Ok(joined) => {
                let announce = event(JsonPeerEvent::NewPeer(peer_id));
                for caller in &joined.introduce_to {
                    if let Some(h) = guard.get(*caller) {
                        h.send_text(announce.clone());
                    }
                }
                drop(guard);
                entered(state, peer_id, &key, Entry::Joined(joined.host));
                let room = Held::Here(room);
                return Some(Place { key, room, seq });
            }
            // The room emptied between lookup and join: the registry gives a fresh one.
            Err(JoinError::Closed) => continue,
            Err(e) => {
                drop(guard);
                lock(&shared.registry).left(&key);
                refuse(state, peer_id, &key, handle, Refused::Room(e));
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
                    room: Held::Here(room.clone()),
                    seq: token.seq,
                };
                // Its next token first, then the newcomers it calls.
                send_token(state, peer_id, &place, handle);
                for p in resumed.introduce {
                    handle.send_text(event(JsonPeerEvent::NewPeer(p)));
                }
                drop(guard);
                entered(state, peer_id, &key, Entry::Resumed);
                return Some(place);
            }
            Err(JoinError::Closed) => continue,
            Err(e) => {
                drop(guard);
                refuse(state, peer_id, &key, handle, Refused::Room(e));
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
                let by = if host(place).await == Some(peer_id) {
                    Some("the host")
                } else if handle.claims().is_moderator() {
                    Some("a moderator")
                } else {
                    None
                };
                if let (Some(by), true) = (by, peer != peer_id) {
                    let ban = Duration::from_secs(ban_secs);
                    kick(state, &place.key, &place.room, peer, ban, by).await;
                    false
                } else {
                    debug!(%peer_id, %peer, "dropping a kick: not the host");
                    violation(DropReason::NotHost)
                }
            }
            // As costly as a signal (a shared room is written): the same budget.
            Some(Request::Heir { .. }) if !bucket.try_take(Instant::now()) => {
                violation(DropReason::RateLimited)
            }
            Some(Request::Heir { peer }) => match name_heir(place, peer_id, peer).await {
                Ok(()) => false,
                Err(Unnamed::Shared(e)) => {
                    warn!(room = %place.key, "cannot name an heir: {e}");
                    metrics.dropped(DropReason::Unavailable);
                    false
                }
                Err(Unnamed::Room(e)) => {
                    debug!(%peer_id, %peer, "dropping an heir: {e}");
                    violation(match e {
                        HeirError::NotHost => DropReason::NotHost,
                        HeirError::NotMember => DropReason::NotInRoom,
                    })
                }
            },
            Some(Request::Signal { receiver: to, data }) => {
                if !bucket.try_take(Instant::now()) {
                    violation(DropReason::RateLimited)
                } else if let Err(e) = signal::check_json(data.get()) {
                    debug!(%peer_id, %to, "dropping signal: {e}");
                    violation(DropReason::InvalidSignal)
                } else {
                    let text = signal_event(peer_id, data);
                    match route(place, peer_id, to, text).await {
                        Ok(()) => {
                            metrics.signals_relayed.inc();
                        }
                        Err(e) => {
                            debug!(%peer_id, %to, "dropping signal: {e}");
                            metrics.dropped(match e {
                                Unrouted::Room(RouteError::NotInRoom) => DropReason::NotInRoom,
                                Unrouted::Room(RouteError::NotIntroduced) => {
                                    DropReason::NotIntroduced
                                }
                                Unrouted::Shared(_) => DropReason::Unavailable,
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

/// Why a signal was not relayed.
#[derive(Debug, thiserror::Error)]
enum Unrouted {
    /// Its room does not let it pass.
    #[error(transparent)]
    Room(#[from] RouteError),
    /// The shared rooms could not be reached.
    #[error(transparent)]
    Shared(#[from] ClusterError),
}

/// Relays `text`, a signal from `from`, to `to` if `place`'s room lets it pass.
async fn route(place: &Place, from: PeerId, to: PeerId, text: String) -> Result<(), Unrouted> {
    match &place.room {
        Held::Here(room) => {
            lock(room).route(from, to)?.send_text(text);
            Ok(())
        }
        Held::Shared(cluster) => Ok(cluster.route(&place.key, from, to, text).await??),
    }
}

/// Why an heir was not taken.
#[derive(Debug, thiserror::Error)]
enum Unnamed {
    /// The room refused it.
    #[error(transparent)]
    Room(#[from] HeirError),
    /// The shared rooms could not be reached.
    #[error(transparent)]
    Shared(#[from] ClusterError),
}

/// The host `by` of `place`'s room names `heir` to host after it.
async fn name_heir(place: &Place, by: PeerId, heir: PeerId) -> Result<(), Unnamed> {
    match &place.room {
        Held::Here(room) => Ok(lock(room).name_heir(by, heir)?),
        Held::Shared(cluster) => Ok(cluster.name_heir(&place.key, by, heir).await??),
    }
}

/// The host of `place`'s room (`None` if it cannot be told).
async fn host(place: &Place) -> Option<PeerId> {
    match &place.room {
        Held::Here(room) => lock(room).host(),
        Held::Shared(cluster) => cluster.host(&place.key).await.unwrap_or_else(|e| {
            warn!(room = %place.key, "cannot tell the host: {e}");
            None
        }),
    }
}

/// Closes `peer`'s connection in room `key` ("kicked by `by`") and bans its address (and its
/// token's name) from the room for `ban`; its own task then takes it out of the room and tells
/// the others. Whether it was there.
pub(crate) async fn kick(
    state: &ServerState,
    key: &RoomKey,
    room: &Held,
    peer: PeerId,
    ban: Duration,
    by: &str,
) -> bool {
    let ban = ban.min(Duration::from_secs(state.0.config.max_ban_secs));
    let why = format!("kicked by {by}");
    let kicked = match room {
        Held::Here(shared) => {
            let (target, away) = {
                let guard = lock(shared);
                let Some(target) = guard.get(peer).cloned() else {
                    return false;
                };
                (target, guard.is_away(peer))
            };
            state.ban(&key.path, &target, ban);
            if away {
                // No connection to close: its held place goes now.
                let place = Place {
                    key: key.clone(),
                    room: room.clone(),
                    seq: 0,
                };
                if leave(state, peer, &place, target.conn()).await {
                    state.0.metrics.held.dec();
                }
            } else {
                close(&target, CLOSE_POLICY, why);
            }
            Ok(())
        }
        Held::Shared(cluster) => {
            let Ok(Some((seat, away))) = cluster.member(key, peer).await else {
                return false;
            };
            let banned = cluster.ban(&key.path, &seat, ban).await;
            let closed = if away {
                cluster.leave(key, peer, |s| *s == seat).await.map(|_| ())
            } else {
                cluster
                    .send(peer, &seat, What::Close(CLOSE_POLICY, why))
                    .await
            };
            banned.and(closed)
        }
    };
    state.tombstone(peer).await;
    state.0.metrics.refused(RefusalReason::Kicked);
    match kicked {
        Ok(()) => info!(%peer, room = %key, "kicked by {by}, banned for {ban:?}"),
        Err(e) => warn!(%peer, room = %key, "kicked by {by}, but: {e}"),
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
/// needed. While a lone server shuts down nobody is told: the peers did not leave each other,
/// the server went away, and their peer-to-peer links go on without it. Whether it was taken
/// out.
async fn leave(state: &ServerState, peer_id: PeerId, place: &Place, conn: u64) -> bool {
    let key = &place.key;
    let shared = &state.0;
    let new_host = match &place.room {
        Held::Here(room) => {
            let Some((new_host, closed)) = leave_here(state, peer_id, room, conn) else {
                return false;
            };
            if closed || key.group.is_some() {
                let mut registry = lock(&shared.registry);
                registry.left(key);
                registry.remove_if_closed(key, room);
                shared.metrics.rooms.set(registry.len() as i64);
            }
            new_host
        }
        Held::Shared(cluster) => {
            let me = cluster.instance;
            let mut pause = LEAVE_RETRY;
            loop {
                match cluster.leave(key, peer_id, |s| s.is(me, conn)).await {
                    Ok(Some(departure)) => break departure.new_host,
                    Ok(None) => return false,
                    // Redis away for a moment: this instance's heartbeat goes on, so nobody
                    // else would take the peer out. Tried again, reported each time.
                    Err(e) if pause <= LEAVE_RETRY_MAX => {
                        warn!(%peer_id, room = %key, "cannot leave its shared room yet: {e}");
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    Err(e) => {
                        warn!(%peer_id, room = %key, "gave up taking it out of its room: {e}");
                        return false;
                    }
                }
            }
        }
    };
    if let Some(new_host) = new_host {
        shared.metrics.host_changes.inc();
        info!(room = %key, %new_host, "host left, promoted the oldest peer");
    }
    shared.metrics.leaves.inc();
    info!(%peer_id, room = %key, "left");
    true
}

/// [`leave`] from a room in this server's memory: the new host if the host left, and whether the
/// room closed; `None` if the peer was not taken out.
fn leave_here(
    state: &ServerState,
    peer_id: PeerId,
    room: &SharedRoom<PeerHandle>,
    conn: u64,
) -> Option<(Option<PeerId>, bool)> {
    let shutting_down = *state.0.shutdown.borrow();
    let guard = &mut *lock(room);
    let (_, left) = guard.leave_if(peer_id, |h| h.conn() == conn)?;
    if !shutting_down {
        let gone = event(JsonPeerEvent::PeerLeft(peer_id));
        for p in &left.notify {
            if let Some(h) = guard.get(*p) {
                h.send_text(gone.clone());
            }
        }
        if let Some(h) = left.new_host.and_then(|h| guard.get(h)) {
            for p in &left.introduce_to_new_host {
                h.send_text(event(JsonPeerEvent::NewPeer(*p)));
            }
        }
    }
    Some((left.new_host.filter(|_| !shutting_down), left.closed))
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
