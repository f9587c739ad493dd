//! One peer's side of a lobby, sans-IO: the [`Endpoint`].
//!
//! The driver (the plugin's session, or a test's simulated network) feeds it what happened:
//! what the signaling server said ([`Endpoint::id_assigned`], [`Endpoint::introduced`],
//! [`Endpoint::server_left`]), links opening and closing ([`Endpoint::link_up`],
//! [`Endpoint::link_down`]), packets ([`Endpoint::receive`]) and game messages to send
//! ([`Endpoint::send`]), each with the current time. It takes back packets to send
//! ([`Endpoint::poll_transmit`]) and events for the game ([`Endpoint::poll_event`]), and calls
//! [`Endpoint::handle_timeout`] once a frame (or at [`Endpoint::poll_timeout`]). The endpoint
//! never reads a clock and never touches a socket, so tests run many of them over a simulated
//! network with a fake clock.
//!
//! The pieces: [`hello`](self) (the handshake and early frames), `receive` (frames in, chunks
//! reassembled and acknowledged), `send` (frames out, chunking, the bulk window, give-up, pings),
//! `star` (relaying through the host, its reliability, members known by roster), `uplink` (upload
//! probes for the election).

mod hello;
mod link;
mod raw;
mod receive;
mod send;
mod star;
mod types;
mod uplink;

pub use link::{CandidateKind, LinkPath, LinkStats};
pub use types::{
    Channel, Counters, EndpointConfig, EndpointError, Event, LeaveReason, ProtocolSettings,
    Recipients, Role, SendError, Transmit,
};

use crate::control::Control;
use crate::election::{HostElection, Output};
use crate::lane::Lane;
use crate::room::Topology;
use crate::uplink::{ProbeAnswerer, UploadMeter};
use bytes::Bytes;
use link::Link;
use matchbox_protocol::PeerId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

/// How long relayed frames are kept after the host acknowledged them: a host that leaves may
/// have passed frames on that never left its machine, so those of the last moments go again
/// through the next host (receivers drop what they had).
const RETAIN_ACKED: Duration = Duration::from_secs(2);
/// Relayed reliable frames kept for a resend at most (the host acknowledges every flush).
const MAX_UNACKED: usize = 8192;
/// How long reliable frames wait for a link to come up before they are reported as failed.
pub const LINK_WAIT: Duration = Duration::from_secs(10);
/// How often a hello is repeated until both sides have seen each other's.
const HELLO_REPEAT: Duration = Duration::from_millis(200);
/// Frames held per peer while its hello is not in yet.
const EARLY_FRAMES: usize = 1024;
/// Origins whose relayed sequence numbers are remembered, at most (beyond it, frames from
/// origins that are not members are refused).
const MAX_ORIGINS: usize = 1024;
/// Peers the server said left, remembered until their link closes, at most.
const MAX_LEFT: usize = 4096;
/// Peers whose link closed, remembered (oldest forgotten first) so that what still arrives from
/// them is dropped, at most.
const MAX_DEPARTED: usize = 4096;

/// Peers whose link closed, at most [`MAX_DEPARTED`] (the oldest is forgotten first).
#[derive(Debug, Default)]
struct Departed {
    set: HashSet<PeerId>,
    order: VecDeque<PeerId>,
}

