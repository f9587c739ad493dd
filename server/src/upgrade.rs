//! The websocket route: checks a peer's room request over HTTP (refused with a status and the
//! reason), then upgrades with explicit buffer sizes and message limits and hands the socket to
//! [`connection::run`](crate::connection::run). `GET /admit/<room>?...` answers the same check
//! without a websocket, for browsers (they cannot read a refused websocket's answer).

use crate::connection;
use crate::state::{Refusal, ServerState};
use crate::tls::PeerAddr;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use tracing::info;

/// Bytes read from a peer's socket at a time: signaling messages are small, and a big read
/// buffer per idle connection is most of its memory.
const READ_BUFFER: usize = 4 * 1024;

/// Bytes gathered before a write, within one batch of messages.
const WRITE_BUFFER: usize = 16 * 1024;

/// Adds the websocket routes, `/` (the default room) and `/<room>`, and `/admit/<room>`.
pub fn routes(router: Router, state: ServerState) -> Router {
    let default_room = state.clone();
    let probe = state.clone();
    router
        .route(
            "/admit/{room}",
            get(
                move |ConnectInfo(PeerAddr(from)): ConnectInfo<PeerAddr>,
                      Path(room): Path<String>,
                      Query(query): Query<HashMap<String, String>>| async move {
                    match probe.would_admit(from.ip(), Some(&room), &query).await {
                        Ok(()) => (StatusCode::OK, "admitted".to_string()).into_response(),
                        Err(refusal) => refused(&refusal),
                    }
                },
            ),
        )
        .route(
            "/",
            get(
                move |ws: WebSocketUpgrade,
                      ConnectInfo(PeerAddr(from)): ConnectInfo<PeerAddr>,
                      Query(query): Query<HashMap<String, String>>| {
                    upgrade(default_room.clone(), ws, from, None, query)
                },
            ),
        )
        .route(
            "/{room}",
            get(
                move |ws: WebSocketUpgrade,
                      ConnectInfo(PeerAddr(from)): ConnectInfo<PeerAddr>,
                      Path(room): Path<String>,
                      Query(query): Query<HashMap<String, String>>| {
                    upgrade(state.clone(), ws, from, Some(room), query)
                },
            ),
        )
}

/// The HTTP answer to a refused request: its status and the reason.
fn refused(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::BadRequest(_) | Refusal::RoomName(_) => StatusCode::BAD_REQUEST,
        Refusal::RoomFull { .. } | Refusal::ServerFull(_) => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::AddressFull { .. } => StatusCode::TOO_MANY_REQUESTS,
        Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Refusal::Banned { .. } => StatusCode::FORBIDDEN,
        Refusal::Resume(crate::resume::ResumeError::Gone) => StatusCode::GONE,
        Refusal::Resume(_) => StatusCode::UNAUTHORIZED,
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, refusal.to_string()).into_response()
}

async fn upgrade(
    state: ServerState,
    ws: WebSocketUpgrade,
    from: SocketAddr,
    room: Option<String>,
    query: HashMap<String, String>,
) -> Response {
    let admitted = match state.admit(from.ip(), room.as_deref(), &query) {
        Ok((request, slot)) => state
            .admit_shared(&request, from.ip())
            .await
            .map(|()| (request, slot)),
        Err(refusal) => Err(refusal),
    };
    let (request, slot) = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            info!(%from, room = room.as_deref().unwrap_or(""), "refused: {refusal}");
            return refused(&refusal);
        }
    };
    let limit = state.config().max_frame_bytes;
    ws.read_buffer_size(READ_BUFFER)
        // The writer flushes after each batch of what waited (see `connection`); what a peer does
        // not read waits in its bounded queue, not in the socket's buffer.
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(limit.saturating_mul(2).max(READ_BUFFER))
        // A message over the limit is refused as it arrives, not buffered whole first.
        .max_message_size(limit)
        .max_frame_size(limit)
        // The seat goes with the connection (or with this closure, if the upgrade never happens).
        .on_upgrade(move |socket| async move {
            connection::run(state, socket, request, from.ip()).await;
            drop(slot);
        })
}
