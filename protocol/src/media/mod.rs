//! Media negotiation between two peers (feature `media` of the plugin drives it): who offers,
//! the negotiation's states, and what to do with every media signal, as a plain state machine.
//!
//! Media runs on a second, media-only peer connection per remote peer, negotiated peer to peer
//! with [`MediaSignal`]s on the control channel (the signaling server is not involved). One
//! deterministic offerer per pair, so there is never glare: the *caller* of the data link (the
//! earlier peer). The other side asks for a new offer ([`MediaSignal::Renegotiate`]) when its
//! tracks change.
//!
//! Numbers: a *session* is one media peer connection (a new one after a failure); a *round* is
//! one offer/answer exchange within it. The offerer owns both counters; the answerer follows the
//! offerer's session upward and drops anything older. Every signal that does not fit the state
//! (an answer nobody asked for, an offer to the offerer, a stale session, a malformed SDP or
//! candidate, more early candidates than [`MAX_EARLY_CANDIDATES`]) is dropped and counted, never
//! acted on. Nothing here does arithmetic on a peer's numbers.
//!
//! The driver (the plugin's media shell, or a test) carries out the [`MediaAction`]s: it creates
//! offers and answers on its peer connection and reports them back ([`MediaPeer::local_offer`],
//! [`MediaPeer::local_answer`]), applies remote descriptions and candidates, sends signals, and
//! reports the connection's fate ([`MediaPeer::connected`], [`MediaPeer::failed`]).

pub mod bitrate;
pub mod forward;
pub mod jitter;
pub mod lipsync;
pub mod round_trip;
pub mod sdp;
pub mod star;
#[cfg(test)]
mod tests;

use crate::signal;
use crate::PeerId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Candidates held while the remote description is not applied yet, at most.
pub const MAX_EARLY_CANDIDATES: usize = 32;
/// How long a negotiation may take before the session counts as failed.
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions tried after a failure before media with the peer is given up ([`MediaState::Failed`]).
pub const MAX_SESSIONS: u32 = 3;

/// Media signalling on the control channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaSignal {
    /// The offerer's SDP offer for round `round` of session `session`.
    Offer {
        /// The media peer connection.
        session: u32,
        /// The exchange within it.
        round: u32,
        /// The offer.
        sdp: String,
    },
    /// The answer to round `round` of session `session`.
    Answer {
        /// The media peer connection.
        session: u32,
        /// The exchange answered.
        round: u32,
        /// The answer.
        sdp: String,
    },
    /// An ICE candidate (`RTCIceCandidateInit` as JSON) for session `session`.
    Candidate {
        /// The media peer connection.
        session: u32,
        /// The candidate.
        candidate: String,
    },
    /// The answerer's tracks changed: it asks the offerer for a new offer.
    Renegotiate {
        /// The media peer connection.
        session: u32,
    },
    /// The sender has no media (built without it, or turned off): nothing to negotiate.
    Unsupported,
    /// What the sender sends now (a stopped camera ends the receiver's video track).
    Tracks(TrackSet),
    /// What the sender wants to receive from the receiver (bandwidth: a game that shows no
    /// video of this peer does not take it).
    Want(TrackSet),
    /// Star rooms, host to client: what of `origin`'s tracks the host forwards to the receiver
    /// now (its stream `origin` on this connection).
    Forwarded {
        /// The client whose tracks they are.
        origin: PeerId,
        /// What comes.
        tracks: TrackSet,
    },
    /// Star rooms, client to host: what the sender wants of `origin`'s tracks.
    WantOf {
        /// The client whose tracks they are.
        origin: PeerId,
        /// What the sender wants.
        tracks: TrackSet,
    },
}

/// The two kinds of media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MediaKind {
    /// Voice (Opus).
    Audio,
    /// Camera (VP8).
    Video,
}

/// Audio and video, each on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TrackSet {
    /// Audio is on.
    pub audio: bool,
    /// Video is on.
    pub video: bool,
}

impl TrackSet {
    /// Both on.
    pub const ALL: Self = Self {
        audio: true,
        video: true,
    };

    /// Whether `kind` is on.
    pub fn has(self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
        }
    }

    /// This set with `kind` turned on or off.
    pub fn with(mut self, kind: MediaKind, on: bool) -> Self {
        match kind {
            MediaKind::Audio => self.audio = on,
            MediaKind::Video => self.video = on,
        }
        self
    }
}

