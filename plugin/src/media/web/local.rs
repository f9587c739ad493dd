//! Local tracks in the browser: the microphone and the camera as `MediaStreamTrack`s, from
//! `getUserMedia` or made in the page (a tone from an `OscillatorNode`, a test pattern drawn on a
//! canvas and captured). Each connection sends the same track (`RTCRtpSender.replaceTrack`), and
//! the browser encodes, paces and processes the microphone (echo cancellation, noise
//! suppression, gain control, as [`MicProcessing`](super::MicProcessing) asks).

use super::connection::TrackSink;
use super::device::{CameraDevice, MicDevice};
use super::js::{audio_context, error_text, wait, Js};
use super::remote::Meter;
use super::{MediaSettings, SineWave, TestPattern};
use matchbox_socket::PeerId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{Clamped, JsCast, JsValue};
use web_sys::{
    CanvasRenderingContext2d, HtmlCanvasElement, ImageData, MediaStream, MediaStreamConstraints,
    MediaStreamTrack,
};

/// Where the microphone's sound comes from.
#[derive(Debug, Clone)]
pub enum MicSource {
    /// A synthetic tone (an `OscillatorNode` in the page).
    SineWave(SineWave),
    /// The browser's microphone (`getUserMedia`: the browser asks the player first).
    Device(MicDevice),
}

/// Where the camera's picture comes from.
#[derive(Debug, Clone)]
pub enum CameraSource {
    /// A synthetic pattern that carries each frame's index (drawn on a canvas and captured).
    TestPattern(TestPattern),
    /// The browser's camera (`getUserMedia`).
    Device(CameraDevice),
}

/// A running local track (voice or camera), shared by every connection that sends it.
pub(crate) struct LocalTrack {
    inner: Js<Rc<RefCell<Inner>>>,
}

#[derive(Default)]
struct Inner {
    /// The track, once the source made it (`getUserMedia` answers later).
    track: Option<MediaStreamTrack>,
    failure: Option<String>,
    sinks: HashMap<PeerId, TrackSink>,
    muted: bool,
    /// The camera's bitrate cap (bits per second).
    bitrate: u32,
    /// The microphone's level, before muting.
    meter: Option<Meter>,
    /// What keeps a synthetic source going, undone when the track stops.
    source: Option<Synthetic>,
    /// The track was stopped (a `getUserMedia` answering late stops its track at once).
    stopped: bool,
}

/// A synthetic source's page objects.
enum Synthetic {
    Tone(web_sys::OscillatorNode),
    Pattern {
        interval: i32,
        _draw: Closure<dyn FnMut()>,
    },
}

impl LocalTrack {
    /// The microphone from `source`.
    pub(crate) fn microphone(source: MicSource, settings: &MediaSettings, muted: bool) -> Self {
        let track = Self::new(muted, settings.audio_bitrate);
        match source {
            MicSource::SineWave(tone) => match tone_track(&tone) {
                Ok((osc, stream_track, meter)) => {
                    let mut inner = track.inner.borrow_mut();
                    inner.source = Some(Synthetic::Tone(osc));
                    inner.meter = Some(meter);
                    drop(inner);
                    ready(&track.inner, stream_track);
                }
                Err(e) => fail(&track.inner, format!("microphone (tone): {e}")),
            },
            MicSource::Device(device) => {
                let constraints = microphone_constraints(&device, settings);
                track.ask(constraints, "microphone");
            }
        }
        track
    }

    /// The camera from `source`.
    pub(crate) fn camera(source: CameraSource, settings: &MediaSettings) -> Self {
        let track = Self::new(false, settings.video_bitrate.start);
        match source {
            CameraSource::TestPattern(pattern) => match pattern_track(pattern) {
                Ok((synthetic, stream_track)) => {
                    track.inner.borrow_mut().source = Some(synthetic);
                    ready(&track.inner, stream_track);
                }
                Err(e) => fail(&track.inner, format!("camera (test pattern): {e}")),
            },
            CameraSource::Device(device) => {
                let video = js_sys::Object::new();
                for (key, value) in [
                    ("width", device.width),
                    ("height", device.height),
                    ("frameRate", device.fps),
                ] {
                    let _ = js_sys::Reflect::set(&video, &key.into(), &value.into());
                }
                let constraints = MediaStreamConstraints::new();
                constraints.set_video(&video);
                track.ask(constraints, "camera");
            }
        }
        track
    }

