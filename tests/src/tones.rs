//! Reading tones out of received voices.

use bevy_huddle::media::{tone, FRAME_SAMPLES};

/// 20 ms frames of `pcm` in which `tone` is at least 20 dB above each of `others`.
pub fn frames_with_tone(pcm: &[f32], tone: f32, others: &[f32]) -> usize {
    pcm.chunks_exact(FRAME_SAMPLES)
        .filter(|f| {
            let own = tone::level_db(f, tone);
            others.iter().all(|&o| own - tone::level_db(f, o) >= 20.0)
        })
        .count()
}