impl Departed {
    fn insert(&mut self, peer: PeerId) {
        if !self.set.insert(peer) {
            return;
        }
        self.order.push_back(peer);
        if self.order.len() > MAX_DEPARTED {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }

    fn remove(&mut self, peer: PeerId) {
        if self.set.remove(&peer) {
            self.order.retain(|p| *p != peer);
        }
    }

    fn contains(&self, peer: PeerId) -> bool {
        self.set.contains(&peer)
    }
}

/// A relayed reliable frame of ours, kept until it is known to have arrived.
#[derive(Debug, Clone)]
struct Unacked {
    seq: u32,
    /// Chunk payload bytes in it (what the window counts).
    counted: usize,
    bytes: Bytes,
    /// When the host acknowledged it.
    acked_at: Option<Duration>,
}

/// One peer's side of a lobby. See the [module docs](self).
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    /// The latest time the driver gave us.
    now: Duration,
    me: Option<PeerId>,
    election: Option<HostElection>,
    links: HashMap<PeerId, Link>,
    /// Peers the server said left (so their disconnect is `Left`, not `Disconnected`).
    left_by_server: HashSet<PeerId>,
    /// Peers whose link closed: a link the server ended (a kick) may still carry their packets
    /// for a while, and nothing from them counts any more.
    departed: Departed,
    /// Peers announced with `Joined`, in that order.
    joined: Vec<PeerId>,
    /// Frames queued for the next [`Endpoint::handle_timeout`].
    outbox: Vec<(Lane, PeerId, Bytes)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    last_ping: Option<Duration>,
    counters: Counters,
    /// Grows whenever what [`Endpoint::lobby_version`] covers may have changed.
    lobby_version: u64,
    /// Sequence number of our next chunked message (unique per sender, whoever receives it).
    next_chunk_seq: u32,
    /// Star client: sequence number of our next relayed reliable frame.
    relay_seq: u32,
    /// Star client: relayed reliable frames not yet known to have arrived.
    unacked: VecDeque<Unacked>,
    /// Star host: the highest sequence number received per client since the last flush.
    relay_acks: HashMap<PeerId, u32>,
    /// Star host: per client, the highest sequence number received and the last acknowledged,
    /// while some of its frames still wait in our queues (acknowledged once passed on).
    relay_held: HashMap<PeerId, (u32, Option<u32>)>,
    /// The highest relayed sequence number seen per origin, to drop resent frames.
    relay_seen: HashMap<PeerId, u32>,
    /// As host with `host_by_upload`: members' upload measurements.
    meter: UploadMeter,
    /// As member: the host's probe requests answered.
    answerer: ProbeAnswerer,
}

impl Endpoint {
    /// An endpoint that has not been assigned an id yet.
    pub fn new(config: EndpointConfig) -> Self {
        Self {
            config,
            now: Duration::ZERO,
            me: None,
            election: None,
            links: HashMap::new(),
            left_by_server: HashSet::new(),
            departed: Departed::default(),
            joined: Vec::new(),
            outbox: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_ping: None,
            counters: Counters::default(),
            lobby_version: 0,
            next_chunk_seq: 0,
            relay_seq: 0,
            unacked: VecDeque::new(),
            relay_acks: HashMap::new(),
            relay_held: HashMap::new(),
            relay_seen: HashMap::new(),
            meter: UploadMeter::default(),
            answerer: ProbeAnswerer::default(),
        }
    }

    // ---- what the driver reports ----

    /// The server assigned our id at `now`; the host election starts.
    pub fn id_assigned(&mut self, me: PeerId, now: Duration) {
        self.advance(now);
        self.lobby_changed();
        self.me = Some(me);
        self.election = Some(HostElection::new(me, now, self.config.settings.host_grace));
    }

    /// The signaling introduced `peer`: as [`Role::Caller`] we call it (the server told us of it:
    /// it joined after us); as [`Role::Receiver`] it called us (its offer came: it joined first).
    pub fn introduced(&mut self, peer: PeerId, role: Role) {
        if Some(peer) == self.me {
            return;
        }
        // A stray offer from a peer we call (the server said it joined after us) changes
        // nothing: the first role stands.
        if self
            .links
            .get(&peer)
            .and_then(|l| l.role)
            .is_some_and(|r| r != role)
        {
            self.counters.election_refused += 1;
            return;
        }
        self.lobby_changed();
        let now = self.now;
        let link = self.link(peer);
        link.role = Some(role);
        if !link.connected && link.introduced_at.is_none() {
            link.introduced_at = Some(now);
        }
        let Some(e) = self.election.as_mut() else {
            return;
        };
        let before = e.refused();
        let outs = match role {
            Role::Caller => {
                e.introduced_later(peer);
                Vec::new()
            }
            Role::Receiver => e.introduced_earlier(peer),
        };
        self.counters.election_refused += e.refused() - before;
        self.apply(outs);
    }

    /// The server said `peer` left the room (its link closing next is a `Left`, not a
    /// `Disconnected`).
    pub fn server_left(&mut self, peer: PeerId) {
        if self.left_by_server.len() < MAX_LEFT {
            self.left_by_server.insert(peer);
        }
    }

    /// The link to `peer` opened (all its data channels).
    pub fn link_up(&mut self, peer: PeerId, now: Duration) {
        self.advance(now);
        self.lobby_changed();
        self.departed.remove(peer);
        let link = self.link(peer);
        link.connected = true;
        link.introduced_at = None;
        self.send_hello(peer, now);
        if let Some(e) = self.election.as_mut() {
            let outs = e.connected(peer);
            self.apply(outs);
        }
    }

