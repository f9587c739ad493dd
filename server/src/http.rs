//! Plain HTTP routes beside the websocket: `/health`, `/metrics`, `/rooms` (paginated, from a
//! snapshot).
//!
//! These names are reserved: a room cannot be called `health`, `metrics` or `rooms`.

use crate::connection::Held;
use crate::state::ServerState;
use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::time::SystemTime;

/// Adds the HTTP routes to the signaling router.
pub fn routes(router: Router, state: ServerState) -> Router {
    let health = state.clone();
    let metrics = state.clone();
    let rooms = state.clone();
    let operator = state.clone();
    let ice_state = state;
    router
        .route(
            "/health",
            get(move || async move {
                let m = health.metrics();
                Json(serde_json::json!({
                    "status": "ok",
                    "connections": m.connections.get(),
                    "rooms": m.rooms.get(),
                }))
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.metrics().render(),
                )
                    .into_response()
            }),
        )
        .route(
            "/rooms",
            get(
                move |Query(query): Query<HashMap<String, String>>| async move {
                    rooms_page(&rooms, &query).await
                },
            ),
        )
        .route(
            "/ice/{room}",
            get(
                move |Path(room): Path<String>,
                      Query(query): Query<HashMap<String, String>>| async move {
                    ice(&ice_state, &room, &query)
                },
            ),
        )
        .route(
            "/rooms/{room}/kick",
            post(
                move |Path(room): Path<String>,
                      Query(query): Query<HashMap<String, String>>,
                      headers: HeaderMap| async move {
                    operator_kick(&operator, &room, &query, &headers).await
                },
            ),
        )
}

/// `GET /ice/<room>?token=...`: the ICE servers for a peer of `room` (JSON, `RTCIceServer`s). With
/// an auth secret, only for a valid join token of that room (the TURN user is its name).
fn ice(state: &ServerState, room: &str, query: &HashMap<String, String>) -> Response {
    let config = state.config();
    let name = match &config.auth_secret {
        Some(secret) => {
            let token = query.get(crate::token::QUERY).map(String::as_str);
            match crate::token::verify(secret.as_bytes(), room, token, SystemTime::now()) {
                Ok(claims) => claims.name.unwrap_or_else(|| "peer".into()),
                Err(e) => return (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
            }
        }
        None => "peer".into(),
    };
    Json(crate::ice::ice_servers(config, &name, SystemTime::now())).into_response()
}

/// `POST /rooms/<room>/kick?peer=<id>&ban_secs=<n>` with `Authorization: Bearer <auth secret>`:
/// the operator removes a peer (as its room's host can) and bans its address from the room.
async fn operator_kick(
    state: &ServerState,
    room: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let Some(secret) = &state.config().auth_secret else {
        let why = "no operator access: the server has no --auth-secret";
        return (StatusCode::NOT_FOUND, why).into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compared as digests: the time taken tells nothing of the secret.
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    if digest(presented).as_ref() != digest(secret).as_ref() {
        let why = "the operator's bearer secret is wrong";
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let peer = query.get("peer").and_then(|p| p.parse::<uuid::Uuid>().ok());
    let Some(peer) = peer.map(matchbox_protocol::PeerId) else {
        return (StatusCode::BAD_REQUEST, "`peer=` must be a peer id").into_response();
    };
    let ban = match query.get("ban_secs").map(|b| b.parse::<u64>()) {
        None => 0,
        Some(Ok(secs)) => secs,
        Some(Err(_)) => {
            let why = "`ban_secs=` must be a whole number";
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let rooms: Vec<_> = match &state.0.cluster {
        None => crate::registry::lock(&state.0.registry)
            .iter()
            .filter(|(key, _)| key.path == room)
            .map(|(key, room)| (key.clone(), Held::Here(room.clone())))
            .collect(),
        Some(cluster) => match cluster.rooms_at(room).await {
            Ok(keys) => keys
                .into_iter()
                .map(|key| (key, Held::Shared(cluster.clone())))
                .collect(),
            Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        },
    };
    let ban = std::time::Duration::from_secs(ban);
    let mut kicked = false;
    for (key, held) in &rooms {
        if crate::connection::kick(state, key, held, peer, ban, "the operator").await {
            kicked = true;
            break;
        }
    }
    if kicked {
        (StatusCode::OK, "kicked").into_response()
    } else {
        let why = format!("no peer {peer} in room `{room}`");
        (StatusCode::NOT_FOUND, why).into_response()
    }
}

/// Rooms listed per page at most (`?limit=`), and by default.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// `GET /rooms?offset=N&limit=M`: a page of the public rooms (sorted by path), from a snapshot at
/// most [`ROOMS_REFRESH`](crate::state::ROOMS_REFRESH) old; the total is in `X-Total-Count`.
async fn rooms_page(state: &ServerState, query: &HashMap<String, String>) -> Response {
    let number = |name: &str, default: usize| match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| format!("`{name}={v}`: a whole number")),
    };
    let (offset, limit) = match (number("offset", 0), number("limit", DEFAULT_PAGE)) {
        (Ok(o), Ok(l)) => (o, l.min(MAX_PAGE)),
        (Err(e), _) | (_, Err(e)) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let rooms = match state.rooms_listing().await {
        Ok(rooms) => rooms,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let page: Vec<_> = rooms.iter().skip(offset).take(limit).cloned().collect();
    (
        [(
            HeaderName::from_static("x-total-count"),
            rooms.len().to_string(),
        )],
        Json(page),
    )
        .into_response()
}
