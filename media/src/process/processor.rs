//! The processor (feature `codecs`).

use super::MicProcessing;
use crate::echo::{EchoCanceller, FarEnd};
use crate::tone::rms_db;
use crate::SAMPLE_RATE;
use nnnoiseless::DenoiseState;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where gain control aims (dBFS).
const TARGET_DB: f32 = -20.0;
/// Without noise suppression's voice detector, a frame this loud (dBFS) counts as voice.
const VOICE_DB: f32 = -45.0;
/// Frames the gate stays open after the last voice (200 ms).
const HANGOVER: u32 = 10;
/// 16-bit full scale: RNNoise takes samples in the 16-bit range.
const SCALE: f32 = 32_768.0;
/// How far the reference's clock may drift from the capture's before it starts again.
const DRIFT: Duration = Duration::from_millis(60);

/// The processing of one microphone, frame by frame.
pub struct Processor {
    settings: MicProcessing,
    echo: Option<(EchoCanceller, Arc<FarEnd>)>,
    /// Up to when the reference has been taken: it follows the captured samples one for one
    /// (a frame takes exactly its length of reference, as a sound card's render and capture
    /// clocks run in step), so a late wake-up of the capturing thread does not hand AEC3 an
    /// uneven share of reference; it starts again from the wall clock when the two drift apart
    /// by more than [`DRIFT`].
    reference_clock: Option<Instant>,
    denoise: Option<Box<DenoiseState<'static>>>,
    gain: f32,
    hangover: u32,
}

impl Processor {
    /// A processor doing what `settings` say.
    pub fn new(settings: MicProcessing) -> Self {
        Self {
            settings,
            echo: None,
            reference_clock: None,
            denoise: settings.noise_suppression.then(DenoiseState::new),
            gain: 1.0,
            hangover: 0,
        }
    }

    /// Cancels the echo of what `far_end` says was played (if echo cancellation is on).
    pub fn with_reference(mut self, far_end: Arc<FarEnd>) -> Self {
        if self.settings.echo_cancellation {
            self.echo = Some((EchoCanceller::new(), far_end));
        }
        self
    }

    /// Processes one 20 ms frame ([`FRAME_SAMPLES`](crate::FRAME_SAMPLES)) captured now, in
    /// place; returns whether it holds voice (the gate is open).
    pub fn process(&mut self, frame: &mut [f32]) -> bool {
        self.process_at(frame, Instant::now())
    }

    /// [`process`](Self::process) for a frame captured at `now`.
    pub fn process_at(&mut self, frame: &mut [f32], now: Instant) -> bool {
        if let Some((canceller, far_end)) = &mut self.echo {
            let length = Duration::from_secs_f64(frame.len() as f64 / f64::from(SAMPLE_RATE));
            let until = self
                .reference_clock
                .map(|clock| clock + length)
                .filter(|&until| until.max(now) - until.min(now) <= DRIFT)
                .unwrap_or(now);
            self.reference_clock = Some(until);
            canceller.render(&far_end.take_until(until));
            canceller.capture(frame);
        }
        let mut voice_probability: Option<f32> = None;
        if let Some(denoise) = &mut self.denoise {
            let mut input = [0f32; DenoiseState::FRAME_SIZE];
            let mut output = [0f32; DenoiseState::FRAME_SIZE];
            for part in frame.chunks_mut(DenoiseState::FRAME_SIZE) {
                for (i, x) in input.iter_mut().enumerate() {
                    *x = part.get(i).copied().unwrap_or(0.0) * SCALE;
                }
                let p = denoise.process_frame(&mut output, &input);
                voice_probability = Some(voice_probability.map_or(p, |q| q.max(p)));
                for (x, y) in part.iter_mut().zip(output) {
                    *x = y / SCALE;
                }
            }
        }
        let level = rms_db(frame);
        let voice = match voice_probability {
            Some(p) => p > 0.5 && level > VOICE_DB - 15.0,
            None => level > VOICE_DB,
        };
        self.hangover = if voice {
            HANGOVER
        } else {
            self.hangover.saturating_sub(1)
        };
        if self.settings.gain_control && voice {
            let wanted = 10f32.powf((TARGET_DB - level) / 20.0).clamp(0.25, 10.0);
            self.gain += (wanted - self.gain) * 0.2;
        }
        let open = self.hangover > 0;
        if self.settings.voice_gate && !open {
            frame.fill(0.0);
        } else if self.settings.gain_control {
            for x in frame.iter_mut() {
                *x = (*x * self.gain).clamp(-1.0, 1.0);
            }
        }
        open
    }
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("settings", &self.settings)
            .field("echo_cancellation", &self.echo.is_some())
            .field("gain", &self.gain)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SineWave;
    use crate::tone::level_db;
    use crate::FRAME_SAMPLES;

