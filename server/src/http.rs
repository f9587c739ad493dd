//! Plain HTTP routes beside the websocket: `/health`, `/metrics`, `/rooms` (paginated, from a
//! snapshot).
//!
//! These names are reserved: a room cannot be called `health`, `metrics` or `rooms`.

use crate::state::ServerState;
use axum::extract::Query;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;

/// Adds the HTTP routes to the signaling router.
pub fn routes(router: Router, state: ServerState) -> Router {
    let health = state.clone();
    let metrics = state.clone();
    let rooms = state;
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
                    rooms_page(&rooms, &query)
                },
            ),
        )
}

/// Rooms listed per page at most (`?limit=`), and by default.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// `GET /rooms?offset=N&limit=M`: a page of the public rooms (sorted by path), from a snapshot at
/// most [`ROOMS_REFRESH`](crate::state::ROOMS_REFRESH) old; the total is in `X-Total-Count`.
fn rooms_page(state: &ServerState, query: &HashMap<String, String>) -> Response {
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
    let rooms = state.rooms_snapshot();
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
