//! The signaller over ws_stream_wasm (the websocket client matchbox itself uses in browsers).

use super::{next_attempt, HuddleSignallerBuilder, Inbox, Observed, RETRY_DELAY};
use crate::messages::JoinRefusal;
use futures::{FutureExt, SinkExt, StreamExt};
use matchbox_socket::async_trait::async_trait;
use matchbox_socket::{PeerEvent, PeerRequest, SignalingError, Signaller, SignallerBuilder};
use pharos::{Events, Filter, Observable, ObserveConfig};
use std::time::Duration;
use ws_stream_wasm::{WsEvent, WsMessage, WsMeta, WsStream};

/// How long to wait for the close event (its code and reason) once the stream ended.
const CLOSE_EVENT_WAIT: Duration = Duration::from_millis(200);

struct WasmSignaller {
    /// Kept with the stream (it owns the socket's event observers).
    _meta: WsMeta,
    ws: WsStream,
    /// The socket's close event, once it comes.
    closed: Option<Events<WsEvent>>,
    inbox: Inbox,
    requests: futures::channel::mpsc::UnboundedReceiver<String>,
}

impl WasmSignaller {
    /// After the stream ended: reports how the server closed it (a policy close is a removal).
    async fn report_close(&mut self) {
        let event = match self.closed.as_mut() {
            Some(events) => futures::select! {
                event = events.next().fuse() => event,
                () = futures_timer::Delay::new(CLOSE_EVENT_WAIT).fuse() => None,
            },
            None => None,
        };
        match event {
            Some(WsEvent::Closed(close)) => self.inbox.closed(Some((close.code, &close.reason))),
            _ => self.inbox.closed(None),
        }
    }
}

/// Why the server refuses `room_url`, if it does (huddle_server's `GET /admit/<room>`; another
/// server, or none reachable, tells nothing).
async fn refusal(room_url: &str) -> Option<JoinRefusal> {
    let url = huddle_protocol::room::admit_url(room_url)?;
    match crate::web_fetch::get(&url).await {
        Ok((status, body)) if (400..600).contains(&status) && status != 404 => {
            Some(JoinRefusal::from_http(status, &body))
        }
        _ => None,
    }
}

#[async_trait(?Send)]
impl SignallerBuilder for HuddleSignallerBuilder {
    async fn new_signaller(
        &self,
        mut attempts: Option<u16>,
        room_url: String,
    ) -> Result<Box<dyn Signaller>, SignalingError> {
        loop {
            match WsMeta::connect(&room_url, None).await {
                Ok((mut meta, ws)) => {
                    let only_close = ObserveConfig::from(Filter::Pointer(WsEvent::is_closed));
                    let closed = meta.observe(only_close).await.ok();
                    return Ok(Box::new(WasmSignaller {
                        _meta: meta,
                        ws,
                        closed,
                        inbox: Inbox::new(self.observer.clone()),
                        requests: self.take_requests(),
                    }));
                }
                Err(e) => {
                    // A browser hides the server's answer to a refused websocket: ask the server
                    // whether it would admit us, and why not. A refusal is final.
                    if let Some(refusal) = refusal(&room_url).await {
                        let why = refusal.to_string();
                        let _ = self.observer.unbounded_send(Observed::Refused(refusal));
                        return Err(SignalingError::UserImplementationError(why));
                    }
                    next_attempt(&mut attempts, SignalingError::from(e))?;
                    futures_timer::Delay::new(RETRY_DELAY).await;
                }
            }
        }
    }
}

#[async_trait(?Send)]
impl Signaller for WasmSignaller {
    async fn send(&mut self, request: PeerRequest) -> Result<(), SignalingError> {
        let text = serde_json::to_string(&request)
            .map_err(|e| SignalingError::UserImplementationError(e.to_string()))?;
        self.ws
            .send(WsMessage::Text(text))
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
                            .send(WsMessage::Text(text))
                            .await
                            .map_err(SignalingError::from)?;
                    }
                    continue;
                }
                message = self.ws.next().fuse() => message,
            };
            match message {
                Some(WsMessage::Text(text)) => {
                    if let Some(event) = self.inbox.process(&text) {
                        return Ok(event);
                    }
                }
                Some(WsMessage::Binary(_)) => continue,
                None => {
                    self.report_close().await;
                    return Err(SignalingError::StreamExhausted);
                }
            }
        }
    }
}