/// Where media with one peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaState {
    /// Nothing started yet.
    Idle,
    /// Offer and answer are being exchanged, or ICE is connecting.
    Connecting,
    /// The media connection is up.
    Connected,
    /// Every session failed: no media with this peer (the game goes on).
    Failed,
    /// The peer has no media.
    Unsupported,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaAction {
    /// Open a fresh media peer connection for `session` (closing any older one).
    Open {
        /// The session.
        session: u32,
    },
    /// Create an offer for our tracks and report it with [`MediaPeer::local_offer`].
    CreateOffer {
        /// The round to report it for.
        round: u32,
    },
    /// Apply this remote offer, create an answer, report it with [`MediaPeer::local_answer`].
    AcceptOffer {
        /// The round to report the answer for.
        round: u32,
        /// The offer.
        sdp: String,
    },
    /// Apply this remote answer.
    AcceptAnswer {
        /// The answer.
        sdp: String,
    },
    /// Add this remote ICE candidate.
    AddCandidate {
        /// The candidate.
        candidate: String,
    },
    /// Send this signal to the peer.
    Send(MediaSignal),
    /// Close the media peer connection: nothing more with this peer.
    Close,
    /// The state changed to this.
    State(MediaState),
    /// The peer sends these tracks now (changed).
    RemoteTracks(TrackSet),
    /// The peer wants these of our tracks now (changed).
    RemoteWants(TrackSet),
    /// The host (we answer it) forwards these of `origin`'s tracks to us now.
    Forwarded {
        /// Whose tracks, as the host says (the driver checks it against the lobby).
        origin: PeerId,
        /// What comes.
        tracks: TrackSet,
    },
    /// The client (we offer to it) wants these of `origin`'s tracks.
    WantOf {
        /// Whose tracks, as the client says (the driver checks it against the lobby).
        origin: PeerId,
        /// What it wants.
        tracks: TrackSet,
    },
}

/// Media negotiation with one peer. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct MediaPeer {
    offerer: bool,
    state: MediaState,
    session: u32,
    round: u32,
    /// The round we offered and wait for the answer of.
    awaiting: Option<u32>,
    /// Tracks changed during a round: offer again once it is answered.
    again: bool,
    /// The remote description of this session is applied: candidates go straight in.
    remote_applied: bool,
    /// Candidates that came before the remote description, with their session.
    early: Vec<(u32, String)>,
    /// When the current negotiation started (for the timeout).
    since: Option<Duration>,
    /// Sessions opened so far.
    sessions: u32,
    /// What the peer says it sends.
    remote_tracks: TrackSet,
    /// Whether the peer said it yet.
    tracks_heard: bool,
    /// What the peer says it wants from us.
    remote_wants: TrackSet,
    dropped: u64,
}

impl MediaPeer {
    /// Media with a peer; `offerer` if we are the caller of the data link (the earlier peer).
    pub fn new(offerer: bool) -> Self {
        Self {
            offerer,
            state: MediaState::Idle,
            session: 0,
            round: 0,
            awaiting: None,
            again: false,
            remote_applied: false,
            early: Vec::new(),
            since: None,
            sessions: 0,
            remote_tracks: TrackSet::default(),
            tracks_heard: false,
            remote_wants: TrackSet::ALL,
            dropped: 0,
        }
    }

    /// What the peer says it sends.
    pub fn remote_tracks(&self) -> TrackSet {
        self.remote_tracks
    }

    /// Whether the peer said what it sends yet (until then [`Self::remote_tracks`] is a guess).
    pub fn tracks_heard(&self) -> bool {
        self.tracks_heard
    }

    /// What the peer wants of our tracks (all, until it says otherwise).
    pub fn remote_wants(&self) -> TrackSet {
        self.remote_wants
    }

    /// Where media with the peer stands.
    pub fn state(&self) -> MediaState {
        self.state
    }

    /// Whether we offer.
    pub fn is_offerer(&self) -> bool {
        self.offerer
    }

    /// The current session.
    pub fn session(&self) -> u32 {
        self.session
    }

    /// Signals dropped because they did not fit the state or did not check out.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Starts media with the peer at `now`: the offerer opens a session and offers; the answerer
    /// waits for the offer (and times out like the offerer).
    pub fn start(&mut self, now: Duration) -> Vec<MediaAction> {
        if self.state != MediaState::Idle {
            return Vec::new();
        }
        self.since = Some(now);
        let mut out = self.set_state(MediaState::Connecting);
        if self.offerer {
            out.extend(self.open_session());
        }
        out
    }

    /// Our tracks changed (a camera started, a microphone stopped): a new round.
    pub fn tracks_changed(&mut self, now: Duration) -> Vec<MediaAction> {
        match self.state {
            MediaState::Idle => self.start(now),
            MediaState::Failed | MediaState::Unsupported => Vec::new(),
            MediaState::Connecting | MediaState::Connected if !self.offerer => {
                vec![MediaAction::Send(MediaSignal::Renegotiate {
                    session: self.session,
                })]
            }
            _ => self.offer_again(now),
        }
    }

