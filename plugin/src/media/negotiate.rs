//! The media systems: follow the lobby, hand signals and connection reports to each peer's
//! negotiation and carry out what it says; start and stop the local tracks and subscribe each
//! connected peer to what it wants; drive the camera's bitrate; announce remote tracks; show
//! remote video as images.

use super::connection::{Command, MediaConnection, Opening};
#[cfg(not(target_arch = "wasm32"))]
use super::decoders::Decoders;
#[cfg(not(target_arch = "wasm32"))]
use super::forward::{Hub, HubRoutes};
use super::local::LocalTrack;
use super::report::{PathReport, Report};
use super::{
    LocalMedia, MediaStateChanged, MediaStates, MediaStats, RemoteMedia, RemotePeer,
    RemoteTrackEnded, RemoteTrackStarted, Slot,
};
use crate::messages::{MediaSignalIn, PeerJoined, PeerLeft, Role};
use crate::session::HuddleSession;
use crate::HuddleSettings;
use bevy::asset::RenderAssetUsages;
use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use huddle_protocol::media::bitrate::BitrateController;
use huddle_protocol::media::star::pairing;
#[cfg(not(target_arch = "wasm32"))]
use huddle_protocol::media::star::{RouteLimits, Routes, StarRoutes};
use huddle_protocol::media::{
    MediaAction, MediaKind, MediaPeer, MediaSignal, MediaState, TrackSet,
};
use huddle_protocol::room::Topology;
use matchbox_socket::PeerId;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use wgpu_types::{Extent3d, TextureDimension, TextureFormat};

const KINDS: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

pub(crate) struct Peer {
    /// We are the caller of the data link (the earlier peer): a mesh's offerer.
    caller: bool,
    negotiation: MediaPeer,
    connection: Option<MediaConnection>,
    camera_rate: BitrateController,
    /// The [`MediaSignal::Want`] last sent.
    sent_wants: TrackSet,
    /// Bytes received as of the last path report, for the bitrates in.
    bytes_in: (u64, u64),
    /// The congestion controller's estimate of the path (bits per second).
    estimate: Option<u32>,
    /// Star: what the host forwards of each publisher (as the host said to us, or as we, the
    /// host, said to this client).
    forwarded: HashMap<PeerId, TrackSet>,
    /// Star client: the [`MediaSignal::WantOf`] last sent per publisher.
    sent_want_of: HashMap<PeerId, TrackSet>,
    /// Star client: the publishers whose tracks came on this connection.
    origins: HashSet<PeerId>,
    /// Star signals that named a publisher outside the lobby (dropped).
    lies: u64,
}

impl Peer {
    fn new(caller: bool, negotiation: MediaPeer, rate: super::BitrateBounds) -> Self {
        Self {
            caller,
            negotiation,
            connection: None,
            camera_rate: BitrateController::new(rate.start, rate.min, rate.max),
            sent_wants: TrackSet::ALL,
            bytes_in: (0, 0),
            estimate: None,
            forwarded: HashMap::new(),
            sent_want_of: HashMap::new(),
            origins: HashSet::new(),
            lies: 0,
        }
    }

    /// What the camera may send this peer: the loss controller's rate, within what the
    /// congestion controller says the path carries after the voice's share.
    fn camera_rate(&self, voice: u32) -> u32 {
        let rate = self.camera_rate.rate();
        match self.estimate {
            Some(estimate) => rate.min(estimate.saturating_sub(voice)),
            None => rate,
        }
    }
}

/// Media with every peer in the lobby, and what we last told them we send.
#[derive(Resource, Default)]
pub(crate) struct MediaPeers {
    peers: HashMap<PeerId, Peer>,
    announced: TrackSet,
    /// Star host: who publishes what and who wants what.
    #[cfg(not(target_arch = "wasm32"))]
    routes: StarRoutes,
    /// Star host: the routes as the hub has them (publisher, kind, viewer, viewer's session).
    #[cfg(not(target_arch = "wasm32"))]
    hub_routes: Vec<(PeerId, MediaKind, PeerId, u32)>,
    #[cfg(not(target_arch = "wasm32"))]
    hub: Arc<Hub>,
    #[cfg(not(target_arch = "wasm32"))]
    decoders: Arc<Decoders>,
    migrating: HashMap<PeerId, Duration>,
    /// A browser that became a star's host said once that it forwards nothing.
    #[cfg(target_arch = "wasm32")]
    said_no_forwarding: bool,
}

