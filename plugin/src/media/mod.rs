//! Voice and camera next to the game's data (feature `media`, native).
//!
//! - **Local**: [`LocalMedia`] starts and stops the microphone and the camera, each from a
//!   source ([`MicSource`]: a [`SineWave`] or samples the game pushes; [`CameraSource`]: a
//!   [`TestPattern`] or frames the game pushes), mutes (push-to-talk) without renegotiating,
//!   and chooses per peer what to receive ([`LocalMedia::receive`]).
//! - **Remote**: [`RemoteMedia`] holds each peer's voice ([`RemoteAudio`]: PCM, level, speaking,
//!   volume) and camera ([`RemoteVideo`], and a Bevy `Handle<Image>` updated with every decoded
//!   frame when the app has `Assets<Image>`; with feature `media-audio`, a `VoiceStream` asset to
//!   play through Bevy's audio, spatially). [`RemoteTrackStarted`] / [`RemoteTrackEnded`] come
//!   at the first decoded frame and when the track ends. [`MediaStats`] has each peer's numbers.
//! - **Connections**: a second, media-only peer connection per peer, negotiated peer to peer
//!   over the control channel by [`huddle_protocol::media::MediaPeer`] (the data link's caller
//!   offers; the signaling server is not involved; matchbox's connection is untouched). A peer
//!   without media answers "unsupported" ([`MediaState::Unsupported`]) and the game goes on; a
//!   media failure never disconnects the game.
//!
//! Opus (48 kHz mono, 20 ms, FEC and DTX) and VP8 through libopus and libvpx
//! ([`huddle_media`]); each local track is encoded once for every peer. The camera's bitrate
//! follows the worst path among its receivers: webrtc-rs's send-side congestion control (GCC
//! over transport-wide feedback) estimates each path, and the loss and round trip the
//! receiver reports give drive [`huddle_protocol::media::bitrate`] below that.

#[cfg(not(target_arch = "wasm32"))]
mod codecs;
#[cfg(not(target_arch = "wasm32"))]
mod connection;
#[cfg(not(target_arch = "wasm32"))]
mod decoders;
mod device;
#[cfg(all(feature = "media-devices", not(target_arch = "wasm32")))]
mod devices;
#[cfg(not(target_arch = "wasm32"))]
mod forward;
#[cfg(not(target_arch = "wasm32"))]
mod local;
mod negotiate;
#[cfg(not(target_arch = "wasm32"))]
mod observed;
#[cfg(all(feature = "media-audio", not(target_arch = "wasm32")))]
mod playback;
#[cfg(not(target_arch = "wasm32"))]
mod remote;
mod report;
#[cfg(not(target_arch = "wasm32"))]
mod rtcp_for_tracks;
mod settings;
// The browser's side: the same driver and API over `RTCPeerConnection`, `getUserMedia` and Web
// Audio (the browser encodes, decodes, paces and cancels echo).
#[cfg(target_arch = "wasm32")]
#[path = "web/connection.rs"]
mod connection;
#[cfg(target_arch = "wasm32")]
#[path = "web/js.rs"]
mod js;
#[cfg(target_arch = "wasm32")]
#[path = "web/local.rs"]
mod local;
#[cfg(target_arch = "wasm32")]
#[path = "web/remote.rs"]
mod remote;

pub use device::{CameraDevice, MicDevice};
#[cfg(all(feature = "media-devices", not(target_arch = "wasm32")))]
pub use devices::{cameras, microphones};
#[cfg(not(target_arch = "wasm32"))]
pub use huddle_media::echo::FarEnd;
pub use huddle_media::process::MicProcessing;
pub use huddle_media::source::{SineWave, TestPattern};
pub use huddle_media::{tone, VideoFrame, FRAME_SAMPLES, SAMPLE_RATE};
pub use huddle_protocol::media::jitter::{JitterSettings, JitterStats};
pub use huddle_protocol::media::{MediaKind, MediaState, TrackSet};
#[cfg(target_arch = "wasm32")]
pub use js::enable_sound;
#[cfg(not(target_arch = "wasm32"))]
pub use local::{AudioPush, VideoPush};
pub use local::{CameraSource, MicSource};
#[cfg(all(feature = "media-audio", not(target_arch = "wasm32")))]
pub use playback::{VoiceSource, VoiceStream};
pub use remote::{RemoteAudio, RemoteVideo, VoiceActivity};
pub use settings::{BitrateBounds, MediaSettings, StarMediaSettings};

