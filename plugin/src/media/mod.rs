//! Media next to the game's data (feature `media`, native): a second, media-only peer connection
//! per peer, negotiated peer to peer over the control channel by
//! [`huddle_protocol::media::MediaPeer`] (the data link's caller offers; the signaling server is
//! not involved, matchbox's connection is untouched). A peer without media answers "unsupported"
//! and the game goes on; a media failure never disconnects the game.
//!
//! This is the connection layer: where media with each peer stands ([`MediaStates`],
//! [`MediaStateChanged`]). Sources, codecs and tracks build on it.

mod connection;

pub use huddle_protocol::media::MediaState;

use crate::messages::{MediaSignalIn, PeerJoined, PeerLeft, Role};
use crate::schedule::HuddleSystems;
use crate::session::HuddleSession;
use crate::HuddleSettings;
use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use connection::{Command, MediaConnection, Report};
use huddle_protocol::media::{MediaAction, MediaPeer, MediaSignal};
use matchbox_socket::PeerId;
use webrtc::peer_connection::RTCIceServer;

/// Where media with each peer stands (peers in the lobby only).
#[derive(Resource, Debug, Default, Clone, PartialEq, Eq)]
pub struct MediaStates(pub HashMap<PeerId, MediaState>);

/// Media with a peer changed state.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaStateChanged {
    /// The peer.
    pub peer: PeerId,
    /// Its media state now.
    pub state: MediaState,
}

struct Peer {
    negotiation: MediaPeer,
    connection: Option<MediaConnection>,
}

#[derive(Resource, Default)]
struct MediaPeers(HashMap<PeerId, Peer>);

/// Adds media to the app (called by `HuddlePlugin` with the feature on).
pub(crate) fn build(app: &mut App) {
    app.init_resource::<MediaStates>()
        .init_resource::<MediaPeers>()
        .add_message::<MediaStateChanged>()
        .add_message::<MediaSignalIn>()
        .add_systems(PreUpdate, drive.after(HuddleSystems::Receive));
}

/// What the media side works with this frame.
struct Frame<'a> {
    ice: &'a RTCIceServer,
    session: &'a mut HuddleSession,
    states: &'a mut MediaStates,
    changed: Vec<MediaStateChanged>,
}

/// `PreUpdate`: follows the lobby, hands signals and connection reports to each peer's
/// negotiation, and carries out what it says.
#[allow(clippy::too_many_arguments)]
fn drive(
    session: Option<ResMut<HuddleSession>>,
    settings: Res<HuddleSettings>,
    mut peers: ResMut<MediaPeers>,
    mut states: ResMut<MediaStates>,
    mut joined: MessageReader<PeerJoined>,
    mut left: MessageReader<PeerLeft>,
    mut signals: MessageReader<MediaSignalIn>,
    mut changed: MessageWriter<MediaStateChanged>,
) {
    let Some(mut session) = session.filter(|s| s.endpoint().config().media) else {
        peers.0.clear();
        states.0.clear();
        joined.clear();
        left.clear();
        signals.clear();
        return;
    };
    let ice = match settings.0.matchbox_ice() {
        Ok(ice) => RTCIceServer {
            urls: ice.urls,
            username: ice.username.unwrap_or_default(),
            credential: ice.credential.unwrap_or_default(),
        },
        Err(_) => RTCIceServer::default(),
    };
    let now = session.now();
    let mut frame = Frame {
        ice: &ice,
        session: &mut session,
        states: &mut states,
        changed: Vec::new(),
    };
    for j in joined.read() {
        let mut negotiation = MediaPeer::new(j.role == Role::Caller);
        let actions = negotiation.start(now);
        let peer = peers.0.entry(j.peer).insert(Peer {
            negotiation,
            connection: None,
        });
        frame.apply(j.peer, peer.into_mut(), actions);
    }
    for l in left.read() {
        peers.0.remove(&l.peer);
        frame.states.0.remove(&l.peer);
    }
    for s in signals.read() {
        if let Some(peer) = peers.0.get_mut(&s.from) {
            let actions = peer.negotiation.received(s.signal.clone(), now);
            frame.apply(s.from, peer, actions);
        }
    }
    for (id, peer) in peers.0.iter_mut() {
        let reports = peer.connection.as_mut().map(MediaConnection::reports);
        for report in reports.into_iter().flatten() {
            let actions = match report {
                Report::Offer { round, sdp } => peer.negotiation.local_offer(round, sdp),
                Report::Answer { round, sdp } => peer.negotiation.local_answer(round, sdp),
                Report::Candidate(candidate) => {
                    let session = peer.connection.as_ref().map_or(0, |c| c.session);
                    vec![MediaAction::Send(MediaSignal::Candidate {
                        session,
                        candidate,
                    })]
                }
                Report::Connected => peer.negotiation.connected(),
                Report::Failed(why) => {
                    warn!("huddle: media with {id}: {why}");
                    peer.negotiation.failed(now)
                }
            };
            frame.apply(*id, peer, actions);
        }
        let actions = peer.negotiation.tick(now);
        frame.apply(*id, peer, actions);
    }
    changed.write_batch(frame.changed);
}

impl Frame<'_> {
    fn apply(&mut self, id: PeerId, peer: &mut Peer, actions: Vec<MediaAction>) {
        for action in actions {
            let command = match action {
                MediaAction::Open { session } => {
                    let bind = vec!["0.0.0.0:0".to_string(), "[::]:0".to_string()];
                    peer.connection = Some(MediaConnection::open(session, self.ice.clone(), bind));
                    continue;
                }
                MediaAction::Close => {
                    peer.connection = None;
                    continue;
                }
                MediaAction::Send(signal) => {
                    self.session.send_media(id, signal);
                    continue;
                }
                MediaAction::State(state) => {
                    self.states.0.insert(id, state);
                    self.changed.push(MediaStateChanged { peer: id, state });
                    continue;
                }
                MediaAction::CreateOffer { round } => Command::CreateOffer { round },
                MediaAction::AcceptOffer { round, sdp } => Command::AcceptOffer { round, sdp },
                MediaAction::AcceptAnswer { sdp } => Command::AcceptAnswer { sdp },
                MediaAction::AddCandidate { candidate } => Command::AddCandidate { candidate },
            };
            if let Some(connection) = &peer.connection {
                connection.command(command);
            }
        }
    }
}
