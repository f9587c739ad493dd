//! The I/O edge: one matchbox socket and its message loop around one sans-IO [`Endpoint`]. It
//! feeds the endpoint what the signaller observed, link changes and packets, with the time since
//! it started; it sends what the endpoint returns (through the link conditioner when that is on)
//! and hands its events to the Bevy side. All protocol logic is the endpoint's.

mod raw;

pub use raw::{RawLane, RawQueues};

use crate::conditioner::LinkConditioner;
use crate::config::{ConfigError, HuddleConfig};
use crate::messages::HuddleError;
use crate::schedule::SignalingState;
use crate::signaling::{HuddleSignallerBuilder, Observed, ServerRequests};
use bevy::prelude::*;
use bevy::tasks::{IoTaskPool, Task};
use bytes::Bytes;
use futures::channel::mpsc::UnboundedReceiver;
use huddle_protocol::conditioner::Delayer;
use huddle_protocol::endpoint::{
    CandidateKind, Counters, EndpointConfig, Event, LinkPath, LinkStats, Role,
};
use huddle_protocol::media::MediaSignal;
use huddle_protocol::{Endpoint, Lane, Topology};
use matchbox_socket::{ChannelConfig, PeerId, PeerState, WebRtcSocket};
use std::time::Duration;
use web_time::Instant;

/// Counters of what the plugin dropped instead of panicking (`stats.frames_dropped`, ...).
#[derive(Resource, Debug, Default, Clone, PartialEq, Eq, Deref)]
pub struct HuddleStats(pub Counters);

/// The live session: present while connecting or in a lobby.
#[derive(Resource)]
pub struct HuddleSession {
    socket: WebRtcSocket,
    task: Option<Task<Result<(), matchbox_socket::Error>>>,
    observed: UnboundedReceiver<Observed>,
    requests: ServerRequests,
    endpoint: Endpoint,
    started: Instant,
    conditioner: LinkConditioner,
    delayer: Delayer,
    raw: Option<RawLane>,
    /// The endpoint's lobby version the `Roster` was last built from.
    roster_built: Option<u64>,
    /// As host with `host_by_upload`: the heir we last named to the signaling server.
    heir_named: Option<PeerId>,
    /// Why the session ended, once the server refused or removed us.
    ended: Option<HuddleError>,
    /// What the game must hear that is not the endpoint's (signaling lost).
    notices: Vec<HuddleError>,
    /// The ICE servers the socket was built with.
    ice_servers: Vec<crate::config::IceServer>,
    /// The connection to the signaling server.
    signaling: SignalingState,
}

/// matchbox's candidate pair as the protocol's link path.
fn link_path(pair: matchbox_socket::CandidatePair) -> LinkPath {
    let kind = |c: matchbox_socket::CandidateType| match c {
        matchbox_socket::CandidateType::Host => CandidateKind::Host,
        matchbox_socket::CandidateType::ServerReflexive => CandidateKind::ServerReflexive,
        matchbox_socket::CandidateType::PeerReflexive => CandidateKind::PeerReflexive,
        matchbox_socket::CandidateType::Relay => CandidateKind::Relay,
    };
    LinkPath {
        local: kind(pair.local),
        remote: kind(pair.remote),
    }
}

/// The error an observation ends the session with, if it does.
fn ending(seen: Observed) -> Option<HuddleError> {
    match seen {
        Observed::Removed { reason } => Some(HuddleError::Removed { reason }),
        Observed::Refused(refusal) => Some(HuddleError::Refused(refusal)),
        _ => None,
    }
}

