//! An in-process huddle_server (feature `server`, native only): the first player starts it and
//! shares its address, so a LAN game or a demo needs nothing else.

use bevy::prelude::Resource;
use huddle_server::ServerConfig;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Why the embedded server did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedServerError {
    /// The thread or its runtime could not be made.
    #[error("cannot run the server thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The server itself refused to start (e.g. its address is taken).
    #[error(transparent)]
    Server(#[from] huddle_server::ServerError),
    /// The server thread ended before it said where it listens.
    #[error("the server thread ended before it started")]
    Ended,
}

/// A signaling server running on a thread of its own (with its own tokio runtime). It stops when
/// dropped. Keep it as a resource for as long as the game hosts.
#[derive(Resource)]
pub struct EmbeddedServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedServer {
    /// Starts a server with `config` (e.g. `ServerConfig { bind: "0.0.0.0:3536".parse()?, ..}`
    /// to let LAN players in, or [`ServerConfig::loopback`] for a local demo).
    pub fn start(config: ServerConfig) -> Result<Self, EmbeddedServerError> {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("huddle-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(EmbeddedServerError::Thread(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match huddle_server::start(config) {
                        Ok(server) => {
                            let _ = addr_tx.send(Ok(server.local_addr()));
                            let _ = stop_rx.await;
                            let _ = server.shutdown().await;
                        }
                        Err(e) => {
                            let _ = addr_tx.send(Err(EmbeddedServerError::Server(e)));
                        }
                    }
                });
            })?;
        let addr = addr_rx.recv().map_err(|_| EmbeddedServerError::Ended)??;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of a room on it for players on this machine (`ws://127.0.0.1:port/room` when it
    /// listens on all interfaces).
    pub fn room_url(&self, room: &str) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("ws://{addr}/{}", room.trim_start_matches('/'))
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
