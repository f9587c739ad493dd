//! The websocket connection over ws_stream_wasm (the client matchbox itself uses in browsers).

use super::{Failure, Incoming};
use crate::messages::JoinRefusal;
use futures::{FutureExt, SinkExt, StreamExt};
use matchbox_socket::SignalingError;
use pharos::{Events, Filter, Observable, ObserveConfig};
use std::time::Duration;
use ws_stream_wasm::{WsEvent, WsMessage, WsMeta, WsStream};

/// How long to wait for the close event (its code and reason) once the stream ended.
const CLOSE_EVENT_WAIT: Duration = Duration::from_millis(200);

/// One websocket connection to the signaling server.
pub(super) struct Connection {
    /// Kept with the stream (it owns the socket's event observers).
    meta: WsMeta,
    ws: WsStream,
    /// The socket's close event, once it comes.
    closed: Option<Events<WsEvent>>,
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

impl Connection {
    /// Connects to `url` (the browser decides which certificates it trusts).
    pub(super) async fn open(url: &str, _roots: &[Vec<u8>]) -> Result<Self, Failure> {
        match WsMeta::connect(url, None).await {
            Ok((mut meta, ws)) => {
                let only_close = ObserveConfig::from(Filter::Pointer(WsEvent::is_closed));
                let closed = meta.observe(only_close).await.ok();
                Ok(Self { meta, ws, closed })
            }
            // A browser hides the server's answer to a refused websocket: ask the server whether
            // it would admit us, and why not. A refusal is final.
            Err(e) => match refusal(url).await {
                Some(refusal) => Err(Failure::Refused(refusal)),
                None => Err(Failure::Failed(SignalingError::from(e))),
            },
        }
    }

    /// Sends a text message.
    pub(super) async fn send(&mut self, text: String) -> Result<(), SignalingError> {
        self.ws
            .send(WsMessage::Text(text))
            .await
            .map_err(SignalingError::from)
    }

    /// The next text message, or how the connection ended.
    pub(super) async fn next(&mut self) -> Incoming {
        loop {
            match self.ws.next().await {
                Some(WsMessage::Text(text)) => return Incoming::Text(text),
                Some(WsMessage::Binary(_)) => continue,
                None => return Incoming::Closed(self.close_event().await),
            }
        }
    }

    /// After the stream ended: the server's close code and reason, if its close event comes.
    async fn close_event(&mut self) -> Option<(u16, String)> {
        let events = self.closed.as_mut()?;
        let event = futures::select! {
            event = events.next().fuse() => event,
            () = futures_timer::Delay::new(CLOSE_EVENT_WAIT).fuse() => None,
        };
        match event {
            Some(WsEvent::Closed(close)) => Some((close.code, close.reason)),
            _ => None,
        }
    }

    /// Starts a clean close: the server then knows we left, rather than dropped.
    pub(super) fn close_now(&mut self) {
        let _ = self.meta.close().now_or_never();
    }
}
