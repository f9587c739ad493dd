//! Media's settings, part of [`HuddleConfig`](crate::HuddleConfig) (its `media` field).

use huddle_media::process::MicProcessing;
use huddle_protocol::media::jitter::JitterSettings;
use std::net::SocketAddr;

/// How media runs. Off by default: media costs a second connection per peer.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSettings {
    /// On: a media-only connection is negotiated with every peer that has media too. Off, a
    /// peer's media offer is answered "unsupported", as by a build without the feature.
    pub enabled: bool,
    /// Opus bitrate in bits per second (voice: 24-32 kbps).
    pub audio_bitrate: u32,
    /// What is done to microphone sound before it is encoded (echo cancellation, noise
    /// suppression, gain control, a voice gate: all on by default; synthetic sources are never
    /// processed).
    pub processing: MicProcessing,
    /// VP8 bitrates: where the camera starts, and the bounds the loss/RTT controller keeps it in.
    pub video_bitrate: BitrateBounds,
    /// The receive jitter buffer of each remote voice.
    pub jitter: JitterSettings,
    /// Local addresses the media connections bind (port 0: any). The default, every interface,
    /// is what a game on a real network wants; a machine that only talks over loopback (tests,
    /// benchmarks) connects ~1 s sooner bound to `127.0.0.1:0`.
    pub bind: Vec<SocketAddr>,
    /// Media in star rooms, where the host forwards.
    pub star: StarMediaSettings,
}

/// Media in star rooms: every client sends its tracks once, to the host, which forwards them
/// to the other clients (an SFU of one). Uplink is what runs out first, so video is selective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StarMediaSettings {
    /// Publishers whose camera one viewer gets at most (the first it wants, in lobby order;
    /// [`LocalMedia::receive`](super::LocalMedia::receive) chooses). Every voice comes.
    pub video_slots: usize,
    /// The host forwards at most this many bits per second (voices first, then cameras shared
    /// in rounds); `None`: no cap.
    pub forward_cap: Option<u64>,
    /// A client's camera sends at most this (the low layer every viewer gets).
    pub camera_bitrate: u32,
}

impl Default for StarMediaSettings {
    fn default() -> Self {
        Self {
            video_slots: huddle_protocol::media::star::DEFAULT_VIDEO_SLOTS,
            forward_cap: None,
            camera_bitrate: 300_000,
        }
    }
}

/// A bitrate and its bounds, in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitrateBounds {
    /// Where it starts (webrtc-rs ramps slowly: start near the target).
    pub start: u32,
    /// The lowest it goes on a lossy path.
    pub min: u32,
    /// The highest it goes on a clean path.
    pub max: u32,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            audio_bitrate: 32_000,
            processing: MicProcessing::default(),
            video_bitrate: BitrateBounds {
                start: 400_000,
                min: 80_000,
                max: 800_000,
            },
            jitter: JitterSettings::default(),
            bind: vec![
                SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::from(([0u16; 8], 0)),
            ],
            star: StarMediaSettings::default(),
        }
    }
}

impl MediaSettings {
    /// The bounds of a whole media connection (camera and voice), for its congestion control;
    /// the camera's at most `camera_cap`.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn path_bitrate(&self, camera_cap: u32) -> BitrateBounds {
        let v = self.video_bitrate;
        let v = BitrateBounds {
            start: v.start.min(camera_cap),
            min: v.min.min(camera_cap),
            max: v.max.min(camera_cap),
        };
        let a = self.audio_bitrate;
        BitrateBounds {
            start: v.start.saturating_add(a),
            min: v.min.saturating_add(a),
            max: v.max.saturating_add(a),
        }
    }

    /// Media on, with the defaults.
    pub fn on() -> Self {
        Self {
            enabled: true,
            ..Self::default()
        }
    }
}
