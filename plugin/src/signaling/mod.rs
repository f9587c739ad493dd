//! Our own websocket signaller for matchbox_socket: it speaks the same protocol as matchbox's,
//! and also
//! - drops malformed signals from other peers (counted) before matchbox's handshake `unwrap`s them
//!   (with [`huddle_protocol::signal`], the check the server makes too);
//! - tells the plugin what only the signaling sees: our id, and for each peer whether we call it
//!   (`NewPeer`: it joined after us) or it calls us (its offer: it joined before us);
//! - reconnects when its websocket drops, resuming our place in the room with the server's
//!   resume token ([`huddle_protocol::reconnect`]), while matchbox's links carry on: matchbox
//!   never builds a second signaller, so the one it has outlives its connections.

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(not(target_arch = "wasm32"))]
use native::Connection;
#[cfg(target_arch = "wasm32")]
use wasm::Connection;

use crate::messages::JoinRefusal;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::{FutureExt, StreamExt};
use huddle_protocol::reconnect::{self, Backoff, ReconnectSettings, ServerNotice};
use huddle_protocol::signal::{self, Signal};
use matchbox_socket::async_trait::async_trait;
use matchbox_socket::{
    PeerEvent, PeerId, PeerRequest, PeerSignal, SignalingError, Signaller, SignallerBuilder,
};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the signaller saw, in the order it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The server assigned our id.
    IdAssigned(PeerId),
    /// The server introduced this peer to us: we call it, it joined after us.
    Calls(PeerId),
    /// This peer sent us an offer: it calls us, it joined before us.
    CalledBy(PeerId),
    /// The server said this peer left.
    Left(PeerId),
    /// The server refused our websocket request (natively: its HTTP status and reason).
    Refused(crate::messages::JoinRefusal),
    /// The connection to the server dropped; we are reconnecting to resume our place. The links
    /// to the peers go on meanwhile.
    Reconnecting,
    /// We are back on the server, in our place.
    Reconnected,
    /// The connection to the server ended for good (it went away and we could not resume, or
    /// it gave no resume token): the links to the peers go on, nobody new can be introduced.
    Lost {
        /// Why, when there is more to say than that the connection ended.
        reason: Option<String>,
    },
    /// The server closed our connection for a policy (websocket close code 1008: kicked, idle,
    /// not reading, flooding): it took us out of the room and told the others we left.
    Removed {
        /// The server's reason, e.g. `"kicked by <host>"`.
        reason: String,
    },
    /// A message from the server was dropped.
    Dropped {
        /// The peer that sent it, for a signal.
        from: Option<PeerId>,
        /// Why.
        reason: String,
    },
}

/// Builds [`matchbox_socket::Signaller`]s that report to an [`Observed`] channel.
#[derive(Debug)]
pub struct HuddleSignallerBuilder {
    observer: UnboundedSender<Observed>,
    /// Extra roots for `wss://` (native; see `HuddleConfig::root_certificates`).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    roots: Vec<Vec<u8>>,
    /// huddle's own requests to the server (a kick), taken by the signaller it builds.
    requests: Mutex<Option<UnboundedReceiver<String>>>,
    /// When and how long to retry the server after the connection dropped.
    reconnect: ReconnectSettings,
}

/// Sends huddle's own requests (beyond matchbox's) to the signaling server.
#[derive(Debug, Clone)]
pub struct ServerRequests(UnboundedSender<String>);

impl ServerRequests {
    /// Asks the server to remove `peer` from the room and ban its address for `ban` (only the
    /// room's host is obeyed; huddle_server's extension, stock servers ignore it).
    pub fn kick(&self, peer: PeerId, ban: Duration) {
        let request = serde_json::json!({ "Kick": { "peer": peer, "ban_secs": ban.as_secs() } });
        let _ = self.0.unbounded_send(request.to_string());
    }