    /// The link to `peer` runs over `path` now (ICE chose, or changed, its candidate pair).
    pub fn path_chosen(&mut self, peer: PeerId, path: LinkPath) {
        if let Some(link) = self.links.get_mut(&peer).filter(|l| l.connected) {
            link.stats.path = Some(path);
        }
    }

    /// The link to `peer` closed.
    pub fn link_down(&mut self, peer: PeerId) {
        let reason = if self.left_by_server.remove(&peer) {
            LeaveReason::Left
        } else {
            LeaveReason::Disconnected
        };
        self.lobby_changed();
        self.departed.insert(peer);
        self.links.remove(&peer);
        self.relay_acks.remove(&peer);
        self.relay_held.remove(&peer);
        self.meter.forget(peer);
        if self.joined.contains(&peer) {
            self.joined.retain(|p| *p != peer);
            self.events.push_back(Event::Left { peer, reason });
        }
        if let Some(e) = self.election.as_mut() {
            let outs = e.disconnected(peer);
            self.apply(outs);
        }
        self.sync_star_members();
    }

    /// Time passed: the host election's grace, hellos to repeat, pings, links given up, and
    /// what was queued since the last call (messages, then bulk chunks within each peer's
    /// window, then relay acknowledgements).
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
        self.give_up_connecting(now);
        if let Some(election) = self.election.as_mut() {
            let outs = election.tick(now);
            self.apply(outs);
        }
        self.probe_uploads(now);
        self.flush(now);
    }

    /// When [`Endpoint::handle_timeout`] has something to do next, if nothing else happens
    /// first (a driver that calls it every frame may ignore this).
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let mut at = |t: Duration| next = Some(next.map_or(t, |n| n.min(t)));
        if !self.outbox.is_empty() || !self.relay_acks.is_empty() {
            return Some(Duration::ZERO);
        }
        if let Some(grace) = self.election.as_ref().and_then(HostElection::grace_ends) {
            at(grace);
        }
        if let Some(probe) = self.meter.poll_timeout() {
            at(probe);
        }
        if !self.joined.is_empty() {
            at(self.last_ping.map_or(Duration::ZERO, |t| {
                t.saturating_add(self.config.settings.ping_interval)
            }));
        }
        for link in self.links.values() {
            if link.hello_pending() {
                at(link
                    .hello_sent
                    .map_or(Duration::ZERO, |t| t.saturating_add(HELLO_REPEAT)));
            }
            if let Some(since) = link.waiting_since {
                at(since.saturating_add(LINK_WAIT));
            }
            if let Some(since) = link.introduced_at {
                at(since.saturating_add(self.config.settings.connect_timeout));
            }
        }
        next
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the game.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// We leave: every joined peer is announced as left (`WeLeft`), and nothing more is sent.
    pub fn leave(&mut self) {
        self.lobby_changed();
        for peer in std::mem::take(&mut self.joined) {
            self.events.push_back(Event::Left {
                peer,
                reason: LeaveReason::WeLeft,
            });
        }
        self.links.clear();
        self.outbox.clear();
        self.transmits.clear();
    }

    // ---- what the driver and the game may ask ----

    /// Our id, once the server assigned it.
    pub fn id(&self) -> Option<PeerId> {
        self.me
    }

    /// The agreed host, once known.
    pub fn host(&self) -> Option<PeerId> {
        self.election.as_ref().and_then(HostElection::host)
    }

    /// Peers in the lobby, in the order they joined it (as we saw them).
    pub fn peers(&self) -> &[PeerId] {
        &self.joined
    }

    /// The succession order agreed with the host: host first, then join order.
    pub fn succession(&self) -> Vec<PeerId> {
        self.election
            .as_ref()
            .map(HostElection::succession)
            .unwrap_or_default()
    }

    /// Who hosts if the host leaves now: the first of the host's heirs still here (ranked by
    /// upload, see [`ProtocolSettings::host_by_upload`]), else the next in join order.
    pub fn next_host(&self) -> Option<PeerId> {
        self.election.as_ref().and_then(HostElection::next_host)
    }

    /// Our role on the link to `peer`.
    pub fn role(&self, peer: PeerId) -> Option<Role> {
        self.links.get(&peer).and_then(|l| l.role)
    }

    /// Link statistics of `peer`.
    pub fn link_stats(&self, peer: PeerId) -> Option<&LinkStats> {
        self.links.get(&peer).map(|l| &l.stats)
    }

    /// Whether game frames can go to `peer` now: its link is open and its hello matched.
    pub fn ready(&self, peer: PeerId) -> bool {
        self.links.get(&peer).is_some_and(Link::ready)
    }

    /// The room's topology, as configured.
    pub fn topology(&self) -> Topology {
        self.config.topology
    }

    /// The settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// A number that grows whenever the view of the lobby may have changed (our id, the host,
    /// the succession, the peers, our roles): a driver that shows the lobby rebuilds its view when
    /// it differs from the last one it saw.
    pub fn lobby_version(&self) -> u64 {
        self.lobby_version
    }

    /// The player metadata `peer` sent in its hello (empty if it sent none), once it joined.
    pub fn peer_meta(&self, peer: PeerId) -> Option<&[u8]> {
        self.links
            .get(&peer)
            .filter(|l| l.announced)
            .map(|l| l.meta.as_slice())
    }

    /// What was dropped or given up so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The counters, for a driver that drops things too (signals, conditioned frames).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Bytes of reliable frames still waiting behind the bulk window for `peer`.
    pub fn bulk_pending(&self, peer: PeerId) -> usize {
        self.links.get(&peer).map_or(0, Link::bulk_bytes)
    }

    // ---- shared helpers ----

    fn lobby_changed(&mut self) {
        self.lobby_version = self.lobby_version.wrapping_add(1);
    }

    /// Time only moves forward, whatever the driver's clock does.
    /// Links the server introduced that did not open within the connect timeout are given up:
    /// reported once, and forgotten as a closed link is.
    fn give_up_connecting(&mut self, now: Duration) {
        let waited = self.config.settings.connect_timeout;
        let late: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.introduced_at
                    .is_some_and(|t| now.saturating_sub(t) >= waited)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in late {
            self.events
                .push_back(Event::Error(EndpointError::ConnectTimeout { peer, waited }));
            self.link_down(peer);
        }
    }

    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// Bytes held for unfinished chunked messages, from every peer and star origin.
    pub fn pending_chunk_bytes(&self) -> usize {
        self.links
            .values()
            .map(|l| l.reassembler.pending_bytes())
            .sum()
    }

    fn link(&mut self, peer: PeerId) -> &mut Link {
        let config = &self.config;
        self.links.entry(peer).or_insert_with(|| {
            Link::new(
                config.settings.max_message_bytes,
                config.settings.max_pending_bytes,
            )
        })
    }

    fn hosting(&self) -> bool {
        self.me.is_some() && self.host() == self.me
    }

    /// Whether we are a client of a star (send through the host, learn members from the roster).
    fn star_client(&self) -> bool {
        self.config.topology == Topology::Star && self.host().is_some() && !self.hosting()
    }

    /// A packet for the driver to send now.
    fn send_now(&mut self, lane: Lane, peer: PeerId, bytes: impl Into<Bytes>) {
        let bytes: Bytes = bytes.into();
        if let Some(link) = self.links.get_mut(&peer) {
            link.stats.bytes_out += bytes.len() as u64;
        }
        self.transmits.push_back(Transmit { lane, peer, bytes });
    }

    /// Carries out the election's outputs.
    fn apply(&mut self, outs: Vec<Output>) {
        if !outs.is_empty() {
            self.lobby_changed();
        }
        for out in outs {
            match out {
                Output::HostChanged { old, new } => {
                    self.events.push_back(Event::HostChanged { old, new });
                    if old.is_some() {
                        self.resend_unacked();
                    }
                }
                Output::Publish(succession) => {
                    let bytes = Bytes::from(Control::Succession(succession).encode());
                    let peers: Vec<PeerId> = self
                        .links
                        .iter()
                        .filter(|(_, l)| l.connected)
                        .map(|(p, _)| *p)
                        .collect();
                    for p in peers {
                        self.send_now(Lane::Control, p, bytes.clone());
                    }
                }
                Output::Vouch { to, roster } => {
                    let bytes = Bytes::from(Control::Succession(roster).encode());
                    self.send_now(Lane::Control, to, bytes);
                }
            }
        }
    }
}
