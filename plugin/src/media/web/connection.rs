//! One media-only `RTCPeerConnection` in the browser, next to matchbox's, as a task on the
//! page's event loop: it carries out the negotiation's commands (the same `MediaPeer` and
//! control-channel signals as natively, so a page and a native peer negotiate with each other),
//! sends the local tracks, hands remote tracks to the game, and reports the path once a second
//! from `getStats()`.
//!
//! Every connection has one audio and one video transceiver, sending and receiving, from the
//! first offer on (a native offer's first two media sections are its own tracks; a star host's
//! further sections are the publishers it forwards, which this side only receives).

use super::js::{count, error_text, ignore_rejection, number, stats_entries, string, wait, Js};
use super::remote::{RemoteAudio, RemoteVideo};
use super::report::{origin, PathReport, Report};
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::{FutureExt, StreamExt};
use huddle_protocol::media::MediaKind;
use js_sys::{Array, Reflect};
use matchbox_socket::PeerId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{
    MediaStream, MediaStreamTrack, RtcConfiguration, RtcIceCandidateInit, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcRtpSender, RtcRtpTransceiver,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit, RtcSdpType, RtcSessionDescriptionInit,
    RtcTrackEvent,
};

/// What the negotiation (and the local tracks) ask the connection to do.
pub(crate) enum Command {
    CreateOffer {
        round: u32,
    },
    AcceptOffer {
        round: u32,
        sdp: String,
    },
    AcceptAnswer {
        sdp: String,
    },
    AddCandidate {
        candidate: String,
    },
    /// Send this track as our voice or camera (`None`: send nothing).
    Send(MediaKind, Option<Js<MediaStreamTrack>>),
    /// Cap the encoder of a kind (bits per second).
    MaxBitrate(MediaKind, u32),
}

/// What a connection needs to open.
pub(crate) struct Opening {
    pub(crate) session: u32,
    /// The game's ICE servers (one credential set, as for matchbox).
    pub(crate) ice: matchbox_socket::RtcIceServerConfig,
    /// The peer at the other end: tracks not named by another publisher are its own.
    pub(crate) peer: PeerId,
    /// The peer is our star's host: the streams it names are the publishers' it forwards.
    pub(crate) relay: bool,
}

/// The game side of one media connection: dropping it closes the connection.
pub(crate) struct MediaConnection {
    pub(crate) session: u32,
    commands: UnboundedSender<Command>,
    reports: UnboundedReceiver<Report>,
}

/// Where a local track sends to one peer: its connection's sender of that kind.
pub(crate) struct TrackSink {
    commands: UnboundedSender<Command>,
    kind: MediaKind,
}

impl TrackSink {
    /// Sends `track` (or nothing) from now on; no renegotiation.
    pub(crate) fn send(&self, track: Option<&MediaStreamTrack>) {
        // The same track (`MediaStreamTrack::clone` would make a new one, which mute misses).
        let track = track.map(|t| Js::new(Clone::clone(t)));
        let _ = self
            .commands
            .unbounded_send(Command::Send(self.kind, track));
    }

    /// Caps the encoder.
    pub(crate) fn max_bitrate(&self, bitrate: u32) {
        let _ = self
            .commands
            .unbounded_send(Command::MaxBitrate(self.kind, bitrate));
    }
}

impl MediaConnection {
    /// Opens a connection (its task runs on the page's event loop).
    pub(crate) fn open(opening: Opening) -> Self {
        let (commands, command_rx) = unbounded();
        let (report_tx, reports) = unbounded();
        let session = opening.session;
        wasm_bindgen_futures::spawn_local(run(opening, command_rx, report_tx));
        Self {
            session,
            commands,
            reports,
        }
    }

    pub(crate) fn command(&self, command: Command) {
        let _ = self.commands.unbounded_send(command);
    }

    /// What happened since the last call.
    pub(crate) fn reports(&mut self) -> Vec<Report> {
        let mut out = Vec::new();
        while let Ok(report) = self.reports.try_recv() {
            out.push(report);
        }
        out
    }

    /// Where a local track of `kind` sends to this peer.
    pub(crate) fn sink(&self, kind: MediaKind) -> TrackSink {
        TrackSink {
            commands: self.commands.clone(),
            kind,
        }
    }
}

/// A remote track and what the statistics update of it.
enum Received {
    Audio(Arc<RemoteAudio>),
    Video(Arc<RemoteVideo>),
}

/// The connection's state that its handlers share.
struct Shared {
    reports: UnboundedSender<Report>,
    peer: PeerId,
    relay: bool,
    /// Remote tracks by publisher and kind (a newer track replaces an older one), with the
    /// track id `getStats()` names them by; at most [`MAX_TRACKS`].
    received: HashMap<(PeerId, String), (String, Received)>,
}

