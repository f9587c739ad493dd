//! The signaller over async-tungstenite (the websocket client matchbox itself uses natively).

use super::{next_attempt, HuddleSignallerBuilder, Inbox, Observed, RETRY_DELAY};
use crate::messages::JoinRefusal;
use async_tungstenite::smol::{connect_async_with_tls_connector, ConnectStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures::{FutureExt, StreamExt};
use matchbox_socket::async_trait::async_trait;
use matchbox_socket::{PeerEvent, PeerRequest, SignalingError, Signaller, SignallerBuilder};

struct NativeSignaller {
    ws: WebSocketStream<ConnectStream>,
    inbox: Inbox,
    requests: futures::channel::mpsc::UnboundedReceiver<String>,
}

#[async_trait]
impl SignallerBuilder for HuddleSignallerBuilder {
    async fn new_signaller(
        &self,
        mut attempts: Option<u16>,
        room_url: String,
    ) -> Result<Box<dyn Signaller>, SignalingError> {
        let connector = tls_connector(&self.roots)?;
        loop {
            match connect_async_with_tls_connector(&room_url, connector.clone()).await {
                Ok((ws, _)) => {
                    return Ok(Box::new(NativeSignaller {
                        ws,
                        inbox: Inbox::new(self.observer.clone()),
                        requests: self.take_requests(),
                    }))
                }
                // The server answered, and not with an upgrade: a refusal, final.
                Err(async_tungstenite::tungstenite::Error::Http(response)) => {
                    let body = response.body().as_deref().unwrap_or_default();
                    let refusal = JoinRefusal::from_http(
                        response.status().as_u16(),
                        &String::from_utf8_lossy(body),
                    );
                    let why = refusal.to_string();
                    let _ = self.observer.unbounded_send(Observed::Refused(refusal));
                    return Err(SignalingError::UserImplementationError(why));
                }
                Err(e) => {
                    next_attempt(&mut attempts, SignalingError::from(e))?;
                    futures_timer::Delay::new(RETRY_DELAY).await;
                }
            }
        }
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

#[async_trait]
impl Signaller for NativeSignaller {
    async fn send(&mut self, request: PeerRequest) -> Result<(), SignalingError> {
        let text = serde_json::to_string(&request)
            .map_err(|e| SignalingError::UserImplementationError(e.to_string()))?;
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(SignalingError::from)
    }

    async fn next_message(&mut self) -> Result<PeerEvent, SignalingError> {
        loop {
            // huddle's own requests go out while we wait for the server.
            let message = futures::select_biased! {
                request = self.requests.next() => {
                    if let Some(text) = request {
                        self.ws
                            .send(Message::Text(text.into()))
                            .await
                            .map_err(SignalingError::from)?;
                    }
                    continue;
                }
                message = self.ws.next().fuse() => message,
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(event) = self.inbox.process(text.as_str()) {
                        return Ok(event);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let close = frame.as_ref().map(|f| (f.code.into(), f.reason.as_str()));
                    self.inbox.closed(close);
                    return Err(SignalingError::StreamExhausted);
                }
                None => {
                    self.inbox.closed(None);
                    return Err(SignalingError::StreamExhausted);
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    self.inbox.closed(None);
                    return Err(SignalingError::from(e));
                }
            }
        }
    }
}
