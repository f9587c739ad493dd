//! `GET` off the game's thread, for the room browser and the ICE servers: natively ureq on a
//! thread of its own, in the browser the page's `fetch`. The body of a 2xx answer, or why not.

/// The longest body read.
#[cfg(not(target_arch = "wasm32"))]
const MAX_BODY: u64 = 4 * 1024 * 1024;

/// Gets `url` and hands `done` the body of a 2xx answer, or the error; trusts `roots` (DER)
/// instead of the web PKI when there are any (natively: the browser has its own trust store).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn spawn(
    url: String,
    roots: Vec<Vec<u8>>,
    done: impl FnOnce(Result<String, String>) + Send + 'static,
) {
    // `done` goes to the thread, or is called here if the thread cannot start.
    let done = std::sync::Arc::new(std::sync::Mutex::new(Some(done)));
    let theirs = done.clone();
    let spawned = std::thread::Builder::new()
        .name("huddle-http-get".into())
        .spawn(move || call(&theirs, get(&url, &roots)));
    if let Err(e) = spawned {
        call(&done, Err(format!("cannot start the request: {e}")));
    }
}

/// Calls the callback in `done`, once.
#[cfg(not(target_arch = "wasm32"))]
fn call<F: FnOnce(Result<String, String>)>(
    done: &std::sync::Mutex<Option<F>>,
    result: Result<String, String>,
) {
    if let Some(f) = done.lock().ok().and_then(|mut d| d.take()) {
        f(result);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn get(url: &str, roots: &[Vec<u8>]) -> Result<String, String> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if !roots.is_empty() {
        let certs = roots
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect::<Vec<_>>();
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", body.trim()));
    }
    Ok(body)
}

/// In the browser: the page's `fetch` (its own trust store; `roots` are not used).
#[cfg(target_arch = "wasm32")]
pub(crate) fn spawn(
    url: String,
    _roots: Vec<Vec<u8>>,
    done: impl FnOnce(Result<String, String>) + 'static,
) {
    wasm_bindgen_futures::spawn_local(async move {
        let body = crate::web_fetch::get(&url)
            .await
            .and_then(|(status, body)| {
                if (200..300).contains(&status) {
                    Ok(body)
                } else {
                    Err(format!("HTTP {status}: {}", body.trim()))
                }
            });
        done(body);
    });
}