/// Remote tracks one connection takes at most: a star host's, two per publisher of a full lobby.
/// The peer's offer decides how many come, so more are refused (and counted).
const MAX_TRACKS: usize = 256;

/// Our two senders once the transceivers exist, and what they should send.
#[derive(Default)]
struct Outgoing {
    senders: [Option<RtcRtpSender>; 2],
    tracks: [Option<MediaStreamTrack>; 2],
    bitrates: [Option<u32>; 2],
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

const KINDS: [(MediaKind, &str); 2] = [(MediaKind::Audio, "audio"), (MediaKind::Video, "video")];

impl Outgoing {
    /// Takes the senders of the first audio and the first video transceiver (ours), sending and
    /// receiving, and applies what they should send.
    fn bind(&mut self, connection: &RtcPeerConnection) {
        let transceivers: Vec<RtcRtpTransceiver> = connection
            .get_transceivers()
            .iter()
            .filter_map(|t| t.dyn_into().ok())
            .collect();
        for (kind, name) in KINDS {
            let i = slot(kind);
            if self.senders[i].is_some() {
                continue;
            }
            let ours = transceivers
                .iter()
                .find(|t| t.receiver().track().kind() == name);
            if let Some(transceiver) = ours {
                transceiver.set_direction(RtcRtpTransceiverDirection::Sendrecv);
                self.senders[i] = Some(transceiver.sender());
                self.apply(kind);
            }
        }
    }

    fn apply(&self, kind: MediaKind) {
        let i = slot(kind);
        let Some(sender) = &self.senders[i] else {
            return;
        };
        ignore_rejection(sender.replace_track(self.tracks[i].as_ref()));
        if let Some(bitrate) = self.bitrates[i] {
            cap(sender, bitrate);
        }
    }
}

/// Caps a sender's encoding at `bitrate` (once negotiated; before, there is no encoding yet).
fn cap(sender: &RtcRtpSender, bitrate: u32) {
    let parameters = sender.get_parameters();
    let Ok(encodings) = Reflect::get(&parameters, &"encodings".into()) else {
        return;
    };
    let encodings: Array = encodings.unchecked_into();
    if encodings.length() == 0 {
        return;
    }
    for encoding in encodings.iter() {
        let _ = Reflect::set(&encoding, &"maxBitrate".into(), &bitrate.into());
    }
    ignore_rejection(sender.set_parameters_with_parameters(&parameters));
}

async fn run(
    opening: Opening,
    commands: UnboundedReceiver<Command>,
    reports: UnboundedSender<Report>,
) {
    let connection = match build(&opening.ice) {
        Ok(connection) => connection,
        Err(e) => {
            let _ = reports.unbounded_send(Report::Failed(format!("cannot open: {e}")));
            return;
        }
    };
    let shared = Rc::new(RefCell::new(Shared {
        reports: reports.clone(),
        peer: opening.peer,
        relay: opening.relay,
        received: HashMap::new(),
    }));
    let handlers = Handlers::install(&connection, &shared);
    let negotiate = negotiate(&connection, commands, &reports).fuse();
    let stats = report_path(&connection, &shared).fuse();
    futures::pin_mut!(negotiate, stats);
    // The game side is gone when the commands end: close.
    futures::select! {
        () = negotiate => {},
        () = stats => {},
    }
    handlers.remove(&connection);
    connection.close();
}

fn build(ice: &matchbox_socket::RtcIceServerConfig) -> Result<RtcPeerConnection, String> {
    let servers = Array::new();
    if !ice.urls.is_empty() {
        let server = js_sys::Object::new();
        let urls: Array = ice.urls.iter().map(|u| JsValue::from_str(u)).collect();
        let _ = Reflect::set(&server, &"urls".into(), &urls);
        if let Some(username) = &ice.username {
            let _ = Reflect::set(&server, &"username".into(), &username.into());
        }
        if let Some(credential) = &ice.credential {
            let _ = Reflect::set(&server, &"credential".into(), &credential.into());
        }
        servers.push(&server);
    }
    let config = RtcConfiguration::new();
    config.set_ice_servers(&servers);
    RtcPeerConnection::new_with_configuration(&config).map_err(error_text)
}

/// The connection's event handlers, kept alive as long as it runs.
struct Handlers {
    _candidate: Closure<dyn FnMut(RtcPeerConnectionIceEvent)>,
    _state: Closure<dyn FnMut()>,
    _track: Closure<dyn FnMut(RtcTrackEvent)>,
}

impl Handlers {
    fn install(connection: &RtcPeerConnection, shared: &Rc<RefCell<Shared>>) -> Self {
        let reports = shared.borrow().reports.clone();
        let candidate = Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(
            move |event: RtcPeerConnectionIceEvent| {
                let Some(candidate) = event.candidate() else {
                    return;
                };
                if candidate.candidate().is_empty() {
                    return;
                }
                if let Some(json) = js_sys::JSON::stringify(&candidate.to_json())
                    .ok()
                    .and_then(|s| s.as_string())
                {
                    let _ = reports.unbounded_send(Report::Candidate(json));
                }
            },
        );
        let reports = shared.borrow().reports.clone();
        let watched = connection.clone();
        let state = Closure::<dyn FnMut()>::new(move || {
            let state = watched.connection_state();
            let report = match state {
                RtcPeerConnectionState::Connected => Report::Connected,
                RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed => {
                    Report::Failed(format!("media connection {state:?}"))
                }
                _ => return,
            };
            let _ = reports.unbounded_send(report);
        });
        let shared = Rc::clone(shared);
        let track = Closure::<dyn FnMut(RtcTrackEvent)>::new(move |event: RtcTrackEvent| {
            arrived(&mut shared.borrow_mut(), &event);
        });
        connection.set_onicecandidate(Some(candidate.as_ref().unchecked_ref()));
        connection.set_onconnectionstatechange(Some(state.as_ref().unchecked_ref()));
        connection.set_ontrack(Some(track.as_ref().unchecked_ref()));
        Self {
            _candidate: candidate,
            _state: state,
            _track: track,
        }
    }

