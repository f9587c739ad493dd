//! The I/O edge: one matchbox socket and its message loop, and the per-peer link state around it.
//! Everything protocol-shaped is delegated to [`crate::protocol`]; this module moves bytes.
//! [`star`] adds what a star room needs: relaying through the host and members known by roster.

mod star;

use crate::conditioner::{Conditions, Delayer, LinkConditioner};
use crate::config::{resolve_room, HuddleConfig};
use crate::link::{Link, LinkStats};
use crate::messages::{
    HostChanged, HuddleError, LeaveReason, PeerJoined, PeerLeft, Recipients, Role,
};
use crate::protocol::chunk::{chunk_count, CHUNK_BYTES};
use crate::protocol::control::{Control, PROTOCOL_VERSION};
use crate::protocol::election::{HostElection, Output};
use crate::protocol::frame::Frame;
use crate::registry::{Channel, MessageRegistry};
use crate::signaling::{HuddleSignallerBuilder, Observed};
use bevy::prelude::*;
use bevy::tasks::{IoTaskPool, Task};
use bytes::Bytes;
use futures::channel::mpsc::UnboundedReceiver;
use matchbox_socket::{ChannelConfig, PeerId, PeerState, WebRtcSocket};
use std::collections::{HashMap, HashSet};
use web_time::Instant;

/// Data channel indices. The list is the same in every build (matchbox negotiates channels by
/// index), whatever features are on.
pub(crate) const CONTROL: usize = 0;
pub(crate) const RELIABLE: usize = 1;
pub(crate) const UNRELIABLE: usize = 2;
/// GGRS traffic (feature `ggrs`; drained and dropped without it).
pub(crate) const GGRS: usize = 3;

/// Largest data channel message matchbox/webrtc deliver (larger ones vanish silently).
pub(crate) const MAX_DATA_CHANNEL_MESSAGE: usize = 65_536;
/// How long relayed frames are kept after the host acknowledged them: a host that leaves may
/// have passed frames on that never left its machine, so those of the last moments go again
/// through the next host (receivers drop what they had).
const RETAIN_ACKED: std::time::Duration = std::time::Duration::from_secs(2);
/// Relayed reliable frames kept for a resend at most (the host acknowledges every flush).
const MAX_UNACKED: usize = 8192;
/// How long reliable frames wait for a link to come up before they are reported as failed.
const LINK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a hello is repeated until both sides have seen each other's.
const HELLO_REPEAT: std::time::Duration = std::time::Duration::from_millis(200);
/// Frames held per peer while its hello is not in yet.
const EARLY_FRAMES: usize = 1024;

/// Counters of what the plugin dropped instead of panicking.
#[derive(Resource, Debug, Default, Clone, PartialEq, Eq)]
pub struct HuddleStats {
    /// Signals from other peers dropped by our signaller (malformed SDP/ICE, garbage events).
    pub signals_dropped: u64,
    /// Data channel frames dropped: unknown kind or type, truncated, undecodable.
    pub frames_dropped: u64,
    /// Chunks dropped (out of order, over the size limits); their messages are lost.
    pub chunks_dropped: u64,
    /// Control messages that did not decode.
    pub control_dropped: u64,
    /// Frames from peers whose message types differ from ours.
    pub mismatched_dropped: u64,
    /// Unreliable frames the link conditioner dropped on purpose.
    pub conditioner_dropped: u64,
    /// Star: frames with a forged or misplaced origin, dropped.
    pub forged_dropped: u64,
    /// Star host: frames relayed to a client.
    pub relayed: u64,
    /// Star: relayed frames seen before (sent again after a host change), dropped.
    pub duplicates_dropped: u64,
    /// Reliable messages given up because no link to their next hop came up in time (reported to
    /// the game as `HuddleError::Send`).
    pub send_failed: u64,
}

/// What a poll produced, for the Bevy side to write as messages, in order.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    Joined(PeerJoined),
    Left(PeerLeft),
    Host(HostChanged),
    Error(HuddleError),
    Deliver {
        type_id: u32,
        from: PeerId,
        bytes: Bytes,
    },
}