/// How long a peer's remote tracks wait for another connection to bring them back (a star's
/// next host) before they end.
const REROUTE_GRACE: Duration = Duration::from_secs(5);

/// Where we stand in the room, for media.
#[derive(Clone, Copy)]
struct Place {
    topology: Topology,
    me: Option<PeerId>,
    host: Option<PeerId>,
}

impl Place {
    fn star_host(&self) -> bool {
        self.topology == Topology::Star && self.me.is_some() && self.me == self.host
    }

    fn star_client(&self) -> bool {
        self.topology == Topology::Star && !self.star_host()
    }
}

/// What the media side works with this frame.
struct Frame<'a> {
    config: &'a crate::HuddleConfig,
    settings: &'a super::MediaSettings,
    /// The link conditioner's conditions on received voices.
    #[cfg(not(target_arch = "wasm32"))]
    conditions: Option<crate::Conditions>,
    session: &'a mut HuddleSession,
    states: &'a mut MediaStates,
    local: &'a LocalMedia,
    remote: &'a mut RemoteMedia,
    changed: Vec<MediaStateChanged>,
    ended: Vec<RemoteTrackEnded>,
    place: Place,
    /// The lobby (without us).
    members: Vec<PeerId>,
    #[cfg(not(target_arch = "wasm32"))]
    hub: Arc<Hub>,
    #[cfg(not(target_arch = "wasm32"))]
    decoders: Arc<Decoders>,
    /// Peers whose tracks lost their connection, and until when they may come back.
    migrating: HashMap<PeerId, Duration>,
    now: Duration,
    /// Star host: what clients said they want of whom, for the routes.
    want_of: Vec<(PeerId, PeerId, TrackSet)>,
}

