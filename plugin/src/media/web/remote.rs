//! Remote tracks in the browser: a voice plays through an audio element (the browser's jitter
//! buffer and decoder; its echo canceller hears it) and is metered by an `AnalyserNode`; a
//! camera plays into a hidden video element, read back into the game's image when a new frame
//! was decoded. The counters come from the connection's `getStats()`, once a second.

use super::js::{
    audio_context, count, error_text, ignore_rejection, number, start_player, stop_player, Js,
};
use super::SPEAKING_DB;
use huddle_protocol::media::jitter::JitterStats;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use wasm_bindgen::JsCast;
use web_sys::{
    AnalyserNode, AudioContext, AudioNode, CanvasRenderingContext2d, HtmlAudioElement,
    HtmlCanvasElement, HtmlVideoElement, MediaStream,
};

/// The analyser's window: 32768 samples at 48 kHz, 1.46 Hz per bin.
const FFT_SIZE: u32 = 32_768;

/// Two `AnalyserNode`s on a sound: a short window for its level, a long one for its strongest
/// frequency.
pub(crate) struct Meter {
    level: AnalyserNode,
    spectrum: AnalyserNode,
    rate: f32,
}

/// The level's window: 1024 samples, 21 ms at 48 kHz.
const LEVEL_SIZE: u32 = 1024;

impl Meter {
    /// A meter on `node`'s output.
    pub(crate) fn of_node(context: &AudioContext, node: &AudioNode) -> Result<Self, String> {
        let analyser = |size: u32| -> Result<AnalyserNode, String> {
            let analyser = context.create_analyser().map_err(error_text)?;
            analyser.set_fft_size(size);
            analyser.set_smoothing_time_constant(0.0);
            node.connect_with_audio_node(&analyser)
                .map_err(error_text)?;
            Ok(analyser)
        };
        Ok(Self {
            level: analyser(LEVEL_SIZE)?,
            spectrum: analyser(FFT_SIZE)?,
            rate: context.sample_rate(),
        })
    }

    /// A meter on a stream's sound.
    pub(crate) fn of_stream(stream: &MediaStream) -> Result<Self, String> {
        let context = audio_context()?;
        let source = context
            .create_media_stream_source(stream)
            .map_err(error_text)?;
        Self::of_node(&context, &source)
    }

    /// The level of the last 21 ms in dBFS (-200: silence).
    pub(crate) fn level_db(&self) -> f32 {
        let mut pcm = [0f32; LEVEL_SIZE as usize];
        self.level.get_float_time_domain_data(&mut pcm);
        huddle_media::tone::rms_db(&pcm)
    }

    /// The strongest frequency between `low` and `high` Hz, and how far (dB) it stands above
    /// the strongest bin outside ±20 Hz of it; `None` while silent.
    pub(crate) fn peak(&self, low: f32, high: f32) -> Option<(f32, f32)> {
        let mut db = vec![0f32; self.spectrum.frequency_bin_count() as usize];
        self.spectrum.get_float_frequency_data(&mut db);
        let bin = self.rate / FFT_SIZE as f32;
        let first = ((low / bin).floor() as usize).max(1);
        let last = ((high / bin).ceil() as usize).min(db.len().saturating_sub(2));
        let (at, top) = (first..=last)
            .filter(|i| db[*i].is_finite())
            .map(|i| (i, db[i]))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if top < -120.0 {
            return None;
        }
        // The parabola through the peak and its neighbours puts it between bins.
        let (l, r) = (db[at - 1], db[at + 1]);
        let bend = l - 2.0 * top + r;
        let shift = if bend.abs() > f32::EPSILON && l.is_finite() && r.is_finite() {
            (0.5 * (l - r) / bend).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        let frequency = (at as f32 + shift) * bin;
        let guard = (20.0 / bin).ceil() as usize;
        let other = db
            .iter()
            .enumerate()
            .filter(|(i, v)| i.abs_diff(at) > guard && v.is_finite())
            .map(|(_, v)| *v)
            .fold(f32::NEG_INFINITY, f32::max);
        Some((frequency, top - other.max(-200.0)))
    }
}

/// Whether the peer says a track is on, and whether it has played since.
#[derive(Debug, Default)]
struct Liveness {
    live: AtomicBool,
    /// What the counter (packets or frames) was when the track went live.
    since: AtomicU64,
}

impl Liveness {
    fn set(&self, live: bool, now: u64) {
        if self.live.swap(live, Ordering::Relaxed) != live {
            self.since.store(now, Ordering::Relaxed);
        }
    }

