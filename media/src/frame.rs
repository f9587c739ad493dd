//! Video frames: I420 as the codec takes them, RGBA as Bevy shows them.

/// One I420 video frame: a full-size luma plane, then two quarter-size chroma planes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Y, then U, then V, each plane packed without padding.
    pub data: Vec<u8>,
}

impl VideoFrame {
    /// A black frame.
    pub fn black(width: u32, height: u32) -> Self {
        let (w, h) = (width as usize, height as usize);
        let mut data = vec![16u8; w * h + 2 * (w / 2) * (h / 2)];
        data[w * h..].fill(128);
        Self {
            width,
            height,
            data,
        }
    }

    /// Bytes an I420 frame of this size has.
    pub fn len_for(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * (w / 2) * (h / 2)
    }

    /// The luma plane.
    pub fn y(&self) -> &[u8] {
        &self.data[..(self.width * self.height) as usize]
    }

    /// The luma plane, writable.
    pub fn y_mut(&mut self) -> &mut [u8] {
        let n = (self.width * self.height) as usize;
        &mut self.data[..n]
    }

    /// The frame as RGBA8 (BT.601, studio range), for a texture.
    pub fn to_rgba(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, luma) = (w / 2, w * h);
        let chroma = cw * (h / 2);
        let mut out = Vec::with_capacity(w * h * 4);
        for row in 0..h {
            for col in 0..w {
                let y = f32::from(self.data[row * w + col]) - 16.0;
                let c = (row / 2) * cw + col / 2;
                let u = f32::from(self.data.get(luma + c).copied().unwrap_or(128)) - 128.0;
                let v = f32::from(self.data.get(luma + chroma + c).copied().unwrap_or(128)) - 128.0;
                let y = 1.164 * y;
                let px = |x: f32| x.round().clamp(0.0, 255.0) as u8;
                out.extend_from_slice(&[
                    px(y + 1.596 * v),
                    px(y - 0.392 * u - 0.813 * v),
                    px(y + 2.017 * u),
                    255,
                ]);
            }
        }
        out
    }

    /// A frame from RGBA8 pixels (`width × height × 4` bytes, e.g. a render target read back).
    /// `None` if the sizes do not match or are odd.
    pub fn from_rgba(width: u32, height: u32, rgba: &[u8]) -> Option<Self> {
        let (w, h) = (width as usize, height as usize);
        if !w.is_multiple_of(2) || !h.is_multiple_of(2) || rgba.len() != w * h * 4 {
            return None;
        }
        let mut frame = Self::black(width, height);
        let (cw, luma) = (w / 2, w * h);
        let chroma = cw * (h / 2);
        for row in 0..h {
            for col in 0..w {
                let p = &rgba[(row * w + col) * 4..][..3];
                let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
                frame.data[row * w + col] = (16.0 + 0.257 * r + 0.504 * g + 0.098 * b) as u8;
                if row % 2 == 0 && col % 2 == 0 {
                    let c = (row / 2) * cw + col / 2;
                    frame.data[luma + c] = (128.0 - 0.148 * r - 0.291 * g + 0.439 * b) as u8;
                    frame.data[luma + chroma + c] =
                        (128.0 + 0.439 * r - 0.368 * g - 0.071 * b) as u8;
                }
            }
        }
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgba_round_trips_within_rounding() {
        let rgba: Vec<u8> = (0..4 * 4)
            .flat_map(|i| [200u8, 40, (i * 15) as u8, 255])
            .collect();
        let frame = VideoFrame::from_rgba(4, 4, &rgba).unwrap();
        let back = frame.to_rgba();
        // Chroma is shared by 2×2 pixels: compare the first pixel of each block.
        for (a, b) in rgba.chunks(4).zip(back.chunks(4)).step_by(2).take(2) {
            for k in 0..3 {
                assert!(
                    (i16::from(a[k]) - i16::from(b[k])).abs() <= 20,
                    "{a:?} {b:?}"
                );
            }
        }
        assert!(VideoFrame::from_rgba(3, 4, &[0; 48]).is_none());
        assert!(VideoFrame::from_rgba(4, 4, &[0; 10]).is_none());
    }
}
