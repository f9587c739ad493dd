//! A simulated lobby: endpoints, a signaling server that introduces them as huddle_server does
//! (mesh: everyone; star: the host only, and the new host to everyone when the host goes), links
//! that come up after a while, a network of latency, jitter, loss and reordering (the protocol
//! crate's own [`Delayer`]), an upload rate per peer if the test sets one (its packets queue
//! behind each other), and a fake clock. Every endpoint is driven once per frame, as the
//! plugin drives it: everything that arrived, then `handle_timeout`, then its packets go out.
//! Deterministic by seed.

use bytes::Bytes;
use huddle_protocol::conditioner::{Conditions, Delayer};
use huddle_protocol::endpoint::{
    Channel, EndpointConfig, Event, ProtocolSettings, Recipients, Role,
};
use huddle_protocol::lane::MAX_DATA_CHANNEL_MESSAGE;
use huddle_protocol::{Endpoint, Lane, PeerId, Topology};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which packets the network drops on purpose: (from, to, lane, bytes) -> drop it.
pub type DropRule = fn(usize, usize, Lane, &[u8]) -> bool;

/// One game frame: the endpoints are driven this often.
pub const FRAME: Duration = Duration::from_millis(16);

/// A peer of the simulation.
pub struct Node {
    /// Its id.
    pub id: PeerId,
    /// Its endpoint.
    pub ep: Endpoint,
    /// What it sent, held by the network.
    out: Delayer,
    /// Every event it produced, in order.
    pub events: Vec<Event>,
    /// Still in the room.
    pub alive: bool,
    /// Its upload in bits per second, if limited: each packet leaves after the one before it.
    pub uplink_bps: Option<u64>,
    /// When its upload is free again.
    uplink_free: Duration,
}

/// Something the signaling or the network will do at a time.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// `at` learns of `peer` with `role`.
    Introduce { at: usize, peer: usize, role: Role },
    /// `at` sees its link to `peer` come up.
    LinkUp { at: usize, peer: usize },
}

/// The simulation.
pub struct Sim {
    /// The fake clock.
    pub now: Duration,
    /// The peers, in join order.
    pub nodes: Vec<Node>,
    topology: Topology,
    /// Conditions on every packet.
    pub conditions: Conditions,
    rng: fastrand::Rng,
    /// Links up as each end sees them: (who sees it, to whom), and since when.
    links: BTreeMap<(usize, usize), Duration>,
    due: Vec<(Duration, Due)>,
    /// How long a link takes to come up after the introduction (up to twice this).
    pub connect_time: Duration,
    /// How much later one end may see a link come up than the other.
    pub skew: Duration,
    /// Packets that arrive this soon after the receiver saw the link come up are lost (a message
    /// sent the instant a data channel opens can be lost).
    pub lossy_opening: Duration,
    /// The settings of endpoints that join from now on.
    pub config: EndpointConfig,
    /// Packets lost to [`Sim::lossy_opening`].
    pub lost_at_opening: u64,
    /// Packets the network drops on purpose.
    pub drop_if: Option<DropRule>,
    /// The heir the server's host named (as the plugin does with `host_by_upload`).
    heir: Option<usize>,
    /// The heir that took over as the server's host.
    promoted: Option<usize>,
}

impl Sim {
    /// An empty room of `topology`, with `conditions` on every packet, drawing from `seed`.
    pub fn new(topology: Topology, conditions: Conditions, seed: u64) -> Self {
        Self {
            now: Duration::from_secs(1),
            nodes: Vec::new(),
            topology,
            conditions,
            rng: fastrand::Rng::with_seed(seed),
            links: BTreeMap::new(),
            due: Vec::new(),
            connect_time: Duration::from_millis(150),
            skew: Duration::ZERO,
            lossy_opening: Duration::ZERO,
            config: EndpointConfig {
                topology,
                settings: ProtocolSettings {
                    host_grace: Duration::from_millis(300),
                    ..ProtocolSettings::default()
                },
                ..EndpointConfig::default()
            },
            lost_at_opening: 0,
            drop_if: None,
            heir: None,
            promoted: None,
        }
    }

    /// The id of peer `i` (`i + 1` as a number: readable in failures).
    pub fn id(i: usize) -> PeerId {
        PeerId(uuid::Uuid::from_u128(i as u128 + 1))
    }