    fn started(&self, now: u64) -> bool {
        self.live.load(Ordering::Relaxed) && now > self.since.load(Ordering::Relaxed)
    }
}

/// Counters from the browser's statistics of one received stream.
#[derive(Debug, Default)]
pub(crate) struct Received {
    packets: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
    /// Video: frames decoded and dropped. Audio: unused.
    frames: AtomicU64,
    frames_dropped: AtomicU64,
}

impl Received {
    /// Takes the counters of an `inbound-rtp` entry.
    fn update(&self, entry: &wasm_bindgen::JsValue) {
        for (counter, key) in [
            (&self.packets, "packetsReceived"),
            (&self.bytes, "bytesReceived"),
            (&self.lost, "packetsLost"),
            (&self.frames, "framesDecoded"),
            (&self.frames_dropped, "framesDropped"),
        ] {
            counter.store(count(entry, key), Ordering::Relaxed);
        }
    }
}

/// A peer's voice, played by the browser.
pub struct RemoteAudio {
    element: Js<HtmlAudioElement>,
    meter: Js<Option<Meter>>,
    liveness: Liveness,
    volume: AtomicU32,
    received: Received,
    jitter: Mutex<JitterStats>,
    /// The sender's level as the browser read it (linear 0..=1, as bits); `u32::MAX`: none yet.
    audio_level: AtomicU32,
}

impl std::fmt::Debug for RemoteAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAudio")
            .field("packets", &self.packets())
            .finish_non_exhaustive()
    }
}

impl RemoteAudio {
    /// A voice arriving as `stream`: it plays at once if the page may play sound, else at
    /// [`enable_sound`](super::enable_sound).
    pub(crate) fn new(stream: &MediaStream) -> Result<Self, String> {
        let element = HtmlAudioElement::new().map_err(error_text)?;
        element.set_autoplay(true);
        element.set_src_object(Some(stream));
        start_player(&element);
        // Chrome feeds a remote stream to Web Audio only while an element plays it too.
        let meter = Meter::of_stream(stream).ok();
        Ok(Self {
            element: Js::new(element),
            meter: Js::new(meter),
            liveness: Liveness::default(),
            volume: AtomicU32::new(1f32.to_bits()),
            received: Received::default(),
            jitter: Mutex::new(JitterStats::default()),
            audio_level: AtomicU32::new(u32::MAX),
        })
    }

    /// The level of the last 20 ms in dBFS (-200 for silence).
    pub fn level_db(&self) -> f32 {
        if !self.liveness.live.load(Ordering::Relaxed) {
            return -200.0;
        }
        self.meter.as_ref().map_or(-200.0, Meter::level_db)
    }

    /// Whether the peer is speaking (above -45 dBFS).
    pub fn speaking(&self) -> bool {
        self.level_db() > SPEAKING_DB
    }

    /// The strongest frequency of the voice between `low` and `high` Hz and how many dB it
    /// stands above everything else (browser only: a tone checker for tests and demos).
    pub fn peak_frequency(&self, low: f32, high: f32) -> Option<(f32, f32)> {
        self.meter.as_ref().and_then(|m| m.peak(low, high))
    }

    /// What the browser read of the sender's level (RFC 6464, once a second from its
    /// statistics); `None` until it said.
    pub fn activity(&self) -> Option<VoiceActivity> {
        let bits = self.audio_level.load(Ordering::Relaxed);
        (bits != u32::MAX).then(|| {
            let linear = f32::from_bits(bits);
            let level_db = (20.0 * linear.max(1e-7).log10()).max(-127.0);
            VoiceActivity {
                level_db,
                voice: level_db > SPEAKING_DB,
            }
        })
    }

    /// Its playout volume (1 = as sent, 0 = deafened to this peer).
    pub fn volume(&self) -> f32 {
        f32::from_bits(self.volume.load(Ordering::Relaxed))
    }