    /// As the room's host, names `heir` to host after us (huddle_server's extension: it makes
    /// the heir the room's host when we leave; stock servers ignore it).
    pub fn name_heir(&self, heir: PeerId) {
        let request = serde_json::json!({ "Heir": { "peer": heir } });
        let _ = self.0.unbounded_send(request.to_string());
    }
}

impl HuddleSignallerBuilder {
    /// A builder trusting `roots` (DER) besides the web PKI, reconnecting as `reconnect` says;
    /// the receiving end of what its signallers observe, and the sender of huddle's own requests
    /// to the server.
    pub fn new(
        roots: Vec<Vec<u8>>,
        reconnect: ReconnectSettings,
    ) -> (Arc<Self>, UnboundedReceiver<Observed>, ServerRequests) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (requests_tx, requests) = futures::channel::mpsc::unbounded();
        let builder = Self {
            observer: tx,
            roots,
            requests: Mutex::new(Some(requests)),
            reconnect,
        };
        (Arc::new(builder), rx, ServerRequests(requests_tx))
    }

    /// The requests for the signaller being built (the first one takes them; matchbox builds one
    /// per socket, a later one would get a channel that stays empty).
    fn take_requests(&self) -> UnboundedReceiver<String> {
        self.requests
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .unwrap_or_else(|| futures::channel::mpsc::unbounded().1)
    }
}

/// How long to wait between attempts to reach the signaling server.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The most peers we remember calling (a room larger than this is not one we play in).
const MAX_CALLED: usize = 4096;

/// The websocket close code a server uses when it removes a peer for a policy.
const CLOSE_POLICY: u16 = 1008;

/// Requests held while the connection is away (beyond this, the oldest are dropped and counted).
const MAX_HELD: usize = 256;

/// What one connection read: a text message, or its end (the server's close code and reason, if
/// it sent a close frame).
pub(super) enum Incoming {
    Text(String),
    Closed(Option<(u16, String)>),
}

/// Why a connection could not be opened.
pub(super) enum Failure {
    /// The server answered with a refusal: final.
    Refused(JoinRefusal),
    /// The server was not reached (or the handshake failed): try again.
    Failed(SignalingError),
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl SignallerBuilder for HuddleSignallerBuilder {
    async fn new_signaller(
        &self,
        mut attempts: Option<u16>,
        room_url: String,
    ) -> Result<Box<dyn Signaller>, SignalingError> {
        let first_url = if self.reconnect.enabled() {
            reconnect::resumable_url(&room_url)
        } else {
            room_url.clone()
        };
        loop {
            match Connection::open(&first_url, &self.roots).await {
                Ok(conn) => {
                    return Ok(Box::new(HuddleSignaller {
                        conn: Some(conn),
                        room_url,
                        roots: self.roots.clone(),
                        inbox: Inbox::new(self.observer.clone()),
                        requests: self.take_requests(),
                        settings: self.reconnect,
                        backoff: None,
                        started: web_time::Instant::now(),
                        held: VecDeque::new(),
                    }))
                }
                Err(Failure::Refused(refusal)) => {
                    let why = refusal.to_string();
                    let _ = self.observer.unbounded_send(Observed::Refused(refusal));
                    return Err(SignalingError::UserImplementationError(why));
                }
                Err(Failure::Failed(e)) => {
                    next_attempt(&mut attempts, e)?;
                    futures_timer::Delay::new(RETRY_DELAY).await;
                }
            }
        }
    }
}

/// The signaller matchbox drives: one websocket at a time, reconnected (resuming our place) when
/// it drops. Its state lives here, not in the futures matchbox polls, because matchbox drops a
/// pending `next_message` whenever it has a request to send.
struct HuddleSignaller {
    /// The live connection; `None` while reconnecting.
    conn: Option<Connection>,
    room_url: String,
    roots: Vec<Vec<u8>>,
    inbox: Inbox,
    requests: UnboundedReceiver<String>,
    settings: ReconnectSettings,
    /// The retry schedule while reconnecting.
    backoff: Option<Backoff>,
    started: web_time::Instant,
    /// Requests made while reconnecting, sent once back.
    held: VecDeque<String>,
}

impl HuddleSignaller {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The connection dropped (not by the server's decision about us): reconnect if we can,
    /// else report it lost. Whether we reconnect.
    fn dropped(&mut self, close: Option<(u16, String)>) -> bool {
        if let Some(mut conn) = self.conn.take() {
            conn.close_now();
        }
        let removed = matches!(close, Some((CLOSE_POLICY, _)));
        if removed || !self.settings.enabled() || self.inbox.resume.is_none() {
            self.inbox.closed(
                close
                    .as_ref()
                    .map(|(code, reason)| (*code, reason.as_str())),
            );
            return false;
        }
        if self.backoff.is_none() {
            self.backoff = Some(Backoff::new(self.settings, self.now(), fastrand::u64(..)));
            self.inbox.observe(Observed::Reconnecting);
        }
        true
    }

    /// Keeps `text` to send once reconnected.
    fn hold(&mut self, text: String) {
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
            self.inbox.observe(Observed::Dropped {
                from: None,
                reason: "a request made while reconnecting (too many held)".into(),
            });
        }
        self.held.push_back(text);
    }

