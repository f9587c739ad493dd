//! Media in a star room: who does media with whom, and what the host forwards to whom.
//!
//! In a mesh every pair of peers has its own media connection. In a star every client has one,
//! to the host, and sends its tracks once; the host forwards each client's packets to the other
//! clients that get them (an SFU of one, [`super::forward`] rewrites them per leg). The host
//! offers on every one of its connections, since only the offerer can add the forwarded tracks.
//!
//! [`StarRoutes`] is the host's plan: what each client publishes ([`MediaSignal::Tracks`]), what
//! each client wants of each other one ([`MediaSignal::WantOf`]), and from that the routes: audio
//! from everyone to everyone who wants it, video to each viewer from at most
//! [`RouteLimits::video_slots`] publishers, within the host's bitrate cap. Everything a client
//! says is checked against the lobby; the state is bounded by the members squared.
//!
//! [`MediaSignal::Tracks`]: super::MediaSignal::Tracks
//! [`MediaSignal::WantOf`]: super::MediaSignal::WantOf

use super::{MediaKind, TrackSet};
use crate::room::Topology;
use crate::PeerId;
use std::collections::{BTreeMap, HashMap};

/// Video streams a viewer gets in a star by default.
pub const DEFAULT_VIDEO_SLOTS: usize = 4;

/// Whether we do media with `peer` and, if so, whether we offer (`Some(true)`).
///
/// A mesh pairs everyone; the caller of the data link (`caller`, the earlier peer) offers. A
/// star pairs the host with each client, and the host offers.
pub fn pairing(
    topology: Topology,
    me: PeerId,
    host: Option<PeerId>,
    peer: PeerId,
    caller: bool,
) -> Option<bool> {
    match topology {
        Topology::Mesh => Some(caller),
        Topology::Star => match host {
            Some(h) if h == me => Some(true),
            Some(h) if h == peer => Some(false),
            _ => None,
        },
    }
}

/// What the host may forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimits {
    /// Publishers whose video one viewer gets, at most.
    pub video_slots: usize,
    /// The host's forwarded bitrate at most (bits per second); audio first, then video.
    pub cap: Option<u64>,
    /// What one forwarded voice costs (bits per second).
    pub audio_rate: u64,
    /// What one forwarded camera costs.
    pub video_rate: u64,
}

impl Default for RouteLimits {
    fn default() -> Self {
        Self {
            video_slots: DEFAULT_VIDEO_SLOTS,
            cap: None,
            audio_rate: 32_000,
            video_rate: 300_000,
        }
    }
}

/// The host's view of a star's media: who publishes what, who wants what.
#[derive(Debug, Clone, Default)]
pub struct StarRoutes {
    /// The clients, in lobby order (the host is not one).
    clients: Vec<PeerId>,
    published: HashMap<PeerId, TrackSet>,
    /// (viewer, origin) → what the viewer wants of the origin; all until it says otherwise.
    wants: HashMap<(PeerId, PeerId), TrackSet>,
    dropped: u64,
}

impl StarRoutes {
    /// The clients now (lobby order, without the host); what others said is forgotten.
    pub fn set_clients(&mut self, clients: &[PeerId]) {
        self.clients = clients.to_vec();
        self.published.retain(|p, _| clients.contains(p));
        self.wants
            .retain(|(v, o), _| clients.contains(v) && clients.contains(o));
    }

    /// The clients.
    pub fn clients(&self) -> &[PeerId] {
        &self.clients
    }

    /// What `origin` publishes now (from its [`Tracks`](super::MediaSignal::Tracks)).
    pub fn published(&mut self, origin: PeerId, tracks: TrackSet) {
        if self.clients.contains(&origin) {
            self.published.insert(origin, tracks);
        } else {
            self.dropped += 1;
        }
    }

    /// What `viewer` wants of `origin`; dropped (and counted) unless both are clients and differ.
    pub fn wants(&mut self, viewer: PeerId, origin: PeerId, tracks: TrackSet) -> bool {
        let known = self.clients.contains(&viewer) && self.clients.contains(&origin);
        if !known || viewer == origin {
            self.dropped += 1;
            return false;
        }
        self.wants.insert((viewer, origin), tracks);
        true
    }

