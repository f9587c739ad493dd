//! VP8 through libvpx (Debian's `libvpx-dev`, bound by `env-libvpx-sys`'s pre-generated
//! bindings): a real-time encoder whose bitrate can change and that makes a keyframe when asked,
//! and a decoder. All of huddle's `unsafe` is in this module; each block says why it holds.
//!
//! Why not a higher-level crate: `vpx-encode` has no decoder, hard-codes 8 threads and cannot
//! force a keyframe; `vpx-rs` 0.2 does not compile against libvpx 1.12 (Debian 12).

use crate::{CodecError, VideoFrame};
use std::os::raw::{c_int, c_long, c_uint, c_ulong};
use std::ptr;
use vpx_sys as ffi;

/// One encoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The VP8 frame.
    pub data: Vec<u8>,
    /// Whether it is a keyframe (decodable on its own).
    pub keyframe: bool,
}

fn check(call: &'static str, code: ffi::vpx_codec_err_t) -> Result<(), CodecError> {
    if code == ffi::vpx_codec_err_t::VPX_CODEC_OK {
        Ok(())
    } else {
        Err(CodecError::Vpx {
            call,
            code: code as u32,
        })
    }
}

/// A zeroed codec context: null pointers and `VPX_CODEC_OK`, the state libvpx's init functions
/// expect to fill in.
fn zeroed_context() -> Box<ffi::vpx_codec_ctx_t> {
    // SAFETY: vpx_codec_ctx_t is a C struct of raw pointers, integers, a union of pointers and
    // an enum whose zero value (VPX_CODEC_OK) exists: all-zero is a valid value of it.
    Box::new(unsafe { std::mem::zeroed() })
}

/// A VP8 encoder for one local video track (real-time, constant bitrate, error resilient).
pub struct Vp8Encoder {
    // Boxed: libvpx keeps pointers into the context and the configuration, so neither may move.
    ctx: Box<ffi::vpx_codec_ctx_t>,
    cfg: Box<ffi::vpx_codec_enc_cfg_t>,
    width: u32,
    height: u32,
    pts: i64,
}

// SAFETY: the context is owned by this value alone and libvpx's contexts have no thread
// affinity; `&mut self` on every call keeps calls from overlapping.
unsafe impl Send for Vp8Encoder {}

