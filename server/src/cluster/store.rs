//! Rooms in Redis: each room is a hash holding its [`Room`] as JSON and a version; a change reads
//! it, runs the same state machine as a single server, and writes it back only if nobody changed
//! it meanwhile (optimistic, retried), publishing the peers' events in the same step.

use super::scripts::Scripts;
use super::{ClusterError, Delivery, Seat};
use crate::registry::{listed, RoomInfo, RoomKey};
use crate::request::Admitted;
use crate::room::Room;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::time::Duration;

/// Times a change is tried before it fails (each try lost a race to another change of the room).
const TRIES: u32 = 64;

/// How long a `?next=N` counter lives without an arrival (it goes when its group fills or its
/// last waiter leaves; this is in case neither is ever written).
const NEXT_COUNTER_TTL: Duration = Duration::from_secs(86_400);

/// What a change to a room decided.
pub(crate) struct Change<R> {
    /// What the caller learns.
    pub(crate) result: R,
    /// Whether the room changed (else nothing is written nor published).
    pub(crate) write: bool,
    /// Messages for peers, published with the change.
    pub(crate) deliveries: Vec<(u64, Delivery)>,
}

impl<R> Change<R> {
    /// Nothing changed: only `result`.
    pub(crate) fn none(result: R) -> Self {
        Self {
            result,
            write: false,
            deliveries: Vec::new(),
        }
    }
}

/// The shared rooms of one Redis (under one key prefix).
pub(crate) struct Store {
    pub(crate) redis: ConnectionManager,
    scripts: Scripts,
    prefix: String,
}

