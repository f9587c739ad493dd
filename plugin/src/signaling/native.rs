//! The websocket connection over async-tungstenite (the client matchbox itself uses natively).

use super::{Failure, Incoming};
use crate::messages::JoinRefusal;
use async_tungstenite::smol::{connect_async_with_tls_connector, ConnectStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures::{FutureExt, StreamExt};
use matchbox_socket::SignalingError;

/// One websocket connection to the signaling server.
pub(super) struct Connection {
    ws: WebSocketStream<ConnectStream>,
}

impl Connection {
    /// Connects to `url`, trusting `roots` (DER) besides the web PKI for `wss://`.
    pub(super) async fn open(url: &str, roots: &[Vec<u8>]) -> Result<Self, Failure> {
        let connector = tls_connector(roots).map_err(Failure::Failed)?;
        match connect_async_with_tls_connector(url, connector).await {
            Ok((ws, _)) => Ok(Self { ws }),
            // The server answered, and not with an upgrade: a refusal, final.
            Err(async_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                Err(Failure::Refused(JoinRefusal::from_http(
                    response.status().as_u16(),
                    &String::from_utf8_lossy(body),
                )))
            }
            Err(e) => Err(Failure::Failed(SignalingError::from(e))),
        }
    }

    /// Sends a text message.
    pub(super) async fn send(&mut self, text: String) -> Result<(), SignalingError> {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(SignalingError::from)
    }

    /// The next text message, or how the connection ended.
    pub(super) async fn next(&mut self) -> Incoming {
        loop {
            return match self.ws.next().await {
                Some(Ok(Message::Text(text))) => Incoming::Text(text.as_str().to_string()),
                Some(Ok(Message::Close(frame))) => {
                    Incoming::Closed(frame.map(|f| (f.code.into(), f.reason.as_str().to_string())))
                }
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => Incoming::Closed(None),
            };
        }
    }

    /// Starts a clean close (a close frame, if it can go out right now): the server then knows we
    /// left, rather than dropped.
    pub(super) fn close_now(&mut self) {
        let _ = self.ws.close(None).now_or_never();
    }
}

/// With extra roots: a TLS connector trusting them and the web PKI (`None`: the default, the web
/// PKI alone).
fn tls_connector(
    roots: &[Vec<u8>],
) -> Result<Option<futures_rustls::TlsConnector>, SignalingError> {
    use futures_rustls::rustls;
    if roots.is_empty() {
        return Ok(None);
    }
    let refused = |e: rustls::Error| SignalingError::UserImplementationError(e.to_string());
    let mut store = rustls::RootCertStore::empty();
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in roots {
        store
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(refused)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Some(std::sync::Arc::new(config).into()))
}
