//! The signaller over async-tungstenite (the websocket client matchbox itself uses natively).

use super::{next_attempt, HuddleSignallerBuilder, Inbox, RETRY_DELAY};
use async_tungstenite::smol::{connect_async, ConnectStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures::StreamExt;
use matchbox_socket::async_trait::async_trait;
use matchbox_socket::{PeerEvent, PeerRequest, SignalingError, Signaller, SignallerBuilder};

struct NativeSignaller {
    ws: WebSocketStream<ConnectStream>,
    inbox: Inbox,
}

#[async_trait]
impl SignallerBuilder for HuddleSignallerBuilder {
    async fn new_signaller(
        &self,
        mut attempts: Option<u16>,
        room_url: String,
    ) -> Result<Box<dyn Signaller>, SignalingError> {
        loop {
            match connect_async(&room_url).await {
                Ok((ws, _)) => {
                    return Ok(Box::new(NativeSignaller {
                        ws,
                        inbox: Inbox::new(self.observer.clone()),
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
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let Some(event) = self.inbox.process(text.as_str()) {
                        return Ok(event);
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Err(SignalingError::StreamExhausted),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(SignalingError::from(e)),
            }
        }
    }
}