use crate::messages::MediaSignalIn;
use crate::schedule::HuddleSystems;
use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use local::LocalTrack;
use matchbox_socket::PeerId;
use std::sync::Arc;
use std::time::Duration;

/// A voice this loud (dBFS) counts as speaking (natively without the processing's voice
/// detector; in the browser by its analyser).
pub(crate) const SPEAKING_DB: f32 = -45.0;

/// Where media with each peer stands (peers in the lobby only).
#[derive(Resource, Debug, Default, Clone, PartialEq, Eq)]
pub struct MediaStates(pub HashMap<PeerId, MediaState>);

/// Media with a peer changed state.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaStateChanged {
    /// The peer.
    pub peer: PeerId,
    /// Its media state now.
    pub state: MediaState,
}

/// A peer's track delivered its first decoded frame (again, after it was off).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteTrackStarted {
    /// The peer.
    pub peer: PeerId,
    /// Voice or camera.
    pub kind: MediaKind,
}

/// A peer's track ended: the peer turned it off, left, or media with it failed.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteTrackEnded {
    /// The peer.
    pub peer: PeerId,
    /// Voice or camera.
    pub kind: MediaKind,
}

/// The local microphone and camera, and what to receive from whom. Changes take effect in the
/// next `PreUpdate`.
#[derive(Resource, Default)]
pub struct LocalMedia {
    microphone: Slot,
    camera: Slot,
    muted: bool,
    wants: HashMap<PeerId, TrackSet>,
    #[cfg(not(target_arch = "wasm32"))]
    far_end: Arc<FarEnd>,
}

/// A local track: running, asked to start, or off.
#[derive(Default)]
enum Slot {
    #[default]
    Off,
    StartMic(MicSource),
    StartCamera(CameraSource),
    Running(LocalTrack),
}

impl Slot {
    fn is_on(&self) -> bool {
        !matches!(self, Slot::Off)
    }

    fn running(&self) -> Option<&LocalTrack> {
        match self {
            Slot::Running(track) => Some(track),
            _ => None,
        }
    }
}

impl LocalMedia {
    /// Starts (or restarts) the microphone from `source`.
    pub fn start_microphone(&mut self, source: MicSource) {
        self.microphone = Slot::StartMic(source);
    }

    /// Stops the microphone: the peers' voice track of us ends.
    pub fn stop_microphone(&mut self) {
        self.microphone = Slot::Off;
    }

    /// Starts (or restarts) the camera from `source`.
    pub fn start_camera(&mut self, source: CameraSource) {
        self.camera = Slot::StartCamera(source);
    }

    /// Stops the camera: the peers' video track of us ends.
    pub fn stop_camera(&mut self) {
        self.camera = Slot::Off;
    }

