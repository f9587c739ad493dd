//! Remote voices through Bevy's own audio (feature `media-audio`): each peer's voice is a
//! [`VoiceStream`] asset a game plays with `AudioPlayer`, so Bevy's spatial audio places it in the
//! world (proximity voice chat: `PlaybackSettings::LOOP.with_spatial(true)` on the peer's entity).
//!
//! Playing a voice consumes its PCM: a game either plays it or reads it
//! ([`RemoteAudio::take_pcm`]), not both.

use super::remote::RemoteAudio;
use bevy::audio::{ChannelCount, Decodable, SampleRate, Source};
use bevy::prelude::{Asset, TypePath};
use std::num::NonZero;
use std::sync::Arc;
use std::time::Duration;

/// Silence handed out at a time when a voice has nothing new (10 ms).
const GAP: usize = 480;

/// A peer's voice as an audio asset; see [`RemoteMedia::voice`](super::RemoteMedia::voice).
#[derive(Asset, TypePath, Clone)]
pub struct VoiceStream {
    audio: Arc<RemoteAudio>,
}

impl std::fmt::Debug for VoiceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceStream").finish_non_exhaustive()
    }
}

impl VoiceStream {
    pub(crate) fn new(audio: Arc<RemoteAudio>) -> Self {
        Self { audio }
    }

    /// Whether this stream plays `audio`.
    pub(crate) fn plays(&self, audio: &Arc<RemoteAudio>) -> bool {
        Arc::ptr_eq(&self.audio, audio)
    }
}

impl Decodable for VoiceStream {
    type Decoder = VoiceSource;

    fn decoder(&self) -> VoiceSource {
        VoiceSource {
            audio: self.audio.clone(),
            buffer: Vec::new(),
            at: 0,
        }
    }
}

/// The endless sample stream of a [`VoiceStream`]: the voice's decoded PCM as it comes, silence
/// while none does.
pub struct VoiceSource {
    audio: Arc<RemoteAudio>,
    buffer: Vec<f32>,
    at: usize,
}

impl Iterator for VoiceSource {
    type Item = bevy::audio::Sample;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.buffer.len() {
            self.buffer = self.audio.take_pcm();
            if self.buffer.is_empty() {
                self.buffer = vec![0.0; GAP];
            }
            self.at = 0;
        }
        let sample = self.buffer[self.at];
        self.at += 1;
        Some(sample)
    }
}

impl Source for VoiceSource {
    fn current_span_len(&self) -> Option<usize> {
        None
    }

    fn channels(&self) -> ChannelCount {
        NonZero::<u16>::MIN
    }

    fn sample_rate(&self) -> SampleRate {
        NonZero::new(huddle_media::SAMPLE_RATE).unwrap_or(NonZero::<u32>::MIN)
    }

    fn total_duration(&self) -> Option<Duration> {
        None
    }
}
