//! What a connection does to its shared room: join, resume, hold, leave, route a signal, kick,
//! name the host's heir.
//! Each is the single-server [`Room`] step run on the room read from Redis, written back with the
//! events it makes ([`Store::update`]).

use super::store::{Change, Store};
use super::{Cluster, ClusterError, Delivery, Seat, What};
use crate::clock::{now_ms, now_us};
use crate::close::CLOSE_REPLACED;
use crate::registry::RoomKey;
use crate::request::Admitted;
use crate::resume::ResumeToken;
use crate::room::{HeirError, JoinError, Left, Room, RouteError};
use crate::token::Claims;
use matchbox_protocol::{JsonPeerEvent, PeerId};
use std::net::IpAddr;
use std::time::Duration;

/// What a leave did to its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Departure {
    /// The host left: the new host.
    pub(crate) new_host: Option<PeerId>,
    /// The room emptied.
    pub(crate) closed: bool,
}

/// The events a leave makes: `PeerLeft` to those who knew the leaver, `NewPeer`s to a star's new
/// host.
fn leave_deliveries(room: &Room<Seat>, leaver: PeerId, left: &Left) -> Vec<(u64, Delivery)> {
    let gone = JsonPeerEvent::PeerLeft(leaver).to_string();
    let mut out: Vec<(u64, Delivery)> = left
        .notify
        .iter()
        .filter_map(|p| Some(Delivery::new(*p, room.get(*p)?, What::Text(gone.clone()))))
        .collect();
    if let Some(seat) = left.new_host.and_then(|h| Some((h, room.get(h)?))) {
        let (host, seat) = seat;
        out.extend(left.introduce_to_new_host.iter().map(|p| {
            let text = JsonPeerEvent::NewPeer(*p).to_string();
            Delivery::new(host, seat, What::Text(text))
        }));
    }
    out
}

/// A ban's key: room `path`, and an address or a name.
fn ban_keys(store: &Store, path: &str, address: IpAddr, name: Option<&str>) -> Vec<String> {
    let mut keys = vec![store.key(&format!("ban:{path}:a:{address}"))];
    keys.extend(name.map(|n| store.key(&format!("ban:{path}:n:{n}"))));
    keys
}

impl Cluster {
    /// Puts `peer` (connected here as `seat`) in the room `request` asks for, introducing it as
    /// a single server would: the room's key, its place and the host, or why it was refused.
    pub(crate) async fn join(
        &self,
        peer: PeerId,
        seat: Seat,
        request: &Admitted,
    ) -> Result<Result<(RoomKey, u64, PeerId), JoinError>, ClusterError> {
        let store = self.ready_store().await?;
        let stamp = store.stamp(now_us()).await?;
        // A new `?next=N` group is numbered by the stamp: unique, whatever the clocks.
        let key = store.assign(request, stamp).await?;
        let announce = JsonPeerEvent::NewPeer(peer).to_string();
        let joined = store
            .update(
                &key,
                Some(request),
                || Err(JoinError::Closed),
                |room| {
                    let seq = room.place_after(stamp);
                    match room.join(peer, seq, seat.clone()) {
                        Ok(joined) => Change {
                            deliveries: joined
                                .introduce_to
                                .iter()
                                .filter_map(|c| {
                                    let text = What::Text(announce.clone());
                                    Some(Delivery::new(*c, room.get(*c)?, text))
                                })
                                .collect(),
                            result: Ok((joined.host, seq)),
                            write: true,
                        },
                        Err(e) => Change::none(Err(e)),
                    }
                },
            )
            .await?;
        match joined {
            Ok((host, seq)) => Ok(Ok((key, seq, host))),
            Err(e) => {
                store.depart(&key).await?;
                Ok(Err(e))
            }
        }
    }

