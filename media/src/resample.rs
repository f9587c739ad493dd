//! Sound from a device as huddle takes it: interleaved samples of any channel count and rate
//! become 48 kHz mono ([`Downmix`]), by averaging the channels and interpolating linearly
//! between samples (enough for voice, which Opus band-limits anyway).

use crate::SAMPLE_RATE;

/// Turns interleaved frames of `channels` at `rate` Hz into 48 kHz mono, piece by piece.
#[derive(Debug, Clone)]
pub struct Downmix {
    channels: usize,
    /// Input samples per output sample.
    step: f64,
    /// Where the next output sample falls, in input samples after `last`.
    position: f64,
    /// The previous piece's last mono sample.
    last: f32,
}

impl Downmix {
    /// A converter from `channels` (at least 1) at `rate` Hz (at least 1).
    pub fn new(channels: u16, rate: u32) -> Self {
        Self {
            channels: usize::from(channels.max(1)),
            step: f64::from(rate.max(1)) / f64::from(SAMPLE_RATE),
            position: 1.0,
            last: 0.0,
        }
    }

    /// Converts the next piece (a partial frame at its end is ignored).
    pub fn process(&mut self, interleaved: &[f32]) -> Vec<f32> {
        let mono: Vec<f32> = interleaved
            .chunks_exact(self.channels)
            .map(|frame| frame.iter().sum::<f32>() / self.channels as f32)
            .collect();
        if self.step == 1.0 {
            if let Some(&last) = mono.last() {
                self.last = last;
            }
            return mono;
        }
        let mut out = Vec::with_capacity((mono.len() as f64 / self.step) as usize + 1);
        // Sample `i` of the piece is at position `i + 1` (position 0 is `last`).
        let end = mono.len() as f64;
        while self.position <= end {
            let i = self.position.floor();
            let frac = (self.position - i) as f32;
            let i = i as usize;
            let a = if i == 0 { self.last } else { mono[i - 1] };
            let b = mono.get(i).copied().unwrap_or(a);
            out.push(a + (b - a) * frac);
            self.position += self.step;
        }
        self.position -= end;
        if let Some(&last) = mono.last() {
            self.last = last;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tone::{level_db, peak_frequency};

    fn stereo_tone(rate: u32, frequency: f32, seconds: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .flat_map(|i| {
                let x = (std::f32::consts::TAU * frequency * i as f32 / rate as f32).sin() * 0.5;
                [x, x]
            })
            .collect()
    }

    #[test]
    fn a_tone_at_any_rate_comes_out_at_48_khz() {
        for rate in [8_000, 16_000, 44_100, 48_000, 96_000] {
            let input = stereo_tone(rate, 440.0, 1.0);
            let mut downmix = Downmix::new(2, rate);
            // In uneven pieces, as a device's callback gives them.
            let mut out = Vec::new();
            for piece in input.chunks(2 * 441 + 2) {
                out.extend(downmix.process(piece));
            }
            // The first input sample is where output starts: one input sample short at most.
            let expected = SAMPLE_RATE as usize;
            let slack = (SAMPLE_RATE / rate) as usize + 1;
            assert!(
                out.len().abs_diff(expected) <= slack,
                "{rate}: {}",
                out.len()
            );
            let f = peak_frequency(&out[4800..43_200], 300.0, 600.0);
            assert!((f - 440.0).abs() <= 2.0, "{rate}: {f} Hz");
            let level = level_db(&out[4800..43_200], 440.0);
            assert!(level > -9.0, "{rate}: {level:.1} dB");
        }
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let mut downmix = Downmix::new(0, 0);
        assert!(downmix.process(&[]).is_empty());
        let mut downmix = Downmix::new(6, 1);
        let _ = downmix.process(&[0.5; 13]);
        let mut downmix = Downmix::new(1, u32::MAX);
        assert!(downmix.process(&[0.1; 1000]).len() <= 1);
    }
}
