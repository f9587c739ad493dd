//! This instance among the others: it listens on its channel for deliveries, renews its
//! heartbeat, and sweeps the instances whose heartbeat lapsed.

use super::{Cluster, ClusterError, Delivery, HEARTBEAT, HEARTBEAT_TTL};
use crate::state::ServerState;
use futures::StreamExt;
use redis::AsyncCommands;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long a lost subscription waits before it connects again.
const RESUBSCRIBE: Duration = Duration::from_millis(500);

impl Cluster {
    /// Starts this instance's tasks on the current runtime: they end when the server shuts down.
    pub(crate) fn spawn(state: &ServerState) {
        let Some(cluster) = state.0.cluster.clone() else {
            return;
        };
        tokio::spawn(listen(cluster.clone(), state.clone()));
        tokio::spawn(beat(cluster, state.clone()));
    }

    /// The instances that ever registered, and whether each one's heartbeat is alive.
    async fn instances(&self) -> Result<Vec<(u64, bool)>, ClusterError> {
        let store = self.store().await?;
        let mut redis = store.redis.clone();
        let ids: Vec<String> = redis
            .smembers(store.key("instances"))
            .await
            .map_err(ClusterError::Redis)?;
        let ids: Vec<(u64, String)> = ids
            .into_iter()
            .filter_map(|id| u64::from_str_radix(&id, 16).ok().map(|n| (n, id)))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Every heartbeat checked in one round trip.
        let mut pipe = redis::pipe();
        for (_, id) in &ids {
            pipe.exists(store.key(&format!("alive:{id}")));
        }
        let alive: Vec<bool> = pipe
            .query_async(&mut redis)
            .await
            .map_err(ClusterError::Redis)?;
        Ok(ids.into_iter().map(|(n, _)| n).zip(alive).collect())
    }

    /// Renews this instance's heartbeat.
    async fn renew(&self) -> Result<(), ClusterError> {
        let store = self.store().await?;
        let id = format!("{:016x}", self.instance);
        store
            .set_for(&store.key(&format!("alive:{id}")), "1", HEARTBEAT_TTL)
            .await?;
        let mut redis = store.redis.clone();
        redis
            .sadd::<_, _, ()>(store.key("instances"), id)
            .await
            .map_err(ClusterError::Redis)
    }

    /// Takes the peers of instance `dead` out of every room. Whether nothing of it is left (its
    /// held places expired too): then it is forgotten.
    async fn sweep(&self, state: &ServerState, dead: u64) -> Result<bool, ClusterError> {
        let store = self.store().await?;
        let mut done = true;
        for key in store.room_keys().await? {
            let (removed, held) = self.sweep_room(&key, dead).await?;
            done &= !held;
            for (peer, departure) in removed {
                state.0.metrics.leaves.inc();
                if let Some(new_host) = departure.new_host {
                    state.0.metrics.host_changes.inc();
                    info!(room = %key, %new_host, "host's instance is gone, promoted the oldest peer");
                }
                info!(%peer, room = %key, "its instance {dead:016x} is gone: left");
            }
        }
        if done {
            let mut redis = store.redis.clone();
            redis
                .srem::<_, _, ()>(store.key("instances"), format!("{dead:016x}"))
                .await
                .map_err(ClusterError::Redis)?;
        }
        Ok(done)
    }
}

/// Delivers what other instances publish for this one's connections, subscribing again when the
/// subscription drops; marks the cluster ready once subscribed.
async fn listen(cluster: std::sync::Arc<Cluster>, state: ServerState) {
    let mut shutdown = state.0.shutdown.subscribe();
    loop {
        let subscribed = async {
            let store = cluster.store().await?;
            let mut pubsub = cluster
                .client
                .get_async_pubsub()
                .await
                .map_err(ClusterError::Redis)?;
            pubsub
                .subscribe(store.channel(cluster.instance))
                .await
                .map_err(ClusterError::Redis)?;
            Ok::<_, ClusterError>(pubsub)
        };
        let mut pubsub = tokio::select! {
            s = subscribed => match s {
                Ok(pubsub) => pubsub,
                Err(e) => {
                    warn!("cannot subscribe to this instance's channel: {e}");
                    tokio::time::sleep(RESUBSCRIBE).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        debug!("listening on this instance's channel");
        cluster.ready.send_replace(true);
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.changed() => return,
            };
            let Some(message) = message else { break };
            let payload: Vec<u8> = message.get_payload_bytes().to_vec();
            match serde_json::from_slice::<Delivery>(&payload) {
                Ok(delivery) => {
                    if !cluster.deliver(delivery) {
                        debug!("delivery for a connection that is gone");
                    }
                }
                Err(e) => warn!("unreadable delivery on this instance's channel: {e}"),
            }
        }
        cluster.ready.send_replace(false);
        warn!("this instance's channel dropped: subscribing again");
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

/// Renews the heartbeat every [`HEARTBEAT`], sweeps instances whose heartbeat lapsed, and keeps
/// the `rooms` gauge at the number of rooms of all instances.
async fn beat(cluster: std::sync::Arc<Cluster>, state: ServerState) {
    let mut shutdown = state.0.shutdown.subscribe();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Instances seen without a heartbeat on the last beat: one is swept when it is still so on
    // the next (a heartbeat renewed late, by a busy machine, is not taken for a death).
    let mut suspects = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A stopped instance's heartbeat lapses: the others sweep what it held.
            _ = shutdown.changed() => return,
        }
        if let Err(e) = cluster.renew().await {
            warn!("heartbeat: {e}");
            continue;
        }
        let instances = match cluster.instances().await {
            Ok(instances) => instances,
            Err(e) => {
                warn!("instances: {e}");
                continue;
            }
        };
        let lapsed: std::collections::HashSet<u64> = instances
            .into_iter()
            .filter(|(instance, alive)| !alive && *instance != cluster.instance)
            .map(|(instance, _)| instance)
            .collect();
        let confirmed: Vec<u64> = lapsed.intersection(&suspects).copied().collect();
        suspects = lapsed;
        for instance in confirmed {
            match cluster.sweep(&state, instance).await {
                Ok(true) => info!("instance {instance:016x} is gone: swept its peers"),
                Ok(false) => debug!("instance {instance:016x} is gone: places held for a while"),
                Err(e) => warn!("sweeping instance {instance:016x}: {e}"),
            }
        }
        if let Ok(store) = cluster.store().await {
            if let Ok(rooms) = store.room_count().await {
                state.0.metrics.rooms.set(rooms as i64);
            }
        }
    }
}