    /// Tries the server on the backoff's schedule until we are back in our place (`Ok`) or give
    /// up (`Err`, reported as lost).
    async fn reconnect(&mut self) -> Result<(), SignalingError> {
        loop {
            let (Some(backoff), Some(token)) = (self.backoff.as_ref(), self.inbox.resume.as_ref())
            else {
                return Err(SignalingError::StreamExhausted);
            };
            let now = self.now();
            if backoff.due() > now {
                futures_timer::Delay::new(backoff.due() - now).await;
                continue;
            }
            let url = reconnect::resume_url(&self.room_url, token);
            let failed = match Connection::open(&url, &self.roots).await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.backoff = None;
                    self.inbox.resuming = true;
                    self.inbox.observe(Observed::Reconnected);
                    return Ok(());
                }
                Err(Failure::Refused(refusal)) => Err(refusal.to_string()),
                Err(Failure::Failed(e)) => Ok(e),
            };
            let now = self.now();
            let gave_up = match (failed, self.backoff.as_mut()) {
                (Ok(_), Some(backoff)) => backoff.failed(now).err().map(|g| g.to_string()),
                (Ok(e), None) => Some(e.to_string()),
                (Err(refusal), _) => Some(format!("the server refused our place: {refusal}")),
            };
            if let Some(reason) = gave_up {
                self.backoff = None;
                self.inbox.observe(Observed::Lost {
                    reason: Some(reason),
                });
                return Err(SignalingError::StreamExhausted);
            }
        }
    }

    /// Sends what was held while away; a failure drops the connection again.
    async fn send_held(&mut self) {
        while let Some(text) = self.held.pop_front() {
            let Some(conn) = self.conn.as_mut() else {
                self.held.push_front(text);
                return;
            };
            if conn.send(text.clone()).await.is_err() {
                self.held.push_front(text);
                self.dropped(None);
                return;
            }
        }
    }
}

