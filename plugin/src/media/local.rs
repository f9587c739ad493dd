//! Local tracks: the microphone and the camera. Each runs on a thread of its own that takes a
//! frame from its source at the source's pace, encodes it once (Opus or VP8), and hands the
//! same bytes to every peer connection subscribed to it. A subscriber that cannot keep up loses
//! samples (counted), never stalls the others.

use super::settings::MediaSettings;
use super::SPEAKING_DB;
use bytes::Bytes;
use futures::channel::mpsc::Sender;
use huddle_media::audio::AudioEncoder;
use huddle_media::echo::FarEnd;
use huddle_media::process::Processor;
use huddle_media::source::{SineWave, TestPattern};
use huddle_media::tone::rms_db;
use huddle_media::vp8::Vp8Encoder;
use huddle_media::{VideoFrame, FRAME_SAMPLES, SAMPLE_RATE};
use huddle_protocol::media::MediaKind;
use matchbox_socket::PeerId;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the microphone's sound comes from.
#[derive(Debug, Clone)]
pub enum MicSource {
    /// A synthetic tone.
    SineWave(SineWave),
    /// Samples the game pushes (48 kHz mono `f32`), e.g. a recorded clip or a device it reads.
    Push(AudioPush),
    /// A microphone of this machine (feature `media-devices`).
    #[cfg(feature = "media-devices")]
    Device(super::device::MicDevice),
}

/// Where the camera's picture comes from.
#[derive(Debug, Clone)]
pub enum CameraSource {
    /// A synthetic pattern that carries each frame's index.
    TestPattern(TestPattern),
    /// Frames the game pushes (e.g. a render target read back).
    Push(VideoPush),
    /// A camera of this machine (feature `media-devices`).
    #[cfg(feature = "media-devices")]
    Device(super::device::CameraDevice),
}

/// Locks, taking the data of a poisoned lock (a panicked thread leaves plain data behind).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A queue the game pushes microphone samples into; the microphone takes 20 ms at a time and
/// plays silence when it runs dry. Holds one second at most (older samples are dropped).
#[derive(Debug, Clone, Default)]
pub struct AudioPush {
    queue: Arc<Mutex<VecDeque<f32>>>,
    taken: Arc<Mutex<(u64, Option<Instant>)>>,
}

impl AudioPush {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends samples (48 kHz mono, -1..=1); returns how many older samples were dropped to
    /// stay within one second.
    pub fn push(&self, pcm: &[f32]) -> usize {
        let mut queue = lock(&self.queue);
        queue.extend(pcm.iter().map(|x| x.clamp(-1.0, 1.0)));
        let over = queue.len().saturating_sub(SAMPLE_RATE as usize);
        queue.drain(..over);
        over
    }