    fn new(muted: bool, bitrate: u32) -> Self {
        Self {
            inner: Js::new(Rc::new(RefCell::new(Inner {
                muted,
                bitrate,
                ..Inner::default()
            }))),
        }
    }

    /// Asks the browser for a device; the track comes when the player allowed it.
    fn ask(&self, constraints: MediaStreamConstraints, what: &'static str) {
        let devices = web_sys::window()
            .map(|w| w.navigator())
            .and_then(|n| n.media_devices().ok());
        let Some(devices) = devices else {
            let why = format!("{what}: this page has no media devices (not a secure context?)");
            fail(&self.inner, why);
            return;
        };
        let asked = match devices.get_user_media_with_constraints(&constraints) {
            Ok(promise) => promise,
            Err(e) => {
                fail(&self.inner, format!("{what}: {}", error_text(e)));
                return;
            }
        };
        let inner = Rc::clone(&self.inner);
        wasm_bindgen_futures::spawn_local(async move {
            match wait(asked).await {
                Ok(stream) => {
                    let stream: MediaStream = stream.unchecked_into();
                    let Ok(track) = stream.get_tracks().get(0).dyn_into() else {
                        fail(&inner, format!("{what}: the browser gave no track"));
                        return;
                    };
                    if what == "microphone" {
                        inner.borrow_mut().meter = Meter::of_stream(&stream).ok();
                    }
                    ready(&inner, track);
                }
                Err(e) => fail(&inner, format!("{what}: {e}")),
            }
        });
    }

    /// Mutes (silence is sent) or unmutes.
    pub(crate) fn set_muted(&self, muted: bool) {
        let mut inner = self.inner.borrow_mut();
        inner.muted = muted;
        if let Some(track) = &inner.track {
            track.set_enabled(!muted);
        }
    }

    /// The microphone's level in dBFS (-200 before it runs).
    pub(crate) fn level_db(&self) -> f32 {
        self.inner
            .borrow()
            .meter
            .as_ref()
            .map_or(-200.0, Meter::level_db)
    }

    /// Nothing is dropped on our side: the browser paces and encodes.
    pub(crate) fn dropped(&self) -> u64 {
        0
    }

    /// The camera's bitrate cap now.
    pub(crate) fn bitrate(&self) -> u32 {
        self.inner.borrow().bitrate
    }

    /// Caps what each connection's encoder sends (`RTCRtpSender.setParameters`).
    pub(crate) fn set_bitrate(&self, bitrate: u32) {
        let mut inner = self.inner.borrow_mut();
        if inner.bitrate == bitrate {
            return;
        }
        inner.bitrate = bitrate;
        for sink in inner.sinks.values() {
            sink.max_bitrate(bitrate);
        }
    }

    /// Why the track stopped by itself (the player refused, the device went away), once.
    pub(crate) fn take_failure(&self) -> Option<String> {
        let mut inner = self.inner.borrow_mut();
        if inner.failure.is_none() {
            if let Some(track) = &inner.track {
                if track.ready_state() == web_sys::MediaStreamTrackState::Ended {
                    inner.failure = Some(format!("{} ended", track.kind()));
                }
            }
        }
        inner.failure.take()
    }

    pub(crate) fn is_subscribed(&self, peer: PeerId) -> bool {
        self.inner.borrow().sinks.contains_key(&peer)
    }

    /// Sends the track to `peer` through `sink` (now, or once the source made it).
    pub(crate) fn subscribe(&self, peer: PeerId, sink: TrackSink) {
        let mut inner = self.inner.borrow_mut();
        if let Some(track) = &inner.track {
            sink.send(Some(track));
            sink.max_bitrate(inner.bitrate);
        }
        inner.sinks.insert(peer, sink);
    }

    /// Stops sending the track to `peer`.
    pub(crate) fn unsubscribe(&self, peer: PeerId) {
        if let Some(sink) = self.inner.borrow_mut().sinks.remove(&peer) {
            sink.send(None);
        }
    }
}

/// The source made its track: every connection that wants it sends it (a track that comes
/// after the game stopped it is stopped at once).
fn ready(inner: &RefCell<Inner>, track: MediaStreamTrack) {
    let mut inner = inner.borrow_mut();
    if inner.stopped {
        track.stop();
        return;
    }
    track.set_enabled(!inner.muted);
    for sink in inner.sinks.values() {
        sink.send(Some(&track));
        sink.max_bitrate(inner.bitrate);
    }
    inner.track = Some(track);
}

