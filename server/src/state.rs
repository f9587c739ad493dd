//! State shared by every connection of one server: rooms, admissions in progress, metrics.

use crate::cluster::{Cluster, ClusterError};
use crate::config::ServerConfig;
use crate::expiring::Expiring;
use crate::metrics::{Metrics, RefusalReason};
use crate::registry::{lock, Registry, RoomInfo, RoomKey};
use crate::request::{Admitted, RoomError};
use crate::resume::{ResumeError, ResumeToken, Stamps};
use crate::token::Claims;
use axum::extract::ws::Message;
use huddle_protocol::reconnect::RESUME_QUERY;
use matchbox_protocol::PeerId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// How the server reaches one peer: a bounded queue to its websocket's writer. A peer whose
/// queue is full when more comes for it does not read: its writer closes the connection
/// ([`Outbound`]), nothing more is buffered for it.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    queue: mpsc::Sender<Message>,
    overflow: Arc<Notify>,
    /// Bytes of the messages in the queue and in the batch being written.
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    address: IpAddr,
    /// Who its join token says it is.
    claims: Arc<Claims>,
    /// Which connection this is (unique in the process).
    conn: u64,
}

/// Connection numbers.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// The writer's end of a [`PeerHandle`].
pub(crate) struct Outbound {
    pub(crate) queue: mpsc::Receiver<Message>,
    pub(crate) overflow: Arc<Notify>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Outbound {
    /// `bytes` of what was queued went out (or will never go).
    pub(crate) fn written(&self, bytes: usize) {
        let _ = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(bytes))
            });
    }
}

/// Bytes a queued message counts for.
pub(crate) fn queued_len(message: &Message) -> usize {
    match message {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

/// How much may wait for one peer before it counts as not reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimit {
    /// Messages.
    pub(crate) messages: usize,
    /// Bytes of those messages.
    pub(crate) bytes: usize,
}

impl PeerHandle {
    /// A handle on a queue within `limit` for a peer at `address` whose token made `claims`,
    /// and the writer's end.
    pub(crate) fn new(limit: QueueLimit, address: IpAddr, claims: Claims) -> (Self, Outbound) {
        let (queue, rx) = mpsc::channel(limit.messages.max(1));
        let overflow = Arc::new(Notify::new());
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let handle = Self {
            queue,
            overflow: overflow.clone(),
            queued_bytes: queued_bytes.clone(),
            max_bytes: limit.bytes,
            address,
            claims: Arc::new(claims),
            conn: CONNECTIONS.fetch_add(1, Ordering::Relaxed),
        };
        (
            handle,
            Outbound {
                queue: rx,
                overflow,
                queued_bytes,
            },
        )
    }

    /// Queues a text message; a peer whose socket is gone is skipped (its own task cleans up),
    /// one whose queue is full is closed.
    pub fn send_text(&self, text: String) {
        self.send(Message::Text(text.into()));
    }

    /// Which connection this is: a peer that resumed has a new one.
    pub(crate) fn conn(&self) -> u64 {
        self.conn
    }

    /// The peer's IP address.
    pub(crate) fn address(&self) -> IpAddr {
        self.address
    }

    /// Who its join token says it is.
    pub(crate) fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Queues `message` (see [`PeerHandle::send_text`]); past the queue's messages or bytes
    /// the peer is not reading: its writer closes it.
    pub(crate) fn send(&self, message: Message) {
        let len = queued_len(&message);
        let fits = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                let total = q.saturating_add(len);
                (total <= self.max_bytes || len == 0).then_some(total)
            })
            .is_ok();
        if !fits {
            self.overflow.notify_one();
            return;
        }
        match self.queue.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => self.unqueue(len),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.unqueue(len);
                self.overflow.notify_one();
            }
        }
    }

    fn unqueue(&self, len: usize) {
        let _ = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(len))
            });
    }
}

pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) registry: Mutex<Registry<PeerHandle>>,
    pub(crate) metrics: Metrics,
    /// Becomes `true` when the server shuts down: every connection closes.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Connections admitted and not yet ended, in all and per address ([`Slot`]).
    slots: Mutex<Slots>,
    /// The public rooms as `GET /rooms` lists them, and when they were listed.
    rooms_snapshot: Mutex<Option<(Instant, Arc<Vec<RoomInfo>>)>>,
    /// Addresses and names banned from a room (its path) after a kick, until when.
    bans: Mutex<Expiring<(String, Banned)>>,
    /// The key resume tokens are signed with (`--resume-secret`, else random).
    pub(crate) resume_key: Vec<u8>,
    /// Join-order stamps.
    pub(crate) stamps: Stamps,
    /// Peers whose place is gone (away past the grace period, kicked), until when their resume
    /// tokens are refused.
    tombstones: Mutex<Expiring<PeerId>>,
    /// With `--redis`: the rooms, bans and tombstones shared with the other instances.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// Held while the shared rooms are listed for `GET /rooms`.
    listing: tokio::sync::Mutex<()>,
}

/// Tombstones held at most (expired ones go first; past this the oldest goes).
const MAX_TOMBSTONES: usize = 65_536;

/// How long a gone peer's resume token stays refused.
pub(crate) const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// Who a ban keeps out of a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Banned {
    /// Connections from this address.
    Address(IpAddr),
    /// Tokens with this name.
    Name(String),
}

/// Bans held at most (expired ones go first; past this the oldest goes).
const MAX_BANS: usize = 65_536;