    /// Samples waiting.
    pub fn queued(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Pushed samples the microphone took so far, and when it last took some (they enter the
    /// encoder then): with [`RemoteAudio::delivered`](super::RemoteAudio::delivered) at the other
    /// end, mouth-to-ear latency to the sample.
    pub fn taken(&self) -> (u64, Option<Instant>) {
        *lock(&self.taken)
    }

    /// The next 20 ms (silence where the queue ran dry) and when its last sample was captured:
    /// now, less what is still queued behind it, so the echo canceller lines the frame up with
    /// what was playing when it was spoken, however long it waited here.
    fn take_frame(&self) -> (Vec<f32>, Instant) {
        let now = Instant::now();
        let (mut frame, behind): (Vec<f32>, usize) = {
            let mut queue = lock(&self.queue);
            let n = queue.len().min(FRAME_SAMPLES);
            (queue.drain(..n).collect(), queue.len())
        };
        let captured = now
            .checked_sub(Duration::from_micros(
                behind as u64 * 1_000_000 / u64::from(SAMPLE_RATE),
            ))
            .unwrap_or(now);
        let mut taken = lock(&self.taken);
        taken.0 += frame.len() as u64;
        taken.1 = Some(Instant::now());
        frame.resize(FRAME_SAMPLES, 0.0);
        (frame, captured)
    }
}

/// The latest frame the game pushed for the camera; the camera sends it at `fps`.
#[derive(Debug, Clone)]
pub struct VideoPush {
    width: u32,
    height: u32,
    fps: u32,
    frame: Arc<Mutex<VideoFrame>>,
}

impl VideoPush {
    /// A camera of `width × height` (even) at `fps`, black until the first push.
    pub fn new(width: u32, height: u32, fps: u32) -> Self {
        let (width, height) = ((width & !1).max(2), (height & !1).max(2));
        Self {
            width,
            height,
            fps: fps.clamp(1, 120),
            frame: Arc::new(Mutex::new(VideoFrame::black(width, height))),
        }
    }

    /// Replaces the frame to send; `false` (and nothing changes) if its size is not the camera's.
    pub fn push(&self, frame: VideoFrame) -> bool {
        let fits = (frame.width, frame.height) == (self.width, self.height)
            && frame.data.len() == VideoFrame::len_for(self.width, self.height);
        if fits {
            *lock(&self.frame) = frame;
        }
        fits
    }

    /// Replaces the frame with RGBA8 pixels of the camera's size; `false` if they do not fit.
    pub fn push_rgba(&self, rgba: &[u8]) -> bool {
        VideoFrame::from_rgba(self.width, self.height, rgba).is_some_and(|f| self.push(f))
    }
}

/// One encoded sample, shared by every peer it goes to.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub(crate) data: Bytes,
    pub(crate) duration: Duration,
    /// A voice frame's level and voice activity (RFC 6464), sent in its RTP header.
    pub(crate) audio_level: Option<AudioLevelExtension>,
}

/// What the game side and a track's thread share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    stop: AtomicBool,
    muted: AtomicBool,
    keyframe: AtomicBool,
    bitrate: AtomicU32,
    subscribers: Mutex<Vec<(PeerId, Sender<Encoded>)>>,
    /// Samples a subscriber could not take.
    dropped: AtomicU64,
    /// Captured samples the track's thread fell behind on (a device's sound).
    pub(crate) captured_dropped: Arc<AtomicU64>,
    /// The level of the last frame taken from the source, dBFS as `f32` bits (before muting).
    level: AtomicU32,
    /// Why the track stopped by itself (its device or encoder failed), until the game is told.
    failure: Mutex<Option<String>>,
}

/// A running local track; dropping it stops its thread.
pub(crate) struct LocalTrack {
    pub(crate) shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LocalTrack {
    /// Starts the microphone.
    pub(crate) fn microphone(
        source: MicSource,
        settings: &MediaSettings,
        muted: bool,
        far_end: Arc<FarEnd>,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        shared.muted.store(muted, Ordering::Relaxed);
        shared
            .bitrate
            .store(settings.audio_bitrate, Ordering::Relaxed);
        let thread_shared = shared.clone();
        // Sound from outside is processed; a synthetic tone is not (it is no voice).
        let processor = (!matches!(source, MicSource::SineWave(_)))
            .then(|| Processor::new(settings.processing).with_reference(far_end));
        let thread = std::thread::Builder::new()
            .name("huddle-mic".into())
            .spawn(move || run_microphone(source, processor, &thread_shared));
        Self::started(MediaKind::Audio, shared, thread)
    }

    /// Starts the camera.
    pub(crate) fn camera(source: CameraSource, settings: &MediaSettings) -> Self {
        let shared = Arc::new(Shared::default());
        shared
            .bitrate
            .store(settings.video_bitrate.start, Ordering::Relaxed);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("huddle-camera".into())
            .spawn(move || run_camera(source, &thread_shared));
        Self::started(MediaKind::Video, shared, thread)
    }

    fn started(
        kind: MediaKind,
        shared: Arc<Shared>,
        thread: std::io::Result<JoinHandle<()>>,
    ) -> Self {
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                bevy::log::warn!("huddle: cannot start the {kind:?} thread: {e}");
                None
            }
        };
        Self { shared, thread }
    }

    /// Sends to `peer` through `sink` from now on (a keyframe first, for video).
    pub(crate) fn subscribe(&self, peer: PeerId, sink: Sender<Encoded>) {
        let mut subscribers = lock(&self.shared.subscribers);
        subscribers.retain(|(p, _)| *p != peer);
        subscribers.push((peer, sink));
        self.shared.keyframe.store(true, Ordering::Relaxed);
    }

    /// Stops sending to `peer`.
    pub(crate) fn unsubscribe(&self, peer: PeerId) {
        lock(&self.shared.subscribers).retain(|(p, _)| *p != peer);
    }

    /// Whether `peer` is subscribed.
    pub(crate) fn is_subscribed(&self, peer: PeerId) -> bool {
        lock(&self.shared.subscribers)
            .iter()
            .any(|(p, _)| *p == peer)
    }

    /// The next frame is a keyframe (a receiver lost the picture).
    pub(crate) fn request_keyframe(&self) {
        self.shared.keyframe.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_muted(&self, muted: bool) {
        self.shared.muted.store(muted, Ordering::Relaxed);
    }

    pub(crate) fn set_bitrate(&self, bitrate: u32) {
        self.shared.bitrate.store(bitrate, Ordering::Relaxed);
    }

    pub(crate) fn bitrate(&self) -> u32 {
        self.shared.bitrate.load(Ordering::Relaxed)
    }

    /// Encoded samples a subscriber's full queue did not take, and captured samples the
    /// track's thread fell behind on.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
            + self.shared.captured_dropped.load(Ordering::Relaxed)
    }

    /// Why the track stopped by itself, once (then `None`).
    pub(crate) fn take_failure(&self) -> Option<String> {
        lock(&self.shared.failure).take()
    }

    /// The level of what the source gives now, in dBFS (the speaking indicator of the local
    /// player; before muting).
    pub(crate) fn level_db(&self) -> f32 {
        f32::from_bits(self.shared.level.load(Ordering::Relaxed))
    }
}

