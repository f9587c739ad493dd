//! State shared by every connection of one server: rooms, admissions in progress, metrics.

use crate::config::ServerConfig;
use crate::metrics::{Metrics, RefusalReason};
use crate::registry::{lock, Registry, RoomInfo, RoomKey};
use crate::request::{Admitted, RoomError};
use axum::extract::ws::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Notify};

/// How the server reaches one peer: a bounded queue to its websocket's writer. A peer whose
/// queue is full when more comes for it does not read: its writer closes the connection
/// ([`Outbound`]), nothing more is buffered for it.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    queue: mpsc::Sender<Message>,
    overflow: Arc<Notify>,
}

/// The writer's end of a [`PeerHandle`].
pub(crate) struct Outbound {
    pub(crate) queue: mpsc::Receiver<Message>,
    pub(crate) overflow: Arc<Notify>,
}

impl PeerHandle {
    /// A handle on a queue of `capacity` messages, and the writer's end.
    pub(crate) fn new(capacity: usize) -> (Self, Outbound) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let overflow = Arc::new(Notify::new());
        let handle = Self {
            queue,
            overflow: overflow.clone(),
        };
        (
            handle,
            Outbound {
                queue: rx,
                overflow,
            },
        )
    }

    /// Queues a text message; a peer whose socket is gone is skipped (its own task cleans up),
    /// one whose queue is full is closed.
    pub fn send_text(&self, text: String) {
        self.send(Message::Text(text.into()));
    }

    /// Queues `message` (see [`PeerHandle::send_text`]).
    pub(crate) fn send(&self, message: Message) {
        match self.queue.try_send(message) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.overflow.notify_one(),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) registry: Mutex<Registry<PeerHandle>>,
    pub(crate) metrics: Metrics,
    /// Becomes `true` when the server shuts down: every connection closes.
    pub(crate) shutdown: watch::Sender<bool>,
}

/// The server's shared state, handed to every connection.
#[derive(Clone)]
pub struct ServerState(pub(crate) Arc<Shared>);

/// Why an HTTP upgrade request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Invalid query parameters.
    #[error(transparent)]
    BadRequest(#[from] RoomError),
    /// The room is at capacity.
    #[error("room `{room}` is full (capacity {capacity})")]
    RoomFull {
        /// The room's path.
        room: String,
        /// Its capacity.
        capacity: usize,
    },
    /// The server is at its connection limit.
    #[error("server is full ({0} connections)")]
    ServerFull(usize),
    /// The room name is too long or has characters rooms cannot have.
    #[error("{0}")]
    RoomName(String),
}

impl ServerState {
    /// Fresh state for a server with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Self(Arc::new(Shared {
            config,
            registry: Mutex::new(Registry::default()),
            metrics: Metrics::default(),
            shutdown: watch::channel(false).0,
        }))
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The server's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    /// Public rooms for `GET /rooms`.
    pub fn list_rooms(&self) -> Vec<RoomInfo> {
        lock(&self.0.registry).list_public()
    }

    /// Checks an HTTP upgrade request: the room request this server admits, or why not (the
    /// refusal is counted). The capacity check here is early and advisory (a clear HTTP
    /// refusal); the join itself enforces it.
    pub(crate) fn admit(
        &self,
        path: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<Admitted, Refusal> {
        self.check(path, query).inspect_err(|refusal| {
            self.0.metrics.refused(match refusal {
                Refusal::BadRequest(_) | Refusal::RoomName(_) => RefusalReason::BadRequest,
                Refusal::RoomFull { .. } => RefusalReason::RoomFull,
                Refusal::ServerFull(_) => RefusalReason::ServerFull,
            })
        })
    }

    fn check(
        &self,
        path: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<Admitted, Refusal> {
        let shared = &self.0;
        if let Some(name) = path {
            check_room_name(name, shared.config.max_room_name)?;
        }
        let request = Admitted::check(path, query, shared.config.max_room_peers)?;
        let connections = usize::try_from(shared.metrics.connections.get()).unwrap_or(0);
        if connections >= shared.config.max_connections {
            return Err(Refusal::ServerFull(shared.config.max_connections));
        }
        if request.next.is_none() {
            let key = RoomKey {
                path: request.path.clone(),
                group: None,
            };
            let registry = lock(&shared.registry);
            if let Some(room) = registry.get(&key) {
                let room = lock(room);
                if room.is_full() && !room.is_closed() {
                    return Err(Refusal::RoomFull {
                        room: request.path.clone(),
                        capacity: room.capacity(),
                    });
                }
            }
        }
        Ok(request)
    }
}

/// A room name: at most `max` bytes of letters, digits and `-_.~` (what a URL path segment
/// carries unescaped).
fn check_room_name(name: &str, max: usize) -> Result<(), Refusal> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
    if name.len() > max {
        return Err(Refusal::RoomName(format!(
            "room name of {} bytes exceeds {max}",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return Err(Refusal::RoomName(format!(
            "room name has {c:?}: letters, digits and -_.~ only"
        )));
    }
    Ok(())
}