    /// The offer we created for `round`.
    pub fn local_offer(&mut self, round: u32, sdp: String) -> Vec<MediaAction> {
        if !self.offerer || round != self.round || self.awaiting != Some(round) {
            return Vec::new();
        }
        vec![MediaAction::Send(MediaSignal::Offer {
            session: self.session,
            round,
            sdp,
        })]
    }

    /// The answer we created for `round`.
    pub fn local_answer(&mut self, round: u32, sdp: String) -> Vec<MediaAction> {
        if self.offerer || round != self.round {
            return Vec::new();
        }
        vec![MediaAction::Send(MediaSignal::Answer {
            session: self.session,
            round,
            sdp,
        })]
    }

    /// The media connection came up.
    pub fn connected(&mut self) -> Vec<MediaAction> {
        if self.state != MediaState::Connecting {
            return Vec::new();
        }
        self.since = None;
        self.set_state(MediaState::Connected)
    }

    /// The media connection failed at `now` (ICE failed, the peer connection closed): the
    /// offerer tries a new session, up to [`MAX_SESSIONS`]; then media with the peer is over.
    pub fn failed(&mut self, now: Duration) -> Vec<MediaAction> {
        if matches!(self.state, MediaState::Failed | MediaState::Unsupported) {
            return Vec::new();
        }
        if !self.offerer {
            // The offerer sees the failure too and opens a new session; we wait for it.
            self.since = Some(now);
            return self.set_state(MediaState::Connecting);
        }
        if self.sessions >= MAX_SESSIONS {
            let mut out = vec![MediaAction::Close];
            out.extend(self.set_state(MediaState::Failed));
            return out;
        }
        self.since = Some(now);
        let mut out = self.set_state(MediaState::Connecting);
        out.extend(self.open_session());
        out
    }

