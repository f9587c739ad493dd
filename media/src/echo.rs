//! Echo cancellation: what the speakers play comes back through the microphone, and the other
//! players hear themselves a moment later. WebRTC's AEC3 (through `sonora`, a pure-Rust port of
//! WebRTC's audio processing) subtracts it, given the played-out sound as a reference.
//!
//! [`FarEnd`] is that reference: every remote voice adds what it hands to playout, placed by the
//! time it was played, so several voices mix as they sound; the microphone's processing takes
//! it 10 ms at a time up to the moment it takes a frame. AEC3 finds the delay between the
//! reference and the echo itself (measured: up to 400 ms).

use crate::SAMPLE_RATE;
use sonora::config::EchoCanceller as Aec3;
use sonora::{AudioProcessing, Config, StreamConfig};
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// AEC3 works on 10 ms chunks.
pub const CHUNK: usize = SAMPLE_RATE as usize / 100;
/// How far a stream's piece may be off its predecessor's end and still follow it.
pub const CONTINUOUS: std::time::Duration = std::time::Duration::from_millis(100);
const CONTINUOUS_SAMPLES: u64 = SAMPLE_RATE as u64 / 10;
/// The reference keeps one second at most (nobody takes it while no microphone runs).
const KEPT: usize = SAMPLE_RATE as usize;
/// The microphone's processing takes at most this much reference at once (200 ms): more would
/// be older than any echo AEC3 looks for.
const TAKEN: usize = SAMPLE_RATE as usize / 5;

/// The sound being played out, mixed by time: the reference of echo cancellation.
#[derive(Debug)]
pub struct FarEnd {
    mix: Mutex<Mix>,
}

#[derive(Debug)]
struct Mix {
    start: Instant,
    /// The index (samples since `start`) of `samples[0]`.
    first: u64,
    samples: VecDeque<f32>,
    /// Samples that came too late (their time was taken already) or were pushed out.
    dropped: u64,
}

impl FarEnd {
    /// An empty reference whose clock starts now.
    pub fn new() -> Self {
        Self::starting(Instant::now())
    }

    /// An empty reference whose clock starts at `start` (tests drive it with a fake clock).
    pub fn starting(start: Instant) -> Self {
        Self {
            mix: Mutex::new(Mix {
                start,
                first: 0,
                samples: VecDeque::new(),
                dropped: 0,
            }),
        }
    }

    /// Adds `pcm` (48 kHz mono) whose last sample is played at `at`.
    pub fn played(&self, pcm: &[f32], at: Instant) {
        self.played_in(&mut Stream::default(), pcm, at);
    }

    /// Adds the next piece `pcm` of a continuous `stream` (a voice, a music track), played out
    /// by `at`: like a device's playout queue, it follows the previous piece without a gap or
    /// an overlap unless the clocks disagree by more than [`CONTINUOUS`], so the scheduling
    /// jitter of the thread that plays it does not tear the reference (AEC3 would then take the
    /// near voice for echo). A stream that paused longer starts again where its time says.
    pub fn played_in(&self, stream: &mut Stream, pcm: &[f32], at: Instant) {
        let mut mix = self.mix.lock().unwrap_or_else(PoisonError::into_inner);
        let len = pcm.len() as u64;
        let mut end = mix.index(at);
        if let Some(next) = stream.next {
            if next.abs_diff(end.saturating_sub(len)) <= CONTINUOUS_SAMPLES {
                end = next.saturating_add(len);
            }
        }
        stream.next = Some(end);
        // Only the last second before `end` is kept: older samples go unused.
        let keep_from = end.saturating_sub(KEPT as u64);
        if let Some(stale) = keep_from.checked_sub(mix.first) {
            let unused = mix.advance(stale);
            mix.dropped += unused;
        }
        let begin = end.saturating_sub(len);
        // The part of `pcm` whose time was taken already.
        let late = mix.first.saturating_sub(begin).min(pcm.len() as u64);
        mix.dropped += late;
        let pcm = pcm.get(late as usize..).unwrap_or_default();
        // Within the kept second now, so it fits a `usize`.
        let offset = usize::try_from(begin.max(mix.first) - mix.first).unwrap_or(KEPT);
        let needed = offset.saturating_add(pcm.len()).min(KEPT);
        if mix.samples.len() < needed {
            mix.samples.resize(needed, 0.0);
        }
        for (slot, x) in mix.samples.iter_mut().skip(offset).zip(pcm) {
            *slot += x;
        }
    }