/// How old the room list `GET /rooms` serves may be: the rooms are walked at most this often,
/// however many ask.
pub const ROOMS_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Slots {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A connection's seat on the server, taken when its request is admitted (so admissions cannot
/// overshoot the limits however many arrive at once) and given back when it is dropped: when the
/// connection ends, or when its upgrade never happens.
pub(crate) struct Slot {
    state: ServerState,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = lock(&self.state.0.slots);
        slots.total = slots.total.saturating_sub(1);
        if let Some(n) = slots.by_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                slots.by_address.remove(&self.address);
            }
        }
    }
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
    /// The client's address or token name is banned from the room (it was kicked).
    #[error("banned from room `{room}` for {secs} s more")]
    Banned {
        /// The room's path.
        room: String,
        /// Seconds left.
        secs: u64,
    },
    /// The client's address has as many connections as one address may.
    #[error("too many connections from {address} (at most {limit})")]
    AddressFull {
        /// The client's address.
        address: IpAddr,
        /// Connections one address may have.
        limit: usize,
    },
    /// The room name is too long or has characters rooms cannot have.
    #[error("{0}")]
    RoomName(String),
    /// No valid join token for the room (the server has an auth secret).
    #[error(transparent)]
    Unauthorized(#[from] crate::token::TokenError),
    /// A resume token that is not valid here, or whose place is gone.
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// The rooms shared with other instances cannot be reached (Redis is down).
    #[error("rooms unavailable: {0}")]
    Unavailable(#[from] ClusterError),
}

impl ServerState {
    /// Fresh state for a server with `config`; with `config.redis`, one instance of many
    /// sharing their rooms through that Redis (connected on first use).
    pub fn new(config: ServerConfig) -> Result<Self, ClusterError> {
        let config_secret = config.resume_secret.clone();
        let cluster = match &config.redis {
            Some(url) => Some(Arc::new(Cluster::new(url, &config.redis_prefix)?)),
            None => None,
        };
        Ok(Self(Arc::new(Shared {
            config,
            registry: Mutex::new(Registry::default()),
            metrics: Metrics::default(),
            shutdown: watch::channel(false).0,
            slots: Mutex::new(Slots::default()),
            rooms_snapshot: Mutex::new(None),
            bans: Mutex::new(Expiring::new(MAX_BANS)),
            resume_key: resume_key(config_secret),
            stamps: Stamps::default(),
            tombstones: Mutex::new(Expiring::new(MAX_TOMBSTONES)),
            cluster,
            listing: tokio::sync::Mutex::new(()),
        })))
    }

    /// Refuses `peer`'s resume token from now on (its place is gone), on every instance.
    pub(crate) async fn tombstone(&self, peer: PeerId) {
        let now = Instant::now();
        lock(&self.0.tombstones).insert(peer, now + TOMBSTONE_TTL, now);
        if let Some(cluster) = &self.0.cluster {
            if let Err(e) = cluster.tombstone(peer, TOMBSTONE_TTL).await {
                tracing::warn!(%peer, "other instances may still take its resume token: {e}");
            }
        }
    }

    /// With shared rooms: refuses `request` from `address` if another instance banned it from
    /// its room or refuses its resume token (what [`ServerState::admit`] checks here). The
    /// refusal is counted.
    pub(crate) async fn admit_shared(
        &self,
        request: &Admitted,
        address: IpAddr,
    ) -> Result<(), Refusal> {
        let Some(cluster) = &self.0.cluster else {
            return Ok(());
        };
        let checked = async {
            if let Some(left) = cluster
                .banned_for(&request.path, address, &request.claims)
                .await?
            {
                return Ok(Err(Refusal::Banned {
                    room: request.path.clone(),
                    secs: left.as_secs().max(1),
                }));
            }
            if let Some(token) = request.resume {
                if cluster.is_gone(token.peer).await? {
                    return Ok(Err(ResumeError::Gone.into()));
                }
            }
            Ok::<_, ClusterError>(Ok(()))
        };
        checked
            .await
            .unwrap_or_else(|e| Err(Refusal::Unavailable(e)))
            .inspect_err(|refusal| self.count(refusal))
    }

    /// Public rooms as of at most [`ROOMS_REFRESH`] ago, of every instance sharing rooms with
    /// this one (what `GET /rooms` serves).
    pub async fn rooms_listing(&self) -> Result<Arc<Vec<RoomInfo>>, ClusterError> {
        let Some(cluster) = &self.0.cluster else {
            return Ok(self.rooms_snapshot());
        };
        let fresh = || {
            lock(&self.0.rooms_snapshot)
                .as_ref()
                .filter(|(at, _)| at.elapsed() < ROOMS_REFRESH)
                .map(|(_, rooms)| rooms.clone())
        };
        if let Some(rooms) = fresh() {
            return Ok(rooms);
        }
        // One listing at a time, however many ask: the others take what it found.
        let _listing = self.0.listing.lock().await;
        if let Some(rooms) = fresh() {
            return Ok(rooms);
        }
        let rooms = Arc::new(cluster.store().await?.list_public().await?);
        *lock(&self.0.rooms_snapshot) = Some((Instant::now(), rooms.clone()));
        Ok(rooms)
    }

    /// Whether `peer`'s place is gone (its resume token is refused).
    fn is_gone(&self, peer: PeerId) -> bool {
        lock(&self.0.tombstones)
            .until(&peer, Instant::now())
            .is_some()
    }

    /// The resume token for a peer with `token`'s place in room `path`.
    pub(crate) fn resume_token(&self, path: &str, token: &ResumeToken) -> String {
        crate::resume::mint(&self.0.resume_key, path, token)
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The server's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    /// Public rooms, as they are now.
    pub fn list_rooms(&self) -> Vec<RoomInfo> {
        lock(&self.0.registry).list_public()
    }

    /// Public rooms as of at most [`ROOMS_REFRESH`] ago (what `GET /rooms` serves).
    pub fn rooms_snapshot(&self) -> Arc<Vec<RoomInfo>> {
        let mut snapshot = lock(&self.0.rooms_snapshot);
        match &*snapshot {
            Some((at, rooms)) if at.elapsed() < ROOMS_REFRESH => rooms.clone(),
            _ => {
                let rooms = Arc::new(self.list_rooms());
                *snapshot = Some((Instant::now(), rooms.clone()));
                rooms
            }
        }
    }

    /// Checks an HTTP upgrade request from `address`: the room request this server admits with
    /// the connection's seat, or why not (the refusal is counted). The room's capacity check here
    /// is early and advisory (a clear HTTP refusal); the join itself enforces it.
    pub(crate) fn admit(
        &self,
        address: IpAddr,
        path: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<(Admitted, Slot), Refusal> {
        self.check(path, query)
            .and_then(|request| {
                self.check_ban(&request.path, address, &request.claims)?;
                Ok((request, self.take_slot(address)?))
            })
            .inspect_err(|refusal| self.count(refusal))
    }

    /// Counts a refused request.
    fn count(&self, refusal: &Refusal) {
        self.0.metrics.refused(match refusal {
            Refusal::BadRequest(_) | Refusal::RoomName(_) => RefusalReason::BadRequest,
            Refusal::RoomFull { .. } => RefusalReason::RoomFull,
            Refusal::ServerFull(_) => RefusalReason::ServerFull,
            Refusal::AddressFull { .. } => RefusalReason::AddressFull,
            Refusal::Unauthorized(_) => RefusalReason::Unauthorized,
            Refusal::Banned { .. } => RefusalReason::Banned,
            Refusal::Resume(_) => RefusalReason::Resume,
            Refusal::Unavailable(_) => RefusalReason::Unavailable,
        })
    }

    /// Whether a websocket request from `address` for `path` with `query` would be admitted now
    /// (`GET /admit/<room>`: a browser cannot read a refused websocket's answer, so it asks
    /// here). Nothing is taken or counted.
    pub(crate) async fn would_admit(
        &self,
        address: IpAddr,
        path: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<(), Refusal> {
        let request = self.check(path, query)?;
        self.check_ban(&request.path, address, &request.claims)?;
        self.room_for(&lock(&self.0.slots), address)?;
        if let Some(cluster) = &self.0.cluster {
            if let Some(left) = cluster
                .banned_for(&request.path, address, &request.claims)
                .await?
            {
                return Err(Refusal::Banned {
                    room: request.path.clone(),
                    secs: left.as_secs().max(1),
                });
            }
        }
        Ok(())
    }

    /// Whether `slots` have room for one more connection from `address`: how many it has.
    fn room_for(&self, slots: &Slots, address: IpAddr) -> Result<usize, Refusal> {
        let config = &self.0.config;
        if slots.total >= config.max_connections {
            return Err(Refusal::ServerFull(config.max_connections));
        }
        let mine = slots.by_address.get(&address).copied().unwrap_or(0);
        if mine >= config.max_connections_per_address {
            return Err(Refusal::AddressFull {
                address,
                limit: config.max_connections_per_address,
            });
        }
        Ok(mine)
    }

    /// Bans `peer`'s address, and its token's name if it had one, from room `room` for `ban`
    /// (at most `--max-ban-secs`).
    pub(crate) fn ban(&self, room: &str, peer: &PeerHandle, ban: Duration) {
        let ban = ban.min(Duration::from_secs(self.0.config.max_ban_secs));
        if ban.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut bans = lock(&self.0.bans);
        let name = peer.claims().name.clone().map(Banned::Name);
        for banned in std::iter::once(Banned::Address(peer.address())).chain(name) {
            bans.insert((room.to_string(), banned), now + ban, now);
        }
    }

    /// Refuses a peer from `address` with `claims` if its address or name is banned from `room`.
    fn check_ban(&self, room: &str, address: IpAddr, claims: &Claims) -> Result<(), Refusal> {
        let mut bans = lock(&self.0.bans);
        let now = Instant::now();
        let name = claims.name.clone().map(Banned::Name);
        for banned in std::iter::once(Banned::Address(address)).chain(name) {
            let Some(until) = bans.until(&(room.to_string(), banned), now) else {
                continue;
            };
            return Err(Refusal::Banned {
                room: room.to_string(),
                secs: (until - now).as_secs().max(1),
            });
        }
        Ok(())
    }

    /// Takes a seat for a connection from `address`, within the server's and the address's
    /// limits.
    fn take_slot(&self, address: IpAddr) -> Result<Slot, Refusal> {
        let mut slots = lock(&self.0.slots);
        let mine = self.room_for(&slots, address)?;
        slots.total += 1;
        slots.by_address.insert(address, mine + 1);
        Ok(Slot {
            state: self.clone(),
            address,
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
        let config = &shared.config;
        let mut request =
            Admitted::check_with(path, query, config.max_room_peers, &config.room_policy)?;
        if let Some(secret) = &shared.config.auth_secret {
            let token = query.get(crate::token::QUERY).map(String::as_str);
            request.claims = crate::token::verify(
                secret.as_bytes(),
                &request.path,
                token,
                std::time::SystemTime::now(),
            )?;
        }
        if let Some(text) = query.get(RESUME_QUERY) {
            let token = crate::resume::verify(&shared.resume_key, &request.path, text)?;
            if self.is_gone(token.peer) {
                return Err(ResumeError::Gone.into());
            }
            // Its place is its own: a room full with it in is not full for it.
            request.resume = Some(token);
            return Ok(request);
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

/// The configured resume secret, or 32 random bytes.
fn resume_key(secret: Option<String>) -> Vec<u8> {
    match secret {
        Some(secret) => secret.into_bytes(),
        None => {
            let mut key = vec![0u8; 32];
            // The system's randomness failing is not something to serve on: a fixed key would let
            // anyone forge tokens, so fall back to one no client can know either.
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).is_err() {
                key = uuid::Uuid::new_v4().as_bytes().to_vec();
            }
            key
        }
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
