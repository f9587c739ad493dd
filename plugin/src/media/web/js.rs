//! The browser's objects as Bevy's resources can hold them, the page's one audio context, the
//! autoplay hook, and reading what the browser hands back (promises, stats, errors).
//!
//! wasm32-unknown-unknown runs the app on one thread, and Bevy's resources must be `Send`: each
//! browser handle is wrapped ([`Js`]), which checks that it is only ever touched on the thread
//! that made it.

use js_sys::{Promise, Reflect};
use send_wrapper::SendWrapper;
use std::cell::RefCell;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AudioContext, AudioContextOptions, HtmlMediaElement};

/// A browser handle inside a Bevy resource.
pub(crate) type Js<T> = SendWrapper<T>;

thread_local! {
    static AUDIO: RefCell<Option<AudioContext>> = const { RefCell::new(None) };
    /// The elements playing remote voices, started again by [`enable_sound`].
    static PLAYERS: RefCell<Vec<HtmlMediaElement>> = const { RefCell::new(Vec::new()) };
}

/// The page's audio context (48 kHz, made once): tones, meters and analysers live in it.
pub(crate) fn audio_context() -> Result<AudioContext, String> {
    AUDIO.with(|cell| {
        if let Some(context) = cell.borrow().as_ref() {
            return Ok(context.clone());
        }
        let options = AudioContextOptions::new();
        options.set_sample_rate(huddle_media::SAMPLE_RATE as f32);
        let context = AudioContext::new_with_context_options(&options).map_err(error_text)?;
        // Browsers may start it suspended until the page was clicked: it runs then, or at
        // `enable_sound`.
        if let Ok(resumed) = context.resume() {
            ignore_rejection(resumed);
        }
        *cell.borrow_mut() = Some(context.clone());
        Ok(context)
    })
}

/// Turns the sound on after a user gesture: browsers keep audio off until the page was
/// clicked or typed in (their autoplay policy). Call it from a click or key handler (the
/// examples' pages do, on their "sound" button); it resumes the page's audio context (where
/// remote voices are metered and a `SineWave` microphone plays: until then a tone sends
/// silence) and starts every remote voice. Returns whether sound plays now (`false`: call again
/// from a gesture).
pub fn enable_sound() -> bool {
    let running = match audio_context() {
        Ok(context) => {
            let _ = context.resume();
            context.state() == web_sys::AudioContextState::Running
        }
        Err(_) => false,
    };
    PLAYERS.with(|players| {
        for element in players.borrow().iter() {
            // Rejected without a gesture; the next call tries again.
            if let Ok(playing) = element.play() {
                ignore_rejection(playing);
            }
        }
    });
    running && sound_plays()
}

/// Whether every remote voice's element is playing (autoplay allowed it, or [`enable_sound`]).
pub(crate) fn sound_plays() -> bool {
    PLAYERS.with(|players| players.borrow().iter().all(|e| !e.paused()))
}

/// Plays `element` (a remote voice) now if the browser lets us, and again at [`enable_sound`].
pub(crate) fn start_player(element: &HtmlMediaElement) {
    if let Ok(playing) = element.play() {
        ignore_rejection(playing);
    }
    PLAYERS.with(|players| players.borrow_mut().push(element.clone()));
}

/// Forgets a remote voice's element.
pub(crate) fn stop_player(element: &HtmlMediaElement) {
    element.set_src_object(None);
    PLAYERS.with(|players| players.borrow_mut().retain(|e| e != element));
}

/// A promise whose outcome nobody needs (autoplay refused before a gesture, a sender's new
/// track): awaited, so that a rejection does not show as an unhandled one.
pub(crate) fn ignore_rejection(promise: Promise) {
    wasm_bindgen_futures::spawn_local(async move {
        let _ = JsFuture::from(promise).await;
    });
}

/// Waits for a promise; a rejection becomes its text.
pub(crate) async fn wait(promise: Promise) -> Result<JsValue, String> {
    JsFuture::from(promise).await.map_err(error_text)
}

/// What a browser error says: `NotAllowedError: Permission denied`, or the value as text.
pub(crate) fn error_text(error: JsValue) -> String {
    let name = string(&error, "name");
    let message = string(&error, "message");
    match (name, message) {
        (Some(name), Some(message)) => format!("{name}: {message}"),
        (Some(text), None) | (None, Some(text)) => text,
        (None, None) => error.as_string().unwrap_or_else(|| format!("{error:?}")),
    }
}

/// A field of a browser object as a number.
pub(crate) fn number(object: &JsValue, key: &str) -> Option<f64> {
    Reflect::get(object, &key.into()).ok()?.as_f64()
}

/// A field of a browser object as text.
pub(crate) fn string(object: &JsValue, key: &str) -> Option<String> {
    Reflect::get(object, &key.into()).ok()?.as_string()
}

/// A counter from the browser's statistics as a `u64` (absent, negative or not finite: 0).
pub(crate) fn count(object: &JsValue, key: &str) -> u64 {
    number(object, key)
        .filter(|n| n.is_finite() && *n > 0.0)
        .map_or(0, |n| n.min(u64::MAX as f64) as u64)
}

/// The entries of an `RTCStatsReport` (a map of id to stats object).
pub(crate) fn stats_entries(report: &JsValue) -> Vec<JsValue> {
    let Ok(values) = Reflect::get(report, &"values".into()) else {
        return Vec::new();
    };
    let Ok(values) = values.dyn_into::<js_sys::Function>() else {
        return Vec::new();
    };
    let Ok(iterator) = values.call0(report) else {
        return Vec::new();
    };
    match js_sys::try_iter(&iterator) {
        Ok(Some(entries)) => entries.filter_map(Result::ok).collect(),
        _ => Vec::new(),
    }
}