    /// Gives `token`'s peer (connected here as `seat`) its place in room `path`: the one held
    /// since it dropped (on any instance), or one in a room rebuilt from the tokens. Its old
    /// connection, if some instance still has it, is closed; the newcomers it missed are
    /// introduced. Whether its place was held (its connection had dropped).
    pub(crate) async fn resume(
        &self,
        token: ResumeToken,
        seat: Seat,
        request: &Admitted,
    ) -> Result<Result<bool, JoinError>, ClusterError> {
        let store = self.ready_store().await?;
        let peer = token.peer;
        let key = token.room(&request.path);
        store
            .update(
                &key,
                Some(request),
                || Err(JoinError::Closed),
                |room| {
                    let was_away = room.is_away(peer);
                    match room.resume(peer, token.seq, seat.clone()) {
                        Ok(resumed) => {
                            let mut deliveries = Vec::new();
                            if let (false, Some(old)) = (was_away, &resumed.replaced) {
                                let why = "resumed on another connection".to_string();
                                deliveries.push(Delivery::new(
                                    peer,
                                    old,
                                    What::Close(CLOSE_REPLACED, why),
                                ));
                            }
                            deliveries.extend(resumed.introduce.iter().map(|p| {
                                let text = JsonPeerEvent::NewPeer(*p).to_string();
                                Delivery::new(peer, &seat, What::Text(text))
                            }));
                            Change {
                                result: Ok(was_away),
                                write: true,
                                deliveries,
                            }
                        }
                        Err(e) => Change::none(Err(e)),
                    }
                },
            )
            .await
    }

    /// Holds `peer`'s place in room `key` until `until_ms` after its connection `conn` here
    /// dropped. Whether it is held (not if it resumed elsewhere meanwhile).
    pub(crate) async fn hold(
        &self,
        key: &RoomKey,
        peer: PeerId,
        conn: u64,
        until_ms: u64,
    ) -> Result<bool, ClusterError> {
        let store = self.store().await?;
        let me = self.instance;
        store
            .update(
                key,
                None,
                || false,
                |room| {
                    if !room.set_away(peer, |s| s.is(me, conn)) {
                        return Change::none(false);
                    }
                    if let Some(seat) = room.get_mut(peer) {
                        seat.held_until_ms = Some(until_ms);
                    }
                    Change {
                        result: true,
                        write: true,
                        deliveries: Vec::new(),
                    }
                },
            )
            .await
    }

    /// Takes `peer` out of room `key` if its seat is `is_current`, telling those who knew it;
    /// what that did, or `None` if it was not taken out.
    pub(crate) async fn leave(
        &self,
        key: &RoomKey,
        peer: PeerId,
        is_current: impl Fn(&Seat) -> bool,
    ) -> Result<Option<Departure>, ClusterError> {
        let store = self.store().await?;
        let departure = store
            .update(
                key,
                None,
                || None,
                |room| match room.leave_if(peer, &is_current) {
                    Some((_, left)) => Change {
                        deliveries: leave_deliveries(room, peer, &left),
                        result: Some(Departure {
                            new_host: left.new_host,
                            closed: left.closed,
                        }),
                        write: true,
                    },
                    None => Change::none(None),
                },
            )
            .await?;
        if departure.is_some() {
            store.depart(key).await?;
        }
        Ok(departure)
    }

    /// Takes every member served by instance `dead` out of room `key` (those whose place is
    /// held stay until it is not), as if each had left. The peers taken out, and whether some of
    /// `dead`'s stay held.
    pub(crate) async fn sweep_room(
        &self,
        key: &RoomKey,
        dead: u64,
    ) -> Result<(Vec<(PeerId, Departure)>, bool), ClusterError> {
        let store = self.store().await?;
        let now = now_ms();
        let outcome = store
            .update(
                key,
                None,
                || (Vec::new(), false),
                |room| {
                    let on_dead = |s: &Seat| s.instance == dead;
                    let expired = |s: &Seat| on_dead(s) && s.held_until_ms.is_none_or(|t| t <= now);
                    // The youngest first: a star's clients go before its host, so the new
                    // host is not told to call peers that are gone too.
                    let gone: Vec<PeerId> = room
                        .handles()
                        .filter(|(_, s)| expired(s))
                        .map(|(p, _)| p)
                        .rev()
                        .collect();
                    let mut deliveries = Vec::new();
                    let mut removed = Vec::new();
                    for peer in gone {
                        if let Some((_, left)) = room.leave_if(peer, expired) {
                            deliveries.extend(leave_deliveries(room, peer, &left));
                            let departure = Departure {
                                new_host: left.new_host,
                                closed: left.closed,
                            };
                            removed.push((peer, departure));
                        }
                    }
                    let held = room.handles().any(|(_, s)| on_dead(s));
                    Change {
                        write: !removed.is_empty(),
                        result: (removed, held),
                        deliveries,
                    }
                },
            )
            .await?;
        if !outcome.0.is_empty() {
            store.depart(key).await?;
        }
        Ok(outcome)
    }

