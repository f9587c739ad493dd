//! Plain HTTP routes beside the websocket: `/health`, `/metrics`, `/rooms`.
//!
//! These names are reserved: a room cannot be called `health`, `metrics` or `rooms`.

use crate::state::ServerState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

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
            get(move || async move { Json(rooms.list_rooms()) }),
        )
}