impl Drop for LocalTrack {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Hands one encoded sample to every subscriber.
    fn fan_out(&self, sample: Encoded) {
        lock(&self.subscribers).retain_mut(|(_, sink)| match sink.try_send(sample.clone()) {
            Ok(()) => true,
            Err(e) if e.is_full() => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            // The connection is gone.
            Err(_) => false,
        });
    }

    /// The track cannot go on: the game is told why.
    fn fail(&self, why: String) {
        bevy::log::warn!("huddle: {why}");
        *lock(&self.failure) = Some(why);
    }

    fn set_level(&self, pcm: &[f32]) {
        self.level.store(rms_db(pcm).to_bits(), Ordering::Relaxed);
    }
}

/// A pacer for a thread that produces a frame every `period`.
struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    fn new(period: Duration) -> Self {
        Self {
            period,
            next: Instant::now(),
        }
    }

    /// Sleeps until the next frame is due (skipping ahead after a long stall).
    fn wait(&mut self) {
        self.next += self.period;
        let now = Instant::now();
        if self.next + self.period * 5 < now {
            self.next = now;
        }
        std::thread::sleep(self.next.saturating_duration_since(now));
    }
}

/// A frame's RFC 6464 audio level: its RMS in -dBov (0 loudest, 127 silence).
fn audio_level(pcm: &[f32], voice: bool) -> AudioLevelExtension {
    AudioLevelExtension {
        level: (-rms_db(pcm)).clamp(0.0, 127.0) as u8,
        voice,
    }
}

fn run_microphone(mut source: MicSource, processor: Option<Processor>, shared: &Shared) {
    let rate = shared.bitrate.load(Ordering::Relaxed);
    let encoder = match AudioEncoder::new(rate, 10) {
        Ok(e) => e,
        Err(e) => return shared.fail(format!("microphone: {e}")),
    };
    // A device is opened here and stays on this thread; what it captures comes as pushed sound.
    #[cfg(feature = "media-devices")]
    let _device = match &source {
        MicSource::Device(device) => {
            match super::devices::OpenMic::open(device, shared.captured_dropped.clone()) {
                Ok(open) => {
                    source = MicSource::Push(open.push.clone());
                    Some(open)
                }
                Err(e) => return shared.fail(e),
            }
        }
        _ => None,
    };
    let mut pacer = Pacer::new(Duration::from_millis(20));
    let mut encoding = Encoding {
        encoder,
        rate,
        processor,
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let (pcm, captured) = match &mut source {
            MicSource::SineWave(sine) => (sine.next_frame(), Instant::now()),
            MicSource::Push(push) => push.take_frame(),
            #[cfg(feature = "media-devices")]
            MicSource::Device(_) => (vec![0.0; FRAME_SAMPLES], Instant::now()),
        };
        encoding.send(pcm, captured, shared);
        pacer.wait();
    }
}

