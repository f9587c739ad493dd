//! State shared by every connection of one server: rooms, admissions in progress, metrics.

use crate::config::ServerConfig;
use crate::metrics::{Metrics, RefusalReason};
use crate::registry::{lock, Registry, RoomInfo, RoomKey};
use crate::request::{Admitted, RoomError};
use axum::extract::ws::Message;
use matchbox_protocol::PeerId;
use matchbox_signaling::common_logic::SignalingChannel;
use matchbox_signaling::SignalingState;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an admitted request waits for its websocket upgrade before it is forgotten.
const ADMISSION_TTL: Duration = Duration::from_secs(30);

/// How the server reaches one peer.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    sender: SignalingChannel,
}

impl PeerHandle {
    /// Wraps a peer's websocket sender.
    pub fn new(sender: SignalingChannel) -> Self {
        Self { sender }
    }

    /// Queues a text message; a peer whose socket is gone is skipped (its own task cleans up).
    pub fn send_text(&self, text: String) {
        let _ = self.sender.send(Ok(Message::Text(text.into())));
    }
}

/// Requests admitted over HTTP whose websocket is being set up: matchbox_signaling tells the room
/// request (at the HTTP request) and the peer id (at id assignment) apart, keyed by the client's
/// address in between.
#[derive(Debug, Default)]
struct Admissions {
    by_origin: HashMap<SocketAddr, (Admitted, Instant)>,
    by_peer: HashMap<PeerId, (Admitted, Instant)>,
    last_purge: Option<Instant>,
}

impl Admissions {
    /// Drops admissions whose upgrade never happened (at most once a second, O(admissions)).
    fn purge(&mut self, now: Instant) {
        if self
            .last_purge
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_purge = Some(now);
        self.by_origin
            .retain(|_, (_, t)| now.duration_since(*t) < ADMISSION_TTL);
        self.by_peer
            .retain(|_, (_, t)| now.duration_since(*t) < ADMISSION_TTL);
    }
}

pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) registry: Mutex<Registry<PeerHandle>>,
    admissions: Mutex<Admissions>,
    pub(crate) metrics: Metrics,
}

/// The server's shared state, handed to every connection by matchbox_signaling.
#[derive(Clone)]
pub struct ServerState(pub(crate) Arc<Shared>);

impl SignalingState for ServerState {}

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
}

impl ServerState {
    /// Fresh state for a server with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Self(Arc::new(Shared {
            config,
            registry: Mutex::new(Registry::default()),
            admissions: Mutex::new(Admissions::default()),
            metrics: Metrics::default(),
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

    /// Checks an HTTP upgrade request and remembers its room request until the websocket is up.
    /// The capacity check here is early and advisory (a clear HTTP refusal); the join itself
    /// enforces it.
    pub(crate) fn admit(
        &self,
        origin: SocketAddr,
        path: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<(), Refusal> {
        let shared = &self.0;
        let result = self.check(path, query);
        match result {
            Ok(request) => {
                let now = Instant::now();
                let mut admissions = lock(&shared.admissions);
                admissions.purge(now);
                admissions.by_origin.insert(origin, (request, now));
                Ok(())
            }
            Err(refusal) => {
                shared.metrics.refused(match refusal {
                    Refusal::BadRequest(_) => RefusalReason::BadRequest,
                    Refusal::RoomFull { .. } => RefusalReason::RoomFull,
                    Refusal::ServerFull(_) => RefusalReason::ServerFull,
                });
                Err(refusal)
            }
        }
    }

    fn check(
        &self,
        path: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<Admitted, Refusal> {
        let shared = &self.0;
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

    /// The websocket of an admitted request got its peer id.
    pub(crate) fn assign_id(&self, origin: SocketAddr, peer: PeerId) {
        let mut admissions = lock(&self.0.admissions);
        if let Some(entry) = admissions.by_origin.remove(&origin) {
            admissions.by_peer.insert(peer, entry);
        }
    }

    /// Takes the room request of a peer whose websocket is up.
    pub(crate) fn take_request(&self, peer: PeerId) -> Option<Admitted> {
        lock(&self.0.admissions)
            .by_peer
            .remove(&peer)
            .map(|(request, _)| request)
    }
}
