//! The lobby page's voice and camera: buttons for the microphone, the camera, mute and sound
//! (browsers play sound only after a click), every peer's camera in a small canvas under the
//! game, and what the page hears and sees of each peer in `window.huddleStatus.media`.
//!
//! Query parameters: `media=1` turns media on; `voice=HZ` speaks a tone of HZ from the start and
//! `pattern=1` shows a test pattern as the camera (synthetic sources, for tests and demos
//! without devices); `mic=1` starts the browser's microphone at once (`mic=ID`: that device).
//! `m` toggles mute.

use bevy::asset::AssetEvent;
use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bevy_huddle::media::{
    enable_sound, CameraDevice, CameraSource, LocalMedia, MediaStates, MediaStats, MicDevice,
    MicSource, RemoteMedia, SineWave, TestPattern, VideoFrame,
};
use bevy_huddle::prelude::*;
use bevy_huddle::HuddleSettings;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::{Clamped, JsCast};

/// What the page starts with.
#[derive(Resource, Clone)]
pub(super) struct PageMedia {
    /// A tone to speak from the start (Hz).
    pub(super) voice: Option<f32>,
    /// A test pattern as the camera from the start.
    pub(super) pattern: bool,
    /// The browser's microphone from the start ("1": the default one, else a device id).
    pub(super) mic: Option<String>,
}

/// Button presses not taken yet (the DOM's listeners fill it).
#[derive(Default)]
pub(super) struct Clicks(Rc<RefCell<Vec<String>>>);

/// Each peer's camera canvas under the game.
#[derive(Default)]
struct Screens(HashMap<PeerId, web_sys::HtmlCanvasElement>);

/// The last media errors (a refused microphone, a failed connection), newest last.
#[derive(Resource, Default)]
pub(super) struct MediaErrors(Vec<String>);

impl Plugin for PageMedia {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.clone())
            .init_resource::<MediaErrors>()
            .init_resource::<MediaStatus>()
            .insert_non_send(clicks())
            .insert_non_send(Screens::default())
            .add_systems(Startup, start)
            .add_systems(Update, (press, errors, screens, media_status));
    }
}

/// Listens to the page's media buttons; "sound" turns the sound on inside the click itself (a
/// user gesture is what browsers ask for).
fn clicks() -> Clicks {
    let clicks = Clicks::default();
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return clicks;
    };
    for id in ["mic", "camera", "mute", "sound"] {
        let Some(button) = document.get_element_by_id(id) else {
            continue;
        };
        let queue = clicks.0.clone();
        let listener = Closure::<dyn FnMut()>::new(move || {
            if id == "sound" {
                enable_sound();
            }
            let mut queue = queue.borrow_mut();
            if queue.len() < 8 {
                queue.push(id.to_owned());
            }
        });
        let _ = button.add_event_listener_with_callback("click", listener.as_ref().unchecked_ref());
        // The page lives as long as the game: the listener too.
        listener.forget();
    }
    clicks
}

fn start(page: Res<PageMedia>, mut local: ResMut<LocalMedia>) {
    if let Some(hz) = page.voice {
        local.start_microphone(MicSource::SineWave(SineWave::new(hz, 0.5)));
    }
    if let Some(mic) = &page.mic {
        let name = (mic != "1").then(|| mic.clone());
        local.start_microphone(MicSource::Device(MicDevice { name }));
    }
    if page.pattern {
        local.start_camera(CameraSource::TestPattern(TestPattern::new(320, 240, 30)));
    }
}

/// The buttons, and `m` for mute.
fn press(clicks: NonSend<Clicks>, dom: NonSend<super::Dom>, mut local: ResMut<LocalMedia>) {
    let mut pressed = std::mem::take(&mut *clicks.0.borrow_mut());
    // The lobby takes no other presses (arrows are read as held).
    let keys = std::mem::take(&mut dom.keys.borrow_mut().1);
    pressed.extend(
        keys.into_iter()
            .filter(|k| k == "m")
            .map(|_| "mute".to_owned()),
    );
    for button in pressed {
        match button.as_str() {
            "mic" if local.tracks().audio => local.stop_microphone(),
            "mic" => local.start_microphone(MicSource::Device(MicDevice::default())),
            "camera" if local.tracks().video => local.stop_camera(),
            "camera" => local.start_camera(CameraSource::Device(CameraDevice::new(0))),
            "mute" => {
                let muted = local.is_muted();
                local.set_muted(!muted);
            }
            _ => {}
        }
    }
}

fn errors(mut read: MessageReader<HuddleError>, mut kept: ResMut<MediaErrors>) {
    for error in read.read() {
        if let HuddleError::Media(why) = error {
            kept.0.push(why.clone());
        }
    }
    let over = kept.0.len().saturating_sub(4);
    kept.0.drain(..over);
}