    /// Takes the reference up to `at` in whole 10 ms chunks (silence where nothing played),
    /// the latest 200 ms at most.
    pub fn take_until(&self, at: Instant) -> Vec<f32> {
        let mut mix = self.mix.lock().unwrap_or_else(PoisonError::into_inner);
        let due = mix.index(at).saturating_sub(mix.first);
        let due = usize::try_from(due).unwrap_or(usize::MAX);
        let due = due - due % CHUNK;
        let stale = due.saturating_sub(TAKEN);
        mix.advance(stale as u64);
        let n = due - stale;
        let held = n.min(mix.samples.len());
        let mut taken: Vec<f32> = mix.samples.drain(..held).collect();
        taken.resize(n, 0.0);
        mix.first += n as u64;
        taken
    }

    /// Samples that came after their time was taken, or were pushed out unused.
    pub fn dropped(&self) -> u64 {
        self.mix
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dropped
    }
}

/// Where a continuous stream's next piece goes in the reference ([`FarEnd::played_in`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stream {
    next: Option<u64>,
}

impl Default for FarEnd {
    fn default() -> Self {
        Self::new()
    }
}

impl Mix {
    fn index(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.start).as_nanos();
        u64::try_from(nanos * u128::from(SAMPLE_RATE) / 1_000_000_000).unwrap_or(u64::MAX)
    }

    /// Forgets the first `n` samples (silence past the end); returns how many were held.
    fn advance(&mut self, n: u64) -> u64 {
        let held = usize::try_from(n).map_or(self.samples.len(), |n| n.min(self.samples.len()));
        self.samples.drain(..held);
        self.first = self.first.saturating_add(n);
        held as u64
    }
}

/// AEC3 for one microphone.
pub struct EchoCanceller {
    apm: AudioProcessing,
    out: Vec<f32>,
}

impl EchoCanceller {
    /// A canceller for 48 kHz mono capture and reference.
    pub fn new() -> Self {
        let config = Config {
            echo_canceller: Some(Aec3::default()),
            ..Config::default()
        };
        let apm = AudioProcessing::builder()
            .config(config)
            .capture_config(StreamConfig::new(SAMPLE_RATE, 1))
            .render_config(StreamConfig::new(SAMPLE_RATE, 1))
            .build();
        Self {
            apm,
            out: vec![0.0; CHUNK],
        }
    }

    /// Feeds the reference: what was played since the last call (whole 10 ms chunks).
    pub fn render(&mut self, reference: &[f32]) {
        for chunk in reference.chunks_exact(CHUNK) {
            // Render processing only analyses; its output is the reference unchanged.
            let _ = self.apm.process_render_f32(&[chunk], &mut [&mut self.out]);
        }
    }

    /// Removes the echo from captured sound in place (whole 10 ms chunks; a tail is left).
    pub fn capture(&mut self, pcm: &mut [f32]) {
        for chunk in pcm.chunks_exact_mut(CHUNK) {
            if self
                .apm
                .process_capture_f32(&[chunk], &mut [&mut self.out])
                .is_ok()
            {
                chunk.copy_from_slice(&self.out);
            }
        }
    }
}

impl Default for EchoCanceller {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EchoCanceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoCanceller").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SineWave;
    use crate::tone::level_db;
    use std::time::Duration;

    const FRAME: Duration = Duration::from_millis(20);

    #[test]
    fn the_reference_is_mixed_by_time_and_taken_in_chunks() {
        let t0 = Instant::now();
        let far = FarEnd::starting(t0);
        // Two voices, the second 10 ms later, overlap by half.
        far.played(&[0.25; 960], t0 + FRAME);
        far.played(&[0.5; 960], t0 + FRAME + FRAME / 2);
        let taken = far.take_until(t0 + FRAME + FRAME / 4);
        assert_eq!(taken.len(), 2 * CHUNK);
        assert_eq!(taken[0], 0.25);
        assert_eq!(taken[CHUNK + 1], 0.75);
        // Played after its time was taken: only the rest counts.
        far.played(&[1.0; 960], t0 + FRAME);
        assert_eq!(far.dropped(), 960);
        let rest = far.take_until(t0 + FRAME * 2);
        assert_eq!(rest.len(), 2 * CHUNK);
        assert_eq!(rest[0], 0.5);
        assert_eq!(rest[CHUNK], 0.0);
    }