impl Store {
    pub(crate) fn new(redis: ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            scripts: Scripts::default(),
            prefix: prefix.to_string(),
        }
    }

    /// A key under the prefix.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The hash of room `key`.
    fn room_key(&self, key: &RoomKey) -> String {
        self.key(&format!("room:{key}"))
    }

    /// The set of every room's hash.
    fn index(&self) -> String {
        self.key("rooms")
    }

    /// The channel an instance listens on.
    pub(crate) fn channel(&self, instance: u64) -> String {
        self.key(&format!("i:{instance:016x}"))
    }

    /// Room `key` as stored, with its version; `None` if it is not open.
    pub(crate) async fn load(
        &self,
        key: &RoomKey,
    ) -> Result<Option<(String, Room<Seat>)>, ClusterError> {
        let mut redis = self.redis.clone();
        let (version, state): (Option<String>, Option<String>) = redis
            .hmget(self.room_key(key), &["v", "s"])
            .await
            .map_err(ClusterError::Redis)?;
        match (version, state) {
            (Some(version), Some(state)) => {
                let room = serde_json::from_str(&state).map_err(ClusterError::Corrupt)?;
                Ok(Some((version, room)))
            }
            _ => Ok(None),
        }
    }

    /// Applies `change` to room `key` (created with `fresh`'s settings if it is not open; with
    /// no `fresh`, a room that is not open is left alone and `absent` is the answer), retrying
    /// when another change got in first.
    pub(crate) async fn update<R>(
        &self,
        key: &RoomKey,
        fresh: Option<&Admitted>,
        absent: impl Fn() -> R,
        mut change: impl FnMut(&mut Room<Seat>) -> Change<R>,
    ) -> Result<R, ClusterError> {
        for attempt in 0..TRIES {
            let (version, mut room) = match (self.load(key).await?, fresh) {
                (Some(found), _) => found,
                (None, Some(request)) => (
                    String::new(),
                    Room::new(request.topology(), request.capacity, request.private),
                ),
                (None, None) => return Ok(absent()),
            };
            let done = change(&mut room);
            if !done.write {
                return Ok(done.result);
            }
            let state = if room.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&room).map_err(ClusterError::Corrupt)?
            };
            let next = version.parse::<u64>().map_or(1, |v| v.wrapping_add(1));
            let mut invocation = self.scripts.write_room.prepare_invoke();
            invocation
                .key(self.room_key(key))
                .key(self.index())
                .arg(&version)
                .arg(&state)
                .arg(next.to_string())
                .arg(serde_json::to_string(key).map_err(ClusterError::Corrupt)?);
            for (instance, delivery) in &done.deliveries {
                invocation
                    .arg(self.channel(*instance))
                    .arg(serde_json::to_string(delivery).map_err(ClusterError::Corrupt)?);
            }
            let mut redis = self.redis.clone();
            let written: i64 = invocation
                .invoke_async(&mut redis)
                .await
                .map_err(ClusterError::Redis)?;
            if written == 1 {
                return Ok(done.result);
            }
            // Lost a race: a short pause that grows, so many changes of one room spread out.
            let pause = Duration::from_micros(50 * u64::from(attempt.min(20)) + 10);
            tokio::time::sleep(pause).await;
        }
        Err(ClusterError::Contended(key.to_string()))
    }

    /// The room an arrival with `request` goes to: its path, or for `?next=N` the group it is
    /// counted into across every instance (a new group's generation is `clock`: a join stamp,
    /// unique across instances).
    pub(crate) async fn assign(
        &self,
        request: &Admitted,
        clock: u64,
    ) -> Result<RoomKey, ClusterError> {
        let group = match request.next {
            None => None,
            Some(n) => {
                let n = n.get();
                let fill = request.capacity.min(n);
                let mut redis = self.redis.clone();
                let generation: String = self
                    .scripts
                    .arrive
                    .key(self.next_key(&request.path, n))
                    .arg(fill)
                    .arg(clock)
                    .arg(NEXT_COUNTER_TTL.as_millis() as u64)
                    .invoke_async(&mut redis)
                    .await
                    .map_err(ClusterError::Redis)?;
                let generation = generation
                    .parse::<u64>()
                    .map_err(|_| ClusterError::Garbled(format!("generation {generation:?}")))?;
                Some((n, generation))
            }
        };
        Ok(RoomKey {
            path: request.path.clone(),
            group,
        })
    }

    /// One assigned to `key` left before its `?next=N` group filled (or was refused).
    pub(crate) async fn depart(&self, key: &RoomKey) -> Result<(), ClusterError> {
        let Some((n, generation)) = key.group else {
            return Ok(());
        };
        let mut redis = self.redis.clone();
        let _: i64 = self
            .scripts
            .depart
            .key(self.next_key(&key.path, n))
            .arg(generation)
            .invoke_async(&mut redis)
            .await
            .map_err(ClusterError::Redis)?;
        Ok(())
    }

    fn next_key(&self, path: &str, n: usize) -> String {
        self.key(&format!("next:{n}:{path}"))
    }

    /// The next join-order stamp, shared by every instance.
    pub(crate) async fn stamp(&self, clock: u64) -> Result<u64, ClusterError> {
        let mut redis = self.redis.clone();
        let stamp: String = self
            .scripts
            .stamp
            .key(self.key("stamp"))
            .arg(clock)
            .invoke_async(&mut redis)
            .await
            .map_err(ClusterError::Redis)?;
        stamp
            .parse()
            .map_err(|_| ClusterError::Garbled(format!("stamp {stamp:?}")))
    }

    /// Every open room's key.
    pub(crate) async fn room_keys(&self) -> Result<Vec<RoomKey>, ClusterError> {
        let mut redis = self.redis.clone();
        let hashes: Vec<String> = redis
            .smembers(self.index())
            .await
            .map_err(ClusterError::Redis)?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for hash in &hashes {
            pipe.hget(hash, "k");
        }
        let keys: Vec<Option<String>> = pipe
            .query_async(&mut redis)
            .await
            .map_err(ClusterError::Redis)?;
        Ok(keys
            .into_iter()
            .flatten()
            .filter_map(|k| serde_json::from_str(&k).ok())
            .collect())
    }

    /// The public rooms of every instance, sorted by key.
    pub(crate) async fn list_public(&self) -> Result<Vec<RoomInfo>, ClusterError> {
        let mut keys = self.room_keys().await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        keys.sort();
        // One round trip for every room's state (a room gone meanwhile reads as nothing).
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.hget(self.room_key(key), "s");
        }
        let states: Vec<Option<String>> = pipe
            .query_async(&mut redis)
            .await
            .map_err(ClusterError::Redis)?;
        let mut rooms = Vec::with_capacity(keys.len());
        for (key, state) in keys.iter().zip(states) {
            let Some(state) = state else { continue };
            let room: Room<Seat> = serde_json::from_str(&state).map_err(ClusterError::Corrupt)?;
            rooms.extend(listed(key, &room));
        }
        Ok(rooms)
    }

    /// Open rooms, in all.
    pub(crate) async fn room_count(&self) -> Result<usize, ClusterError> {
        let mut redis = self.redis.clone();
        redis.scard(self.index()).await.map_err(ClusterError::Redis)
    }

    /// Sets `key` to `value` for `ttl`.
    pub(crate) async fn set_for(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let mut redis = self.redis.clone();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        redis
            .pset_ex::<_, _, ()>(key, value, ms)
            .await
            .map_err(ClusterError::Redis)
    }

    /// How long `key` lives on, if it exists.
    pub(crate) async fn time_left(&self, key: &str) -> Result<Option<Duration>, ClusterError> {
        let mut redis = self.redis.clone();
        let ms: i64 = redis.pttl(key).await.map_err(ClusterError::Redis)?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }
}