fn fail(inner: &RefCell<Inner>, why: String) {
    inner.borrow_mut().failure = Some(why);
}

impl Drop for LocalTrack {
    fn drop(&mut self) {
        let mut inner = self.inner.borrow_mut();
        inner.stopped = true;
        for sink in inner.sinks.values() {
            sink.send(None);
        }
        inner.sinks.clear();
        if let Some(track) = inner.track.take() {
            track.stop();
        }
        match inner.source.take() {
            Some(Synthetic::Tone(osc)) => {
                let _ = osc.stop();
            }
            Some(Synthetic::Pattern { interval, .. }) => {
                if let Some(window) = web_sys::window() {
                    window.clear_interval_with_handle(interval);
                }
            }
            None => {}
        }
    }
}

/// What `getUserMedia` is asked for the microphone: the device, and the processing the
/// settings want (the browser's own echo canceller, noise suppressor and gain control).
fn microphone_constraints(device: &MicDevice, settings: &MediaSettings) -> MediaStreamConstraints {
    let audio = js_sys::Object::new();
    let p = settings.processing;
    for (key, on) in [
        ("echoCancellation", p.echo_cancellation),
        ("noiseSuppression", p.noise_suppression),
        ("autoGainControl", p.gain_control),
    ] {
        let _ = js_sys::Reflect::set(&audio, &key.into(), &on.into());
    }
    let _ = js_sys::Reflect::set(&audio, &"channelCount".into(), &1.into());
    if let Some(id) = &device.name {
        let exact = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&exact, &"exact".into(), &id.into());
        let _ = js_sys::Reflect::set(&audio, &"deviceId".into(), &exact);
    }
    let constraints = MediaStreamConstraints::new();
    constraints.set_audio(&audio);
    constraints
}

/// A tone as a track: oscillator → gain → stream destination, and a meter on the gain.
fn tone_track(
    tone: &SineWave,
) -> Result<(web_sys::OscillatorNode, MediaStreamTrack, Meter), String> {
    let context = audio_context()?;
    let osc = context.create_oscillator().map_err(error_text)?;
    osc.frequency().set_value(tone.frequency);
    let gain = context.create_gain().map_err(error_text)?;
    gain.gain().set_value(tone.level);
    let out = context
        .create_media_stream_destination()
        .map_err(error_text)?;
    osc.connect_with_audio_node(&gain).map_err(error_text)?;
    gain.connect_with_audio_node(&out).map_err(error_text)?;
    let meter = Meter::of_node(&context, &gain)?;
    osc.start().map_err(error_text)?;
    let track = out
        .stream()
        .get_audio_tracks()
        .get(0)
        .dyn_into::<MediaStreamTrack>()
        .map_err(|_| "the audio context made no track".to_owned())?;
    Ok((osc, track, meter))
}

/// A test pattern as a track: drawn on a canvas `fps` times a second and captured.
fn pattern_track(mut pattern: TestPattern) -> Result<(Synthetic, MediaStreamTrack), String> {
    let window = web_sys::window().ok_or("no window")?;
    let canvas: HtmlCanvasElement = window
        .document()
        .ok_or("no document")?
        .create_element("canvas")
        .map_err(error_text)?
        .unchecked_into();
    canvas.set_width(pattern.width);
    canvas.set_height(pattern.height);
    let context: CanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(error_text)?
        .ok_or("no 2d context")?
        .unchecked_into();
    let (width, height) = (pattern.width, pattern.height);
    let fps = pattern.fps.max(1);
    let mut draw = move || {
        let rgba = pattern.next_frame().to_rgba();
        if let Ok(image) =
            ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), width, height)
        {
            let _ = context.put_image_data(&image, 0.0, 0.0);
        }
    };
    // A first frame before the capture starts, so the track never begins empty.
    draw();
    let draw = Closure::<dyn FnMut()>::new(draw);
    let interval = window
        .set_interval_with_callback_and_timeout_and_arguments_0(
            draw.as_ref().unchecked_ref(),
            (1000 / fps) as i32,
        )
        .map_err(error_text)?;
    let stream = canvas
        .capture_stream_with_frame_request_rate(f64::from(fps))
        .map_err(error_text)?;
    let track = stream
        .get_video_tracks()
        .get(0)
        .dyn_into::<MediaStreamTrack>()
        .map_err(|_: JsValue| "the canvas gave no track".to_owned())?;
    Ok((
        Synthetic::Pattern {
            interval,
            _draw: draw,
        },
        track,
    ))
}
