//! One peer's websocket from join to leave: the I/O shell around [`Room`](crate::room::Room).

use crate::metrics::{DropReason, RefusalReason};
use crate::rate_limit::TokenBucket;
use crate::registry::{lock, RoomKey, SharedRoom};
use crate::room::{JoinError, RouteError};
use crate::state::{PeerHandle, ServerState};
use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message};
use futures::StreamExt;
use huddle_protocol::signal;
use matchbox_protocol::{JsonPeerEvent, PeerId};
use matchbox_signaling::common_logic::SignalingChannel;
use matchbox_signaling::{NoCallbacks, SignalingTopology, WsStateMeta};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Instant;
use tracing::{debug, info, warn};

/// Websocket close code for a policy violation (room full, abuse).
pub const CLOSE_POLICY: u16 = 1008;
/// Websocket close code for a message above the frame limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Websocket close code for a server-side error.
pub const CLOSE_INTERNAL: u16 = 1011;

/// huddle's room topology for matchbox_signaling: mesh and star rooms with hosts, checked signals.
#[derive(Debug, Default, Clone, Copy)]
pub struct HuddleTopology;

#[async_trait]
impl SignalingTopology<NoCallbacks, ServerState> for HuddleTopology {
    async fn state_machine(upgrade: WsStateMeta<NoCallbacks, ServerState>) {
        let WsStateMeta {
            peer_id,
            sender,
            receiver,
            state,
            ..
        } = upgrade;
        let Some(request) = state.take_request(peer_id) else {
            warn!("{peer_id}: websocket without an admitted request");
            close(
                &sender,
                CLOSE_INTERNAL,
                "no room request (admission expired)".into(),
            );
            return;
        };
        let Some((key, room)) = join(&state, peer_id, &sender, &request) else {
            return;
        };
        serve(&state, peer_id, &sender, receiver, &room).await;
        leave(&state, peer_id, &key, &room);
    }
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
}

/// The `Signal` event for the receiver, built around the raw payload.
fn signal_event(sender: PeerId, data: &RawValue) -> String {
    format!(
        r#"{{"Signal":{{"sender":"{sender}","data":{}}}}}"#,
        data.get()
    )
}

fn close(sender: &SignalingChannel, code: u16, reason: String) {
    let _ = sender.send(Ok(Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))));
}

/// Puts the peer in its room and introduces it; `None` when it was refused (and told why).
fn join(
    state: &ServerState,
    peer_id: PeerId,
    sender: &SignalingChannel,
    request: &crate::request::Admitted,
) -> Option<(RoomKey, SharedRoom<PeerHandle>)> {
    let shared = &state.0;
    let handle = PeerHandle::new(sender.clone());
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
                close(sender, CLOSE_POLICY, format!("{e}"));
                return None;
            }
        }
    }
}

/// Relays the peer's signals until its websocket ends or it is closed for abuse.
async fn serve(
    state: &ServerState,
    peer_id: PeerId,
    sender: &SignalingChannel,
    mut receiver: futures::stream::SplitStream<axum::extract::ws::WebSocket>,
    room: &SharedRoom<PeerHandle>,
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
    while let Some(message) = receiver.next().await {
        let (text, len) = match message {
            Ok(Message::Text(t)) => {
                let len = t.len();
                (Some(t), len)
            }
            Ok(Message::Binary(b)) => (None, b.len()),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => break,
            Err(e) => {
                debug!(%peer_id, "websocket error: {e}");
                break;
            }
        };
        if len > config.max_frame_bytes {
            metrics.refused(RefusalReason::FrameTooLarge);
            let why = format!(
                "message of {len} bytes exceeds the limit of {} bytes",
                config.max_frame_bytes
            );
            warn!(%peer_id, "closing: {why}");
            close(sender, CLOSE_TOO_BIG, why);
            break;
        }
        let parsed = text
            .as_ref()
            .and_then(|t| serde_json::from_str::<Request<'_>>(t.as_str()).ok());
        let abusive = match parsed {
            None => violation(DropReason::MalformedRequest),
            Some(Request::KeepAlive) => false,
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
                sender,
                CLOSE_POLICY,
                "too many malformed, invalid or rate-limited signals".into(),
            );
            break;
        }
    }
}

/// Takes the peer out of its room and tells those who knew it; promotes a new host if needed.
fn leave(state: &ServerState, peer_id: PeerId, key: &RoomKey, room: &SharedRoom<PeerHandle>) {
    let shared = &state.0;
    let closed = {
        let guard = &mut *lock(room);
        let Some((_, left)) = guard.leave(peer_id) else {
            return;
        };
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