    /// Mutes or unmutes the microphone (push-to-talk): silence is sent, nothing renegotiates.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
        if let Some(track) = self.microphone.running() {
            track.set_muted(muted);
        }
    }

    /// Whether the microphone is muted.
    pub fn is_muted(&self) -> bool {
        self.muted
    }

    /// What we send (or are about to).
    pub fn tracks(&self) -> TrackSet {
        TrackSet {
            audio: self.microphone.is_on(),
            video: self.camera.is_on(),
        }
    }

    /// Chooses what to receive from `peer` (all, until changed): a game that shows no video of a
    /// far-away player saves its bandwidth.
    pub fn receive(&mut self, peer: PeerId, wants: TrackSet) {
        self.wants.insert(peer, wants);
    }

    /// What we take from `peer`.
    pub fn wants(&self, peer: PeerId) -> TrackSet {
        self.wants.get(&peer).copied().unwrap_or(TrackSet::ALL)
    }

    /// The microphone's level now in dBFS, before muting (a "you are speaking" indicator).
    pub fn microphone_level_db(&self) -> Option<f32> {
        self.microphone.running().map(LocalTrack::level_db)
    }

    /// Encoded samples (voice and camera) a peer's connection could not take in time and lost,
    /// and sound a microphone device captured faster than it was sent.
    pub fn samples_dropped(&self) -> u64 {
        [&self.microphone, &self.camera]
            .into_iter()
            .filter_map(Slot::running)
            .map(LocalTrack::dropped)
            .sum()
    }

    /// The echo canceller's reference (native; the browser cancels echo itself): every remote voice adds what it hands to playout. A game
    /// that plays other sound near the microphone (music, effects) adds it too
    /// ([`FarEnd::played`]), and the microphone does not send it back.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn far_end(&self) -> &Arc<FarEnd> {
        &self.far_end
    }

    /// The camera's bitrate now (bits per second), as the loss/RTT controller set it.
    pub fn camera_bitrate(&self) -> Option<u32> {
        self.camera.running().map(LocalTrack::bitrate)
    }

    /// Turns off the tracks that stopped by themselves and says why.
    pub(crate) fn take_failures(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        for slot in [&mut self.microphone, &mut self.camera] {
            if let Some(why) = slot.running().and_then(LocalTrack::take_failure) {
                failures.push(why);
                *slot = Slot::Off;
            }
        }
        failures
    }

    fn track(&self, kind: MediaKind) -> Option<&LocalTrack> {
        match kind {
            MediaKind::Audio => self.microphone.running(),
            MediaKind::Video => self.camera.running(),
        }
    }
}

/// Each peer's voice and camera.
#[derive(Resource, Default)]
pub struct RemoteMedia {
    peers: HashMap<PeerId, RemotePeer>,
}

#[derive(Default)]
struct RemotePeer {
    audio: Option<Arc<RemoteAudio>>,
    video: Option<Arc<RemoteVideo>>,
    image: Option<Handle<Image>>,
    image_generation: u64,
    #[cfg(feature = "media-audio")]
    voice: Option<Handle<VoiceStream>>,
    /// The kinds announced with [`RemoteTrackStarted`] and not ended yet.
    announced: TrackSet,
    volume: Option<f32>,
}

impl RemoteMedia {
    /// `peer`'s voice, once its media connection carries one.
    pub fn audio(&self, peer: PeerId) -> Option<&RemoteAudio> {
        self.peers.get(&peer)?.audio.as_deref()
    }

    /// `peer`'s voice, shared: for an audio thread of the game's own (a device callback) that
    /// takes the PCM at its own pace.
    pub fn audio_shared(&self, peer: PeerId) -> Option<Arc<RemoteAudio>> {
        self.peers.get(&peer)?.audio.clone()
    }

    /// `peer`'s camera, once its media connection carries one.
    pub fn video(&self, peer: PeerId) -> Option<&RemoteVideo> {
        self.peers.get(&peer)?.video.as_deref()
    }

    /// `peer`'s camera as an image (a sprite or UI node shows it), updated with every decoded
    /// frame; `None` before the first frame or without `Assets<Image>` in the app.
    pub fn image(&self, peer: PeerId) -> Option<Handle<Image>> {
        self.peers.get(&peer)?.image.clone()
    }

    /// `peer`'s voice as an audio asset to play with `AudioPlayer` (feature `media-audio`; the
    /// app needs Bevy's `AudioPlugin` added before `HuddlePlugin`). Playing it consumes the
    /// voice's PCM.
    #[cfg(feature = "media-audio")]
    pub fn voice(&self, peer: PeerId) -> Option<Handle<VoiceStream>> {
        self.peers.get(&peer)?.voice.clone()
    }

