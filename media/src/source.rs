//! Synthetic sources: a tone for the microphone and a test pattern for the camera. Each makes
//! its next frame on demand; the caller paces them (20 ms for audio, `1 / fps` for video).

use crate::{VideoFrame, FRAME_SAMPLES, SAMPLE_RATE};

/// A sine tone.
#[derive(Debug, Clone, PartialEq)]
pub struct SineWave {
    /// Frequency in Hz.
    pub frequency: f32,
    /// Peak level, 0..=1 of full scale.
    pub level: f32,
    phase: f64,
}

impl SineWave {
    /// A tone of `frequency` Hz at `level` (0..=1).
    pub fn new(frequency: f32, level: f32) -> Self {
        Self {
            frequency,
            level: level.clamp(0.0, 1.0),
            phase: 0.0,
        }
    }

    /// The next 20 ms.
    pub fn next_frame(&mut self) -> Vec<f32> {
        let step = std::f64::consts::TAU * f64::from(self.frequency) / f64::from(SAMPLE_RATE);
        (0..FRAME_SAMPLES)
            .map(|_| {
                let x = self.phase.sin() as f32 * self.level;
                self.phase = (self.phase + step) % std::f64::consts::TAU;
                x
            })
            .collect()
    }
}

/// Bars that spell each frame's index, over a moving gradient: a receiver reads the index back
/// ([`TestPattern::read_index`]) to check order and loss, and the gradient gives the encoder
/// real work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPattern {
    /// Width in pixels (even, at least [`TestPattern::BITS`] × 4).
    pub width: u32,
    /// Height in pixels (even, at least 16).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    index: u32,
}

impl TestPattern {
    /// Bits of the frame index the bars carry.
    pub const BITS: u32 = 16;

    /// A pattern of `width × height` at `fps` (sizes rounded down to even, at least 64 × 16).
    pub fn new(width: u32, height: u32, fps: u32) -> Self {
        Self {
            width: (width & !1).max(Self::BITS * 4),
            height: (height & !1).max(16),
            fps: fps.clamp(1, 120),
            index: 0,
        }
    }

    /// The next frame; its index (modulo 2^16) is drawn in the top half.
    pub fn next_frame(&mut self) -> VideoFrame {
        let index = self.index;
        self.index = self.index.wrapping_add(1);
        let (w, h) = (self.width as usize, self.height as usize);
        let mut frame = VideoFrame::black(self.width, self.height);
        let bar = w / Self::BITS as usize;
        let y = frame.y_mut();
        for row in 0..h {
            for col in 0..w {
                y[row * w + col] = if row < h / 2 {
                    let bit = (col / bar).min(Self::BITS as usize - 1);
                    if index >> bit & 1 == 1 {
                        235
                    } else {
                        16
                    }
                } else {
                    (16 + (col + row + index as usize * 4) % 220) as u8
                };
            }
        }
        frame
    }

    /// The index a frame of this pattern carries, read from the middle of each bar.
    pub fn read_index(frame: &VideoFrame) -> Option<u32> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        if w < Self::BITS as usize * 4 || h < 16 || frame.data.len() < w * h {
            return None;
        }
        let bar = w / Self::BITS as usize;
        let y = frame.y();
        let mut index = 0;
        for bit in 0..Self::BITS as usize {
            let (mut sum, mut n) = (0u32, 0u32);
            for row in h / 8..h * 3 / 8 {
                for col in bit * bar + bar / 4..bit * bar + bar * 3 / 4 {
                    sum += u32::from(y[row * w + col]);
                    n += 1;
                }
            }
            if sum > n * 128 {
                index |= 1 << bit;
            }
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_reads_back_its_index() {
        let mut pattern = TestPattern::new(320, 240, 30);
        for i in 0..40 {
            let frame = pattern.next_frame();
            assert_eq!(frame.data.len(), VideoFrame::len_for(320, 240));
            assert_eq!(TestPattern::read_index(&frame), Some(i));
        }
        assert_eq!(TestPattern::read_index(&VideoFrame::black(8, 8)), None);
    }
}