/// A microphone's encoder and processing.
struct Encoding {
    encoder: AudioEncoder,
    rate: u32,
    processor: Option<Processor>,
}

impl Encoding {
    /// Processes, encodes and sends one frame captured at `captured`.
    fn send(&mut self, mut pcm: Vec<f32>, captured: Instant, shared: &Shared) {
        shared.set_level(&pcm);
        let voice = match &mut self.processor {
            Some(processor) => processor.process_at(&mut pcm, captured),
            None => rms_db(&pcm) > SPEAKING_DB,
        };
        let wanted = shared.bitrate.load(Ordering::Relaxed);
        if wanted != self.rate && self.encoder.set_bitrate(wanted).is_ok() {
            self.rate = wanted;
        }
        let muted = shared.muted.load(Ordering::Relaxed);
        if muted {
            pcm.fill(0.0);
        }
        match self.encoder.encode(&pcm) {
            Ok(packet) => shared.fan_out(Encoded {
                data: packet.into(),
                duration: Duration::from_millis(20),
                audio_level: Some(audio_level(&pcm, voice && !muted)),
            }),
            Err(e) => bevy::log::warn!("huddle: microphone: {e}"),
        }
    }
}

/// Frames in a row a camera device may fail to give before its track stops.
#[cfg(feature = "media-devices")]
const CAMERA_ERRORS: u32 = 30;

fn run_camera(mut source: CameraSource, shared: &Shared) {
    // A device is opened here and stays on this thread; it sets the size and the pace.
    #[cfg(feature = "media-devices")]
    let mut device = match &source {
        CameraSource::Device(device) => match super::devices::OpenCamera::open(device) {
            Ok(open) => Some(open),
            Err(e) => return shared.fail(e),
        },
        _ => None,
    };
    #[cfg(feature = "media-devices")]
    let mut errors = 0;
    let (width, height, fps) = match &source {
        CameraSource::TestPattern(p) => (p.width, p.height, p.fps),
        CameraSource::Push(p) => (p.width, p.height, p.fps),
        #[cfg(feature = "media-devices")]
        CameraSource::Device(_) => match &device {
            Some(open) => (open.width, open.height, open.fps),
            None => return,
        },
    };
    let mut rate = shared.bitrate.load(Ordering::Relaxed);
    let mut encoder = match Vp8Encoder::new(width, height, fps, rate) {
        Ok(e) => e,
        Err(e) => return shared.fail(format!("camera: {e}")),
    };
    let period = Duration::from_secs(1) / fps;
    let mut pacer = Pacer::new(period);
    while !shared.stop.load(Ordering::Relaxed) {
        let frame = match &mut source {
            CameraSource::TestPattern(pattern) => pattern.next_frame(),
            CameraSource::Push(push) => lock(&push.frame).clone(),
            #[cfg(feature = "media-devices")]
            CameraSource::Device(_) => {
                let Some(open) = &mut device else { return };
                match open.next_frame() {
                    Ok(frame) => {
                        errors = 0;
                        frame
                    }
                    Err(e) if errors < CAMERA_ERRORS => {
                        errors += 1;
                        bevy::log::warn!("huddle: camera: {e}");
                        continue;
                    }
                    Err(e) => return shared.fail(format!("camera: {e}")),
                }
            }
        };
        let wanted = shared.bitrate.load(Ordering::Relaxed);
        if wanted != rate && encoder.set_bitrate(wanted).is_ok() {
            rate = wanted;
        }
        let keyframe = shared.keyframe.swap(false, Ordering::Relaxed);
        match encoder.encode(&frame, keyframe) {
            Ok(Some(encoded)) => shared.fan_out(Encoded {
                data: encoded.data.into(),
                duration: period,
                audio_level: None,
            }),
            // Dropped by the rate control: the keyframe asked for comes with the next frame.
            Ok(None) => {
                shared.keyframe.fetch_or(keyframe, Ordering::Relaxed);
            }
            Err(e) => bevy::log::warn!("huddle: camera: {e}"),
        }
        pacer.wait();
    }
}