    /// Relays `text` (a signal from `from`) to `to` if room `key` lets it pass.
    pub(crate) async fn route(
        &self,
        key: &RoomKey,
        from: PeerId,
        to: PeerId,
        text: String,
    ) -> Result<Result<(), RouteError>, ClusterError> {
        let store = self.store().await?;
        let Some((_, room)) = store.load(key).await? else {
            return Ok(Err(RouteError::NotInRoom));
        };
        let seat = match room.route(from, to) {
            Ok(seat) => seat,
            Err(e) => return Ok(Err(e)),
        };
        self.send(to, seat, What::Text(text)).await?;
        Ok(Ok(()))
    }

    /// Sends `what` to `peer` on `seat`: here, or through its instance's channel.
    pub(crate) async fn send(
        &self,
        peer: PeerId,
        seat: &Seat,
        what: What,
    ) -> Result<(), ClusterError> {
        let (instance, delivery) = Delivery::new(peer, seat, what);
        if instance == self.instance {
            self.deliver(delivery);
            return Ok(());
        }
        let store = self.store().await?;
        let message = serde_json::to_string(&delivery).map_err(ClusterError::Corrupt)?;
        let mut redis = store.redis.clone();
        redis::cmd("PUBLISH")
            .arg(store.channel(instance))
            .arg(message)
            .query_async::<i64>(&mut redis)
            .await
            .map_err(ClusterError::Redis)?;
        Ok(())
    }

    /// The host `by` of room `key` names `heir` to host after it.
    pub(crate) async fn name_heir(
        &self,
        key: &RoomKey,
        by: PeerId,
        heir: PeerId,
    ) -> Result<Result<(), HeirError>, ClusterError> {
        let store = self.store().await?;
        store
            .update(
                key,
                None,
                || Err(HeirError::NotHost),
                |room| {
                    let result = room.name_heir(by, heir);
                    Change {
                        write: result.is_ok(),
                        result,
                        deliveries: Vec::new(),
                    }
                },
            )
            .await
    }

    /// The host of room `key`.
    pub(crate) async fn host(&self, key: &RoomKey) -> Result<Option<PeerId>, ClusterError> {
        let store = self.store().await?;
        Ok(store.load(key).await?.and_then(|(_, room)| room.host()))
    }

    /// `peer`'s seat in room `key`, and whether its place is held while it is away.
    pub(crate) async fn member(
        &self,
        key: &RoomKey,
        peer: PeerId,
    ) -> Result<Option<(Seat, bool)>, ClusterError> {
        let store = self.store().await?;
        Ok(store
            .load(key)
            .await?
            .and_then(|(_, room)| Some((room.get(peer)?.clone(), room.is_away(peer)))))
    }

    /// Every open room whose path is `path` (its `?next=N` groups too).
    pub(crate) async fn rooms_at(&self, path: &str) -> Result<Vec<RoomKey>, ClusterError> {
        let store = self.store().await?;
        let mut keys = store.room_keys().await?;
        keys.retain(|k| k.path == path);
        Ok(keys)
    }

    /// Bans `seat`'s address and name from room `path` for `ban`, on every instance.
    pub(crate) async fn ban(
        &self,
        path: &str,
        seat: &Seat,
        ban: Duration,
    ) -> Result<(), ClusterError> {
        let store = self.store().await?;
        for key in ban_keys(store, path, seat.address, seat.name.as_deref()) {
            store.set_for(&key, "1", ban).await?;
        }
        Ok(())
    }

    /// How long a peer from `address` with `claims` stays banned from room `path`, if it is.
    pub(crate) async fn banned_for(
        &self,
        path: &str,
        address: IpAddr,
        claims: &Claims,
    ) -> Result<Option<Duration>, ClusterError> {
        let store = self.store().await?;
        for key in ban_keys(store, path, address, claims.name.as_deref()) {
            if let Some(left) = store.time_left(&key).await? {
                return Ok(Some(left));
            }
        }
        Ok(None)
    }

    /// Refuses `peer`'s resume token on every instance from now on, for `ttl`.
    pub(crate) async fn tombstone(&self, peer: PeerId, ttl: Duration) -> Result<(), ClusterError> {
        let store = self.store().await?;
        store
            .set_for(&store.key(&format!("gone:{peer}")), "1", ttl)
            .await
    }

    /// Whether `peer`'s resume token is refused (its place is gone).
    pub(crate) async fn is_gone(&self, peer: PeerId) -> Result<bool, ClusterError> {
        let store = self.store().await?;
        Ok(store
            .time_left(&store.key(&format!("gone:{peer}")))
            .await?
            .is_some())
    }
}