    fn remove(self, connection: &RtcPeerConnection) {
        connection.set_onicecandidate(None);
        connection.set_onconnectionstatechange(None);
        connection.set_ontrack(None);
    }
}

/// A remote track arrived: whose it is ([`origin`]), and the game gets it.
fn arrived(shared: &mut Shared, event: &RtcTrackEvent) {
    let track = event.track();
    let named = event
        .streams()
        .get(0)
        .dyn_into::<MediaStream>()
        .ok()
        .map(|s| s.id());
    let origin = origin(&named.unwrap_or_default(), shared.peer, shared.relay);
    let key = (origin, track.kind());
    if !shared.received.contains_key(&key) && shared.received.len() >= MAX_TRACKS {
        let _ = shared.reports.unbounded_send(Report::Refused);
        return;
    }
    let tracks: Array = std::iter::once(JsValue::from(&track)).collect();
    let stream = match MediaStream::new_with_tracks(&tracks) {
        Ok(stream) => stream,
        Err(e) => {
            let why = format!("remote {} track: {}", track.kind(), error_text(e));
            let _ = shared.reports.unbounded_send(Report::Failed(why));
            return;
        }
    };
    let made = match track.kind().as_str() {
        "audio" => RemoteAudio::new(&stream).map(|audio| {
            let audio = Arc::new(audio);
            (
                Received::Audio(audio.clone()),
                Report::RemoteAudio(origin, audio),
            )
        }),
        "video" => RemoteVideo::new(&stream).map(|video| {
            let video = Arc::new(video);
            (
                Received::Video(video.clone()),
                Report::RemoteVideo(origin, video),
            )
        }),
        _ => return,
    };
    match made {
        Ok((received, report)) => {
            shared.received.insert(key, (track.id(), received));
            let _ = shared.reports.unbounded_send(report);
        }
        Err(e) => {
            let why = format!("remote {} track: {e}", track.kind());
            let _ = shared.reports.unbounded_send(Report::Failed(why));
        }
    }
}

async fn negotiate(
    connection: &RtcPeerConnection,
    mut commands: UnboundedReceiver<Command>,
    reports: &UnboundedSender<Report>,
) {
    let mut outgoing = Outgoing::default();
    while let Some(command) = commands.next().await {
        if let Err(e) = carry_out(connection, &mut outgoing, command, reports).await {
            let _ = reports.unbounded_send(Report::Failed(e));
        }
    }
}

async fn carry_out(
    connection: &RtcPeerConnection,
    outgoing: &mut Outgoing,
    command: Command,
    reports: &UnboundedSender<Report>,
) -> Result<(), String> {
    match command {
        Command::CreateOffer { round } => {
            if connection.get_transceivers().length() == 0 {
                for (_, name) in KINDS {
                    let init = RtcRtpTransceiverInit::new();
                    init.set_direction(RtcRtpTransceiverDirection::Sendrecv);
                    connection.add_transceiver_with_str_and_init(name, &init);
                }
            }
            outgoing.bind(connection);
            let offer = wait(connection.create_offer()).await?;
            let sdp = string(&offer, "sdp").ok_or("an offer without SDP")?;
            describe(connection, RtcSdpType::Offer, &sdp, true).await?;
            let _ = reports.unbounded_send(Report::Offer { round, sdp });
        }
        Command::AcceptOffer { round, sdp } => {
            describe(connection, RtcSdpType::Offer, &sdp, false).await?;
            // The offer made the transceivers; ours are its first audio and video.
            outgoing.bind(connection);
            let answer = wait(connection.create_answer()).await?;
            let sdp = string(&answer, "sdp").ok_or("an answer without SDP")?;
            describe(connection, RtcSdpType::Answer, &sdp, true).await?;
            let _ = reports.unbounded_send(Report::Answer { round, sdp });
            for (kind, _) in KINDS {
                outgoing.apply(kind);
            }
        }
        Command::AcceptAnswer { sdp } => {
            describe(connection, RtcSdpType::Answer, &sdp, false).await?;
            for (kind, _) in KINDS {
                outgoing.apply(kind);
            }
        }
        Command::AddCandidate { candidate } => {
            // Checked by the negotiation already; one that does not parse here is skipped.
            let Ok(init) = js_sys::JSON::parse(&candidate) else {
                return Ok(());
            };
            let init: RtcIceCandidateInit = init.unchecked_into();
            wait(connection.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init))).await?;
        }
        Command::Send(kind, track) => {
            outgoing.tracks[slot(kind)] = track.map(Js::take);
            outgoing.apply(kind);
        }
        Command::MaxBitrate(kind, bitrate) => {
            outgoing.bitrates[slot(kind)] = Some(bitrate);
            if let Some(sender) = &outgoing.senders[slot(kind)] {
                cap(sender, bitrate);
            }
        }
    }
    Ok(())
}