    fn noise(rng: &mut u64, level: f32) -> Vec<f32> {
        (0..FRAME_SAMPLES)
            .map(|_| {
                *rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                ((*rng >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * level
            })
            .collect()
    }

    #[test]
    fn noise_suppression_takes_hiss_down() {
        let mut p = Processor::new(MicProcessing {
            noise_suppression: true,
            ..MicProcessing::OFF
        });
        let mut rng = 7;
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for i in 0..100 {
            let mut frame = noise(&mut rng, 0.05);
            if i >= 20 {
                before.extend_from_slice(&frame);
            }
            p.process(&mut frame);
            if i >= 20 {
                after.extend_from_slice(&frame);
            }
        }
        let drop = rms_db(&before) - rms_db(&after);
        assert!(drop >= 10.0, "noise down by {drop:.1} dB only");
    }

    #[test]
    fn gain_control_brings_a_quiet_voice_up_and_a_loud_one_down() {
        for (level, name) in [(0.014f32, "quiet"), (0.5, "loud")] {
            let mut p = Processor::new(MicProcessing {
                gain_control: true,
                ..MicProcessing::OFF
            });
            let mut sine = SineWave::new(300.0, level);
            let mut last = Vec::new();
            for _ in 0..100 {
                last = sine.next_frame();
                p.process(&mut last);
            }
            let out = level_db(&last, 300.0);
            // A sine at -20 dBFS RMS peaks at -17 dBFS.
            assert!((out - (-17.0)).abs() <= 3.0, "{name}: {out:.1} dBFS");
        }
    }

    #[test]
    fn the_gate_closes_after_the_hangover_and_opens_at_once() {
        let mut p = Processor::new(MicProcessing {
            voice_gate: true,
            ..MicProcessing::OFF
        });
        let mut sine = SineWave::new(300.0, 0.3);
        let mut rng = 3;
        assert!(p.process(&mut sine.next_frame()));
        let open: Vec<bool> = (0..15)
            .map(|_| p.process(&mut noise(&mut rng, 0.001)))
            .collect();
        assert_eq!(open.iter().filter(|o| **o).count(), HANGOVER as usize - 1);
        let mut quiet = noise(&mut rng, 0.001);
        assert!(!p.process(&mut quiet));
        assert!(quiet.iter().all(|x| *x == 0.0), "silence while closed");
        let mut loud = sine.next_frame();
        assert!(p.process(&mut loud), "opens on the first voice frame");
        assert!(rms_db(&loud) > -20.0);
    }

    /// The capturing thread wakes unevenly (0-45 ms late, as a loaded machine's does) and
    /// hands each frame's capture time with that jitter: the reference still goes to AEC3 a
    /// frame's length per frame, and a noise echo 120 ms behind comes out over 20 dB weaker.
    #[test]
    fn echo_is_cancelled_when_the_capture_clock_jitters() {
        use crate::echo::FarEnd;
        use std::collections::VecDeque;
        let t0 = Instant::now();
        let far = Arc::new(FarEnd::starting(t0));
        let mut p = Processor::new(MicProcessing {
            echo_cancellation: true,
            ..MicProcessing::OFF
        })
        .with_reference(far.clone());
        let frame = Duration::from_millis(20);
        let (mut rng, mut jitter) = (5, 9u64);
        let mut played: VecDeque<Vec<f32>> = VecDeque::new();
        let (mut before, mut after) = (0.0, 0.0);
        for k in 1..=500u32 {
            let now = t0 + frame * k;
            let voice = noise(&mut rng, 0.3);
            far.played(&voice, now);
            played.push_back(voice);
            let mut mic = if played.len() > 6 {
                played.pop_front().unwrap_or_default()
            } else {
                vec![0.0; FRAME_SAMPLES]
            };
            mic.iter_mut().for_each(|x| *x *= 0.5);
            jitter = jitter
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let late = Duration::from_micros((jitter >> 33) % 45_000);
            if k > 400 {
                before += rms_db(&mic);
            }
            p.process_at(&mut mic, now + late);
            if k > 400 {
                after += rms_db(&mic);
            }
        }
        let (before, after) = (before / 100.0, after / 100.0);
        assert!(
            before - after > 20.0,
            "echo {before:.1} dB -> {after:.1} dB"
        );
    }
}
