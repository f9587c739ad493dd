//! What a stream of PCM sounds like: the level of one frequency (Goertzel) and the strongest
//! frequency in a band. Tests and the headless demo use it to tell whose voice they hear.

use crate::SAMPLE_RATE;

/// The level of `frequency` in `pcm` in dB relative to a full-scale sine (0 dB), -200 for
/// silence. The samples are Hann-windowed, so a tone two 1/len bins away leaks in at about
/// -30 dB instead of -13 (a 20 ms frame tells 440 Hz from 550 Hz).
pub fn level_db(pcm: &[f32], frequency: f32) -> f32 {
    if pcm.len() < 2 {
        return -200.0;
    }
    let w = 2.0 * std::f64::consts::PI * f64::from(frequency) / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let step = std::f64::consts::TAU / (pcm.len() - 1) as f64;
    let (mut s1, mut s2, mut gain) = (0f64, 0f64, 0f64);
    // The window's cosine by rotation, not a cosine per sample (a long recording is scanned at
    // hundreds of frequencies).
    let (step_cos, step_sin) = (step.cos(), step.sin());
    let (mut cos, mut sin) = (1f64, 0f64);
    for &x in pcm {
        let hann = 0.5 - 0.5 * cos;
        (cos, sin) = (
            cos * step_cos - sin * step_sin,
            sin * step_cos + cos * step_sin,
        );
        gain += hann;
        let s0 = f64::from(x) * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0);
    // A full-scale sine has a windowed Goertzel magnitude of (sum of the window) / 2.
    let amplitude = (2.0 * power.sqrt() / gain) as f32;
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