    pub(crate) fn set_volume(&self, volume: f32) {
        // An element plays at most at full volume.
        let volume = if volume.is_finite() {
            volume.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.volume.store(volume.to_bits(), Ordering::Relaxed);
        self.element.set_volume(f64::from(volume));
    }

    /// The browser's jitter buffer, from its statistics: packets received, frames played and
    /// concealed (in 20 ms frames), packets recovered by FEC and discarded.
    pub fn jitter_stats(&self) -> JitterStats {
        *self.jitter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// RTP packets received.
    pub fn packets(&self) -> u64 {
        self.received.packets.load(Ordering::Relaxed)
    }

    /// Packets lost on the way.
    pub fn dropped(&self) -> u64 {
        self.received.lost.load(Ordering::Relaxed)
    }

    /// Payload bytes received.
    pub fn bytes(&self) -> u64 {
        self.received.bytes.load(Ordering::Relaxed)
    }

    /// Packets came since the track went live.
    pub(crate) fn started(&self) -> bool {
        self.liveness.started(self.packets())
    }

    /// The peer turned its microphone on or off: off, the element is muted.
    pub(crate) fn set_live(&self, live: bool) {
        self.liveness.set(live, self.packets());
        self.element.set_muted(!live);
    }

    /// The connection's statistics of this voice (an `inbound-rtp` entry).
    pub(crate) fn update(&self, entry: &wasm_bindgen::JsValue) {
        self.received.update(entry);
        if let Some(level) = number(entry, "audioLevel").filter(|l| l.is_finite()) {
            let level = level.clamp(0.0, 1.0) as f32;
            self.audio_level.store(level.to_bits(), Ordering::Relaxed);
        }
        let frames = |samples: u64| samples / huddle_media::FRAME_SAMPLES as u64;
        *self.jitter.lock().unwrap_or_else(|e| e.into_inner()) = JitterStats {
            received: count(entry, "packetsReceived"),
            played: frames(count(entry, "jitterBufferEmittedCount")),
            recovered: count(entry, "fecPacketsReceived"),
            concealed: frames(count(entry, "concealedSamples")),
            late: 0,
            discarded: count(entry, "packetsDiscarded"),
            restarts: count(entry, "concealmentEvents"),
        };
    }
}

impl Drop for RemoteAudio {
    fn drop(&mut self) {
        stop_player(&self.element);
    }
}

/// How loud a peer's voice is and whether it holds voice, as its sender says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceActivity {
    /// The level in dBov (0 loudest, -127 silence).
    pub level_db: f32,
    /// Whether it is loud enough to be speech.
    pub voice: bool,
}

/// A peer's camera, decoded by the browser into a hidden video element.
pub struct RemoteVideo {
    element: Js<HtmlVideoElement>,
    canvas: Js<Option<CanvasRenderingContext2d>>,
    liveness: Liveness,
    received: Received,
}

impl std::fmt::Debug for RemoteVideo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteVideo")
            .field("frames_decoded", &self.frames_decoded())
            .finish_non_exhaustive()
    }
}

impl RemoteVideo {
    /// A camera arriving as `stream`.
    pub(crate) fn new(stream: &MediaStream) -> Result<Self, String> {
        let document = web_sys::window()
            .and_then(|w| w.document())
            .ok_or("no document")?;
        let element: HtmlVideoElement = document
            .create_element("video")
            .map_err(error_text)?
            .unchecked_into();
        element.set_muted(true);
        element.set_autoplay(true);
        let _ = element.set_attribute("playsinline", "");
        element.set_src_object(Some(stream));
        if let Ok(playing) = element.play() {
            ignore_rejection(playing);
        }
        let canvas: HtmlCanvasElement = document
            .create_element("canvas")
            .map_err(error_text)?
            .unchecked_into();
        let options = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&options, &"willReadFrequently".into(), &true.into());
        let context = canvas
            .get_context_with_context_options("2d", &options)
            .ok()
            .flatten()
            .and_then(|c| c.dyn_into().ok());
        Ok(Self {
            element: Js::new(element),
            canvas: Js::new(context),
            liveness: Liveness::default(),
            received: Received::default(),
        })
    }

    /// Frames the browser decoded so far.
    pub fn frames_decoded(&self) -> u64 {
        let quality = self.element.get_video_playback_quality();
        u64::from(quality.total_video_frames()).max(self.received.frames.load(Ordering::Relaxed))
    }

    /// Frames the browser dropped.
    pub fn frames_dropped(&self) -> u64 {
        self.received.frames_dropped.load(Ordering::Relaxed)
    }

    /// RTP packets received.
    pub fn packets(&self) -> u64 {
        self.received.packets.load(Ordering::Relaxed)
    }

    /// Payload bytes received.
    pub fn bytes(&self) -> u64 {
        self.received.bytes.load(Ordering::Relaxed)
    }

    /// Changes with every decoded frame (the image is read back only then).
    pub(crate) fn generation(&self) -> u64 {
        u64::from(
            self.element
                .get_video_playback_quality()
                .total_video_frames(),
        )
    }

    /// The frame on show as RGBA: width, height, pixels (drawn and read back).
    pub(crate) fn latest_rgba(&self) -> Option<(u32, u32, Vec<u8>)> {
        let context = self.canvas.as_ref()?;
        let (width, height) = (self.element.video_width(), self.element.video_height());
        if width == 0 || height == 0 {
            return None;
        }
        let canvas = context.canvas()?;
        if canvas.width() != width || canvas.height() != height {
            canvas.set_width(width);
            canvas.set_height(height);
        }
        context
            .draw_image_with_html_video_element(&self.element, 0.0, 0.0)
            .ok()?;
        let data = context
            .get_image_data(0.0, 0.0, f64::from(width), f64::from(height))
            .ok()?;
        Some((width, height, data.data().0))
    }

    /// Frames decoded since the track went live.
    pub(crate) fn started(&self) -> bool {
        self.liveness.started(self.frames_decoded())
    }

    /// The peer turned its camera on or off.
    pub(crate) fn set_live(&self, live: bool) {
        self.liveness.set(live, self.frames_decoded());
    }

    /// The connection's statistics of this camera (an `inbound-rtp` entry).
    pub(crate) fn update(&self, entry: &wasm_bindgen::JsValue) {
        self.received.update(entry);
    }
}

impl Drop for RemoteVideo {
    fn drop(&mut self) {
        self.element.set_src_object(None);
    }
}