impl HuddleSession {
    /// Opens the socket to `room_url` and starts its message loop on the IO task pool; `types`
    /// are the registered message types' hash and names (see `MessageRegistry`).
    pub(crate) fn connect(
        room_url: &str,
        config: &HuddleConfig,
        types: (u64, Vec<String>),
    ) -> Result<Self, ConfigError> {
        let ice = config.matchbox_ice()?;
        if let Some(warning) = config.ice_warning(room_url) {
            warn!("huddle: {warning}");
        }
        if config.metadata.len() > huddle_protocol::control::MAX_META {
            return Err(ConfigError::MetadataTooLarge(config.metadata.len()));
        }
        let (room_url, topology) = config.resolve_room(room_url)?;
        let (signaller, observed, requests) =
            HuddleSignallerBuilder::new(config.root_certificates.clone(), config.reconnect);
        let mut builder = WebRtcSocket::builder(room_url)
            .ice_server(ice)
            .signaller_builder(signaller);
        for lane in Lane::ALL {
            builder = builder.add_channel(if lane.is_reliable() {
                ChannelConfig::reliable()
            } else {
                ChannelConfig::unreliable()
            });
        }
        let (socket, message_loop) = builder.build();
        let task = IoTaskPool::get().spawn(message_loop);
        let endpoint = Endpoint::new(EndpointConfig {
            types_hash: types.0,
            type_names: types.1,
            topology,
            // Without media a peer's media offer is answered "unsupported".
            media: config.media_enabled(),
            settings: config.protocol,
            meta: config.metadata.clone(),
        });
        Ok(Self {
            socket,
            task: Some(task),
            observed,
            requests,
            endpoint,
            started: Instant::now(),
            conditioner: LinkConditioner::default(),
            delayer: Delayer::new(fastrand::u64(..)),
            raw: None,
            roster_built: None,
            heir_named: None,
            ended: None,
            notices: Vec::new(),
            ice_servers: config.ice_servers.clone(),
            signaling: SignalingState::Connected,
        })
    }

    /// The protocol state: id, host, peers, succession, roles, link statistics, counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The room's topology as joined (chosen from the settings and the room URL).
    pub fn topology(&self) -> Topology {
        self.endpoint.topology()
    }

    /// Asks the signaling server to remove `peer` from the room and ban its address from it for
    /// `ban`. huddle_server obeys the room's host only (stock matchbox servers ignore it); the
    /// others then see `peer` leave.
    pub fn kick(&self, peer: PeerId, ban: Duration) {
        self.requests.kick(peer, ban);
    }

    /// The STUN/TURN servers this session's links use (with `ice_from_server`, the server's
    /// first).
    pub fn ice_servers(&self) -> &[crate::config::IceServer] {
        &self.ice_servers
    }

    /// The connection to the signaling server.
    pub fn signaling(&self) -> SignalingState {
        self.signaling
    }

    /// Our id, once the server assigned it.
    pub fn id(&self) -> Option<PeerId> {
        self.endpoint.id()
    }

    /// The agreed host, once known.
    pub fn host(&self) -> Option<PeerId> {
        self.endpoint.host()
    }

    /// Peers in the lobby, in the order they joined it (as we saw them).
    pub fn peers(&self) -> &[PeerId] {
        self.endpoint.peers()
    }

    /// The succession order agreed with the host: host first, then join order.
    pub fn succession(&self) -> Vec<PeerId> {
        self.endpoint.succession()
    }

    /// Our role on the link to `peer`.
    pub fn role(&self, peer: PeerId) -> Option<Role> {
        self.endpoint.role(peer)
    }

    /// Link statistics of `peer`.
    pub fn link_stats(&self, peer: PeerId) -> Option<&LinkStats> {
        self.endpoint.link_stats(peer)
    }

    /// Bytes of reliable frames still waiting behind the bulk window for `peer`.
    pub fn bulk_pending(&self, peer: PeerId) -> usize {
        self.endpoint.bulk_pending(peer)
    }

    /// Opens the raw lane (a new handle replaces the last): packets from lobby peers on it go to
    /// the handle from now on instead of being dropped.
    pub fn open_raw_lane(&mut self) -> RawLane {
        let lane = RawLane::default();
        self.raw = Some(lane.clone());
        lane
    }