/// The live session: present while connecting or in a lobby.
#[derive(Resource)]
pub struct HuddleSession {
    socket: WebRtcSocket,
    task: Option<Task<Result<(), matchbox_socket::Error>>>,
    observed: UnboundedReceiver<Observed>,
    config: HuddleConfig,
    started: Instant,
    types_hash: u64,
    type_names: Vec<String>,
    me: Option<PeerId>,
    election: Option<HostElection>,
    links: HashMap<PeerId, Link>,
    /// Peers the server said left (so their disconnect is `Left`, not `Disconnected`).
    left_by_server: HashSet<PeerId>,
    /// Peers announced with `PeerJoined`, in that order.
    joined: Vec<PeerId>,
    outbox: Vec<(usize, PeerId, Bytes)>,
    last_ping: Instant,
    conditioner: LinkConditioner,
    delayer: Delayer,
    pub(crate) stats: HuddleStats,
    /// Something the `Roster` shows may have changed since it was last built.
    pub(crate) roster_dirty: bool,
    /// A star room: clients are linked to the host only, which relays.
    star: bool,
    /// Sequence number of our next chunked message (unique per sender, whoever receives it).
    next_chunk_seq: u32,
    /// Errors found while sending, reported with the next poll.
    pending_errors: Vec<HuddleError>,
    /// Star client: sequence number of our next relayed reliable frame.
    relay_seq: u32,
    /// Star client: relayed reliable frames not yet known to have arrived: unacknowledged by the
    /// host, or acknowledged less than [`RETAIN_ACKED`] ago (seq, chunk bytes, frame, acked at).
    unacked: std::collections::VecDeque<(u32, usize, Bytes, Option<Instant>)>,
    /// Star host: the highest sequence number passed on per client, to acknowledge.
    relay_acks: HashMap<PeerId, u32>,
    /// The highest relayed sequence number seen per origin, to drop resent frames.
    relay_seen: HashMap<PeerId, u32>,
    /// The queues of the GGRS socket, while a GGRS session runs.
    #[cfg(feature = "ggrs")]
    pub(crate) ggrs: Option<crate::rollback::socket::GgrsLink>,
}

impl HuddleSession {
    /// Opens the socket to `room_url` and starts its message loop on the IO task pool.
    pub(crate) fn connect(
        room_url: &str,
        config: HuddleConfig,
        registry: &MessageRegistry,
    ) -> Result<Self, String> {
        let ice = config.matchbox_ice()?;
        let (room_url, star) = resolve_room(room_url, config.topology);
        let (signaller, observed) = HuddleSignallerBuilder::new();
        let mut channels = [ChannelConfig::reliable(); 4];
        channels[CONTROL] = ChannelConfig::reliable();
        channels[RELIABLE] = ChannelConfig::reliable();
        channels[UNRELIABLE] = ChannelConfig::unreliable();
        channels[GGRS] = ChannelConfig::unreliable();
        let mut builder = WebRtcSocket::builder(room_url)
            .ice_server(ice)
            .signaller_builder(signaller);
        for channel in channels {
            builder = builder.add_channel(channel);
        }
        let (socket, message_loop) = builder.build();
        let task = IoTaskPool::get().spawn(message_loop);
        Ok(Self {
            socket,
            task: Some(task),
            observed,
            config,
            started: Instant::now(),
            types_hash: registry.hash(),
            type_names: registry.names(),
            me: None,
            election: None,
            links: HashMap::new(),
            left_by_server: HashSet::new(),
            joined: Vec::new(),
            outbox: Vec::new(),
            last_ping: Instant::now(),
            conditioner: LinkConditioner::default(),
            delayer: Delayer::new(fastrand::u64(..)),
            stats: HuddleStats::default(),
            roster_dirty: true,
            star,
            next_chunk_seq: 0,
            pending_errors: Vec::new(),
            relay_seq: 0,
            unacked: std::collections::VecDeque::new(),
            relay_acks: HashMap::new(),
            relay_seen: HashMap::new(),
            #[cfg(feature = "ggrs")]
            ggrs: None,
        })
    }

    /// The room's topology as joined: `Mesh` or `Star` (`Auto` resolved).
    pub fn topology(&self) -> crate::config::Topology {
        if self.star {
            crate::config::Topology::Star
        } else {
            crate::config::Topology::Mesh
        }
    }

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

    /// Our role on the link to `peer`.
    pub fn role(&self, peer: PeerId) -> Option<Role> {
        self.links.get(&peer).and_then(|l| l.role)
    }

