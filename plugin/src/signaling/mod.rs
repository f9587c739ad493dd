//! Our own websocket signaller for matchbox_socket: it speaks the same protocol as matchbox's,
//! and also
//! - drops malformed signals from other peers (counted) before matchbox's handshake `unwrap`s them
//!   (with [`huddle_protocol::signal`], the check the server makes too);
//! - tells the plugin what only the signaling sees: our id, and for each peer whether we call it
//!   (`NewPeer`: it joined after us) or it calls us (its offer: it joined before us).

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(target_arch = "wasm32")]
mod wasm;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use huddle_protocol::signal::{self, Signal};
use matchbox_socket::{PeerEvent, PeerId, PeerSignal, SignalingError};
use std::collections::HashSet;
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
    /// The connection to the server ended otherwise (the server went away, the network
    /// dropped): the links to the peers go on, nobody new can be introduced.
    Lost,
    /// The server closed our connection for a policy (websocket close code 1008: kicked, idle,
    /// not reading, flooding): it took us out of the room and told the others we left.
    Removed {
        /// The server's reason, e.g. "kicked by <host>".
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
}

impl HuddleSignallerBuilder {
    /// A builder trusting `roots` (DER) besides the web PKI, the receiving end of what its
    /// signallers observe, and the sender of huddle's own requests to the server.
    pub fn new(roots: Vec<Vec<u8>>) -> (Arc<Self>, UnboundedReceiver<Observed>, ServerRequests) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (requests_tx, requests) = futures::channel::mpsc::unbounded();
        let builder = Self {
            observer: tx,
            roots,
            requests: Mutex::new(Some(requests)),
        };
        (Arc::new(builder), rx, ServerRequests(requests_tx))
    }

    /// The requests for the signaller being built (the first one takes them; a later one, after
    /// a reconnect, gets a channel that stays empty).
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

/// What one signaller connection has read from the server so far.
struct Inbox {
    observer: UnboundedSender<Observed>,
    /// Our id, once assigned: matchbox `expect`s that it is sent once, so a second is dropped.
    id: Option<PeerId>,
    /// Peers the server introduced to us (we call them: they joined after us).
    called: HashSet<PeerId>,
}

impl Inbox {
    fn new(observer: UnboundedSender<Observed>) -> Self {
        Self {
            observer,
            id: None,
            called: HashSet::new(),
        }
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
            _ => Observed::Lost,
        };
        let _ = self.observer.unbounded_send(seen);
    }

    /// Reads one text message from the server: `Some(event)` to hand to matchbox, `None` if
    /// dropped.
    fn process(&mut self, text: &str) -> Option<PeerEvent> {
        match serde_json::from_str::<PeerEvent>(text) {
            Ok(PeerEvent::IdAssigned(id)) => {
                if let Some(first) = self.id {
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
        assert_eq!(rx.try_recv().ok(), Some(Observed::Lost));
        inbox.closed(None);
        assert_eq!(rx.try_recv().ok(), Some(Observed::Lost));
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
        assert!(inbox
            .process(&format!(r#"{{"IdAssigned":"{b}"}}"#))
            .is_none());
        assert!(matches!(
            rx.try_recv().ok(),
            Some(Observed::Dropped { from: None, .. })
        ));
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