    /// The session's clock: time since it started.
    pub(crate) fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Sends a media signal to `peer` (feature `media`); `false` if its link is not ready.
    #[cfg_attr(not(feature = "media"), allow(dead_code))]
    pub(crate) fn send_media(&mut self, peer: PeerId, signal: MediaSignal) -> bool {
        let sent = self.endpoint.send_media(peer, signal);
        self.transmit_all();
        sent
    }

    /// Why the session is over, once it is: the server removed us from the room (the links to
    /// the others, which it told we left, close with the session), or the message loop ended.
    pub(crate) fn finished(&mut self) -> Option<HuddleError> {
        if let Some(error) = self.ended.take() {
            return Some(error);
        }
        let task = self.task.as_mut()?;
        if !task.is_finished() {
            return None;
        }
        // Why it ended may still wait among the signaller's observations.
        while let Ok(seen) = self.observed.try_recv() {
            if let Some(error) = ending(seen) {
                return Some(error);
            }
        }
        let task = self.task.take()?;
        let why = match futures::executor::block_on(task) {
            Ok(()) => "the connection to the signaling server ended".to_string(),
            Err(e) => e.to_string(),
        };
        Some(HuddleError::Signaling(why))
    }

    /// Reads everything that arrived: signaling observations, peer changes, packets on every
    /// lane. Returns what the game must hear, in order.
    pub(crate) fn poll(&mut self) -> Vec<Event> {
        let now = self.now();
        while let Ok(seen) = self.observed.try_recv() {
            match seen {
                Observed::IdAssigned(me) => self.endpoint.id_assigned(me, now),
                Observed::Calls(peer) => self.endpoint.introduced(peer, Role::Caller),
                Observed::CalledBy(peer) => self.endpoint.introduced(peer, Role::Receiver),
                Observed::Left(peer) => self.endpoint.server_left(peer),
                Observed::Reconnecting => {
                    info!("huddle: lost the signaling server, reconnecting");
                    self.signaling = SignalingState::Reconnecting;
                }
                Observed::Reconnected => {
                    info!("huddle: back on the signaling server, in our place");
                    self.signaling = SignalingState::Connected;
                }
                Observed::Lost { reason } => {
                    if let Some(reason) = reason {
                        warn!("huddle: signaling lost: {reason}");
                    }
                    self.signaling = SignalingState::Lost;
                    self.notices.push(HuddleError::SignalingLost);
                }
                seen @ (Observed::Removed { .. } | Observed::Refused(_)) => {
                    self.ended = ending(seen);
                }
                Observed::Dropped { from, reason } => {
                    self.endpoint.counters_mut().signals_dropped += 1;
                    warn!("dropped a signal from {from:?}: {reason}");
                }
            }
        }
        if let Ok(changes) = self.socket.try_update_peers() {
            for (peer, state) in changes {
                match state {
                    PeerState::Connected => self.endpoint.link_up(peer, now),
                    PeerState::Disconnected => self.endpoint.link_down(peer),
                }
            }
        }
        let peers: Vec<PeerId> = self.socket.connected_peers().collect();
        for peer in peers {
            if let Some(pair) = self.socket.candidate_pair(peer) {
                self.endpoint.path_chosen(peer, link_path(pair));
            }
        }
        for lane in Lane::ALL {
            let Ok(channel) = self.socket.get_channel_mut(lane.index()) else {
                continue;
            };
            for (peer, packet) in channel.receive() {
                self.endpoint.receive(peer, lane, packet, now);
            }
        }
        // Replies (pongs, acknowledgements, hellos) go now; timers run once a frame, in `flush`.
        self.transmit_all();
        let mut events = Vec::new();
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::Raw { from, bytes } => match &self.raw {
                    Some(raw) => raw.received(from, bytes),
                    None => self.endpoint.counters_mut().frames_dropped += 1,
                },
                _ => events.push(event),
            }
        }
        events
    }

    /// What the game must hear besides the endpoint's events (taken).
    pub(crate) fn take_notices(&mut self) -> Vec<HuddleError> {
        std::mem::take(&mut self.notices)
    }

    /// Whether the lobby may have changed since the last call (then the `Roster` is rebuilt).
    pub(crate) fn lobby_changed(&mut self) -> bool {
        let version = Some(self.endpoint.lobby_version());
        std::mem::replace(&mut self.roster_built, version) != version
    }

    /// The endpoint, to queue game messages on.
    pub(crate) fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Counts messages that arrived but did not decode as their type.
    pub(crate) fn count_undecodable(&mut self, n: u64) {
        self.endpoint.counters_mut().frames_dropped += n;
    }

    /// The counters as the game sees them.
    pub(crate) fn stats(&self) -> HuddleStats {
        let mut counters = self.endpoint.counters().clone();
        counters.conditioner_dropped = self.delayer.dropped;
        HuddleStats(counters)
    }

    /// Sends what was queued this frame (the endpoint's frames, the raw lane's packets) and what
    /// the link conditioner held back until now.
    pub(crate) fn flush(&mut self, conditioner: LinkConditioner) {
        self.conditioner = conditioner;
        let now = self.now();
        for (lane, peer, bytes) in self.delayer.due(now) {
            self.send_to_socket(lane, peer, bytes);
        }
        if let Some(raw) = self.raw.clone() {
            let outbox = std::mem::take(&mut raw.queues().outbox);
            let mut sent = 0u64;
            for (peer, bytes) in outbox {
                let len = bytes.len() as u64;
                if self.endpoint.send_raw(peer, bytes) {
                    sent += len;
                }
            }
            raw.queues().bytes_out += sent;
        }
        self.endpoint.handle_timeout(now);
        self.name_heir();
        self.transmit_all();
    }

    /// As host with `host_by_upload`: names the peer that hosts after us to the signaling server
    /// when it changes, so that huddle_server makes it the room's host when we go (in a star, the
    /// one the others link to) and the server agrees with the election.
    fn name_heir(&mut self) {
        let hosting = self.endpoint.id().is_some() && self.endpoint.host() == self.endpoint.id();
        if !self.endpoint.config().settings.host_by_upload || !hosting {
            self.heir_named = None;
            return;
        }
        let heir = self.endpoint.next_host();
        if heir != self.heir_named {
            if let Some(heir) = heir {
                self.requests.name_heir(heir);
            }
            self.heir_named = heir;
        }
    }

    /// Hands the endpoint's packets to the socket, through the conditioner when it is on.
    fn transmit_all(&mut self) {
        let now = self.now();
        while let Some(t) = self.endpoint.poll_transmit() {
            let conditions = match t.lane {
                Lane::Reliable => self.conditioner.reliable,
                Lane::Unreliable | Lane::Raw => self.conditioner.unreliable,
                Lane::Control => None,
            };
            // While frames are held, reliable ones keep queueing behind them to stay in order.
            let held = t.lane == Lane::Reliable && self.delayer.held() > 0;
            match conditions.or_else(|| held.then(Default::default)) {
                Some(c) => self.delayer.submit(now, &c, t.lane, t.peer, t.bytes),
                None => self.send_to_socket(t.lane, t.peer, t.bytes),
            }
        }
    }

    fn send_to_socket(&mut self, lane: Lane, peer: PeerId, bytes: Bytes) {
        if let Ok(channel) = self.socket.get_channel_mut(lane.index()) {
            let _ = channel.try_send(bytes, peer);
        }
    }

    /// We leave: closes the socket; returns every joined peer announced as left.
    pub(crate) fn leave(&mut self) -> Vec<Event> {
        self.socket.close();
        self.endpoint.leave();
        std::iter::from_fn(|| self.endpoint.poll_event()).collect()
    }
}