    #[test]
    fn a_stream_stays_continuous_through_scheduling_jitter() {
        let t0 = Instant::now();
        let far = FarEnd::starting(t0);
        let mut stream = Stream::default();
        for (k, late_us) in [(1u32, 0u64), (2, 3_000), (3, 0), (4, 70_000), (5, 1_000)] {
            let ramp: Vec<f32> = (0..960).map(|i| (k * 1000 + i) as f32).collect();
            far.played_in(
                &mut stream,
                &ramp,
                t0 + FRAME * k + Duration::from_micros(late_us),
            );
        }
        let taken = far.take_until(t0 + FRAME * 6);
        let expected: Vec<f32> = (1..=5u32)
            .flat_map(|k| (0..960).map(move |i| (k * 1000 + i) as f32))
            .collect();
        assert_eq!(taken.len(), 6 * 960);
        assert!(taken[..5 * 960] == expected[..], "pieces follow each other");
        assert!(taken[5 * 960..].iter().all(|x| *x == 0.0));
        // A pause, then the stream starts again where its time says.
        far.played_in(&mut stream, &[1.0; 960], t0 + FRAME * 15);
        let later = far.take_until(t0 + FRAME * 15);
        assert_eq!(later.len(), 9 * 960);
        assert!(later[..8 * 960].iter().all(|x| *x == 0.0));
        assert!(later[8 * 960..].iter().all(|x| *x == 1.0));
    }

    #[test]
    fn the_reference_stays_bounded_whatever_times_it_gets() {
        let t0 = Instant::now();
        let far = FarEnd::starting(t0);
        for k in 0..500u32 {
            far.played(&[0.1; 960], t0 + FRAME * k);
        }
        far.played(&[0.1; 960], t0 + Duration::from_secs(1 << 40));
        far.played(&[0.1; 960], t0);
        let taken = far.take_until(t0 + Duration::from_secs(1 << 41));
        assert_eq!(taken.len(), TAKEN);
        assert!(far.dropped() > 0);
    }

    /// A far-end tone comes back 80 ms later at half level while the near end speaks another:
    /// the echo goes, the near voice stays.
    #[test]
    fn echo_is_cancelled_and_the_near_voice_kept() {
        let t0 = Instant::now();
        let far = FarEnd::starting(t0);
        let mut aec = EchoCanceller::new();
        let mut remote = SineWave::new(440.0, 0.3);
        let mut near = SineWave::new(660.0, 0.1);
        let mut played: VecDeque<Vec<f32>> = VecDeque::new();
        let (mut echo_in, mut echo_out, mut near_out) = (0.0, 0.0, 0.0);
        for k in 1..=400u32 {
            let now = t0 + FRAME * k;
            let frame = remote.next_frame();
            far.played(&frame, now);
            played.push_back(frame);
            let echo = if played.len() > 4 {
                played.pop_front().unwrap_or_default()
            } else {
                vec![0.0; 960]
            };
            let voice = near.next_frame();
            let mut mic: Vec<f32> = echo.iter().zip(&voice).map(|(e, v)| e * 0.5 + v).collect();
            aec.render(&far.take_until(now));
            aec.capture(&mut mic);
            if k > 300 {
                echo_in += level_db(&echo, 440.0) - 6.0;
                echo_out += level_db(&mic, 440.0);
                near_out += level_db(&mic, 660.0) - level_db(&voice, 660.0);
            }
        }
        let (echo_in, echo_out, near_out) = (echo_in / 100.0, echo_out / 100.0, near_out / 100.0);
        assert!(
            echo_in - echo_out > 20.0,
            "echo {echo_in:.1} dB -> {echo_out:.1} dB"
        );
        assert!(near_out > -6.0, "near voice changed by {near_out:.1} dB");
    }
}