impl Drop for HuddleSignaller {
    fn drop(&mut self) {
        // matchbox drops its signaller when the socket closes: say goodbye, so the server does
        // not hold our place.
        if let Some(conn) = self.conn.as_mut() {
            conn.close_now();
        }
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl Signaller for HuddleSignaller {
    async fn send(&mut self, request: PeerRequest) -> Result<(), SignalingError> {
        // A keep-alive is for the connection it goes on: not worth keeping for the next one.
        let keep = !matches!(request, PeerRequest::KeepAlive);
        let text = serde_json::to_string(&request)
            .map_err(|e| SignalingError::UserImplementationError(e.to_string()))?;
        let Some(conn) = self.conn.as_mut() else {
            if keep {
                self.hold(text);
            }
            return Ok(());
        };
        if let Err(e) = conn.send(text.clone()).await {
            if !self.dropped(None) {
                return Err(e);
            }
            if keep {
                self.hold(text);
            }
        }
        Ok(())
    }

    async fn next_message(&mut self) -> Result<PeerEvent, SignalingError> {
        loop {
            if self.conn.is_none() {
                self.reconnect().await?;
                self.send_held().await;
                continue;
            }
            let Self { conn, requests, .. } = self;
            let Some(conn) = conn.as_mut() else {
                continue;
            };
            // huddle's own requests go out while we wait for the server.
            let incoming = futures::select_biased! {
                request = requests.next() => {
                    if let Some(text) = request {
                        if conn.send(text.clone()).await.is_err() {
                            if !self.dropped(None) {
                                return Err(SignalingError::StreamExhausted);
                            }
                            self.hold(text);
                        }
                    }
                    continue;
                }
                incoming = conn.next().fuse() => incoming,
            };
            match incoming {
                Incoming::Text(text) => {
                    if let Some(event) = self.inbox.process(&text) {
                        return Ok(event);
                    }
                    if self.inbox.id_conflict {
                        // The server gave us another id: it did not resume our place.
                        self.conn = None;
                        self.inbox.observe(Observed::Lost {
                            reason: Some("the server did not resume our place".into()),
                        });
                        return Err(SignalingError::StreamExhausted);
                    }
                }
                Incoming::Closed(close) => {
                    if !self.dropped(close) {
                        return Err(SignalingError::StreamExhausted);
                    }
                }
            }
        }
    }
}

/// What one signaller connection has read from the server so far.
struct Inbox {
    observer: UnboundedSender<Observed>,
    /// Our id, once assigned: matchbox `expect`s that it is sent once, so a second is dropped.
    id: Option<PeerId>,
    /// Peers the server introduced to us (we call them: they joined after us).
    called: HashSet<PeerId>,
    /// The server's token to resume our place with (the latest it sent).
    resume: Option<String>,
    /// We reconnected and wait for the server to give us our id back.
    resuming: bool,
    /// The server assigned us an id other than ours on a reconnect.
    id_conflict: bool,
}

impl Inbox {
    fn new(observer: UnboundedSender<Observed>) -> Self {
        Self {
            observer,
            id: None,
            called: HashSet::new(),
            resume: None,
            resuming: false,
            id_conflict: false,
        }
    }

    fn observe(&self, seen: Observed) {
        let _ = self.observer.unbounded_send(seen);
    }

    fn drop_event(&self, from: Option<PeerId>, reason: String) -> Option<PeerEvent> {
        let _ = self
            .observer
            .unbounded_send(Observed::Dropped { from, reason });
        None
    }

    /// The connection ended, with the server's close code and reason if it sent one: a policy
    /// close is reported as [`Observed::Removed`] (a decision about us), anything else as
    /// [`Observed::Lost`].
    fn closed(&self, close: Option<(u16, &str)>) {
        let seen = match close {
            Some((CLOSE_POLICY, reason)) => Observed::Removed {
                reason: reason.to_string(),
            },
            _ => Observed::Lost { reason: None },
        };
        let _ = self.observer.unbounded_send(seen);
    }

    /// Reads one text message from the server: `Some(event)` to hand to matchbox, `None` if
    /// dropped.
    fn process(&mut self, text: &str) -> Option<PeerEvent> {
        if let Some(ServerNotice::Resume(token)) = ServerNotice::parse(text) {
            self.resume = Some(token);
            return None;
        }
        match serde_json::from_str::<PeerEvent>(text) {
            // Our id again, on a resumed connection: matchbox has it already.
            Ok(PeerEvent::IdAssigned(id)) if self.resuming && self.id == Some(id) => {
                self.resuming = false;
                return None;
            }
            Ok(PeerEvent::IdAssigned(id)) => {
                if let Some(first) = self.id {
                    // On a resumed connection another id means our place is gone.
                    self.id_conflict = std::mem::take(&mut self.resuming);
                    return self.drop_event(None, format!("a second id ({id}) after {first}"));
                }
                self.id = Some(id);
            }
            Ok(PeerEvent::NewPeer(peer)) if self.called.len() < MAX_CALLED => {
                self.called.insert(peer);
            }
            Ok(PeerEvent::PeerLeft(peer)) => {
                self.called.remove(&peer);
            }
            // An offer from a peer we call claims it joined before us: a lie (or a stale
            // handshake); matchbox would start a second connection to it.
            Ok(PeerEvent::Signal {
                sender,
                data: PeerSignal::Offer(_),
            }) if self.called.contains(&sender) => {
                return self.drop_event(
                    Some(sender),
                    "an offer from a peer that joined after us".into(),
                );
            }
            _ => {}
        }
        process(text, &self.observer)
    }
}

/// Reads one text message from the server: `Some(event)` to hand to matchbox, `None` if dropped.
fn process(text: &str, observer: &UnboundedSender<Observed>) -> Option<PeerEvent> {
    let event: PeerEvent = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            let _ = observer.unbounded_send(Observed::Dropped {
                from: None,
                reason: format!("not a matchbox event: {e}"),
            });
            return None;
        }
    };
    let seen = match &event {
        PeerEvent::IdAssigned(id) => Observed::IdAssigned(*id),
        PeerEvent::NewPeer(id) => Observed::Calls(*id),
        PeerEvent::PeerLeft(id) => Observed::Left(*id),
        PeerEvent::Signal { sender, data } => {
            let checked = match data {
                PeerSignal::Offer(sdp) => signal::check(&Signal::Offer(sdp.into())),
                PeerSignal::Answer(sdp) => signal::check(&Signal::Answer(sdp.into())),
                PeerSignal::IceCandidate(c) => signal::check(&Signal::IceCandidate(c.into())),
            };
            if let Err(bad) = checked {
                let _ = observer.unbounded_send(Observed::Dropped {
                    from: Some(*sender),
                    reason: bad.to_string(),
                });
                return None;
            }
            match data {
                PeerSignal::Offer(_) => Observed::CalledBy(*sender),
                _ => return Some(event),
            }
        }
    };
    let _ = observer.unbounded_send(seen);
    Some(event)
}