    fn index(&self, peer: PeerId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == peer)
    }

    /// The server's host of the room: the heir it took over for, else the oldest peer still
    /// there.
    fn server_host(&self) -> Option<usize> {
        self.promoted
            .filter(|p| self.nodes[*p].alive)
            .or_else(|| self.nodes.iter().position(|n| n.alive))
    }

    /// A peer joins now; the server introduces it as huddle_server would.
    pub fn join(&mut self) -> usize {
        let i = self.nodes.len();
        let mut ep = Endpoint::new(self.config.clone());
        ep.id_assigned(Self::id(i), self.now);
        let seed = self.rng.u64(..);
        self.nodes.push(Node {
            id: Self::id(i),
            ep,
            out: Delayer::new(seed),
            events: Vec::new(),
            alive: true,
            uplink_bps: None,
            uplink_free: Duration::ZERO,
        });
        let existing: Vec<usize> = match self.topology {
            Topology::Mesh => (0..i).filter(|j| self.nodes[*j].alive).collect(),
            Topology::Star => self.server_host().filter(|h| *h != i).into_iter().collect(),
        };
        for j in existing {
            self.introduce(j, i);
        }
        i
    }

    /// The server introduces `later` to `earlier`: `earlier` calls it at once, `later` sees the
    /// offer a little after, and the link comes up later still.
    fn introduce(&mut self, earlier: usize, later: usize) {
        let offer = Duration::from_millis(self.rng.u64(5..40));
        let up = self.connect_time + Duration::from_millis(self.rng.u64(0..=self.connect_ms()));
        self.schedule(
            Duration::ZERO,
            Due::Introduce {
                at: earlier,
                peer: later,
                role: Role::Caller,
            },
        );
        self.schedule(
            offer,
            Due::Introduce {
                at: later,
                peer: earlier,
                role: Role::Receiver,
            },
        );
        let skew = self.rng.u64(0..=self.skew.as_millis() as u64);
        let (first, second) = if self.rng.bool() {
            (earlier, later)
        } else {
            (later, earlier)
        };
        let at = offer + up;
        let late = at + Duration::from_millis(skew);
        self.schedule(
            at,
            Due::LinkUp {
                at: first,
                peer: second,
            },
        );
        self.schedule(
            late,
            Due::LinkUp {
                at: second,
                peer: first,
            },
        );
    }

    fn connect_ms(&self) -> u64 {
        self.connect_time.as_millis() as u64
    }

    fn schedule(&mut self, after: Duration, what: Due) {
        self.due.push((self.now + after, what));
    }

    /// Peer `i` leaves (or vanishes, with `tell_server == false`: the others only see its links
    /// close). In a star the server introduces the new host to everyone.
    pub fn leave(&mut self, i: usize, tell_server: bool) {
        let was_host = self.server_host() == Some(i);
        self.nodes[i].alive = false;
        if was_host {
            self.promoted = self.heir.take().filter(|h| self.nodes[*h].alive);
        }
        let peer = self.nodes[i].id;
        let others: Vec<usize> = (0..self.nodes.len())
            .filter(|j| self.nodes[*j].alive)
            .collect();
        for j in &others {
            if tell_server {
                self.nodes[*j].ep.server_left(peer);
            }
            if self.links.contains_key(&(*j, i)) {
                self.nodes[*j].ep.link_down(peer);
            }
        }
        self.links.retain(|(a, b), _| *a != i && *b != i);
        if self.topology == Topology::Star && was_host {
            if let Some(host) = self.server_host() {
                for j in others.iter().filter(|j| **j != host) {
                    if !self.links.contains_key(&(host, *j)) {
                        self.introduce(host, *j);
                    }
                }
            }
        }
    }

    /// The server takes peer `i` out of the room (a kick): the others hear it left and their
    /// matchbox sockets report its links closed, but the WebRTC links themselves stay up and `i`,
    /// not told, goes on sending on them.
    pub fn kick(&mut self, i: usize) {
        let peer = self.nodes[i].id;
        for (j, node) in self.nodes.iter_mut().enumerate() {
            if j != i && node.alive {
                node.ep.server_left(peer);
                node.ep.link_down(peer);
            }
        }
    }

    /// Game message `payload` from peer `i`.
    pub fn send(
        &mut self,
        i: usize,
        type_id: u32,
        channel: Channel,
        payload: &[u8],
        to: Recipients,
    ) {
        self.nodes[i]
            .ep
            .send(type_id, channel, payload, &to)
            .expect("the message fits");
    }

    /// Packet `bytes` from peer `from` to peer `to` on `lane`, as if `from`'s endpoint sent it
    /// (a hostile peer's forgery).
    pub fn inject(&mut self, from: usize, to: usize, lane: Lane, bytes: Vec<u8>) {
        let conditions = self.conditions;
        let id = self.nodes[to].id;
        self.nodes[from]
            .out
            .submit(self.now, &conditions, lane, id, Bytes::from(bytes));
    }

    /// Runs one frame.
    pub fn step(&mut self) {
        self.now += FRAME;
        let now = self.now;
        let (ready, later): (Vec<_>, Vec<_>) = self.due.drain(..).partition(|(t, _)| *t <= now);
        self.due = later;
        for (_, what) in ready {
            match what {
                Due::Introduce { at, peer, role } => {
                    if self.nodes[at].alive && self.nodes[peer].alive {
                        let id = self.nodes[peer].id;
                        self.nodes[at].ep.introduced(id, role);
                    }
                }
                Due::LinkUp { at, peer } => {
                    let both = self.nodes[at].alive && self.nodes[peer].alive;
                    if both && self.links.insert((at, peer), now).is_none() {
                        let id = self.nodes[peer].id;
                        self.nodes[at].ep.link_up(id, now);
                    }
                }
            }
        }
        // What arrived by now, to each receiver.
        for from in 0..self.nodes.len() {
            let arrived = self.nodes[from].out.due(now);
            if !self.nodes[from].alive {
                continue;
            }
            let src = self.nodes[from].id;
            for (lane, to, bytes) in arrived {
                let Some(j) = self.index(to) else { continue };
                // A packet goes once its sender sees the link; the receiver may not yet.
                if !self.nodes[j].alive || !self.links.contains_key(&(from, j)) {
                    continue;
                }
                let opened = self.links.get(&(j, from)).copied();
                if opened.is_some_and(|t| now.saturating_sub(t) < self.lossy_opening) {
                    self.lost_at_opening += 1;
                    continue;
                }
                if self.drop_if.is_some_and(|drop| drop(from, j, lane, &bytes)) {
                    continue;
                }
                self.nodes[j].ep.receive(src, lane, bytes, now);
            }
        }
        // The server's host names its heir, as the plugin does.
        if let Some(host) = self.server_host() {
            let ep = &self.nodes[host].ep;
            if ep.config().settings.host_by_upload && ep.host() == ep.id() {
                let heir = ep.next_host().and_then(|p| self.index(p));
                self.heir = heir.filter(|h| *h != host);
            }
        }
        let conditions = self.conditions;
        for node in self.nodes.iter_mut().filter(|n| n.alive) {
            node.ep.handle_timeout(now);
            while let Some(e) = node.ep.poll_event() {
                node.events.push(e);
            }
            while let Some(t) = node.ep.poll_transmit() {
                // Larger data channel messages vanish in webrtc-rs: the endpoint never sends one.
                assert!(
                    t.bytes.len() <= MAX_DATA_CHANNEL_MESSAGE,
                    "{} bytes on {:?}",
                    t.bytes.len(),
                    t.lane
                );
                // Through its upload, if limited: after what is queued before it.
                let mut leaves = now;
                if let Some(bps) = node.uplink_bps.filter(|b| *b > 0) {
                    let wire = Duration::from_micros(t.bytes.len() as u64 * 8_000_000 / bps);
                    node.uplink_free = node.uplink_free.max(now) + wire;
                    leaves = node.uplink_free;
                }
                node.out
                    .submit(leaves, &conditions, t.lane, t.peer, t.bytes);
            }
        }
    }

    /// Runs frames until `done` holds (true) or `limit` of simulated time passed (false).
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Since when peer `at` sees its link to `peer` up.
    pub fn sees_link(&self, at: usize, peer: usize) -> Option<Duration> {
        self.links.get(&(at, peer)).copied()
    }

    /// Runs `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Whether every peer still here sees all the others joined and agrees on the host.
    pub fn settled(&self) -> bool {
        let alive: Vec<&Node> = self.nodes.iter().filter(|n| n.alive).collect();
        let host = alive.first().and_then(|n| n.ep.host());
        host.is_some()
            && alive.iter().all(|n| {
                n.ep.host() == host
                    && n.ep.peers().len() == alive.len() - 1
                    && n.ep.succession().len() == alive.len()
            })
    }

    /// The game messages peer `i` received, as (from, type, payload), in order.
    pub fn messages(&self, i: usize) -> Vec<(PeerId, u32, Bytes)> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Message {
                    type_id,
                    from,
                    bytes,
                } => Some((*from, *type_id, bytes.clone())),
                _ => None,
            })
            .collect()
    }
}