/// `PreUpdate`: the lobby, the signals, the connections' reports, the local tracks and who gets
/// them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive(
    session: Option<ResMut<HuddleSession>>,
    settings: Res<HuddleSettings>,
    mut peers: ResMut<MediaPeers>,
    mut states: ResMut<MediaStates>,
    mut local: ResMut<LocalMedia>,
    mut remote: ResMut<RemoteMedia>,
    mut stats: ResMut<MediaStats>,
    #[cfg_attr(target_arch = "wasm32", allow(unused_variables))] conditioner: Res<
        crate::conditioner::LinkConditioner,
    >,
    mut lobby: (MessageReader<PeerJoined>, MessageReader<PeerLeft>),
    mut signals: MessageReader<MediaSignalIn>,
    mut out: (
        MessageWriter<MediaStateChanged>,
        MessageWriter<RemoteTrackEnded>,
        MessageWriter<crate::HuddleError>,
    ),
) {
    let media = &settings.0.media;
    start_tracks(&mut local, media);
    out.2.write_batch(
        local
            .take_failures()
            .into_iter()
            .map(crate::HuddleError::Media),
    );
    let Some(mut session) = session.filter(|s| s.endpoint().config().media) else {
        peers.peers.clear();
        peers.migrating.clear();
        #[cfg(not(target_arch = "wasm32"))]
        peers.decoders.retain(|_| false);
        states.0.clear();
        stats.0.clear();
        out.1.write_batch(end_all(&mut remote));
        lobby.0.clear();
        lobby.1.clear();
        signals.clear();
        return;
    };
    let now = session.now();
    let endpoint = session.endpoint();
    let place = Place {
        topology: endpoint.topology(),
        me: endpoint.id(),
        host: endpoint.host(),
    };
    let members = endpoint.peers().to_vec();
    #[cfg(not(target_arch = "wasm32"))]
    let succession = endpoint.succession();
    let mut frame = Frame {
        config: &settings.0,
        settings: media,
        #[cfg(not(target_arch = "wasm32"))]
        conditions: conditioner.media,
        session: &mut session,
        states: &mut states,
        local: &local,
        remote: &mut remote,
        changed: Vec::new(),
        ended: Vec::new(),
        place,
        members,
        #[cfg(not(target_arch = "wasm32"))]
        hub: peers.hub.clone(),
        #[cfg(not(target_arch = "wasm32"))]
        decoders: peers.decoders.clone(),
        migrating: std::mem::take(&mut peers.migrating),
        now,
        want_of: Vec::new(),
    };
    let rate = media.video_bitrate;
    for j in lobby.0.read() {
        let caller = j.role == Role::Caller;
        let peer = Peer::new(caller, MediaPeer::new(caller), rate);
        if let Some(mut old) = peers.peers.insert(j.peer, peer) {
            frame.teardown(j.peer, &mut old);
        }
    }
    for l in lobby.1.read() {
        if let Some(mut old) = peers.peers.remove(&l.peer) {
            frame.teardown(l.peer, &mut old);
        }
        frame.states.0.remove(&l.peer);
        stats.0.remove(&l.peer);
        frame.remote.peers.remove(&l.peer);
        for peer in peers.peers.values_mut() {
            peer.forwarded.remove(&l.peer);
            peer.sent_want_of.remove(&l.peer);
            peer.origins.remove(&l.peer);
        }
    }
    for (&id, peer) in peers.peers.iter_mut() {
        frame.pair(id, peer, now);
    }
    for s in signals.read() {
        if let Some(peer) = peers.peers.get_mut(&s.from) {
            let actions = peer.negotiation.received(s.signal.clone(), now);
            frame.apply(s.from, peer, actions);
            let dropped = peer.negotiation.dropped().saturating_add(peer.lies);
            stats.0.entry(s.from).or_default().signals_dropped = dropped;
        }
    }
    let tracks = frame.local.tracks();
    let announce = std::mem::replace(&mut peers.announced, tracks) != tracks;
    for (&id, peer) in peers.peers.iter_mut() {
        let reports = peer.connection.as_mut().map(MediaConnection::reports);
        for report in reports.into_iter().flatten() {
            let actions = frame.report(id, peer, report, now, &mut stats);
            frame.apply(id, peer, actions);
        }
        let actions = peer.negotiation.tick(now);
        frame.apply(id, peer, actions);
        if peer.negotiation.state() == MediaState::Connected {
            if announce {
                frame.session.send_media(id, MediaSignal::Tracks(tracks));
            }
            frame.send_wants(id, peer);
            frame.subscribe(id, peer);
        }
    }
    // A browser cannot pass RTP on (no rewriting below the track API): its star clients hear
    // only it. Said once, where a developer looks.
    #[cfg(target_arch = "wasm32")]
    if place.star_host() && !std::mem::replace(&mut peers.said_no_forwarding, true) {
        warn!("huddle: this browser hosts a star room and forwards no media: its clients hear only it (let a native peer host)");
    }
    #[cfg(not(target_arch = "wasm32"))]
    if place.star_host() {
        let clients: Vec<PeerId> = succession
            .into_iter()
            .filter(|p| Some(*p) != place.me && frame.members.contains(p))
            .collect();
        frame.forward(&mut peers, &clients, now);
    } else if !peers.hub_routes.is_empty() {
        peers.hub_routes.clear();
        peers.hub.set_routes(HubRoutes::new());
    }
    #[cfg(not(target_arch = "wasm32"))]
    if conditioner.is_changed() {
        for audio in frame.remote.peers.values().filter_map(|e| e.audio.as_ref()) {
            audio.set_conditions(conditioner.media);
        }
    }
    // One encoding for everyone: the camera runs at what the worst path allows (in a star, a
    // client's one stream to the host at the low layer).
    let star_cap = if place.star_client() {
        media.star.camera_bitrate
    } else {
        u32::MAX
    };
    let camera_rate = peers
        .peers
        .iter()
        .filter(|(id, _)| {
            local
                .camera
                .running()
                .is_some_and(|t| t.is_subscribed(**id))
        })
        .map(|(_, p)| p.camera_rate(media.audio_bitrate).min(star_cap))
        .min();
    if let (Some(rate), Some(camera)) = (camera_rate, local.camera.running()) {
        camera.set_bitrate(rate.max(media.video_bitrate.min.min(star_cap)));
    }
    frame.expire();
    peers.migrating = frame.migrating;
    out.0.write_batch(frame.changed);
    out.1.write_batch(frame.ended);
}

/// The game's ICE servers, as for matchbox (one credential set); on a bad list none at all,
/// not matchbox's default (a public STUN server).
fn ice_servers(config: &crate::HuddleConfig) -> matchbox_socket::RtcIceServerConfig {
    config
        .matchbox_ice()
        .unwrap_or_else(|_| matchbox_socket::RtcIceServerConfig {
            urls: Vec::new(),
            username: None,
            credential: None,
        })
}

/// Starts the local tracks the game asked for.
fn start_tracks(local: &mut LocalMedia, settings: &super::MediaSettings) {
    let muted = local.muted;
    match std::mem::take(&mut local.microphone) {
        Slot::StartMic(source) => {
            local.microphone = Slot::Running(LocalTrack::microphone(
                source,
                settings,
                muted,
                #[cfg(not(target_arch = "wasm32"))]
                local.far_end().clone(),
            ))
        }
        other => local.microphone = other,
    }
    match std::mem::take(&mut local.camera) {
        Slot::StartCamera(source) => {
            local.camera = Slot::Running(LocalTrack::camera(source, settings))
        }
        other => local.camera = other,
    }
}

