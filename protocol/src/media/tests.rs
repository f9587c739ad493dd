//! Two media peers negotiating through a fake peer connection: every order of arrival, and peers
//! that lie.

use super::*;

const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    a=fingerprint:sha-256 AB:CD\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
    c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz\r\na=mid:0\r\n";

fn candidate(port: u16) -> String {
    format!(r#"{{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"}}"#)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What a fake peer connection did.
#[derive(Debug, Default)]
struct Conn {
    session: Option<u32>,
    remote: Vec<String>,
    candidates: Vec<String>,
    states: Vec<MediaState>,
    closed: bool,
}

/// An offerer (0) and an answerer (1) with their fake connections; signals wait in `wire` until
/// delivered.
struct Pair {
    peers: [MediaPeer; 2],
    conns: [Conn; 2],
    wire: Vec<(usize, MediaSignal)>,
    now: Duration,
}

impl Pair {
    fn new() -> Self {
        Self {
            peers: [MediaPeer::new(true), MediaPeer::new(false)],
            conns: [Conn::default(), Conn::default()],
            wire: Vec::new(),
            now: ms(0),
        }
    }

    /// Carries out `actions` of peer `i` as a peer connection would, at once.
    fn run(&mut self, i: usize, actions: Vec<MediaAction>) {
        for action in actions {
            let more = match action {
                MediaAction::Open { session } => {
                    self.conns[i].session = Some(session);
                    self.conns[i].remote.clear();
                    Vec::new()
                }
                MediaAction::CreateOffer { round } => {
                    self.peers[i].local_offer(round, SDP.to_string())
                }
                MediaAction::AcceptOffer { round, sdp } => {
                    self.conns[i].remote.push(sdp);
                    self.peers[i].local_answer(round, SDP.to_string())
                }
                MediaAction::AcceptAnswer { sdp } => {
                    self.conns[i].remote.push(sdp);
                    Vec::new()
                }
                MediaAction::AddCandidate { candidate } => {
                    assert!(
                        !self.conns[i].remote.is_empty(),
                        "a candidate before the remote description"
                    );
                    self.conns[i].candidates.push(candidate);
                    Vec::new()
                }
                MediaAction::Send(signal) => {
                    self.wire.push((1 - i, signal));
                    Vec::new()
                }
                MediaAction::Close => {
                    self.conns[i].closed = true;
                    Vec::new()
                }
                MediaAction::State(s) => {
                    self.conns[i].states.push(s);
                    Vec::new()
                }
                MediaAction::RemoteTracks(_)
                | MediaAction::RemoteWants(_)
                | MediaAction::Forwarded { .. }
                | MediaAction::WantOf { .. } => Vec::new(),
            };
            self.run(i, more);
        }
    }

    /// Delivers what is on the wire, in order (newest first with `reverse`), until it is empty.
    fn deliver(&mut self, reverse: bool) {
        while !self.wire.is_empty() {
            let (to, signal) = if reverse {
                self.wire.pop().expect("not empty")
            } else {
                self.wire.remove(0)
            };
            let out = self.peers[to].received(signal, self.now);
            self.run(to, out);
        }
    }

    fn start(&mut self) {
        for i in 0..2 {
            let out = self.peers[i].start(self.now);
            self.run(i, out);
        }
    }

    /// Both ends trickle a candidate, then the connection comes up.
    fn connect(&mut self) {
        for i in 0..2 {
            let session = self.conns[i].session.expect("a session");
            self.wire.push((
                1 - i,
                MediaSignal::Candidate {
                    session,
                    candidate: candidate(5000 + i as u16),
                },
            ));
        }
        self.deliver(false);
        for i in 0..2 {
            let out = self.peers[i].connected();
            self.run(i, out);
        }
    }
}

#[test]
fn the_caller_offers_and_both_connect() {
    let mut p = Pair::new();
    p.start();
    p.deliver(false);
    p.connect();
    for i in 0..2 {
        assert_eq!(p.peers[i].state(), MediaState::Connected);
        assert_eq!(
            p.conns[i].states,
            [MediaState::Connecting, MediaState::Connected]
        );
        assert_eq!(p.conns[i].session, Some(1));
        assert_eq!(p.conns[i].remote.len(), 1);
        assert_eq!(p.conns[i].candidates.len(), 1);
        assert_eq!(p.peers[i].dropped(), 0);
    }
    assert!(p.peers[0].is_offerer() && !p.peers[1].is_offerer());
}

/// Candidates that overtake the offer or the answer wait for it.
#[test]
fn early_candidates_wait_for_the_description() {
    let mut p = Pair::new();
    p.start();
    // The offerer's candidate goes out right behind its offer and arrives first.
    let session = p.conns[0].session.expect("a session");
    p.wire.push((
        1,
        MediaSignal::Candidate {
            session,
            candidate: candidate(6000),
        },
    ));
    p.deliver(true);
    assert_eq!(p.conns[1].candidates, [candidate(6000)]);
    p.connect();
    assert_eq!(p.peers[1].state(), MediaState::Connected);
}

/// Both sides change tracks at once while a round is in flight: the answerer asks, the offerer
/// offers again once the current round is answered, never two offers at a time (no glare).
#[test]
fn renegotiation_from_either_side_never_glares() {
    let mut p = Pair::new();
    p.start();
    p.deliver(false);
    p.connect();
    let a = p.peers[0].tracks_changed(p.now);
    p.run(0, a);
    let b = p.peers[1].tracks_changed(p.now);
    p.run(1, b);
    let offers = p
        .wire
        .iter()
        .filter(|(_, s)| matches!(s, MediaSignal::Offer { .. }))
        .count();
    assert_eq!(offers, 1, "one offer in flight");
    p.deliver(false);
    assert_eq!(
        p.conns[1].remote.len(),
        3,
        "three offers in all, one after the other"
    );
    assert!(p.peers.iter().all(|m| m.dropped() == 0));
    assert_eq!(p.peers[1].state(), MediaState::Connected);
}

#[test]
fn a_peer_without_media_is_unsupported_and_nothing_more_happens() {
    let mut p = Pair::new();
    p.start();
    p.wire.clear();
    let out = p.peers[0].received(MediaSignal::Unsupported, p.now);
    p.run(0, out);
    assert_eq!(p.peers[0].state(), MediaState::Unsupported);
    assert!(p.conns[0].closed);
    let out = p.peers[0].received(
        MediaSignal::Answer {
            session: 1,
            round: 1,
            sdp: SDP.into(),
        },
        p.now,
    );
    assert!(out.is_empty());
    assert!(p.peers[0].tracks_changed(p.now).is_empty());
}

/// The connection fails: the offerer opens a new session, the answerer follows it and drops the
/// old session's signals; after [`MAX_SESSIONS`] media with the peer is over.
#[test]
fn failed_sessions_are_retried_then_given_up() {
    let mut p = Pair::new();
    p.start();
    p.deliver(false);
    p.connect();
    for session in 2..=MAX_SESSIONS {
        let out = p.peers[0].failed(p.now);
        p.run(0, out);
        let out = p.peers[1].failed(p.now);
        p.run(1, out);
        p.deliver(false);
        assert_eq!(p.conns[1].session, Some(session));
        // A candidate of the old session arrives late: dropped.
        let before = p.peers[1].dropped();
        let out = p.peers[1].received(
            MediaSignal::Candidate {
                session: session - 1,
                candidate: candidate(7000),
            },
            p.now,
        );
        assert!(out.is_empty());
        assert_eq!(p.peers[1].dropped(), before + 1);
        p.connect();
        assert_eq!(p.peers[1].state(), MediaState::Connected);
    }
    let out = p.peers[0].failed(p.now);
    p.run(0, out);
    assert_eq!(p.peers[0].state(), MediaState::Failed);
    assert!(p.conns[0].closed);
}

#[test]
fn a_negotiation_that_never_ends_times_out() {
    let mut p = Pair::new();
    p.start();
    p.wire.clear(); // the offer is lost with its link
    p.now = NEGOTIATION_TIMEOUT - ms(1);
    assert!(p.peers[0].tick(p.now).is_empty());
    p.now = NEGOTIATION_TIMEOUT;
    let out = p.peers[0].tick(p.now);
    p.run(0, out);
    p.deliver(false);
    assert_eq!(
        p.conns[1].session,
        Some(2),
        "the offerer tried a new session"
    );
    // An answerer that never hears an offer gives up.
    let mut lonely = MediaPeer::new(false);
    lonely.start(ms(0));
    let out = lonely.tick(NEGOTIATION_TIMEOUT);
    assert!(out.contains(&MediaAction::State(MediaState::Failed)));
}

/// A peer that speaks media signalling perfectly and lies: offers from the answerer's side,
/// answers nobody asked for, replays, stale and future sessions, malformed SDP and candidates, a
/// flood of early candidates. All dropped and counted; the real negotiation goes on.
#[test]
fn lies_are_dropped_and_counted() {
    let mut p = Pair::new();
    p.start();
    let offerer = &mut p.peers[0];
    let lies = [
        MediaSignal::Offer {
            session: 1,
            round: 1,
            sdp: SDP.into(),
        },
        MediaSignal::Answer {
            session: 1,
            round: 9,
            sdp: SDP.into(),
        },
        MediaSignal::Answer {
            session: 7,
            round: 1,
            sdp: SDP.into(),
        },
        MediaSignal::Answer {
            session: 1,
            round: 1,
            sdp: "garbage".into(),
        },
        MediaSignal::Candidate {
            session: 1,
            candidate: "{".into(),
        },
        MediaSignal::Candidate {
            session: u32::MAX,
            candidate: candidate(1),
        },
        MediaSignal::Renegotiate { session: 99 },
    ];
    let n = lies.len() as u64;
    for lie in lies {
        assert!(offerer.received(lie, ms(0)).is_empty());
    }
    assert_eq!(offerer.dropped(), n);
    // Early candidates are bounded.
    for k in 0..(MAX_EARLY_CANDIDATES as u16 + 10) {
        let out = p.peers[0].received(
            MediaSignal::Candidate {
                session: 1,
                candidate: candidate(k),
            },
            ms(0),
        );
        p.run(0, out);
    }
    assert_eq!(p.peers[0].dropped(), n + 10);
    // The answerer refuses a replayed offer and garbage SDP.
    p.deliver(false);
    let replay = MediaSignal::Offer {
        session: 1,
        round: 1,
        sdp: SDP.into(),
    };
    assert!(p.peers[1].received(replay, ms(0)).is_empty());
    let garbage = MediaSignal::Offer {
        session: 5,
        round: 1,
        sdp: "v=0 but not really".into(),
    };
    assert!(p.peers[1].received(garbage, ms(0)).is_empty());
    assert_eq!(p.peers[1].dropped(), 2);
    p.connect();
    assert!(p.peers.iter().all(|m| m.state() == MediaState::Connected));
    assert_eq!(p.conns[0].candidates.len(), MAX_EARLY_CANDIDATES + 1);
}

#[test]
fn tracks_and_wants_are_reported_once_per_change() {
    let mut peer = MediaPeer::new(false);
    let on = TrackSet::ALL;
    let audio = TrackSet::default().with(MediaKind::Audio, true);
    assert_eq!(
        peer.received(MediaSignal::Tracks(audio), ms(0)),
        vec![MediaAction::RemoteTracks(audio)]
    );
    assert!(peer.received(MediaSignal::Tracks(audio), ms(1)).is_empty());
    assert!(peer.received(MediaSignal::Want(on), ms(2)).is_empty());
    let none = TrackSet::default();
    assert_eq!(
        peer.received(MediaSignal::Want(none), ms(3)),
        vec![MediaAction::RemoteWants(none)]
    );
    assert_eq!((peer.remote_tracks(), peer.remote_wants()), (audio, none));
    assert!(audio.has(MediaKind::Audio) && !audio.has(MediaKind::Video));
    // A peer without media says nothing more that counts.
    peer.received(MediaSignal::Unsupported, ms(4));
    assert!(peer.received(MediaSignal::Tracks(on), ms(5)).is_empty());
    assert_eq!(peer.remote_tracks(), TrackSet::default());
    assert_eq!(peer.dropped(), 1);
}

/// A star's per-origin signals go one way each: the host (offerer) says what it forwards, the
/// client (answerer) what it wants. The other way round they are dropped and counted.
#[test]
fn forwarded_goes_host_to_client_and_want_of_client_to_host() {
    let origin = crate::PeerId(uuid::Uuid::from_u128(7));
    let audio = TrackSet::default().with(MediaKind::Audio, true);
    let (mut host, mut client) = (MediaPeer::new(true), MediaPeer::new(false));
    let forwarded = MediaSignal::Forwarded {
        origin,
        tracks: audio,
    };
    let want = MediaSignal::WantOf {
        origin,
        tracks: audio,
    };
    assert_eq!(
        client.received(forwarded.clone(), ms(0)),
        vec![MediaAction::Forwarded {
            origin,
            tracks: audio
        }]
    );
    assert_eq!(
        host.received(want.clone(), ms(0)),
        vec![MediaAction::WantOf {
            origin,
            tracks: audio
        }]
    );
    assert!(host.received(forwarded, ms(1)).is_empty());
    assert!(client.received(want, ms(1)).is_empty());
    assert_eq!((host.dropped(), client.dropped()), (1, 1));
}