    /// Whether `origin` said what it publishes yet.
    pub fn knows(&self, origin: PeerId) -> bool {
        self.published.contains_key(&origin)
    }

    /// What clients said that did not fit the lobby.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The routes within `limits`.
    pub fn plan(&self, limits: RouteLimits) -> Routes {
        let mut routes = Routes::default();
        let mut spent: u64 = 0;
        let gets = |viewer: PeerId, origin: PeerId, kind: MediaKind| {
            viewer != origin
                && self.published.get(&origin).is_some_and(|t| t.has(kind))
                && self
                    .wants
                    .get(&(viewer, origin))
                    .copied()
                    .unwrap_or(TrackSet::ALL)
                    .has(kind)
        };
        // Every voice to everyone who wants it, cap or not: a lobby talks before it watches.
        for &viewer in &self.clients {
            for &origin in &self.clients {
                if gets(viewer, origin, MediaKind::Audio) {
                    routes.add(viewer, origin, MediaKind::Audio);
                    spent = spent.saturating_add(limits.audio_rate);
                }
            }
        }
        // Video in rounds: each viewer's first choice, then each one's second, ... so that the
        // cap, when it bites, is shared.
        let choices: Vec<Vec<PeerId>> = self
            .clients
            .iter()
            .map(|&viewer| {
                self.clients
                    .iter()
                    .copied()
                    .filter(|&origin| gets(viewer, origin, MediaKind::Video))
                    .take(limits.video_slots)
                    .collect()
            })
            .collect();
        'rounds: for round in 0..limits.video_slots {
            for (&viewer, choice) in self.clients.iter().zip(&choices) {
                let Some(&origin) = choice.get(round) else {
                    continue;
                };
                let next = spent.saturating_add(limits.video_rate);
                if limits.cap.is_some_and(|cap| next > cap) {
                    break 'rounds;
                }
                spent = next;
                routes.add(viewer, origin, MediaKind::Video);
            }
        }
        routes.bitrate = spent;
        routes
    }
}

/// What the host forwards: for each viewer and origin, the kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    forward: BTreeMap<(PeerId, PeerId), TrackSet>,
    bitrate: u64,
}

impl Routes {
    fn add(&mut self, viewer: PeerId, origin: PeerId, kind: MediaKind) {
        let entry = self.forward.entry((viewer, origin)).or_default();
        *entry = entry.with(kind, true);
    }

    /// What `viewer` gets of `origin`.
    pub fn get(&self, viewer: PeerId, origin: PeerId) -> TrackSet {
        self.forward
            .get(&(viewer, origin))
            .copied()
            .unwrap_or_default()
    }

    /// Who gets `origin`'s `kind`.
    pub fn viewers(&self, origin: PeerId, kind: MediaKind) -> Vec<PeerId> {
        self.forward
            .iter()
            .filter(|((_, o), t)| *o == origin && t.has(kind))
            .map(|((v, _), _)| *v)
            .collect()
    }

    /// The forwarded bitrate these routes cost, by the limits' rates.
    pub fn bitrate(&self) -> u64 {
        self.bitrate
    }

    /// Streams forwarded (a voice or a camera to one viewer each).
    pub fn streams(&self) -> usize {
        self.forward
            .values()
            .map(|t| usize::from(t.audio) + usize::from(t.video))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u128) -> PeerId {
        PeerId(uuid::Uuid::from_u128(i))
    }

    fn lobby(n: u128, tracks: TrackSet) -> (StarRoutes, Vec<PeerId>) {
        let clients: Vec<PeerId> = (1..=n).map(peer).collect();
        let mut routes = StarRoutes::default();
        routes.set_clients(&clients);
        for &c in &clients {
            routes.published(c, tracks);
        }
        (routes, clients)
    }