/// Ends every remote track (media is off, or the session is gone).
fn end_all(remote: &mut RemoteMedia) -> Vec<RemoteTrackEnded> {
    let mut ended = Vec::new();
    for (peer, entry) in remote.peers.drain() {
        ended.extend(ended_tracks(peer, &entry));
    }
    ended
}

fn ended_tracks(peer: PeerId, entry: &RemotePeer) -> impl Iterator<Item = RemoteTrackEnded> + '_ {
    KINDS
        .into_iter()
        .filter(|k| entry.announced.has(*k))
        .map(move |kind| RemoteTrackEnded { peer, kind })
}

impl Frame<'_> {
    fn apply(&mut self, id: PeerId, peer: &mut Peer, actions: Vec<MediaAction>) {
        for action in actions {
            let command = match action {
                MediaAction::Open { session } => {
                    self.teardown(id, peer);
                    #[allow(unused_mut)]
                    let mut connection = MediaConnection::open(self.opening(id, session));
                    // A star host's first offer carries the other clients' streams already.
                    #[cfg(not(target_arch = "wasm32"))]
                    if self.place.star_host() {
                        for &origin in self.members.iter().filter(|m| **m != id) {
                            connection.add_forward(origin);
                        }
                    }
                    peer.connection = Some(connection);
                    continue;
                }
                MediaAction::Close => {
                    self.teardown(id, peer);
                    peer.connection = None;
                    continue;
                }
                MediaAction::Forwarded { origin, tracks } => {
                    if self.forwarded_origin(id, origin) {
                        peer.forwarded.insert(origin, tracks);
                        if let Some(entry) = self.remote.peers.get(&origin) {
                            set_live(entry, tracks);
                        }
                    } else {
                        peer.lies = peer.lies.saturating_add(1);
                    }
                    continue;
                }
                MediaAction::WantOf { origin, tracks } => {
                    self.want_of.push((id, origin, tracks));
                    continue;
                }
                MediaAction::Send(signal) => {
                    self.session.send_media(id, signal);
                    continue;
                }
                MediaAction::State(state) => {
                    self.states.0.insert(id, state);
                    self.changed.push(MediaStateChanged { peer: id, state });
                    if state == MediaState::Connected {
                        let tracks = self.local.tracks();
                        self.session.send_media(id, MediaSignal::Tracks(tracks));
                    }
                    continue;
                }
                MediaAction::RemoteTracks(tracks) => {
                    if let Some(entry) = self.remote.peers.get(&id) {
                        set_live(entry, tracks);
                    }
                    continue;
                }
                // Subscriptions follow every frame.
                MediaAction::RemoteWants(_) => continue,
                MediaAction::CreateOffer { round } => Command::CreateOffer { round },
                MediaAction::AcceptOffer { round, sdp } => Command::AcceptOffer { round, sdp },
                MediaAction::AcceptAnswer { sdp } => Command::AcceptAnswer { sdp },
                MediaAction::AddCandidate { candidate } => Command::AddCandidate { candidate },
            };
            if let Some(connection) = &peer.connection {
                connection.command(command);
            }
        }
    }

    /// Whether `id` is our star's host, whose streams may be other publishers'.
    fn relay(&self, id: PeerId) -> bool {
        self.place.star_client() && self.place.host == Some(id)
    }

    /// What a new connection to `id` needs.
    #[cfg(not(target_arch = "wasm32"))]
    fn opening(&self, id: PeerId, session: u32) -> Opening {
        // A star client's camera sends the low layer, once, to the host.
        let cap = if self.place.star_client() {
            self.settings.star.camera_bitrate
        } else {
            u32::MAX
        };
        Opening {
            session,
            ice: ice_servers(self.config),
            peer: id,
            relay: self.relay(id),
            bitrate: self.settings.path_bitrate(cap),
            bind: self.settings.bind.iter().map(ToString::to_string).collect(),
            jitter: self.settings.jitter,
            far_end: self.local.far_end().clone(),
            hub: self.hub.clone(),
            decoders: self.decoders.clone(),
        }
    }

    /// What a new connection to `id` needs (the browser paces and decodes by itself).
    #[cfg(target_arch = "wasm32")]
    fn opening(&self, id: PeerId, session: u32) -> Opening {
        Opening {
            session,
            ice: ice_servers(self.config),
            peer: id,
            relay: self.relay(id),
        }
    }

    /// What a connection reported, to its negotiation (or to the remote tracks and stats).
    fn report(
        &mut self,
        id: PeerId,
        peer: &mut Peer,
        report: Report,
        now: Duration,
        stats: &mut MediaStats,
    ) -> Vec<MediaAction> {
        match report {
            Report::Offer { round, sdp } => peer.negotiation.local_offer(round, sdp),
            Report::Answer { round, sdp } => peer.negotiation.local_answer(round, sdp),
            Report::Candidate(candidate) => {
                let session = peer.connection.as_ref().map_or(0, |c| c.session);
                vec![MediaAction::Send(MediaSignal::Candidate {
                    session,
                    candidate,
                })]
            }
            Report::Connected => peer.negotiation.connected(),
            Report::Failed(why) => {
                warn!("huddle: media with {id}: {why}");
                peer.negotiation.failed(now)
            }
            // A track that came back on a new connection keeps its state until someone says.
            Report::RemoteAudio(named, audio) => {
                let (origin, tracks) = self.origin(id, peer, named);
                let entry = self.remote.peers.entry(origin).or_default();
                let same = entry.audio.as_ref().is_some_and(|a| Arc::ptr_eq(a, &audio));
                if let Some(live) = liveness(tracks, MediaKind::Audio, same) {
                    audio.set_live(live);
                }
                #[cfg(not(target_arch = "wasm32"))]
                audio.set_conditions(self.conditions);
                if let Some(volume) = entry.volume {
                    audio.set_volume(volume);
                }
                entry.audio = Some(audio);
                Vec::new()
            }
            Report::RemoteVideo(named, video) => {
                let (origin, tracks) = self.origin(id, peer, named);
                let entry = self.remote.peers.entry(origin).or_default();
                let same = entry.video.as_ref().is_some_and(|v| Arc::ptr_eq(v, &video));
                if let Some(live) = liveness(tracks, MediaKind::Video, same) {
                    video.set_live(live);
                }
                entry.video = Some(video);
                Vec::new()
            }
            #[cfg(target_arch = "wasm32")]
            Report::Refused => {
                peer.lies = peer.lies.saturating_add(1);
                Vec::new()
            }
            #[cfg(not(target_arch = "wasm32"))]
            Report::KeyframeWanted => {
                if let Some(camera) = self.local.track(MediaKind::Video) {
                    camera.request_keyframe();
                }
                let s = stats.0.entry(id).or_default();
                s.keyframe_requests = s.keyframe_requests.saturating_add(1);
                Vec::new()
            }
            Report::Path(path) => {
                let loss = path.video_loss.unwrap_or(0.0);
                peer.camera_rate.report(loss, path.rtt, now);
                peer.estimate = path.estimate;
                self.record(id, peer, path, stats);
                Vec::new()
            }
        }
    }

    /// Refreshes `id`'s stats from a path report (once a second).
    fn record(&self, id: PeerId, peer: &mut Peer, path: PathReport, stats: &mut MediaStats) {
        let entry = self.remote.peers.get(&id);
        let audio = entry.and_then(|e| e.audio.as_deref());
        let video = entry.and_then(|e| e.video.as_deref());
        let bytes = (
            audio.map_or(0, |a| a.bytes()),
            video.map_or(0, |v| v.bytes()),
        );
        let bits =
            |now: u64, then: u64| (now.saturating_sub(then) * 8).min(u64::from(u32::MAX)) as u32;
        let s = stats.0.entry(id).or_default();
        s.audio_bitrate_in = bits(bytes.0, peer.bytes_in.0);
        s.video_bitrate_in = bits(bytes.1, peer.bytes_in.1);
        peer.bytes_in = bytes;
        s.audio_packets = audio.map_or(0, |a| a.packets());
        s.jitter = audio.map(|a| a.jitter_stats()).unwrap_or_default();
        s.video_packets = video.map_or(0, |v| v.packets());
        s.frames_decoded = video.map_or(0, |v| v.frames_decoded());
        s.frames_dropped = video.map_or(0, |v| v.frames_dropped());
        s.rtt = path.rtt;
        s.video_loss = path.video_loss;
        s.audio_loss = path.audio_loss;
        s.jitter_seconds = path.jitter;
        s.bitrate_out = peer.camera_rate(self.settings.audio_bitrate);
        s.estimate = path.estimate;
        s.signals_dropped = peer.negotiation.dropped().saturating_add(peer.lies);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let legs = self.hub.counts(id);
            s.forwarded = legs.forwarded;
            s.forward_dropped = legs.dropped;
        }
        // A star client: what came of each publisher its host forwards.
        for &origin in &peer.origins {
            let entry = self.remote.peers.get(&origin);
            let audio = entry.and_then(|e| e.audio.as_deref());
            let video = entry.and_then(|e| e.video.as_deref());
            let s = stats.0.entry(origin).or_default();
            s.audio_packets = audio.map_or(0, |a| a.packets());
            s.jitter = audio.map(|a| a.jitter_stats()).unwrap_or_default();
            s.video_packets = video.map_or(0, |v| v.packets());
            s.frames_decoded = video.map_or(0, |v| v.frames_decoded());
            s.frames_dropped = video.map_or(0, |v| v.frames_dropped());
        }
    }

    /// Stops sending to `id`; the remote tracks its connection carried (its own and, from a
    /// star host, the publishers' it forwarded) end, or, for peers still in the lobby, wait
    /// [`REROUTE_GRACE`] for another connection to bring them back (a star's next host).
    fn teardown(&mut self, id: PeerId, peer: &mut Peer) {
        for kind in KINDS {
            if let Some(track) = self.local.track(kind) {
                track.unsubscribe(id);
            }
        }
        let origins: Vec<PeerId> = peer.origins.drain().chain([id]).collect();
        peer.forwarded.clear();
        peer.sent_want_of.clear();
        for origin in origins {
            if self.members.contains(&origin) {
                self.migrating.insert(origin, self.now + REROUTE_GRACE);
            } else {
                self.end_tracks(origin);
            }
        }
    }

    /// Ends `origin`'s remote tracks and their threads.
    fn end_tracks(&mut self, origin: PeerId) {
        self.migrating.remove(&origin);
        #[cfg(not(target_arch = "wasm32"))]
        self.decoders.forget(origin);
        if let Some(entry) = self.remote.peers.get_mut(&origin) {
            self.ended.extend(ended_tracks(origin, entry));
            entry.announced = TrackSet::default();
            entry.audio = None;
            entry.video = None;
        }
    }

    /// Ends the tracks that no connection brought back in time, and forgets the threads of
    /// peers that left.
    fn expire(&mut self) {
        let due: Vec<PeerId> = self
            .migrating
            .iter()
            .filter(|(o, at)| **at <= self.now || !self.members.contains(o))
            .map(|(o, _)| *o)
            .collect();
        for origin in due {
            self.end_tracks(origin);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let members = &self.members;
            self.decoders.retain(|p| members.contains(p));
        }
    }

    /// Starts, or starts afresh, media with `id` as the room's shape says (everyone in a mesh,
    /// host and clients in a star, where the host offers) once the data link to it is up.
    fn pair(&mut self, id: PeerId, peer: &mut Peer, now: Duration) {
        let Some(me) = self.place.me else { return };
        let paired = pairing(self.place.topology, me, self.place.host, id, peer.caller);
        let idle = peer.negotiation.state() == MediaState::Idle;
        let restart = match paired {
            Some(offerer) => peer.negotiation.is_offerer() != offerer,
            // We were a star's host and are not now: our offers end. (An answerer's session
            // is the offerer's to end.)
            None => !idle && peer.negotiation.is_offerer(),
        };
        if restart {
            let actions = vec![MediaAction::Close];
            self.apply(id, peer, actions);
            peer.negotiation = MediaPeer::new(paired.unwrap_or(peer.caller));
            self.states.0.remove(&id);
        }
        // Media signals go on the data link: in a star, the next host's links come up after
        // it is elected.
        let linked = self.session.endpoint().ready(id);
        if paired.is_some() && linked && peer.negotiation.state() == MediaState::Idle {
            let actions = peer.negotiation.start(now);
            self.apply(id, peer, actions);
        }
    }

    /// Whether `origin` may be a publisher whose tracks `from` forwards to us: `from` is our
    /// star's host, `origin` another member of the lobby.
    fn forwarded_origin(&self, from: PeerId, origin: PeerId) -> bool {
        self.place.star_client()
            && self.place.host == Some(from)
            && origin != from
            && Some(origin) != self.place.me
            && self.members.contains(&origin)
    }

    /// Whose a stream on `id`'s connection is, and what that publisher sends: a star host's
    /// stream named by a member is that member's; anything else is `id`'s own.
    fn origin(&mut self, id: PeerId, peer: &mut Peer, named: PeerId) -> (PeerId, Option<TrackSet>) {
        let (origin, tracks) = if named != id && self.forwarded_origin(id, named) {
            peer.origins.insert(named);
            (named, peer.forwarded.get(&named).copied())
        } else {
            let own = &peer.negotiation;
            (id, own.tracks_heard().then(|| own.remote_tracks()))
        };
        // Back on a connection: nothing ended.
        self.migrating.remove(&origin);
        (origin, tracks)
    }

    /// Star host: every leg carries the other clients' streams, the hub follows the routes, and
    /// every client hears what it gets of whom.
    #[cfg(not(target_arch = "wasm32"))]
    fn forward(&mut self, peers: &mut MediaPeers, clients: &[PeerId], now: Duration) {
        let routes = &mut peers.routes;
        routes.set_clients(clients);
        for (viewer, origin, tracks) in self.want_of.drain(..) {
            if !routes.wants(viewer, origin, tracks) {
                if let Some(peer) = peers.peers.get_mut(&viewer) {
                    peer.lies = peer.lies.saturating_add(1);
                }
            }
        }
        for (&id, peer) in &peers.peers {
            if clients.contains(&id) && peer.negotiation.tracks_heard() {
                routes.published(id, peer.negotiation.remote_tracks());
            }
        }
        let star = self.settings.star;
        let plan = routes.plan(RouteLimits {
            video_slots: star.video_slots,
            cap: star.forward_cap,
            audio_rate: u64::from(self.settings.audio_bitrate),
            video_rate: u64::from(star.camera_bitrate),
        });
        for (&viewer, peer) in peers.peers.iter_mut() {
            let Some(connection) = peer.connection.as_mut() else {
                continue;
            };
            let wanted: HashSet<PeerId> =
                clients.iter().copied().filter(|c| *c != viewer).collect();
            let current: HashSet<PeerId> = connection.forwarded().collect();
            for &origin in wanted.difference(&current) {
                connection.add_forward(origin);
            }
            for &origin in current.difference(&wanted) {
                connection.remove_forward(origin);
            }
            if wanted != current {
                let actions = peer.negotiation.tracks_changed(now);
                self.apply(viewer, peer, actions);
            }
            if peer.negotiation.state() == MediaState::Connected {
                self.tell_forwarded(viewer, peer, clients, &peers.routes, &plan);
            }
        }
        let mut key = Vec::new();
        let mut hub = HubRoutes::new();
        for &origin in clients {
            for kind in KINDS {
                for viewer in plan.viewers(origin, kind) {
                    let Some(connection) =
                        peers.peers.get(&viewer).and_then(|p| p.connection.as_ref())
                    else {
                        continue;
                    };
                    if let Some(sink) = connection.forward_sink(origin, kind) {
                        key.push((origin, kind, viewer, connection.session));
                        hub.entry((origin, kind)).or_default().push((viewer, sink));
                    }
                }
            }
        }
        if key != peers.hub_routes {
            peers.hub_routes = key;
            peers.hub.set_routes(hub);
        }
    }

    /// Tells `viewer` what it gets of each other client, when that changed.
    #[cfg(not(target_arch = "wasm32"))]
    fn tell_forwarded(
        &mut self,
        viewer: PeerId,
        peer: &mut Peer,
        clients: &[PeerId],
        routes: &StarRoutes,
        plan: &Routes,
    ) {
        peer.forwarded.retain(|o, _| clients.contains(o));
        // A publisher that has not said what it sends yet (a new host's first moments) is not
        // said to be off.
        for &origin in clients
            .iter()
            .filter(|c| **c != viewer && routes.knows(**c))
        {
            let tracks = plan.get(viewer, origin);
            if peer.forwarded.get(&origin) != Some(&tracks) {
                peer.forwarded.insert(origin, tracks);
                self.session
                    .send_media(viewer, MediaSignal::Forwarded { origin, tracks });
            }
        }
    }

    /// Tells `id` what we want of it, when that changed; a star's host also what we want of
    /// each other client.
    fn send_wants(&mut self, id: PeerId, peer: &mut Peer) {
        let wants = self.local.wants(id);
        if wants != peer.sent_wants {
            peer.sent_wants = wants;
            self.session.send_media(id, MediaSignal::Want(wants));
        }
        if !(self.place.star_client() && self.place.host == Some(id)) {
            return;
        }
        for &origin in self.members.iter().filter(|m| **m != id) {
            let wants = self.local.wants(origin);
            let sent = peer
                .sent_want_of
                .get(&origin)
                .copied()
                .unwrap_or(TrackSet::ALL);
            if wants != sent {
                peer.sent_want_of.insert(origin, wants);
                self.session.send_media(
                    id,
                    MediaSignal::WantOf {
                        origin,
                        tracks: wants,
                    },
                );
            }
        }
    }

    /// Subscribes `id` to each running local track it wants, and only those.
    fn subscribe(&mut self, id: PeerId, peer: &Peer) {
        let Some(connection) = &peer.connection else {
            return;
        };
        let wants = peer.negotiation.remote_wants();
        for kind in KINDS {
            let Some(track) = self.local.track(kind) else {
                continue;
            };
            match (wants.has(kind), track.is_subscribed(id)) {
                (true, false) => track.subscribe(id, connection.sink(kind)),
                (false, true) => track.unsubscribe(id),
                _ => {}
            }
        }
    }
}