/// Counts down connection attempts; `Err` when none remain.
fn next_attempt(attempts: &mut Option<u16>, error: SignalingError) -> Result<(), SignalingError> {
    match attempts {
        Some(n) if *n <= 1 => Err(SignalingError::NegotiationFailed(Box::new(error))),
        Some(n) => {
            *n -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observes_roles_and_drops_bad_signals() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let a = PeerId(uuid::Uuid::from_u128(1));
        let id = format!(r#"{{"IdAssigned":"{a}"}}"#);
        assert!(process(&id, &tx).is_some());
        assert_eq!(rx.try_recv().ok(), Some(Observed::IdAssigned(a)));
        let bad = format!(r#"{{"Signal":{{"sender":"{a}","data":{{"Offer":"garbage"}}}}}}"#);
        assert!(process(&bad, &tx).is_none());
        assert!(matches!(
            rx.try_recv().ok(),
            Some(Observed::Dropped { from: Some(p), .. }) if p == a
        ));
        assert!(process("not json", &tx).is_none());
        assert!(matches!(
            rx.try_recv().ok(),
            Some(Observed::Dropped { from: None, .. })
        ));
        let new = format!(r#"{{"NewPeer":"{a}"}}"#);
        assert!(process(&new, &tx).is_some());
        assert_eq!(rx.try_recv().ok(), Some(Observed::Calls(a)));
    }

    #[test]
    fn a_policy_close_is_a_removal() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let inbox = Inbox::new(tx);
        inbox.closed(Some((1001, "going away")));
        assert_eq!(rx.try_recv().ok(), Some(Observed::Lost { reason: None }));
        inbox.closed(None);
        assert_eq!(rx.try_recv().ok(), Some(Observed::Lost { reason: None }));
        inbox.closed(Some((1008, "kicked by someone")));
        assert_eq!(
            rx.try_recv().ok(),
            Some(Observed::Removed {
                reason: "kicked by someone".into()
            })
        );
    }

    #[test]
    fn a_second_id_is_dropped() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let mut inbox = Inbox::new(tx);
        let (a, b) = (
            PeerId(uuid::Uuid::from_u128(1)),
            PeerId(uuid::Uuid::from_u128(2)),
        );
        assert!(inbox
            .process(&format!(r#"{{"IdAssigned":"{a}"}}"#))
            .is_some());
        assert_eq!(rx.try_recv().ok(), Some(Observed::IdAssigned(a)));
        // On the first connection a second id, even our own, is dropped and counted.
        for second in [a, b] {
            assert!(inbox
                .process(&format!(r#"{{"IdAssigned":"{second}"}}"#))
                .is_none());
            assert!(matches!(
                rx.try_recv().ok(),
                Some(Observed::Dropped { from: None, .. })
            ));
            assert!(!inbox.id_conflict);
        }
        // Our own id again on a resumed connection: nothing for matchbox, nothing wrong.
        inbox.resuming = true;
        assert!(inbox
            .process(&format!(r#"{{"IdAssigned":"{a}"}}"#))
            .is_none());
        assert!(rx.try_recv().is_err() && !inbox.id_conflict && !inbox.resuming);
        // Another id on a resumed connection: our place was not resumed.
        inbox.resuming = true;
        assert!(inbox
            .process(&format!(r#"{{"IdAssigned":"{b}"}}"#))
            .is_none());
        assert!(matches!(
            rx.try_recv().ok(),
            Some(Observed::Dropped { from: None, .. })
        ));
        assert!(inbox.id_conflict, "another id: our place was not resumed");
    }

    /// The server's resume token is kept (the latest one), never handed to matchbox.
    #[test]
    fn the_resume_token_is_kept() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let mut inbox = Inbox::new(tx);
        assert!(inbox.process(r#"{"Resume":"first"}"#).is_none());
        assert!(inbox.process(r#"{"Resume":"second"}"#).is_none());
        assert_eq!(inbox.resume.as_deref(), Some("second"));
        assert!(
            rx.try_recv().is_err(),
            "nothing to observe, nothing dropped"
        );
    }

    #[test]
    fn an_offer_from_a_peer_we_call_is_dropped() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let mut inbox = Inbox::new(tx);
        let later = PeerId(uuid::Uuid::from_u128(2));
        let offer = format!(r#"{{"Signal":{{"sender":"{later}","data":{{"Offer":"v=0"}}}}}}"#);
        assert!(inbox
            .process(&format!(r#"{{"NewPeer":"{later}"}}"#))
            .is_some());
        assert_eq!(rx.try_recv().ok(), Some(Observed::Calls(later)));
        assert!(inbox.process(&offer).is_none());
        assert!(matches!(
            rx.try_recv().ok(),
            Some(Observed::Dropped { from: Some(p), reason }) if p == later && reason.contains("after us")
        ));
        // Once it left, its id is nobody we call: its offer gets the usual checks.
        assert!(inbox
            .process(&format!(r#"{{"PeerLeft":"{later}"}}"#))
            .is_some());
        assert_eq!(rx.try_recv().ok(), Some(Observed::Left(later)));
        assert!(inbox.process(&offer).is_none());
        assert!(matches!(
            rx.try_recv().ok(),
            Some(Observed::Dropped { reason, .. }) if !reason.contains("after us")
        ));
    }
}
