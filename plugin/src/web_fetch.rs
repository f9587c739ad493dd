//! `GET` from the page (wasm32): the browser's `fetch`, for the room list and for learning why a
//! websocket was refused.

use wasm_bindgen::JsCast;

/// The status and body of `GET url`; `Err` if no answer came (network, CORS).
pub(crate) async fn get(url: &str) -> Result<(u16, String), String> {
    let shown = |e: wasm_bindgen::JsValue| format!("{e:?}");
    let window = web_sys::window().ok_or("no window")?;
    let response = wasm_bindgen_futures::JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(shown)?;
    let response: web_sys::Response = response.dyn_into().map_err(shown)?;
    let text = wasm_bindgen_futures::JsFuture::from(response.text().map_err(shown)?)
        .await
        .map_err(shown)?;
    Ok((response.status(), text.as_string().unwrap_or_default()))
}
