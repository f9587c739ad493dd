//! Starting and stopping a server: on its own, or embedded in a test or a game.

use crate::config::ServerConfig;
use crate::connection::HuddleTopology;
use crate::http;
use crate::metrics::Metrics;
use crate::registry::RoomInfo;
use crate::state::ServerState;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use matchbox_signaling::{NoCallbacks, SignalingServerBuilder};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be bound, or serving failed.
    #[error(transparent)]
    Signaling(#[from] matchbox_signaling::Error),
    /// The server task panicked or was cancelled.
    #[error("server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running server. Dropping it leaves the server running until the runtime ends; call
/// [`RunningServer::shutdown`] to stop it gracefully.
pub struct RunningServer {
    addr: SocketAddr,
    state: ServerState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), matchbox_signaling::Error>>,
}

/// Binds and starts a server on the current tokio runtime. With port 0 in `config.bind`, the OS
/// picks a free port: [`RunningServer::local_addr`] tells which.
// matchbox_signaling's connection callback returns `Result<bool, axum::Response>`: the large error
// is its signature, not ours.
#[allow(clippy::result_large_err)]
pub fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let state = ServerState::new(config.clone());
    let admit = state.clone();
    let assign = state.clone();
    let routes = state.clone();
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let mut server = SignalingServerBuilder::<HuddleTopology, NoCallbacks, ServerState>::new(
        config.bind,
        HuddleTopology,
        state.clone(),
    )
    .on_connection_request(move |meta| {
        match admit.admit(meta.origin, meta.path.as_deref(), &meta.query_params) {
            Ok(()) => Ok(true),
            Err(refusal) => {
                let status = match refusal {
                    crate::state::Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                info!(origin = %meta.origin, "refused: {refusal}");
                Err((status, refusal.to_string()).into_response())
            }
        }
    })
    .on_id_assignment(move |(origin, peer)| assign.assign_id(origin, peer))
    .mutate_router(|router| http::routes(router, routes))
    .with_shutdown(shutdown_rx)
    .cors()
    .build();
    let addr = server.bind()?;
    info!("huddle_server listening on {addr}");
    let task = tokio::spawn(server.serve());
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(shutdown_tx),
        task,
    })
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The websocket URL of a room on this server, e.g. `ws://127.0.0.1:3536/lobby`. `room` may
    /// carry a query (`"lobby?next=2"`).
    pub fn room_url(&self, room: &str) -> String {
        format!("ws://{}/{}", self.addr, room.trim_start_matches('/'))
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        self.state.metrics()
    }

    /// Public rooms, as `GET /rooms` lists them.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.state.list_rooms()
    }

    /// Stops accepting connections, closes the peers' websockets and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await??;
        Ok(())
    }

    /// Serves until the server fails, or until `signal` resolves, then shuts down gracefully.
    pub async fn serve_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let mut this = self;
        tokio::select! {
            result = &mut this.task => Ok(result??),
            () = signal => this.shutdown().await,
        }
    }
}
