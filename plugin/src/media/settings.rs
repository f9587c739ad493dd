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
        }
    }
}

impl MediaSettings {
    /// The bounds of a whole media connection (camera and voice), for its congestion control.
    pub(crate) fn path_bitrate(&self) -> BitrateBounds {
        let v = self.video_bitrate;
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
