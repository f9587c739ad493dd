//! The signaller over ws_stream_wasm (the websocket client matchbox itself uses in browsers).

use super::{next_attempt, HuddleSignallerBuilder, Inbox, RETRY_DELAY};
use futures::{FutureExt, SinkExt, StreamExt};
use matchbox_socket::async_trait::async_trait;
use matchbox_socket::{PeerEvent, PeerRequest, SignalingError, Signaller, SignallerBuilder};
use ws_stream_wasm::{WsMessage, WsMeta, WsStream};

struct WasmSignaller {
    ws: WsStream,
    inbox: Inbox,
    requests: futures::channel::mpsc::UnboundedReceiver<String>,
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
                Ok((_, ws)) => {
                    return Ok(Box::new(WasmSignaller {
                        ws,
                        inbox: Inbox::new(self.observer.clone()),
                        requests: self.take_requests(),
                    }))
                }
                Err(e) => {
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
                None => return Err(SignalingError::StreamExhausted),
            }
        }
    }
}
