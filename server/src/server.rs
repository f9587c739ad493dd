//! Starting and stopping a server: on its own, or embedded in a test or a game.

use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::http;
use crate::metrics::Metrics;
use crate::registry::RoomInfo;
use crate::serve;
use crate::state::ServerState;
use crate::tls::{self, TlsListener};
use crate::upgrade;
use axum::Router;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::cors::CorsLayer;
use tracing::info;

/// Connections the kernel holds for us before we accept them.
const LISTEN_BACKLOG: u32 = 4096;

/// How long a shutdown waits for the peers' connections to close.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be bound, or serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The TLS certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The server task panicked or was cancelled.
    #[error("server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The Redis shared with other instances cannot be used (`--redis`).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The settings contradict each other.
    #[error("{0}")]
    Config(&'static str),
}

/// A running server. Dropping it leaves the server running until the runtime ends; call
/// [`RunningServer::shutdown`] to stop it gracefully.
pub struct RunningServer {
    addr: SocketAddr,
    tls: bool,
    state: ServerState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), std::io::Error>>,
}

/// Binds and starts a server on the current tokio runtime. With port 0 in `config.bind`, the OS
/// picks a free port: [`RunningServer::local_addr`] tells which.
pub fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    if config.redis.is_some() && config.resume_secret.is_none() {
        return Err(ServerError::Config(
            "--redis needs --resume-secret: every instance must take the others' resume tokens",
        ));
    }
    let state = ServerState::new(config.clone())?;
    Cluster::spawn(&state);
    let socket = if config.bind.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A server restarted at once finds its port free; a join storm finds room in the queue of
    // connections not yet accepted (the kernel caps it at `net.core.somaxconn`).
    socket.set_reuseaddr(true)?;
    socket.bind(config.bind)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    let addr = listener.local_addr()?;
    let router = upgrade::routes(Router::new(), state.clone());
    let router = http::routes(router, state.clone()).layer(CorsLayer::permissive());
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let closing = state.clone();
    let shutdown = async move {
        let _ = shutdown_rx.await;
        // Every peer's connection closes (upgraded websockets are not hyper's to wait for);
        // give them a moment to go.
        let _ = closing.0.shutdown.send(true);
        let deadline = Instant::now() + CLOSE_WAIT;
        while closing.metrics().connections.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::config(cert, key)?),
        _ => None,
    };
    let head_timeout = Duration::from_secs(config.handshake_timeout_secs.max(1));
    let max = config.max_connections;
    let task = match tls.clone() {
        Some(tls) => {
            let listener = TlsListener::new(listener, tls)?;
            tokio::spawn(async move {
                serve::serve(listener, router, head_timeout, max, shutdown).await;
                Ok::<(), std::io::Error>(())
            })
        }
        None => tokio::spawn(async move {
            serve::serve(listener, router, head_timeout, max, shutdown).await;
            Ok::<(), std::io::Error>(())
        }),
    };
    info!("huddle_server listening on {addr}");
    Ok(RunningServer {
        addr,
        tls: tls.is_some(),
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

    /// The websocket URL of a room on this server, e.g. `ws://127.0.0.1:3536/lobby` (`wss://`
    /// with TLS). `room` may carry a query (`"lobby?next=2"`).
    pub fn room_url(&self, room: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/{}", self.addr, room.trim_start_matches('/'))
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        self.state.metrics()
    }

    /// Public rooms held in this process's memory, as `GET /rooms` lists them without
    /// `--redis` (with it, rooms live in Redis: [`RunningServer::rooms_listed`]).
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.state.list_rooms()
    }

    /// Public rooms as `GET /rooms` lists them: with `--redis`, those of every instance (a
    /// snapshot at most a second old).
    pub async fn rooms_listed(&self) -> Result<Vec<RoomInfo>, crate::cluster::ClusterError> {
        Ok(self.state.rooms_listing().await?.to_vec())
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
