//! The machine's own microphones and cameras (feature `media-devices`): microphones through
//! `cpal` (ALSA on Linux, the same crate Bevy's audio plays through), cameras through `nokhwa`
//! (V4L2 on Linux; YUYV frames, decoded in Rust, so no JPEG library is needed).
//!
//! A device is opened on its track's thread and stays there (a `cpal` stream may not move
//! between threads). What it gives is converted to what the encoders take: 48 kHz mono for
//! sound ([`huddle_media::resample::Downmix`]), I420 of even size for pictures.

use super::device::{CameraDevice, MicDevice};
use super::local::AudioPush;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig, SupportedStreamConfig};
use huddle_media::resample::Downmix;
use huddle_media::{VideoFrame, SAMPLE_RATE};
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The names of the microphones the system offers (empty without any, or without a sound
/// system).
pub fn microphones() -> Vec<String> {
    cpal::default_host()
        .input_devices()
        .map(|devices| {
            devices
                .filter_map(|d| d.description().ok().map(|d| d.name().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The names of the cameras the system offers, in index order.
pub fn cameras() -> Vec<String> {
    nokhwa::query(ApiBackend::Auto)
        .map(|found| found.iter().map(|c| c.human_name()).collect())
        .unwrap_or_default()
}

/// Sound a device delivers ahead of the microphone's pace, kept at most (one second); more is
/// dropped (and counted) until the microphone has taken some.
const AHEAD: usize = SAMPLE_RATE as usize;

/// An open microphone: its stream feeds `push`, which the microphone's thread reads.
pub(crate) struct OpenMic {
    _stream: cpal::Stream,
    pub(crate) push: AudioPush,
}

impl OpenMic {
    /// Opens `device` and starts capturing; what the microphone's thread falls behind on is
    /// counted in `dropped`.
    pub(crate) fn open(device: &MicDevice, dropped: Arc<AtomicU64>) -> Result<Self, String> {
        let host = cpal::default_host();
        let found = match &device.name {
            None => host.default_input_device(),
            Some(name) => host.input_devices().ok().and_then(|mut all| {
                all.find(|d| d.description().is_ok_and(|desc| desc.name() == name))
            }),
        };
        let name = device.name.as_deref().unwrap_or("default");
        let found = found.ok_or_else(|| format!("no microphone {name:?}"))?;
        let config = choose_config(&found).map_err(|e| format!("microphone {name:?}: {e}"))?;
        let push = AudioPush::new();
        let sink = Sink {
            downmix: Downmix::new(config.channels(), config.sample_rate()),
            push: push.clone(),
            dropped,
        };
        let stream = match config.sample_format() {
            SampleFormat::F32 => build::<f32>(&found, &config.config(), sink),
            SampleFormat::I16 => build::<i16>(&found, &config.config(), sink),
            SampleFormat::I32 => build::<i32>(&found, &config.config(), sink),
            SampleFormat::U16 => build::<u16>(&found, &config.config(), sink),
            other => return Err(format!("microphone {name:?}: sample format {other}")),
        }
        .map_err(|e| format!("microphone {name:?}: {e}"))?;
        stream
            .play()
            .map_err(|e| format!("microphone {name:?}: {e}"))?;
        Ok(Self {
            _stream: stream,
            push,
        })
    }
}

/// 48 kHz if the device has it (no resampling), a format the conversion takes, and as few
/// channels as it offers; else its default.
fn choose_config(device: &cpal::Device) -> Result<SupportedStreamConfig, String> {
    let usable = |f: SampleFormat| {
        [
            SampleFormat::F32,
            SampleFormat::I16,
            SampleFormat::I32,
            SampleFormat::U16,
        ]
        .iter()
        .position(|u| *u == f)
    };
    let best = device
        .supported_input_configs()
        .map_err(|e| e.to_string())?
        .filter(|range| usable(range.sample_format()).is_some())
        .filter_map(|range| range.try_with_sample_rate(SAMPLE_RATE))
        .min_by_key(|c| (c.channels(), usable(c.sample_format())));
    match best {
        Some(config) => Ok(config),
        None => device.default_input_config().map_err(|e| e.to_string()),
    }
}

/// Where a capture callback puts what it gets.
struct Sink {
    downmix: Downmix,
    push: AudioPush,
    dropped: Arc<AtomicU64>,
}

fn build<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut sink: Sink,
) -> Result<cpal::Stream, cpal::BuildStreamError>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    device.build_input_stream(
        config,
        move |data: &[T], _| {
            let pcm: Vec<f32> = data.iter().map(|x| f32::from_sample_(*x)).collect();
            let mono = sink.downmix.process(&pcm);
            let room = AHEAD.saturating_sub(sink.push.queued());
            let take = mono.len().min(room);
            sink.push.push(&mono[..take]);
            sink.dropped
                .fetch_add((mono.len() - take) as u64, Ordering::Relaxed);
        },
        |e| bevy::log::warn!("huddle: microphone: {e}"),
        None,
    )
}

/// An open camera.
pub(crate) struct OpenCamera {
    camera: nokhwa::Camera,
    /// The size frames are sent at (the camera's, made even).
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) fps: u32,
}

impl OpenCamera {
    /// Opens `device` and starts its stream.
    pub(crate) fn open(device: &CameraDevice) -> Result<Self, String> {
        let asked = CameraFormat::new(
            Resolution::new(device.width, device.height),
            FrameFormat::YUYV,
            device.fps.clamp(1, 120),
        );
        let format = RequestedFormat::with_formats(
            RequestedFormatType::Closest(asked),
            &[FrameFormat::YUYV],
        );
        let index = device.index;
        let fail = |e: nokhwa::NokhwaError| format!("camera {index}: {e}");
        let mut camera = nokhwa::Camera::new(CameraIndex::Index(index), format).map_err(fail)?;
        camera.open_stream().map_err(fail)?;
        let resolution = camera.resolution();
        Ok(Self {
            width: resolution.width() & !1,
            height: resolution.height() & !1,
            fps: camera.frame_rate().clamp(1, 120),
            camera,
        })
    }

    /// The next frame (waits for the camera).
    pub(crate) fn next_frame(&mut self) -> Result<VideoFrame, String> {
        let buffer = self.camera.frame().map_err(|e| e.to_string())?;
        let rgb = buffer
            .decode_image::<RgbFormat>()
            .map_err(|e| e.to_string())?;
        let (w, h) = (rgb.width(), rgb.height());
        let rgba = even_rgba(rgb.as_raw(), w, h, self.width, self.height).ok_or_else(|| {
            format!(
                "a {w}×{h} frame from a {}×{} camera",
                self.width, self.height
            )
        })?;
        VideoFrame::from_rgba(self.width, self.height, &rgba)
            .ok_or_else(|| "a frame of the wrong size".to_owned())
    }
}

/// RGB pixels of `w × h` as RGBA of `width × height` (the top-left part: odd edges cut).
fn even_rgba(rgb: &[u8], w: u32, h: u32, width: u32, height: u32) -> Option<Vec<u8>> {
    if width > w || height > h || rgb.len() != (w as usize) * (h as usize) * 3 {
        return None;
    }
    let mut rgba = Vec::with_capacity(width as usize * height as usize * 4);
    for row in rgb.chunks_exact(w as usize * 3).take(height as usize) {
        for px in row.chunks_exact(3).take(width as usize) {
            rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
    }
    Some(rgba)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_frames_are_cut_to_even_and_wrong_ones_refused() {
        let rgb: Vec<u8> = (0..3 * 3 * 3).map(|i| i as u8).collect();
        let rgba = even_rgba(&rgb, 3, 3, 2, 2).expect("fits");
        assert_eq!(rgba.len(), 16);
        assert_eq!(&rgba[..4], &[0, 1, 2, 255]);
        assert_eq!(
            &rgba[8..12],
            &[9, 10, 11, 255],
            "second row starts at pixel 3"
        );
        assert!(even_rgba(&rgb, 3, 3, 4, 2).is_none());
        assert!(even_rgba(&rgb[1..], 3, 3, 2, 2).is_none());
    }
}