    /// Link statistics of `peer`.
    pub fn link_stats(&self, peer: PeerId) -> Option<&LinkStats> {
        self.links.get(&peer).map(|l| &l.stats)
    }

    fn now(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    fn link(&mut self, peer: PeerId) -> &mut Link {
        let config = &self.config;
        self.links
            .entry(peer)
            .or_insert_with(|| Link::new(config.max_message_bytes, config.max_pending_bytes))
    }

    /// The settings the session was opened with.
    pub fn config(&self) -> &HuddleConfig {
        &self.config
    }

    /// Whether the message loop has ended; with its error if it failed.
    pub(crate) fn finished(&mut self) -> Option<Result<(), String>> {
        let task = self.task.as_mut()?;
        if !task.is_finished() {
            return None;
        }
        let task = self.task.take()?;
        Some(futures::executor::block_on(task).map_err(|e| format!("{e}")))
    }

    /// Reads everything that arrived: signaling observations, peer changes, control and game
    /// frames. Returns what the game must hear, in order.
    pub(crate) fn poll(&mut self) -> Vec<SessionEvent> {
        let mut events: Vec<SessionEvent> = self
            .pending_errors
            .drain(..)
            .map(SessionEvent::Error)
            .collect();
        self.poll_observed(&mut events);
        self.poll_peers(&mut events);
        self.poll_control(&mut events);
        for ch in [RELIABLE, UNRELIABLE] {
            self.poll_data(ch, &mut events);
        }
        self.poll_ggrs();
        if let Some(election) = self.election.as_mut() {
            let now = self.started.elapsed();
            let outs = election.tick(now);
            self.apply(outs, &mut events);
        }
        if events
            .iter()
            .any(|e| !matches!(e, SessionEvent::Deliver { .. }))
        {
            self.roster_dirty = true;
        }
        events
    }

    fn poll_observed(&mut self, events: &mut Vec<SessionEvent>) {
        while let Ok(seen) = self.observed.try_recv() {
            self.roster_dirty = true;
            match seen {
                Observed::IdAssigned(me) => {
                    self.me = Some(me);
                    self.election = Some(HostElection::new(me, self.now(), self.config.host_grace));
                }
                Observed::Calls(peer) => {
                    self.link(peer).role = Some(Role::Caller);
                    if let Some(e) = self.election.as_mut() {
                        e.introduced_later(peer);
                    }
                }
                Observed::CalledBy(peer) => {
                    self.link(peer).role = Some(Role::Receiver);
                    if let Some(e) = self.election.as_mut() {
                        let outs = e.introduced_earlier(peer);
                        self.apply(outs, events);
                    }
                }
                Observed::Left(peer) => {
                    self.left_by_server.insert(peer);
                }
                Observed::Dropped { from, reason } => {
                    self.stats.signals_dropped += 1;
                    warn!("dropped a signal from {from:?}: {reason}");
                }
            }
        }
    }

    fn poll_peers(&mut self, events: &mut Vec<SessionEvent>) {
        let Ok(changes) = self.socket.try_update_peers() else {
            return;
        };
        for (peer, state) in changes {
            match state {
                PeerState::Connected => {
                    self.link(peer).connected = true;
                    self.send_hello(peer);
                    if let Some(e) = self.election.as_mut() {
                        let outs = e.connected(peer);
                        self.apply(outs, events);
                    }
                }
                PeerState::Disconnected => self.peer_gone(peer, events),
            }
        }
    }

    fn peer_gone(&mut self, peer: PeerId, events: &mut Vec<SessionEvent>) {
        let reason = if self.left_by_server.remove(&peer) {
            LeaveReason::Left
        } else {
            LeaveReason::Disconnected
        };
        self.links.remove(&peer);
        if self.joined.contains(&peer) {
            self.joined.retain(|p| *p != peer);
            events.push(SessionEvent::Left(PeerLeft { peer, reason }));
        }
        if let Some(e) = self.election.as_mut() {
            let outs = e.disconnected(peer);
            self.apply(outs, events);
        }
        self.sync_star_members(events);
    }

    fn poll_control(&mut self, events: &mut Vec<SessionEvent>) {
        let Ok(channel) = self.socket.get_channel_mut(CONTROL) else {
            return;
        };
        for (peer, packet) in channel.receive() {
            let Some(control) = Control::decode(&packet) else {
                self.stats.control_dropped += 1;
                continue;
            };
            match control {
                Control::Hello {
                    version,
                    types_hash,
                    types,
                    seen,
                } => {
                    if seen {
                        self.link(peer).hello_acked = true;
                    }
                    let first = !self.link(peer).has_hello();
                    if first {
                        self.hello(peer, version, types_hash, types, events);
                    }
                    // Tell it we have its hello (again, if it did not get that yet).
                    if first || !seen {
                        self.send_hello(peer);
                    }
                }
                Control::Roster(roster) => {
                    self.roster_dirty = true;
                    if let Some(e) = self.election.as_mut() {
                        let outs = e.roster_received(peer, roster);
                        self.apply(outs, events);
                    }
                    self.sync_star_members(events);
                }
                Control::RelayAck { seq } => self.relay_acked(peer, seq),
                Control::ChunkAck { received } => {
                    if let Some(link) = self.links.get_mut(&peer) {
                        link.bulk_acked = link.bulk_acked.max(received);
                    }
                }
            }
        }
    }

    /// Sends our hello, saying whether we have the peer's.
    fn send_hello(&mut self, peer: PeerId) {
        let link = self.link(peer);
        let seen = link.has_hello();
        link.hello_sent = Some(Instant::now());
        let hello = Control::Hello {
            version: PROTOCOL_VERSION,
            types_hash: self.types_hash,
            types: self.type_names.clone(),
            seen,
        };
        self.send_now(CONTROL, peer, hello.encode());
    }

    fn hello(
        &mut self,
        peer: PeerId,
        version: u16,
        types_hash: u64,
        types: Vec<String>,
        events: &mut Vec<SessionEvent>,
    ) {
        if version != PROTOCOL_VERSION {
            self.link(peer).mismatched = true;
            events.push(SessionEvent::Error(HuddleError::ProtocolMismatch {
                peer,
                ours: PROTOCOL_VERSION,
                theirs: version,
            }));
            return;
        }
        if types_hash != self.types_hash {
            self.link(peer).mismatched = true;
            events.push(SessionEvent::Error(HuddleError::MessageTypeMismatch {
                peer,
                ours: self.type_names.clone(),
                theirs: types,
            }));
            return;
        }
        let link = self.link(peer);
        if link.announced {
            return;
        }
        link.announced = true;
        // Our role is known from the signaling; a peer we did not see offered to us.
        let role = *link.role.get_or_insert(Role::Receiver);
        let early = std::mem::take(&mut link.early);
        // In a star, a member we knew by roster is now linked (a new host): no second join.
        if !self.joined.contains(&peer) {
            self.joined.push(peer);
            events.push(SessionEvent::Joined(PeerJoined { peer, role }));
        }
        // Its control channel works now: as host, make sure it has the roster (one sent the
        // instant the link opened may have been lost).
        if let Some(roster) = self
            .election
            .as_ref()
            .filter(|e| e.is_host())
            .and_then(|e| e.roster().cloned())
        {
            self.send_now(CONTROL, peer, Control::Roster(roster).encode());
        }
        for (ch, packet) in early {
            self.data_frame(ch, peer, packet, events);
        }
    }

    /// The GGRS channel: to the GGRS socket if a session runs and the sender is in the lobby,
    /// else dropped (and counted). Always drained, so nobody can fill our memory through it.
    fn poll_ggrs(&mut self) {
        let Ok(channel) = self.socket.get_channel_mut(GGRS) else {
            return;
        };
        for (peer, packet) in channel.receive() {
            #[cfg(feature = "ggrs")]
            if let Some(link) = self.ggrs.as_ref().filter(|_| self.joined.contains(&peer)) {
                link.received(peer, packet);
                continue;
            }
            let _ = (peer, packet);
            self.stats.frames_dropped += 1;
        }
    }

    fn poll_data(&mut self, ch: usize, events: &mut Vec<SessionEvent>) {
        let Ok(channel) = self.socket.get_channel_mut(ch) else {
            return;
        };
        let packets = channel.receive();
        for (peer, packet) in packets {
            let link = self.link(peer);
            link.stats.bytes_in += packet.len() as u64;
            if link.mismatched {
                self.stats.mismatched_dropped += 1;
                continue;
            }
            if !link.announced {
                if link.early.len() < EARLY_FRAMES {
                    link.early.push((ch, packet));
                } else {
                    self.stats.frames_dropped += 1;
                }
                continue;
            }
            self.data_frame(ch, peer, packet, events);
        }
    }

    fn data_frame(
        &mut self,
        ch: usize,
        peer: PeerId,
        packet: Bytes,
        events: &mut Vec<SessionEvent>,
    ) {
        if crate::protocol::relay::is_routed(&packet) {
            self.routed_frame(ch, peer, packet, events);
        } else {
            self.inner_frame(ch, peer, peer, packet, events);
        }
    }

    /// Counts chunk bytes that came on `link` and acknowledges them now and then (always at the
    /// end of a message), which opens the sender's window.
    fn chunk_received(&mut self, link: PeerId, len: usize, message_done: bool) {
        let l = self.link(link);
        l.chunk_bytes_in += len as u64;
        if message_done || l.chunk_bytes_in - l.chunk_acked_out >= (CHUNK_BYTES * 4) as u64 {
            l.chunk_acked_out = l.chunk_bytes_in;
            let ack = Control::ChunkAck {
                received: l.chunk_bytes_in,
            };
            self.send_now(CONTROL, link, ack.encode());
        }
    }

    /// A frame (not routed) that came on `link` from `from` (the same peer, unless relayed).
    fn inner_frame(
        &mut self,
        ch: usize,
        link: PeerId,
        from: PeerId,
        packet: Bytes,
        events: &mut Vec<SessionEvent>,
    ) {
        let peer = from;
        let (frame, payload) = match Frame::decode(&packet) {
            Ok(f) => f,
            Err(e) => {
                self.stats.frames_dropped += 1;
                debug!("dropped a frame from {peer}: {e}");
                return;
            }
        };
        match frame {
            Frame::Message { type_id } => {
                self.link(peer).stats.messages_in += 1;
                events.push(SessionEvent::Deliver {
                    type_id,
                    from: peer,
                    bytes: packet.slice(packet.len() - payload.len()..),
                });
            }
            Frame::Chunk {
                type_id,
                seq,
                index,
                count,
            } if ch == RELIABLE => {
                let result = self
                    .link(from)
                    .reassembler
                    .push(type_id, seq, index, count, payload);
                self.chunk_received(link, payload.len(), index + 1 == count);
                match result {
                    Ok(Some((type_id, bytes))) => {
                        self.link(peer).stats.messages_in += 1;
                        events.push(SessionEvent::Deliver {
                            type_id,
                            from: peer,
                            bytes: bytes.into(),
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.stats.chunks_dropped += 1;
                        debug!("dropped a chunk from {peer}: {e}");
                    }
                }
            }
            Frame::Link {
                pong: false,
                seq,
                sent_us,
            } if ch == UNRELIABLE && link == from => {
                let mut reply = Vec::with_capacity(16);
                Frame::Link {
                    pong: true,
                    seq,
                    sent_us,
                }
                .encode_header(&mut reply);
                self.send_now(UNRELIABLE, peer, reply);
            }
            Frame::Link {
                pong: true,
                seq,
                sent_us,
            } if ch == UNRELIABLE && link == from => {
                let now_us = self.now().as_micros() as u64;
                self.link(peer).pong(seq, now_us.saturating_sub(sent_us));
            }
            _ => self.stats.frames_dropped += 1,
        }
    }

    /// Carries out the election's outputs.
    fn apply(&mut self, outs: Vec<Output>, events: &mut Vec<SessionEvent>) {
        for out in outs {
            match out {
                Output::HostChanged { old, new } => {
                    events.push(SessionEvent::Host(HostChanged { old, new }));
                    if old.is_some() {
                        self.resend_unacked();
                    }
                }
                Output::Publish(roster) => {
                    let bytes = Bytes::from(Control::Roster(roster).encode());
                    let peers: Vec<PeerId> = self
                        .links
                        .iter()
                        .filter(|(_, l)| l.connected)
                        .map(|(p, _)| *p)
                        .collect();
                    for p in peers {
                        self.send_now(CONTROL, p, bytes.clone());
                    }
                }
            }
        }
    }

    /// Sends a frame, through the link conditioner when it is on for that channel.
    fn send_now(&mut self, ch: usize, peer: PeerId, bytes: impl Into<Bytes>) {
        let bytes: Bytes = bytes.into();
        if let Some(link) = self.links.get_mut(&peer) {
            link.stats.bytes_out += bytes.len() as u64;
        }
        let conditions = match ch {
            RELIABLE => self.conditioner.reliable,
            UNRELIABLE | GGRS => self.conditioner.unreliable,
            _ => None,
        };
        // While frames are held, reliable ones keep queueing behind them to stay in order.
        let conditions = conditions
            .or_else(|| (ch == RELIABLE && self.delayer.held() > 0).then(Conditions::default));
        match conditions {
            Some(c) => {
                self.delayer
                    .submit(Instant::now(), &c, ch == RELIABLE, ch, peer, bytes);
                self.stats.conditioner_dropped = self.delayer.dropped;
            }
            None => self.transmit(ch, peer, bytes),
        }
    }

    fn transmit(&mut self, ch: usize, peer: PeerId, bytes: Bytes) {
        if let Ok(channel) = self.socket.get_channel_mut(ch) {
            let _ = channel.try_send(bytes, peer);
        }
    }

    /// Queues an encoded game message for `to`.
    pub(crate) fn queue(
        &mut self,
        type_id: u32,
        channel: Channel,
        payload: Vec<u8>,
        to: &Recipients,
    ) -> Result<(), String> {
        let destinations = self.destinations(to);
        let mut frame = Vec::with_capacity(payload.len() + 4);
        Frame::Message { type_id }.encode_header(&mut frame);
        // Room for the largest routing header.
        let header = frame.len() + 33;
        let fits = header + payload.len() <= MAX_DATA_CHANNEL_MESSAGE;
        let ch = match channel {
            Channel::Unreliable if !fits => {
                return Err(format!(
                    "{} bytes exceed the unreliable channel's {MAX_DATA_CHANNEL_MESSAGE}",
                    header + payload.len()
                ))
            }
            Channel::Unreliable => UNRELIABLE,
            Channel::Reliable => RELIABLE,
        };
        if payload.len() > self.config.max_message_bytes {
            return Err(format!(
                "{} bytes exceed max_message_bytes ({})",
                payload.len(),
                self.config.max_message_bytes
            ));
        }
        // The frames to send: the whole message, or its chunks with their payload sizes.
        let frames: Vec<(usize, Bytes)> = if fits {
            frame.extend_from_slice(&payload);
            vec![(0, frame.into())]
        } else {
            let count = chunk_count(payload.len()) as u32;
            let seq = self.next_chunk_seq;
            self.next_chunk_seq = self.next_chunk_seq.wrapping_add(1);
            payload
                .chunks(CHUNK_BYTES)
                .enumerate()
                .map(|(index, part)| {
                    let mut f = Vec::with_capacity(part.len() + 16);
                    Frame::Chunk {
                        type_id,
                        seq,
                        index: index as u32,
                        count,
                    }
                    .encode_header(&mut f);
                    f.extend_from_slice(part);
                    (part.len(), f.into())
                })
                .collect()
        };
        for (link, route) in destinations {
            self.link(link).stats.messages_out += 1;
            for (counted, f) in &frames {
                let Some(mut route) = route else {
                    self.push_frame(ch, link, f.clone(), *counted);
                    continue;
                };
                // Relayed reliable frames are numbered and kept until the host acknowledges them.
                let tracked = ch == RELIABLE;
                if tracked {
                    route.seq = Some(self.relay_seq);
                    self.relay_seq = self.relay_seq.wrapping_add(1);
                }
                let prefix = crate::protocol::relay::encode(route);
                let bytes = Bytes::from([prefix.as_slice(), f.as_ref()].concat());
                if let (true, Some(seq)) = (tracked, route.seq) {
                    self.unacked.push_back((seq, *counted, bytes.clone(), None));
                    if self.unacked.len() > MAX_UNACKED {
                        self.unacked.pop_front();
                        self.stats.send_failed += 1;
                    }
                }
                self.push_frame(ch, link, bytes, *counted);
            }
        }
        Ok(())
    }

    /// Sends what was queued this frame: messages, then bulk chunks within each peer's window,
    /// then pings when due; and what the link conditioner held back until now.
    pub(crate) fn flush(&mut self, conditioner: LinkConditioner) {
        self.conditioner = conditioner;
        for (ch, peer, bytes) in self.delayer.due(Instant::now()) {
            self.transmit(ch, peer, bytes);
        }
        for (ch, peer, bytes) in std::mem::take(&mut self.outbox) {
            let member = self.joined.contains(&peer) || self.host() == Some(peer);
            if self.ready(peer) {
                self.send_now(ch, peer, bytes);
            } else if ch == RELIABLE && member {
                // No working link yet (a star's new host is still connecting): wait for it.
                self.link(peer).bulk.push_back((0, bytes));
            }
            // Otherwise the peer is gone: what was for it is moot (relayed frames it had not
            // passed on are sent again through the next host).
        }
        self.give_up_waiting();
        self.send_relay_acks();
        #[cfg(feature = "ggrs")]
        if let Some(link) = self.ggrs.clone() {
            let outbox = std::mem::take(&mut link.queues().outbox);
            let mut sent = 0u64;
            for (peer, bytes) in outbox {
                if self.ready(peer) {
                    sent += bytes.len() as u64;
                    self.send_now(GGRS, peer, bytes);
                }
            }
            link.queues().bytes_out += sent;
        }
        let window = self.config.bulk_window_bytes as u64;
        let peers: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| !l.bulk.is_empty() && l.ready())
            .map(|(p, _)| *p)
            .collect();
        for peer in peers {
            while let Some(link) = self.links.get_mut(&peer) {
                if link.bulk_sent.saturating_sub(link.bulk_acked) >= window {
                    break;
                }
                let Some((counted, frame)) = link.bulk.pop_front() else {
                    break;
                };
                // Only chunk payload counts against the window: that is what the peer acks.
                link.bulk_sent += counted as u64;
                self.send_now(RELIABLE, peer, frame);
            }
        }
        let due: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.hello_pending() && l.hello_sent.is_none_or(|t| t.elapsed() >= HELLO_REPEAT)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.send_hello(peer);
        }
        if self.last_ping.elapsed() >= self.config.ping_interval {
            self.last_ping = Instant::now();
            let sent_us = self.now().as_micros() as u64;
            let peers: Vec<PeerId> = self
                .joined
                .iter()
                .copied()
                .filter(|p| self.ready(*p))
                .collect();
            for peer in peers {
                let seq = self.link(peer).ping();
                let mut f = Vec::with_capacity(16);
                Frame::Link {
                    pong: false,
                    seq,
                    sent_us,
                }
                .encode_header(&mut f);
                self.send_now(UNRELIABLE, peer, f);
            }
        }
    }

    /// Whether game frames can go to `peer` now: its link is open and its hello matched.
    fn ready(&self, peer: PeerId) -> bool {
        self.links.get(&peer).is_some_and(Link::ready)
    }

    /// Reliable frames waiting for a link that has not come up in [`LINK_WAIT`] are given up
    /// and reported, never dropped in silence.
    fn give_up_waiting(&mut self) {
        let now = Instant::now();
        let mut failed = Vec::new();
        for (peer, link) in &mut self.links {
            let waiting = !link.bulk.is_empty() && !link.ready();
            match (waiting, link.waiting_since) {
                (false, _) => link.waiting_since = None,
                (true, None) => link.waiting_since = Some(now),
                (true, Some(since)) if now.duration_since(since) >= LINK_WAIT => {
                    let frames = link.bulk.len();
                    link.bulk.clear();
                    link.waiting_since = None;
                    failed.push((*peer, frames));
                }
                (true, Some(_)) => {}
            }
        }
        for (peer, frames) in failed {
            self.stats.send_failed += frames as u64;
            self.pending_errors.push(HuddleError::Send {
                type_name: "reliable frames",
                why: format!(
                    "no link to {peer} came up within {LINK_WAIT:?}: {frames} frames not sent"
                ),
            });
        }
    }

    /// Bytes of reliable frames still waiting behind the bulk window for `peer`.
    pub fn bulk_pending(&self, peer: PeerId) -> usize {
        self.links
            .get(&peer)
            .map_or(0, |l| l.bulk.iter().map(|(_, f)| f.len()).sum())
    }

    /// Announces every joined peer as left (we leave).
    pub(crate) fn leave(&mut self) -> Vec<SessionEvent> {
        self.socket.close();
        std::mem::take(&mut self.joined)
            .into_iter()
            .map(|peer| {
                SessionEvent::Left(PeerLeft {
                    peer,
                    reason: LeaveReason::WeLeft,
                })
            })
            .collect()
    }
}