impl Vp8Encoder {
    /// An encoder for `width × height` (even) frames at `fps`, at `bitrate` bits per second, with
    /// a keyframe at least every second.
    pub fn new(width: u32, height: u32, fps: u32, bitrate: u32) -> Result<Self, CodecError> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(CodecError::FrameSize {
                got: (width, height),
                want: (width & !1, height & !1),
            });
        }
        let fps = fps.clamp(1, 120);
        let mut cfg = Box::new(std::mem::MaybeUninit::<ffi::vpx_codec_enc_cfg_t>::uninit());
        // SAFETY: the interface pointer comes from libvpx; cfg is writable memory of the right
        // size, which vpx_codec_enc_config_default fills in completely on success.
        check("vpx_codec_enc_config_default", unsafe {
            ffi::vpx_codec_enc_config_default(ffi::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0)
        })?;
        // SAFETY: filled in by the successful call above.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.g_w = width;
        cfg.g_h = height;
        cfg.g_timebase = ffi::vpx_rational {
            num: 1,
            den: fps as c_int,
        };
        cfg.g_threads = 1;
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = ffi::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.rc_end_usage = ffi::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = (bitrate / 1000).max(10);
        cfg.rc_min_quantizer = 4;
        cfg.rc_max_quantizer = 56;
        cfg.rc_buf_sz = 1000;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_max_dist = fps;
        let mut ctx = zeroed_context();
        // SAFETY: ctx and cfg are valid and boxed (they outlive the encoder and do not move);
        // the ABI version is the one the bindings were generated for.
        check("vpx_codec_enc_init_ver", unsafe {
            ffi::vpx_codec_enc_init_ver(
                &mut *ctx,
                ffi::vpx_codec_vp8_cx(),
                &*cfg,
                0,
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            )
        })?;
        let encoder = Self {
            ctx,
            cfg,
            width,
            height,
            pts: 0,
        };
        // Real-time speed: the fastest setting that still looks fine at game-chat sizes.
        // SAFETY: an initialised context; VP8E_SET_CPUUSED takes one int.
        let mut encoder = encoder;
        let _ = unsafe {
            ffi::vpx_codec_control_(
                &mut *encoder.ctx,
                ffi::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int,
                8 as c_int,
            )
        };
        Ok(encoder)
    }

    /// The size of the frames it takes.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The bitrate it encodes at (bits per second).
    pub fn bitrate(&self) -> u32 {
        self.cfg.rc_target_bitrate.saturating_mul(1000)
    }

    /// Changes the bitrate (bits per second).
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), CodecError> {
        self.cfg.rc_target_bitrate = (bitrate / 1000).max(10);
        // SAFETY: an initialised context and its own (boxed) configuration.
        check("vpx_codec_enc_config_set", unsafe {
            ffi::vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg)
        })
    }

    /// Encodes a frame; `keyframe` forces a keyframe (a new receiver, a loss report). Returns
    /// nothing when the rate control drops the frame.
    pub fn encode(
        &mut self,
        frame: &VideoFrame,
        keyframe: bool,
    ) -> Result<Option<EncodedFrame>, CodecError> {
        let want = (self.width, self.height);
        if (frame.width, frame.height) != want
            || frame.data.len() < VideoFrame::len_for(self.width, self.height)
        {
            return Err(CodecError::FrameSize {
                got: (frame.width, frame.height),
                want,
            });
        }
        // SAFETY: all-zero is a valid vpx_image_t (plain C data), and vpx_img_wrap fills it in.
        let mut image: ffi::vpx_image_t = unsafe { std::mem::zeroed() };
        // SAFETY: `frame.data` holds a whole I420 image of this size (checked above) and lives
        // until vpx_codec_encode returns; libvpx only reads from it.
        let wrapped = unsafe {
            ffi::vpx_img_wrap(
                &mut image,
                ffi::vpx_img_fmt::VPX_IMG_FMT_I420,
                self.width as c_uint,
                self.height as c_uint,
                1,
                frame.data.as_ptr().cast_mut(),
            )
        };
        if wrapped.is_null() {
            return Err(CodecError::Vpx {
                call: "vpx_img_wrap",
                code: 0,
            });
        }
        let flags = if keyframe {
            ffi::VPX_EFLAG_FORCE_KF as c_long
        } else {
            0
        };
        // SAFETY: an initialised context and an image wrapping live data.
        check("vpx_codec_encode", unsafe {
            ffi::vpx_codec_encode(
                &mut *self.ctx,
                wrapped,
                self.pts,
                1,
                flags,
                ffi::VPX_DL_REALTIME as c_ulong,
            )
        })?;
        self.pts += 1;
        let mut out: Option<EncodedFrame> = None;
        let mut iter: ffi::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: an initialised context; `iter` is the iterator libvpx asks for.
            let packet = unsafe { ffi::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            // SAFETY: libvpx returns null or a packet valid until the next call on the context.
            let Some(packet) = (unsafe { packet.as_ref() }) else {
                break;
            };
            if packet.kind != ffi::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: a frame packet's union holds `frame`, whose buffer has `sz` bytes.
            let (data, is_key) = unsafe {
                let f = packet.data.frame;
                (
                    std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize),
                    f.flags & ffi::VPX_FRAME_IS_KEY != 0,
                )
            };
            let frame = out.get_or_insert_with(|| EncodedFrame {
                data: Vec::new(),
                keyframe: is_key,
            });
            frame.data.extend_from_slice(data);
        }
        Ok(out)
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// A VP8 decoder for one remote video track.
pub struct Vp8Decoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
}