/// What a remote track that (re)arrived should show as live: what its publisher said; off while
/// nobody said, unless it is the track already shown (back on a new connection), which keeps
/// its state (`None`).
fn liveness(said: Option<TrackSet>, kind: MediaKind, same: bool) -> Option<bool> {
    match said {
        Some(tracks) => Some(tracks.has(kind)),
        None => (!same).then_some(false),
    }
}

fn set_live(entry: &RemotePeer, tracks: TrackSet) {
    if let Some(audio) = &entry.audio {
        audio.set_live(tracks.audio);
    }
    if let Some(video) = &entry.video {
        video.set_live(tracks.video);
    }
}

/// `PreUpdate`: [`RemoteTrackStarted`] at a track's first decoded frame, [`RemoteTrackEnded`]
/// when the peer turns it off.
pub(crate) fn announce(
    mut remote: ResMut<RemoteMedia>,
    mut started: MessageWriter<RemoteTrackStarted>,
    mut ended: MessageWriter<RemoteTrackEnded>,
) {
    for (&peer, entry) in remote.peers.iter_mut() {
        let now = TrackSet {
            audio: entry.audio.as_ref().is_some_and(|a| a.started()),
            video: entry.video.as_ref().is_some_and(|v| v.started()),
        };
        for kind in KINDS {
            match (now.has(kind), entry.announced.has(kind)) {
                (true, false) => {
                    started.write(RemoteTrackStarted { peer, kind });
                }
                (false, true) => {
                    ended.write(RemoteTrackEnded { peer, kind });
                }
                _ => {}
            }
        }
        entry.announced = now;
    }
}