/// Sets the local or remote description.
async fn describe(
    connection: &RtcPeerConnection,
    kind: RtcSdpType,
    sdp: &str,
    local: bool,
) -> Result<(), String> {
    let description = RtcSessionDescriptionInit::new(kind);
    description.set_sdp(sdp);
    let done = if local {
        connection.set_local_description(&description)
    } else {
        connection.set_remote_description(&description)
    };
    wait(done).await.map(|_| ())
}

/// Reads the connection's statistics once a second: the remote tracks' counters and the path.
async fn report_path(connection: &RtcPeerConnection, shared: &Rc<RefCell<Shared>>) {
    loop {
        futures_timer::Delay::new(Duration::from_secs(1)).await;
        let Ok(report) = wait(connection.get_stats()).await else {
            continue;
        };
        let mut path = PathReport::default();
        let shared = shared.borrow();
        for entry in stats_entries(&report) {
            match string(&entry, "type").as_deref() {
                Some("inbound-rtp") => {
                    let id = string(&entry, "trackIdentifier").unwrap_or_default();
                    let received = shared.received.values().find(|(track, _)| *track == id);
                    match received.map(|(_, r)| r) {
                        Some(Received::Audio(audio)) => {
                            audio.update(&entry);
                            path.jitter = number(&entry, "jitter").filter(|j| j.is_finite());
                        }
                        Some(Received::Video(video)) => video.update(&entry),
                        None => {}
                    }
                }
                Some("remote-inbound-rtp") => {
                    let rtt = number(&entry, "roundTripTime").filter(|r| r.is_finite());
                    if let Some(rtt) = rtt {
                        path.rtt = Some(Duration::from_secs_f64(rtt.clamp(0.0, 60.0)));
                    }
                    let loss = number(&entry, "fractionLost").filter(|l| l.is_finite());
                    match string(&entry, "kind").as_deref() {
                        Some("audio") => path.audio_loss = loss,
                        Some("video") => path.video_loss = loss,
                        _ => {}
                    }
                }
                Some("candidate-pair")
                    if string(&entry, "state").as_deref() == Some("succeeded") =>
                {
                    let estimate = count(&entry, "availableOutgoingBitrate");
                    if estimate > 0 {
                        path.estimate = Some(estimate.min(u64::from(u32::MAX)) as u32);
                    }
                    if path.rtt.is_none() {
                        path.rtt = number(&entry, "currentRoundTripTime")
                            .filter(|r| r.is_finite())
                            .map(|r| Duration::from_secs_f64(r.clamp(0.0, 60.0)));
                    }
                }
                _ => {}
            }
        }
        if shared.reports.unbounded_send(Report::Path(path)).is_err() {
            return;
        }
    }
}
