//! Many instances, one set of rooms (`--redis`): rooms live in Redis, each instance serves the
//! websockets connected to it.
//!
//! - A room is a Redis hash holding the same [`Room`](crate::room::Room) state machine a single
//!   server runs, as JSON, with a version: a change reads it, applies the join, leave or resume,
//!   and writes it back only if the version did not move, retried otherwise ([`store`]).
//! - The peers' events (`NewPeer`, `PeerLeft`, a close for a replaced connection) are published
//!   by the same Lua step that writes the room, on the channel of the instance each peer is on,
//!   so every peer hears its room's changes in the order they happened. Signals go straight to
//!   the receiver's instance.
//! - Each instance renews an expiring heartbeat; one whose heartbeat lapsed (killed, cut off)
//!   is swept by the others: its peers leave their rooms, who knew them hear `PeerLeft`, hosts
//!   move on ([`instance`]). A peer it held for resuming keeps its place until its grace ends.
//! - `?next=N` groups, join-order stamps, bans and refused resume tokens are shared too.

mod instance;
mod rooms;
mod scripts;
mod store;

use crate::state::PeerHandle;
use axum::extract::ws::{CloseFrame, Message};
use matchbox_protocol::PeerId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use store::Store;
use tokio::sync::{watch, OnceCell};

/// How often an instance renews its heartbeat and looks for instances whose heartbeat lapsed.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a heartbeat lives: an instance silent this long is taken for dead.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);

/// Why the shared state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    /// A room in Redis could not be read or written as JSON.
    #[error("room state: {0}")]
    Corrupt(#[source] serde_json::Error),
    /// A value in Redis is not what this server writes there.
    #[error("unexpected value in redis: {0}")]
    Garbled(String),
    /// This instance is not subscribed to its channel (Redis is unreachable).
    #[error("this instance does not hear the others (its redis subscription is down)")]
    NotListening,
    /// A room changed under every try (too many changes of it at once).
    #[error("room {0} changed under every try")]
    Contended(String),
}

/// Where a member of a shared room is connected: its instance and its connection there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Seat {
    /// The instance serving its websocket.
    pub(crate) instance: u64,
    /// Its connection on that instance.
    pub(crate) conn: u64,
    /// While its connection is away: until when (ms since the Unix epoch) its place is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) held_until_ms: Option<u64>,
    /// Its IP address (a kick bans it from the room).
    pub(crate) address: IpAddr,
    /// The name its join token gave it (a kick bans it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
}

impl Seat {
    /// Whether this is the seat of connection `conn` of `instance` (held or not).
    pub(crate) fn is(&self, instance: u64, conn: u64) -> bool {
        self.instance == instance && self.conn == conn
    }
}

/// A message for one peer's connection, sent through its instance's channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Delivery {
    /// The peer.
    pub(crate) to: PeerId,
    /// Its connection (a message for a connection that is gone is dropped).
    pub(crate) conn: u64,
    /// What to send.
    pub(crate) what: What,
}

/// What a [`Delivery`] carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum What {
    /// A matchbox event's text.
    Text(String),
    /// Close the websocket with this code and reason.
    Close(u16, String),
}

impl Delivery {
    /// `what` for the member `to` of a room, on the connection its seat names; with the
    /// instance that serves it.
    pub(crate) fn new(to: PeerId, seat: &Seat, what: What) -> (u64, Self) {
        (
            seat.instance,
            Self {
                to,
                conn: seat.conn,
                what,
            },
        )
    }
}

/// This instance's part in a set of instances sharing rooms through one Redis.
pub(crate) struct Cluster {
    /// This instance (random, fresh each start).
    pub(crate) instance: u64,
    client: redis::Client,
    prefix: String,
    store: OnceCell<Store>,
    /// The connections this instance serves, by peer and connection (a peer resuming here
    /// while its old connection here is not yet gone has both for a moment).
    local: Mutex<HashMap<(PeerId, u64), PeerHandle>>,
    /// Whether this instance listens on its channel (peers join only then, or they would miss
    /// their introductions).
    ready: watch::Sender<bool>,
}

/// How long a join waits for this instance's channel before it is refused.
const READY_WAIT: Duration = Duration::from_secs(5);

impl Cluster {
    /// An instance that will share rooms through the Redis at `url` under key `prefix`
    /// (connected on first use; [`Cluster::store`] tells if it can be reached).
    pub(crate) fn new(url: &str, prefix: &str) -> Result<Self, ClusterError> {
        let client = redis::Client::open(url).map_err(ClusterError::Redis)?;
        let mut bytes = [0u8; 8];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            bytes.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        }
        Ok(Self {
            instance: u64::from_le_bytes(bytes),
            client,
            prefix: prefix.to_string(),
            store: OnceCell::new(),
            local: Mutex::new(HashMap::new()),
            ready: watch::channel(false).0,
        })
    }

    /// [`Cluster::store`], once this instance listens on its channel.
    pub(crate) async fn ready_store(&self) -> Result<&Store, ClusterError> {
        let mut ready = self.ready.subscribe();
        tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r))
            .await
            .map_err(|_| ClusterError::NotListening)?
            .map_err(|_| ClusterError::NotListening)?;
        self.store().await
    }

    /// The shared rooms, connecting to Redis if not yet connected.
    pub(crate) async fn store(&self) -> Result<&Store, ClusterError> {
        self.store
            .get_or_try_init(|| async {
                let redis = self
                    .client
                    .get_connection_manager()
                    .await
                    .map_err(ClusterError::Redis)?;
                Ok(Store::new(redis, &self.prefix))
            })
            .await
    }

    /// Serves `peer` on this instance through `handle`.
    pub(crate) fn attach(&self, peer: PeerId, handle: PeerHandle) {
        crate::registry::lock(&self.local).insert((peer, handle.conn()), handle);
    }

    /// `peer`'s connection `conn` ended.
    pub(crate) fn detach(&self, peer: PeerId, conn: u64) {
        crate::registry::lock(&self.local).remove(&(peer, conn));
    }

    /// Hands a delivery to the connection it is for, if this instance serves it. Whether it
    /// did.
    pub(crate) fn deliver(&self, delivery: Delivery) -> bool {
        let key = (delivery.to, delivery.conn);
        let Some(handle) = crate::registry::lock(&self.local).get(&key).cloned() else {
            return false;
        };
        match delivery.what {
            What::Text(text) => handle.send_text(text),
            What::Close(code, reason) => handle.send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))),
        }
        true
    }

    /// The seat of `handle`'s connection on this instance.
    pub(crate) fn seat(&self, handle: &PeerHandle) -> Seat {
        Seat {
            instance: self.instance,
            conn: handle.conn(),
            held_until_ms: None,
            address: handle.address(),
            name: handle.claims().name.clone(),
        }
    }
}