    /// Time passed: a negotiation that takes longer than [`NEGOTIATION_TIMEOUT`] failed.
    pub fn tick(&mut self, now: Duration) -> Vec<MediaAction> {
        match self.since {
            Some(since)
                if self.state == MediaState::Connecting
                    && now.saturating_sub(since) >= NEGOTIATION_TIMEOUT =>
            {
                if self.offerer {
                    self.failed(now)
                } else if self.sessions >= MAX_SESSIONS || self.sessions == 0 {
                    // No offer came at all, or too many sessions: give up.
                    self.since = None;
                    let mut out = vec![MediaAction::Close];
                    out.extend(self.set_state(MediaState::Failed));
                    out
                } else {
                    self.since = Some(now);
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    /// A media signal from the peer at `now`.
    pub fn received(&mut self, signal: MediaSignal, now: Duration) -> Vec<MediaAction> {
        if matches!(self.state, MediaState::Unsupported) {
            self.dropped += 1;
            return Vec::new();
        }
        let out = match signal {
            MediaSignal::Unsupported => {
                let mut out = vec![MediaAction::Close];
                out.extend(self.set_state(MediaState::Unsupported));
                return out;
            }
            MediaSignal::Offer {
                session,
                round,
                sdp,
            } => self.offer_received(session, round, sdp, now),
            MediaSignal::Answer {
                session,
                round,
                sdp,
            } => self.answer_received(session, round, sdp),
            MediaSignal::Candidate { session, candidate } => {
                self.candidate_received(session, candidate)
            }
            MediaSignal::Tracks(tracks) => Some(Self::changed_after(
                &mut self.tracks_heard,
                &mut self.remote_tracks,
                tracks,
                MediaAction::RemoteTracks,
            )),
            MediaSignal::Want(wants) => Some(Self::changed(
                &mut self.remote_wants,
                wants,
                MediaAction::RemoteWants,
            )),
            // Star rooms: the host offers and forwards, the client answers and chooses.
            MediaSignal::Forwarded { origin, tracks } => {
                (!self.offerer).then_some(vec![MediaAction::Forwarded { origin, tracks }])
            }
            MediaSignal::WantOf { origin, tracks } => self
                .offerer
                .then_some(vec![MediaAction::WantOf { origin, tracks }]),
            MediaSignal::Renegotiate { session } => {
                if self.offerer && session == self.session && self.state != MediaState::Failed {
                    Some(self.offer_again(now))
                } else {
                    None
                }
            }
        };
        out.unwrap_or_else(|| {
            self.dropped += 1;
            Vec::new()
        })
    }

    fn offer_received(
        &mut self,
        session: u32,
        round: u32,
        sdp: String,
        now: Duration,
    ) -> Option<Vec<MediaAction>> {
        if self.offerer || signal::check_sdp(&sdp).is_err() || self.state == MediaState::Failed {
            return None;
        }
        let mut out = Vec::new();
        if session > self.session || self.sessions == 0 {
            // The offerer opened a new media connection: follow it.
            if self.sessions >= MAX_SESSIONS {
                return None;
            }
            self.session = session;
            self.sessions += 1;
            self.remote_applied = false;
            self.early.retain(|(s, _)| *s == session);
            out.push(MediaAction::Open { session });
            if self.state != MediaState::Connecting {
                self.since = Some(now);
                out.extend(self.set_state(MediaState::Connecting));
            }
        } else if session != self.session || round <= self.round {
            return None;
        }
        self.round = round;
        self.remote_applied = true;
        out.push(MediaAction::AcceptOffer { round, sdp });
        out.extend(self.take_early());
        Some(out)
    }

    fn answer_received(
        &mut self,
        session: u32,
        round: u32,
        sdp: String,
    ) -> Option<Vec<MediaAction>> {
        let expected = self.offerer && session == self.session && self.awaiting == Some(round);
        if !expected || signal::check_sdp(&sdp).is_err() {
            return None;
        }
        self.awaiting = None;
        self.remote_applied = true;
        let mut out = vec![MediaAction::AcceptAnswer { sdp }];
        out.extend(self.take_early());
        if std::mem::take(&mut self.again) {
            out.extend(self.new_round());
        }
        Some(out)
    }

    fn candidate_received(&mut self, session: u32, candidate: String) -> Option<Vec<MediaAction>> {
        // The answerer may get candidates of a session whose offer is still on its way.
        let ahead = !self.offerer && session > self.session;
        if !(session == self.session || ahead) || signal::check_candidate(&candidate).is_err() {
            return None;
        }
        if self.remote_applied && !ahead {
            return Some(vec![MediaAction::AddCandidate { candidate }]);
        }
        if self.early.len() >= MAX_EARLY_CANDIDATES {
            return None;
        }
        self.early.push((session, candidate));
        Some(Vec::new())
    }

    /// The early candidates of the current session, to add now that its description is in.
    fn take_early(&mut self) -> Vec<MediaAction> {
        let session = self.session;
        std::mem::take(&mut self.early)
            .into_iter()
            .filter(|(s, _)| *s == session)
            .map(|(_, candidate)| MediaAction::AddCandidate { candidate })
            .collect()
    }

    /// As offerer: a new round now, or once the current one is answered.
    fn offer_again(&mut self, now: Duration) -> Vec<MediaAction> {
        if self.awaiting.is_some() {
            self.again = true;
            return Vec::new();
        }
        if self.state == MediaState::Connected {
            self.since = Some(now);
        }
        self.new_round()
    }

    fn open_session(&mut self) -> Vec<MediaAction> {
        self.session = self.session.saturating_add(1);
        self.sessions += 1;
        self.round = 0;
        self.awaiting = None;
        self.again = false;
        self.remote_applied = false;
        self.early.clear();
        let mut out = vec![MediaAction::Open {
            session: self.session,
        }];
        out.extend(self.new_round());
        out
    }

    fn new_round(&mut self) -> Vec<MediaAction> {
        self.round = self.round.saturating_add(1);
        self.awaiting = Some(self.round);
        vec![MediaAction::CreateOffer { round: self.round }]
    }

    /// Notes that the peer said it, then [`Self::changed`].
    fn changed_after(
        heard: &mut bool,
        slot: &mut TrackSet,
        new: TrackSet,
        action: fn(TrackSet) -> MediaAction,
    ) -> Vec<MediaAction> {
        *heard = true;
        Self::changed(slot, new, action)
    }

    /// Sets `slot` to `new`; the action if it changed.
    fn changed(
        slot: &mut TrackSet,
        new: TrackSet,
        action: fn(TrackSet) -> MediaAction,
    ) -> Vec<MediaAction> {
        if std::mem::replace(slot, new) == new {
            Vec::new()
        } else {
            vec![action(new)]
        }
    }

    fn set_state(&mut self, state: MediaState) -> Vec<MediaAction> {
        if self.state == state {
            return Vec::new();
        }
        self.state = state;
        if matches!(state, MediaState::Failed | MediaState::Unsupported) {
            self.since = None;
            self.early.clear();
            self.remote_tracks = TrackSet::default();
        }
        vec![MediaAction::State(state)]
    }
}