// SAFETY: as for the encoder.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    /// A decoder.
    pub fn new() -> Result<Self, CodecError> {
        let mut ctx = zeroed_context();
        // SAFETY: a zeroed, boxed context; no configuration (libvpx picks defaults).
        check("vpx_codec_dec_init_ver", unsafe {
            ffi::vpx_codec_dec_init_ver(
                &mut *ctx,
                ffi::vpx_codec_vp8_dx(),
                ptr::null(),
                0,
                ffi::VPX_DECODER_ABI_VERSION as c_int,
            )
        })?;
        Ok(Self { ctx })
    }

    /// Decodes one VP8 frame (as assembled from RTP). Data from the network: a frame that does
    /// not decode is an error and the decoder waits for the next keyframe.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<VideoFrame>, CodecError> {
        let Ok(len) = c_uint::try_from(data.len()) else {
            return Err(CodecError::Vpx {
                call: "vpx_codec_decode",
                code: 0,
            });
        };
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: an initialised context; `data` is valid for `len` bytes during the call.
        check("vpx_codec_decode", unsafe {
            ffi::vpx_codec_decode(&mut *self.ctx, data.as_ptr(), len, ptr::null_mut(), 0)
        })?;
        let mut iter: ffi::vpx_codec_iter_t = ptr::null();
        let mut last = None;
        loop {
            // SAFETY: an initialised context and its iterator.
            let image = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            // SAFETY: null or an image valid until the next decode call.
            let Some(image) = (unsafe { image.as_ref() }) else {
                break;
            };
            last = Some(copy_image(image));
        }
        Ok(last)
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// Copies a decoded I420 image (cropped to even size) out of libvpx's buffers.
fn copy_image(image: &ffi::vpx_image_t) -> VideoFrame {
    let (width, height) = (image.d_w & !1, image.d_h & !1);
    let mut frame = VideoFrame::black(width, height);
    let (w, h) = (width as usize, height as usize);
    let planes = [(0, w, h), (1, w / 2, h / 2), (2, w / 2, h / 2)];
    let mut at = 0;
    for (plane, pw, ph) in planes {
        let stride = image.stride[plane] as usize;
        for row in 0..ph {
            // SAFETY: libvpx's plane `plane` has at least `ph` rows of `stride >= pw` bytes.
            let src =
                unsafe { std::slice::from_raw_parts(image.planes[plane].add(row * stride), pw) };
            frame.data[at..at + pw].copy_from_slice(src);
            at += pw;
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TestPattern;

    #[test]
    fn frames_survive_encoding_and_keyframes_come_on_request() {
        let mut pattern = TestPattern::new(320, 240, 30);
        let mut encoder = Vp8Encoder::new(320, 240, 30, 500_000).unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        let mut decoded = 0;
        for i in 0..40u32 {
            let frame = pattern.next_frame();
            let Some(encoded) = encoder.encode(&frame, i == 20).unwrap() else {
                continue;
            };
            if i == 0 || i == 20 {
                assert!(encoded.keyframe, "frame {i}");
            }
            let out = decoder.decode(&encoded.data).unwrap().unwrap();
            assert_eq!((out.width, out.height), (320, 240));
            assert_eq!(TestPattern::read_index(&out), Some(i));
            decoded += 1;
        }
        assert!(decoded >= 36, "{decoded}");
        encoder.set_bitrate(200_000).unwrap();
        assert_eq!(encoder.bitrate(), 200_000);
        assert!(encoder.encode(&VideoFrame::black(4, 4), false).is_err());
    }

    #[test]
    fn garbage_is_an_error_and_a_keyframe_recovers() {
        let mut decoder = Vp8Decoder::new().unwrap();
        assert!(decoder.decode(&[0x9d; 100]).is_err() || decoder.decode(&[1, 2, 3]).is_err());
        let mut encoder = Vp8Encoder::new(64, 16, 30, 100_000).unwrap();
        let mut pattern = TestPattern::new(64, 16, 30);
        let key = encoder
            .encode(&pattern.next_frame(), true)
            .unwrap()
            .unwrap();
        assert_eq!(decoder.decode(&key.data).unwrap().unwrap().width, 64);
    }
}