/// Draws every peer's camera image into its canvas when it changed.
fn screens(
    mut screens: NonSendMut<Screens>,
    remote: Res<RemoteMedia>,
    images: Res<Assets<Image>>,
    mut changed: MessageReader<AssetEvent<Image>>,
) {
    let changed: Vec<AssetId<Image>> = changed
        .read()
        .filter_map(|e| match e {
            AssetEvent::Added { id } | AssetEvent::Modified { id } => Some(*id),
            _ => None,
        })
        .collect();
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    screens.0.retain(|peer, canvas| {
        let keep = remote.video(*peer).is_some();
        if !keep {
            canvas.remove();
        }
        keep
    });
    for peer in remote.peers() {
        let Some(handle) = remote.image(peer) else {
            continue;
        };
        if !changed.contains(&handle.id()) {
            continue;
        }
        let Some((width, height, rgba)) = images.get(&handle).and_then(pixels) else {
            continue;
        };
        if !screens.0.contains_key(&peer) {
            let Some(canvas) = screen(&document, peer) else {
                continue;
            };
            screens.0.insert(peer, canvas);
        }
        let Some(canvas) = screens.0.get(&peer) else {
            continue;
        };
        canvas.set_width(width);
        canvas.set_height(height);
        let context = canvas
            .get_context("2d")
            .ok()
            .flatten()
            .and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok());
        let data =
            web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), width, height);
        if let (Some(context), Ok(data)) = (context, data) {
            let _ = context.put_image_data(&data, 0.0, 0.0);
        }
    }
}

/// A new canvas for `peer`'s camera, under the game.
fn screen(document: &web_sys::Document, peer: PeerId) -> Option<web_sys::HtmlCanvasElement> {
    let canvas: web_sys::HtmlCanvasElement =
        document.create_element("canvas").ok()?.dyn_into().ok()?;
    canvas.set_title(&peer.to_string());
    document
        .get_element_by_id("videos")?
        .append_child(&canvas)
        .ok()?;
    Some(canvas)
}

/// An image's size and RGBA pixels.
fn pixels(image: &Image) -> Option<(u32, u32, &[u8])> {
    let size = image.texture_descriptor.size;
    Some((size.width, size.height, image.data.as_deref()?))
}

/// The media part of the page's status, refreshed every frame.
#[derive(Resource, Default)]
pub(super) struct MediaStatus(pub(super) Value);

/// What we send, and what we hear and see of each peer: four times a second (reading a
/// spectrum and a pattern index is not free on a slow machine).
#[allow(clippy::too_many_arguments)]
fn media_status(
    time: Res<Time>,
    mut last: Local<Option<f32>>,
    settings: Res<HuddleSettings>,
    local: Res<LocalMedia>,
    remote: Res<RemoteMedia>,
    states: Res<MediaStates>,
    stats: Res<MediaStats>,
    images: Res<Assets<Image>>,
    errors: Res<MediaErrors>,
    mut status: ResMut<MediaStatus>,
) {
    let now = time.elapsed_secs();
    if last.is_some_and(|at| now - at < 0.25) {
        return;
    }
    *last = Some(now);
    let mut peers: Vec<PeerId> = states.0.keys().copied().chain(remote.peers()).collect();
    peers.sort();
    peers.dedup();
    let peers: Vec<Value> = peers
        .into_iter()
        .map(|peer| {
            let audio = remote.audio(peer);
            let video = remote.video(peer);
            let heard = audio.and_then(|a| a.peak_frequency(100.0, 4000.0));
            let image = remote
                .image(peer)
                .and_then(|h| images.get(&h))
                .and_then(pixels);
            let index = image.and_then(|(w, h, rgba)| {
                TestPattern::read_index(&VideoFrame::from_rgba(w, h, rgba)?)
            });
            let s = stats.0.get(&peer);
            json!({
                "id": peer.to_string(),
                "state": states.0.get(&peer).map(|s| format!("{s:?}")),
                "hz": heard.map(|h| h.0),
                "margin_db": heard.map(|h| h.1),
                "level_db": audio.map(|a| a.level_db()),
                "audio_packets": audio.map(|a| a.packets()),
                "video_packets": video.map(|v| v.packets()),
                "frames_decoded": video.map(|v| v.frames_decoded()),
                "image": image.map(|(w, h, _)| [w, h]),
                "index": index,
                "rtt_ms": s.and_then(|s| s.rtt).map(|r| r.as_secs_f64() * 1e3),
            })
        })
        .collect();
    status.0 = json!({
        "on": settings.0.media.enabled,
        "mic": local.tracks().audio,
        "camera": local.tracks().video,
        "muted": local.is_muted(),
        "mic_level_db": local.microphone_level_db(),
        "errors": errors.0,
        "peers": peers,
    });
}