    /// Sets `peer`'s voice volume (1 = as sent, 0 = deafened to it; proximity chat sets it
    /// from game positions, see [`proximity_volume`]).
    pub fn set_volume(&mut self, peer: PeerId, volume: f32) {
        let entry = self.peers.entry(peer).or_default();
        entry.volume = Some(volume);
        if let Some(audio) = &entry.audio {
            audio.set_volume(volume);
        }
    }

    /// The peers with a voice or a camera track, started or not.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }
}

/// A voice's volume at `distance` for proximity chat: full up to `near`, silent past `far`,
/// falling off linearly in between.
pub fn proximity_volume(distance: f32, near: f32, far: f32) -> f32 {
    if !(distance.is_finite() && near.is_finite() && far.is_finite()) || distance <= near {
        return if distance.is_nan() { 0.0 } else { 1.0 };
    }
    if far <= near {
        return 0.0;
    }
    (1.0 - (distance - near) / (far - near)).clamp(0.0, 1.0)
}

/// A peer's media numbers, refreshed once a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerMediaStats {
    /// Voice packets received.
    pub audio_packets: u64,
    /// Voice bitrate received (bits per second).
    pub audio_bitrate_in: u32,
    /// The voice's jitter buffer counters.
    pub jitter: JitterStats,
    /// Camera packets received.
    pub video_packets: u64,
    /// Camera bitrate received (bits per second).
    pub video_bitrate_in: u32,
    /// Camera frames decoded.
    pub frames_decoded: u64,
    /// Camera frames that did not decode.
    pub frames_dropped: u64,
    /// Round trip on the media path (from RTCP).
    pub rtt: Option<Duration>,
    /// Fraction of our camera the peer reports lost.
    pub video_loss: Option<f64>,
    /// Fraction of our voice the peer reports lost.
    pub audio_loss: Option<f64>,
    /// Interarrival jitter of the peer's voice (seconds).
    pub jitter_seconds: Option<f64>,
    /// Camera bitrate we send to the peer (bits per second).
    pub bitrate_out: u32,
    /// What send-side congestion control (GCC) estimates the path to the peer carries.
    pub estimate: Option<u32>,
    /// Keyframe requests (PLI, FIR) from the peer that reached our camera at once (at most
    /// four a second are passed on).
    pub keyframe_requests: u64,
    /// Media signals from the peer that did not fit the negotiation or did not check out
    /// (dropped, never acted on).
    pub signals_dropped: u64,
    /// Star host: packets forwarded to this client (one per packet per publisher it gets).
    pub forwarded: u64,
    /// Star host: packets lost for this client because its leg fell behind (its video then
    /// asks the publisher for a keyframe).
    pub forward_dropped: u64,
}

/// Every peer's [`PeerMediaStats`].
#[derive(Resource, Debug, Default, Clone)]
pub struct MediaStats(pub HashMap<PeerId, PeerMediaStats>);

/// Adds media to the app (called by `HuddlePlugin` with the feature on).
pub(crate) fn build(app: &mut App) {
    app.init_resource::<MediaStates>()
        .init_resource::<LocalMedia>()
        .init_resource::<RemoteMedia>()
        .init_resource::<MediaStats>()
        .init_resource::<negotiate::MediaPeers>()
        .add_message::<MediaStateChanged>()
        .add_message::<RemoteTrackStarted>()
        .add_message::<RemoteTrackEnded>()
        .add_message::<MediaSignalIn>()
        .add_systems(
            PreUpdate,
            (negotiate::drive, negotiate::announce, negotiate::show)
                .chain()
                .after(HuddleSystems::Receive),
        );
    #[cfg(feature = "media-audio")]
    {
        use bevy::audio::AddAudioSource;
        if app.is_plugin_added::<bevy::audio::AudioPlugin>() {
            app.add_audio_source::<VoiceStream>();
        } else if app.is_plugin_added::<bevy::asset::AssetPlugin>() {
            app.init_asset::<VoiceStream>();
        }
        app.add_systems(PreUpdate, negotiate::voices.after(negotiate::show));
    }
}
