//! What a stream of PCM sounds like: the level of one frequency (Goertzel) and the strongest
//! frequency in a band. Tests and the headless demo use it to tell whose voice they hear.

use crate::SAMPLE_RATE;

/// The level of `frequency` in `pcm` in dB relative to a full-scale sine (0 dB), -200 for
/// silence.
pub fn level_db(pcm: &[f32], frequency: f32) -> f32 {
    if pcm.is_empty() {
        return -200.0;
    }
    let w = 2.0 * std::f32::consts::PI * frequency / SAMPLE_RATE as f32;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0f32, 0f32);
    for &x in pcm {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0);
    // A full-scale sine over n samples has a Goertzel magnitude of n / 2.
    let amplitude = 2.0 * power.sqrt() / pcm.len() as f32;
    20.0 * amplitude.max(1e-10).log10()
}

/// The frequency between `low` and `high` Hz with the highest level in `pcm`, to 0.25 Hz
/// (a coarse 5 Hz scan, then a fine one around the best).
pub fn peak_frequency(pcm: &[f32], low: f32, high: f32) -> f32 {
    let best = |from: f32, to: f32, step: f32| {
        let mut f = from;
        let (mut top, mut at) = (f32::MIN, from);
        while f <= to {
            let level = level_db(pcm, f);
            if level > top {
                (top, at) = (level, f);
            }
            f += step;
        }
        at
    };
    let coarse = best(low, high, 5.0);
    best(coarse - 5.0, coarse + 5.0, 0.25)
}

/// The RMS level of `pcm` in dBFS (-200 for silence).
pub fn rms_db(pcm: &[f32]) -> f32 {
    if pcm.is_empty() {
        return -200.0;
    }
    let mean = pcm.iter().map(|x| x * x).sum::<f32>() / pcm.len() as f32;
    10.0 * mean.max(1e-20).log10()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SineWave;

    #[test]
    fn finds_the_tone_and_tells_it_from_others() {
        let mut sine = SineWave::new(550.0, 0.25);
        let pcm: Vec<f32> = (0..10).flat_map(|_| sine.next_frame()).collect();
        assert!((peak_frequency(&pcm, 300.0, 800.0) - 550.0).abs() <= 1.0);
        assert!((level_db(&pcm, 550.0) - (-12.0)).abs() < 1.0);
        assert!(level_db(&pcm, 550.0) - level_db(&pcm, 440.0) > 30.0);
        assert!(rms_db(&[0.0; 100]) < -100.0);
    }
}