    #[test]
    fn a_star_pairs_the_host_with_each_client_and_the_host_offers() {
        let (host, a, b) = (peer(1), peer(2), peer(3));
        let star = Topology::Star;
        assert_eq!(pairing(star, host, Some(host), a, false), Some(true));
        assert_eq!(pairing(star, a, Some(host), host, true), Some(false));
        assert_eq!(pairing(star, a, Some(host), b, true), None);
        assert_eq!(pairing(star, a, None, b, true), None);
        assert_eq!(pairing(Topology::Mesh, a, Some(host), b, true), Some(true));
        assert_eq!(
            pairing(Topology::Mesh, a, Some(host), b, false),
            Some(false)
        );
    }

    #[test]
    fn every_voice_reaches_every_other_client_and_video_is_bounded() {
        let (routes, clients) = lobby(6, TrackSet::ALL);
        let plan = routes.plan(RouteLimits::default());
        for &v in &clients {
            let voices = clients.iter().filter(|&&o| plan.get(v, o).audio).count();
            let cameras = clients.iter().filter(|&&o| plan.get(v, o).video).count();
            assert_eq!(voices, 5);
            assert_eq!(cameras, DEFAULT_VIDEO_SLOTS);
            assert!(!plan.get(v, v).audio);
        }
        assert_eq!(plan.viewers(clients[0], MediaKind::Audio).len(), 5);
        assert_eq!(plan.streams(), 6 * 5 + 6 * 4);
    }

    #[test]
    fn the_cap_keeps_voices_and_shares_video_in_rounds() {
        let (routes, clients) = lobby(4, TrackSet::ALL);
        let limits = RouteLimits {
            cap: Some(12 * 32_000 + 5 * 300_000),
            ..RouteLimits::default()
        };
        let plan = routes.plan(limits);
        assert!(plan.bitrate() <= limits.cap.unwrap_or(0));
        let cameras: Vec<usize> = clients
            .iter()
            .map(|&v| clients.iter().filter(|&&o| plan.get(v, o).video).count())
            .collect();
        // Five cameras over four viewers: everyone has one before anyone has two.
        assert_eq!(cameras.iter().sum::<usize>(), 5);
        assert!(cameras.iter().all(|&c| c >= 1));
        // A cap below the voices still forwards every voice.
        let plan = routes.plan(RouteLimits {
            cap: Some(1),
            ..limits
        });
        assert_eq!(plan.streams(), 12);
    }

    #[test]
    fn wants_and_what_is_published_choose_the_routes() {
        let (mut routes, c) = lobby(3, TrackSet::ALL);
        routes.published(c[2], TrackSet::default().with(MediaKind::Audio, true));
        assert!(routes.wants(c[0], c[1], TrackSet::default()));
        let plan = routes.plan(RouteLimits::default());
        assert_eq!(plan.get(c[0], c[1]), TrackSet::default());
        assert_eq!(
            plan.get(c[0], c[2]),
            TrackSet::default().with(MediaKind::Audio, true)
        );
        assert_eq!(plan.get(c[1], c[0]), TrackSet::ALL);
    }

    /// A hostile client speaks the protocol well and lies: wants for peers that are not in the
    /// lobby, for itself, thousands of them. Nothing grows, the honest routes stand.
    #[test]
    fn a_hostile_clients_wants_for_strangers_are_dropped_and_nothing_grows() {
        let (mut routes, c) = lobby(3, TrackSet::ALL);
        let honest = routes.plan(RouteLimits::default());
        for i in 0..10_000 {
            assert!(!routes.wants(c[0], peer(1_000 + i), TrackSet::ALL));
            assert!(!routes.wants(peer(1_000 + i), c[1], TrackSet::ALL));
            routes.published(peer(1_000 + i), TrackSet::ALL);
        }
        assert!(!routes.wants(c[0], c[0], TrackSet::ALL));
        assert_eq!(routes.wants.len(), 0);
        assert_eq!(routes.published.len(), 3);
        assert_eq!(routes.dropped(), 30_001);
        assert_eq!(routes.plan(RouteLimits::default()), honest);
        // A client that leaves takes what was said of it along.
        routes.wants(c[1], c[2], TrackSet::default());
        routes.set_clients(&c[..2]);
        assert_eq!(routes.wants.len(), 0);
        assert!(routes
            .plan(RouteLimits::default())
            .viewers(c[2], MediaKind::Audio)
            .is_empty());
    }
}