/// `PreUpdate`: every remote camera's latest frame into its image (apps with `Assets<Image>`).
pub(crate) fn show(mut remote: ResMut<RemoteMedia>, images: Option<ResMut<Assets<Image>>>) {
    let Some(mut images) = images else {
        return;
    };
    for entry in remote.peers.values_mut() {
        let Some(video) = &entry.video else {
            continue;
        };
        let generation = video.generation();
        if generation == entry.image_generation {
            continue;
        }
        entry.image_generation = generation;
        let Some((width, height, rgba)) = video.latest_rgba() else {
            continue;
        };
        let size = Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        };
        let same_size = entry
            .image
            .as_ref()
            .and_then(|h| images.get(h))
            .is_some_and(|image| image.texture_descriptor.size == size);
        if same_size {
            if let Some(mut image) = entry.image.as_ref().and_then(|h| images.get_mut(h)) {
                image.data = Some(rgba);
            }
            continue;
        }
        let image = Image::new(
            size,
            TextureDimension::D2,
            rgba,
            TextureFormat::Rgba8UnormSrgb,
            RenderAssetUsages::default(),
        );
        entry.image = Some(images.add(image));
    }
}

/// `PreUpdate` (feature `media-audio`): every remote voice as a [`VoiceStream`] asset, in apps
/// that have the asset type.
#[cfg(feature = "media-audio")]
pub(crate) fn voices(
    mut remote: ResMut<RemoteMedia>,
    streams: Option<ResMut<Assets<super::VoiceStream>>>,
) {
    let Some(mut streams) = streams else {
        return;
    };
    for entry in remote.peers.values_mut() {
        let Some(audio) = &entry.audio else {
            entry.voice = None;
            continue;
        };
        let current = entry.voice.as_ref().and_then(|h| streams.get(h));
        if !current.is_some_and(|s| s.plays(audio)) {
            entry.voice = Some(streams.add(super::VoiceStream::new(audio.clone())));
        }
    }
}
