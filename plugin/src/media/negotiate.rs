//! The media systems: follow the lobby, hand signals and connection reports to each peer's
//! negotiation and carry out what it says; start and stop the local tracks and subscribe each
//! connected peer to what it wants; drive the camera's bitrate; announce remote tracks; show
//! remote video as images.

use super::connection::{Command, MediaConnection, Opening, PathReport, Report};
use super::local::LocalTrack;
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
use huddle_protocol::media::{
    MediaAction, MediaKind, MediaPeer, MediaSignal, MediaState, TrackSet,
};
use matchbox_socket::PeerId;
use std::time::Duration;
use webrtc::peer_connection::RTCIceServer;
use wgpu_types::{Extent3d, TextureDimension, TextureFormat};

const KINDS: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

pub(crate) struct Peer {
    negotiation: MediaPeer,
    connection: Option<MediaConnection>,
    camera_rate: BitrateController,
    /// The [`MediaSignal::Want`] last sent.
    sent_wants: TrackSet,
    /// Bytes received as of the last path report, for the bitrates in.
    bytes_in: (u64, u64),
    /// The congestion controller's estimate of the path (bits per second).
    estimate: Option<u32>,
}

impl Peer {
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
}

/// What the media side works with this frame.
struct Frame<'a> {
    config: &'a crate::HuddleConfig,
    settings: &'a super::MediaSettings,
    /// The link conditioner's conditions on received voices.
    conditions: Option<crate::Conditions>,
    session: &'a mut HuddleSession,
    states: &'a mut MediaStates,
    local: &'a LocalMedia,
    remote: &'a mut RemoteMedia,
    changed: Vec<MediaStateChanged>,
    ended: Vec<RemoteTrackEnded>,
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
    conditioner: Res<crate::conditioner::LinkConditioner>,
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
        states.0.clear();
        stats.0.clear();
        out.1.write_batch(end_all(&mut remote));
        lobby.0.clear();
        lobby.1.clear();
        signals.clear();
        return;
    };
    let now = session.now();
    let mut frame = Frame {
        config: &settings.0,
        settings: media,
        conditions: conditioner.media,
        session: &mut session,
        states: &mut states,
        local: &local,
        remote: &mut remote,
        changed: Vec::new(),
        ended: Vec::new(),
    };
    let rate = media.video_bitrate;
    for j in lobby.0.read() {
        let mut negotiation = MediaPeer::new(j.role == Role::Caller);
        let actions = negotiation.start(now);
        let peer = peers.peers.entry(j.peer).insert(Peer {
            negotiation,
            connection: None,
            camera_rate: BitrateController::new(rate.start, rate.min, rate.max),
            sent_wants: TrackSet::ALL,
            bytes_in: (0, 0),
            estimate: None,
        });
        frame.apply(j.peer, peer.into_mut(), actions);
    }
    for l in lobby.1.read() {
        peers.peers.remove(&l.peer);
        frame.states.0.remove(&l.peer);
        stats.0.remove(&l.peer);
        frame.teardown(l.peer);
        frame.remote.peers.remove(&l.peer);
    }
    for s in signals.read() {
        if let Some(peer) = peers.peers.get_mut(&s.from) {
            let actions = peer.negotiation.received(s.signal.clone(), now);
            frame.apply(s.from, peer, actions);
            stats.0.entry(s.from).or_default().signals_dropped = peer.negotiation.dropped();
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
    if conditioner.is_changed() {
        for audio in frame.remote.peers.values().filter_map(|e| e.audio.as_ref()) {
            audio.set_conditions(conditioner.media);
        }
    }
    // One encoding for everyone: the camera runs at what the worst path allows.
    let camera_rate = peers
        .peers
        .iter()
        .filter(|(id, _)| {
            local
                .camera
                .running()
                .is_some_and(|t| t.is_subscribed(**id))
        })
        .map(|(_, p)| p.camera_rate(media.audio_bitrate))
        .min();
    if let (Some(rate), Some(camera)) = (camera_rate, local.camera.running()) {
        camera.set_bitrate(rate.max(media.video_bitrate.min));
    }
    out.0.write_batch(frame.changed);
    out.1.write_batch(frame.ended);
}

/// The game's ICE servers as webrtc-rs takes them (one credential set, as for matchbox).
fn ice_server(config: &crate::HuddleConfig) -> RTCIceServer {
    match config.matchbox_ice() {
        Ok(ice) => RTCIceServer {
            urls: ice.urls,
            username: ice.username.unwrap_or_default(),
            credential: ice.credential.unwrap_or_default(),
        },
        Err(_) => RTCIceServer::default(),
    }
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
                    self.teardown(id);
                    peer.connection = Some(MediaConnection::open(Opening {
                        session,
                        ice: ice_server(self.config),
                        bind: self.settings.bind.iter().map(ToString::to_string).collect(),
                        jitter: self.settings.jitter,
                        far_end: self.local.far_end().clone(),
                        bitrate: self.settings.path_bitrate(),
                    }));
                    continue;
                }
                MediaAction::Close => {
                    self.teardown(id);
                    peer.connection = None;
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

    /// What a connection reported, to its negotiation (or to the remote tracks and stats).
    fn report(
        &mut self,
        id: PeerId,
        peer: &mut Peer,
        report: Report,
        now: Duration,
        stats: &mut MediaStats,
    ) -> Vec<MediaAction> {
        let tracks = peer.negotiation.remote_tracks();
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
            Report::RemoteAudio(audio) => {
                let entry = self.remote.peers.entry(id).or_default();
                audio.set_live(tracks.audio);
                audio.set_conditions(self.conditions);
                if let Some(volume) = entry.volume {
                    audio.set_volume(volume);
                }
                entry.audio = Some(audio);
                Vec::new()
            }
            Report::RemoteVideo(video) => {
                video.set_live(tracks.video);
                self.remote.peers.entry(id).or_default().video = Some(video);
                Vec::new()
            }
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
    }

    /// Stops sending to `id` and ends its remote tracks (its connection closes or is replaced).
    fn teardown(&mut self, id: PeerId) {
        for kind in KINDS {
            if let Some(track) = self.local.track(kind) {
                track.unsubscribe(id);
            }
        }
        if let Some(entry) = self.remote.peers.get_mut(&id) {
            self.ended.extend(ended_tracks(id, entry));
            entry.announced = TrackSet::default();
            entry.audio = None;
            entry.video = None;
        }
    }

    /// Tells `id` what we want of it, when that changed.
    fn send_wants(&mut self, id: PeerId, peer: &mut Peer) {
        let wants = self.local.wants(id);
        if wants != peer.sent_wants {
            peer.sent_wants = wants;
            self.session.send_media(id, MediaSignal::Want(wants));
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
        let Some(frame) = video.latest_frame() else {
            continue;
        };
        let size = Extent3d {
            width: frame.width,
            height: frame.height,
            depth_or_array_layers: 1,
        };
        let rgba = frame.to_rgba();
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
