//! One media-only peer connection (webrtc-rs, the stack matchbox uses) as an async task: it
//! carries out the negotiation's commands, sends the local tracks' samples, hands remote tracks
//! to their decoding threads, and reports what the connection did and its statistics. The
//! negotiation itself is `huddle_protocol::media::MediaPeer`'s.
//!
//! Every connection has one audio (Opus) and one video (VP8) transceiver, sending and receiving,
//! from the first offer on: turning a microphone or camera on or off never renegotiates, the
//! peers only say what they send ([`MediaSignal::Tracks`](huddle_protocol::media::MediaSignal)).

use super::codecs;
use super::decoders::Decoders;
use super::forward::{leg_queue, Forwardable, ForwardedTrack, Hub, LegSink};
use super::local::{lock, Encoded};
use super::observed::ObservedPath;
use super::remote::{spawn_audio, spawn_video};
use super::report::{origin, PathReport, Report};
use super::rtcp_for_tracks::RtcpForTracks;
use super::settings::BitrateBounds;
use bevy::tasks::IoTaskPool;
use futures::channel::mpsc::UnboundedSender;
use futures::channel::mpsc::{channel, unbounded, Receiver, Sender, UnboundedReceiver};
use futures::{FutureExt, StreamExt};
use huddle_media::echo::FarEnd;
use huddle_protocol::media::jitter::JitterSettings;
use huddle_protocol::media::sdp::{extension_id, AUDIO_LEVEL_URI};
use huddle_protocol::media::MediaKind;
use matchbox_socket::PeerId;
use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport, Registry, Slot};
use rtc::media::Sample;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_congestion_control, register_default_interceptors, CongestionFeedback,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::shared::marshal::Unmarshal;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, RTCStatsReportEntry, StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;
use webrtc::runtime::SmolRuntime;

/// What the negotiation asks the connection to do.
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
    /// Star host: send these publishers' streams on this leg (taken into the next offer).
    AddForward(
        Vec<(
            Arc<ForwardedTrack>,
            futures::channel::mpsc::Receiver<Forwardable>,
        )>,
    ),
    /// Star host: stop sending this publisher's streams (taken out with the next offer).
    RemoveForward(PeerId),
}

const KINDS: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

/// Encoded samples queued per kind before the local track's thread loses some.
const SINK_QUEUE: usize = 32;
/// Keyframe requests to a sender at most this often.
const PLI_INTERVAL: Duration = Duration::from_millis(250);

/// The game side of one media peer connection: dropping it closes the connection.
pub(crate) struct MediaConnection {
    pub(crate) session: u32,
    commands: UnboundedSender<Command>,
    reports: UnboundedReceiver<Report>,
    audio: Sender<Encoded>,
    video: Sender<Encoded>,
    /// Star host: the queues of the publishers' streams this leg forwards.
    forwards: HashMap<(PeerId, MediaKind), LegSink>,
}

/// How a connection is opened.
pub(crate) struct Opening {
    pub(crate) session: u32,
    /// The game's ICE servers (one credential set, as for matchbox).
    pub(crate) ice: matchbox_socket::RtcIceServerConfig,
    pub(crate) bind: Vec<String>,
    pub(crate) jitter: JitterSettings,
    /// Where remote voices put what they play, for echo cancellation.
    pub(crate) far_end: Arc<FarEnd>,
    /// The congestion controller's start and bounds (the camera's plus the voice's).
    pub(crate) bitrate: BitrateBounds,
    /// The peer at the other end: what it sends goes to the hub as its (star hosts forward it).
    pub(crate) peer: PeerId,
    /// The peer is our star's host: the streams it names are the publishers' it forwards.
    pub(crate) relay: bool,
    pub(crate) hub: Arc<Hub>,
    pub(crate) decoders: Arc<Decoders>,
}

impl MediaConnection {
    /// Opens a connection.
    pub(crate) fn open(opening: Opening) -> Self {
        let (commands, command_rx) = unbounded();
        let (report_tx, reports) = unbounded();
        let (audio, audio_rx) = channel(SINK_QUEUE);
        let (video, video_rx) = channel(SINK_QUEUE);
        let session = opening.session;
        // Detached, not held: a dropped task would stop where it waits and never close the
        // connection, and webrtc-rs would keep it (and every decoding thread it feeds) for
        // ever. Dropping this side ends the commands, and the task closes the connection.
        IoTaskPool::get()
            .spawn(run(opening, command_rx, report_tx, [audio_rx, video_rx]))
            .detach();
        Self {
            session,
            commands,
            reports,
            audio,
            video,
            forwards: HashMap::new(),
        }
    }

    /// Star host: forwards `origin`'s voice and camera on this leg from the next offer on.
    pub(crate) fn add_forward(&mut self, origin: PeerId) {
        let tracks = KINDS
            .into_iter()
            .map(|kind| {
                let (sink, queue) = leg_queue();
                self.forwards.insert((origin, kind), sink);
                (Arc::new(ForwardedTrack::new(origin, kind)), queue)
            })
            .collect();
        self.command(Command::AddForward(tracks));
    }

    /// Star host: stops forwarding `origin` on this leg.
    pub(crate) fn remove_forward(&mut self, origin: PeerId) {
        self.forwards.retain(|(o, _), _| *o != origin);
        self.command(Command::RemoveForward(origin));
    }

    /// The publishers this leg forwards.
    pub(crate) fn forwarded(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.forwards
            .keys()
            .filter(|(_, k)| *k == MediaKind::Audio)
            .map(|(o, _)| *o)
    }

    /// The queue of `origin`'s `kind` on this leg.
    pub(crate) fn forward_sink(&self, origin: PeerId, kind: MediaKind) -> Option<LegSink> {
        self.forwards.get(&(origin, kind)).cloned()
    }

    pub(crate) fn command(&self, command: Command) {
        let _ = self.commands.unbounded_send(command);
    }

    /// What the connection did since the last call.
    pub(crate) fn reports(&mut self) -> Vec<Report> {
        std::iter::from_fn(|| self.reports.try_recv().ok()).collect()
    }

    /// Where the local track of `kind` puts samples for this peer.
    pub(crate) fn sink(&self, kind: MediaKind) -> Sender<Encoded> {
        match kind {
            MediaKind::Audio => self.audio.clone(),
            MediaKind::Video => self.video.clone(),
        }
    }
}

struct Handler {
    reports: UnboundedSender<Report>,
    /// The id the peer sends the audio level (RFC 6464) under, from its description (0: none).
    level_id: Arc<AtomicU8>,
    /// What the peer reports of our streams (round trip, loss).
    path: Arc<ObservedPath>,
    /// Every publisher's decoding threads (and lip sync), across connections.
    decoders: Arc<Decoders>,
    jitter: JitterSettings,
    far_end: Arc<FarEnd>,
    peer: PeerId,
    relay: bool,
    hub: Arc<Hub>,
}

/// Passes the peer's keyframe requests on to the game side, at most every [`PLI_INTERVAL`]
/// (a peer that floods requests cannot make every frame a keyframe).
struct KeyframeRequests {
    reports: UnboundedSender<Report>,
    last: Mutex<Option<Instant>>,
}

impl KeyframeRequests {
    fn requested(&self, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        let asks = packets.iter().any(|p| {
            let any = p.as_any();
            any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
        });
        if !asks {
            return;
        }
        let mut last = lock(&self.last);
        if last.is_none_or(|at| at.elapsed() >= PLI_INTERVAL) {
            *last = Some(Instant::now());
            let _ = self.reports.unbounded_send(Report::KeyframeWanted);
        }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let json = event
            .candidate
            .to_json()
            .ok()
            .and_then(|init| serde_json::to_string(&init).ok());
        if let Some(json) = json {
            let _ = self.reports.unbounded_send(Report::Candidate(json));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let report = match state {
            RTCPeerConnectionState::Connected => Report::Connected,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                Report::Failed(format!("media connection {state}"))
            }
            _ => return,
        };
        let _ = self.reports.unbounded_send(report);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let pool = IoTaskPool::get();
        let origin = origin(&track.stream_id().await, self.peer, self.relay);
        let (hub, peer) = (self.hub.clone(), self.peer);
        match track.kind().await {
            RtpCodecKind::Audio => {
                let (jitter, far_end) = (self.jitter, self.far_end.clone());
                let spawn = |sync| spawn_audio(jitter, far_end, sync);
                let Some(((inlet, out), sync)) = self.decoders.audio(origin, spawn) else {
                    return;
                };
                let _ = self
                    .reports
                    .unbounded_send(Report::RemoteAudio(origin, out.clone()));
                let level_id = self.level_id.clone();
                let path = self.path.clone();
                pool.spawn(async move {
                    let mut ssrc = None;
                    while let Some(event) = track.poll().await {
                        if let TrackRemoteEvent::OnRtcpPacket(packets) = &event {
                            sync.reports(MediaKind::Audio, ssrc, packets);
                            path.reports(packets);
                        }
                        if let TrackRemoteEvent::OnRtpPacket(p) = event {
                            ssrc = Some(p.header.ssrc);
                            // What the sender says of the packet's sound, without decoding it.
                            let id = level_id.load(Ordering::Relaxed);
                            let level = (id != 0)
                                .then(|| p.header.get_extension(id))
                                .flatten()
                                .and_then(|mut ext| AudioLevelExtension::unmarshal(&mut ext).ok());
                            if let Some(level) = level {
                                out.set_activity(level.level, level.voice);
                            }
                            // A star host passes it on before anything else is done with it.
                            let forwardable = Forwardable {
                                packet: p,
                                level_id: id,
                                at: Instant::now(),
                            };
                            hub.forward(peer, MediaKind::Audio, &forwardable);
                            let p = forwardable.packet;
                            let item = (
                                p.header.sequence_number,
                                p.header.timestamp,
                                p.payload.to_vec(),
                            );
                            if !p.payload.is_empty() && !inlet.put(item) {
                                break;
                            }
                        }
                    }
                })
                .detach();
            }
            RtpCodecKind::Video => {
                let Some(((inlet, out), sync)) = self.decoders.video(origin, spawn_video) else {
                    return;
                };
                let path = self.path.clone();
                let _ = self
                    .reports
                    .unbounded_send(Report::RemoteVideo(origin, out.clone()));
                pool.spawn(async move {
                    let mut last_pli: Option<Instant> = None;
                    let mut last_ssrc = None;
                    while let Some(event) = track.poll().await {
                        if let TrackRemoteEvent::OnRtcpPacket(packets) = &event {
                            sync.reports(MediaKind::Video, last_ssrc, packets);
                            path.reports(packets);
                        }
                        let TrackRemoteEvent::OnRtpPacket(p) = event else {
                            continue;
                        };
                        let ssrc = p.header.ssrc;
                        last_ssrc = Some(ssrc);
                        let forwardable = Forwardable {
                            packet: p,
                            level_id: 0,
                            at: Instant::now(),
                        };
                        hub.forward(peer, MediaKind::Video, &forwardable);
                        if !inlet.put(forwardable.packet) {
                            break;
                        }
                        // A picture loss indication, at most every 250 ms: the sender answers
                        // with a keyframe. Ours, or a viewer's of a star host.
                        let due = last_pli.is_none_or(|at| at.elapsed() >= PLI_INTERVAL);
                        if due && (out.take_keyframe_wish() | hub.take_keyframe_wish(peer)) {
                            last_pli = Some(Instant::now());
                            let pli = PictureLossIndication {
                                sender_ssrc: 0,
                                media_ssrc: ssrc,
                            };
                            let _ = track.write_rtcp(vec![Box::new(pli)]).await;
                        }
                    }
                })
                .detach();
            }
            _ => {}
        }
    }
}

/// A local track of the connection and the sender it was added as (once added).
struct Outgoing {
    /// The codec's MIME type, to find its negotiated payload type.
    mime: &'static str,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    sender: Mutex<Option<Arc<dyn RtpSender>>>,
}

impl Outgoing {
    fn new(kind: MediaKind) -> Result<Self, webrtc::error::Error> {
        let ssrc = fastrand::u32(1..);
        let label = codecs::label(kind).to_owned();
        let track = TrackLocalStaticSample::new(
            Instant::now(),
            codecs::track(kind, "huddle".to_owned(), label, ssrc),
        )?;
        let mime = codecs::mime(kind);
        Ok(Self {
            mime,
            track: Arc::new(track),
            ssrc,
            sender: Mutex::new(None),
        })
    }

    /// Reads the peer's feedback on this track once it is bound (webrtc-rs hands a sent track
    /// the RTCP about it): its report blocks go to `path`; for the camera, its keyframe requests
    /// go to `keyframes`.
    async fn feedback(&self, path: &ObservedPath, keyframes: Option<&KeyframeRequests>) {
        loop {
            match self.track.poll().await {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    path.reports(&packets);
                    if let Some(keyframes) = keyframes {
                        keyframes.requested(&packets);
                    }
                }
                Some(_) => {}
                // Not bound (yet, or any more).
                None => futures_timer::Delay::new(Duration::from_millis(100)).await,
            }
        }
    }

    /// Adds the track to the connection (once).
    async fn add_to(&self, connection: &impl PeerConnection) -> webrtc::error::Result<()> {
        if lock(&self.sender).is_some() {
            return Ok(());
        }
        let sender = connection
            .add_track(self.track.clone() as Arc<dyn TrackLocal>)
            .await?;
        *lock(&self.sender) = Some(sender);
        Ok(())
    }

    /// Sends every sample that comes, once the codec's payload type is negotiated (samples
    /// before that are dropped: nobody could decode them).
    async fn write(&self, mut samples: Receiver<Encoded>) {
        let mut payload_type = None;
        while let Some(encoded) = samples.next().await {
            if payload_type.is_none() {
                let sender = lock(&self.sender).clone();
                if let Some(sender) = sender {
                    payload_type = sender.get_parameters().await.ok().and_then(|p| {
                        p.rtp_parameters
                            .codecs
                            .iter()
                            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(self.mime))
                            .map(|c| c.payload_type)
                    });
                }
            }
            let Some(pt) = payload_type else {
                continue;
            };
            let sample = Sample {
                data: encoded.data,
                duration: encoded.duration,
                ..Sample::new(Instant::now())
            };
            let mut writer = self.track.sample_writer(self.ssrc, pt);
            if let Some(level) = encoded.audio_level {
                writer = writer.with_audio_level(level);
            }
            let _ = writer.write_sample(&sample).await;
        }
    }
}

async fn run(
    opening: Opening,
    commands: UnboundedReceiver<Command>,
    reports: UnboundedSender<Report>,
    [audio_rx, video_rx]: [Receiver<Encoded>; 2],
) {
    let level_id = Arc::new(AtomicU8::new(0));
    let built = match (
        Outgoing::new(MediaKind::Audio),
        Outgoing::new(MediaKind::Video),
    ) {
        (Ok(audio), Ok(video)) => {
            let path = Arc::new(ObservedPath::new(audio.ssrc, video.ssrc));
            connect(&opening, reports.clone(), level_id.clone(), path.clone())
                .await
                .map(|c| (c, [audio, video], path))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let (connection, outgoing, estimate, path) = match built {
        Ok(((connection, estimate), outgoing, path)) => (connection, outgoing, estimate, path),
        Err(e) => {
            let _ = reports.unbounded_send(Report::Failed(format!("cannot open: {e}")));
            return;
        }
    };
    let negotiate = negotiate(
        &connection,
        &outgoing,
        commands,
        &reports,
        &level_id,
        &opening.hub,
    )
    .fuse();
    let keyframes = KeyframeRequests {
        reports: reports.clone(),
        last: Mutex::new(None),
    };
    let media = futures::future::join(
        futures::future::join3(
            outgoing[0].write(audio_rx),
            outgoing[1].write(video_rx),
            report_path(&connection, &estimate, &path, &reports),
        ),
        futures::future::join(
            outgoing[0].feedback(&path, None),
            outgoing[1].feedback(&path, Some(&keyframes)),
        ),
    )
    .fuse();
    futures::pin_mut!(negotiate, media);
    // The game side is gone when the commands end: close, or webrtc-rs keeps the sockets.
    futures::select! {
        () = negotiate => {},
        _ = media => {},
    }
    let _ = connection.close().await;
}

async fn negotiate(
    connection: &impl PeerConnection,
    outgoing: &[Outgoing; 2],
    mut commands: UnboundedReceiver<Command>,
    reports: &UnboundedSender<Report>,
    level_id: &AtomicU8,
    hub: &Arc<Hub>,
) {
    // Star host: the publishers' streams on this leg, by publisher.
    let mut forwards: HashMap<PeerId, Vec<Arc<ForwardedTrack>>> = HashMap::new();
    while let Some(command) = commands.next().await {
        // The peer's description says under which id its audio level comes.
        if let Command::AcceptOffer { sdp, .. } | Command::AcceptAnswer { sdp } = &command {
            let id = extension_id(sdp, "audio", AUDIO_LEVEL_URI).unwrap_or(0);
            level_id.store(id, Ordering::Relaxed);
        }
        let done = match command {
            Command::AddForward(tracks) => {
                add_forwards(connection, outgoing, tracks, &mut forwards, hub).await
            }
            Command::RemoveForward(origin) => {
                remove_forwards(connection, forwards.remove(&origin)).await
            }
            command => carry_out(connection, outgoing, command, reports).await,
        };
        if let Err(e) = done {
            let _ = reports.unbounded_send(Report::Failed(e.to_string()));
        }
    }
}

/// Publishes the estimator's target, which the interceptor chain otherwise keeps to itself.
struct Published<E> {
    inner: E,
    target: Arc<AtomicU64>,
}

impl<E: BandwidthEstimator> Published<E> {
    fn publish(&self) {
        let target = self.inner.target_bitrate();
        self.target.store(target.to_bits(), Ordering::Relaxed);
    }
}

impl<E: BandwidthEstimator> BandwidthEstimator for Published<E> {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.inner.on_reports(now, reports);
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.publish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

/// Builds the peer connection: default codecs, NACK, RTCP reports, and send-side congestion
/// control (GCC over transport-wide feedback) whose target goes to the returned atomic.
async fn connect(
    opening: &Opening,
    reports: UnboundedSender<Report>,
    level_id: Arc<AtomicU8>,
    path: Arc<ObservedPath>,
) -> webrtc::error::Result<(impl PeerConnection, Arc<AtomicU64>)> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    let b = opening.bitrate;
    let target = Arc::new(AtomicU64::new(f64::from(b.start).to_bits()));
    let estimator = Published {
        inner: Gcc::new(f64::from(b.start), f64::from(b.min), f64::from(b.max)),
        target: target.clone(),
    };
    let registry = configure_congestion_control(
        Registry::new(),
        estimator,
        CongestionFeedback::Twcc,
        &mut media,
    )?;
    let registry = register_default_interceptors(registry, &mut media)?
        // Last: every other interceptor has read the reports when they are handed on.
        .with(Slot::from(14_000), RtcpForTracks::default());
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(vec![RTCIceServer {
            urls: opening.ice.urls.clone(),
            username: opening.ice.username.clone().unwrap_or_default(),
            credential: opening.ice.credential.clone().unwrap_or_default(),
        }])
        .build();
    let connection = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_runtime(Arc::new(SmolRuntime))
        .with_handler(Arc::new(Handler {
            reports,
            level_id: level_id.clone(),
            path,
            decoders: opening.decoders.clone(),
            jitter: opening.jitter,
            far_end: opening.far_end.clone(),
            peer: opening.peer,
            relay: opening.relay,
            hub: opening.hub.clone(),
        }))
        .with_udp_addrs(opening.bind.clone())
        .build()
        .await?;
    Ok((connection, target))
}

/// Adds publishers' streams to the leg (after our own tracks, which keep the first two media
/// sections) and starts forwarding each.
async fn add_forwards(
    connection: &impl PeerConnection,
    outgoing: &[Outgoing; 2],
    tracks: Vec<(
        Arc<ForwardedTrack>,
        futures::channel::mpsc::Receiver<Forwardable>,
    )>,
    forwards: &mut HashMap<PeerId, Vec<Arc<ForwardedTrack>>>,
    hub: &Arc<Hub>,
) -> webrtc::error::Result<()> {
    for track in outgoing {
        track.add_to(connection).await?;
    }
    for (track, queue) in tracks {
        let sender = connection
            .add_track(track.track.clone() as Arc<dyn TrackLocal>)
            .await?;
        *lock(&track.sender) = Some(sender);
        forwards
            .entry(track.origin())
            .or_default()
            .push(track.clone());
        let hub = Arc::downgrade(hub);
        let forwarding = async move { track.run(queue, hub).await };
        // Off the I/O pool, whose thread reads every received track: a forwarding hop there
        // waits behind them (measured: three to five times the late voice packets).
        match bevy::tasks::AsyncComputeTaskPool::try_get() {
            Some(pool) => pool.spawn(forwarding).detach(),
            None => IoTaskPool::get().spawn(forwarding).detach(),
        }
    }
    Ok(())
}

/// Takes a publisher's streams off the leg (their forwarding ends with their queues).
async fn remove_forwards(
    connection: &impl PeerConnection,
    tracks: Option<Vec<Arc<ForwardedTrack>>>,
) -> webrtc::error::Result<()> {
    for track in tracks.into_iter().flatten() {
        let sender = lock(&track.sender).take();
        if let Some(sender) = sender {
            connection.remove_track(&sender).await?;
        }
    }
    Ok(())
}

async fn carry_out(
    connection: &impl PeerConnection,
    outgoing: &[Outgoing; 2],
    command: Command,
    reports: &UnboundedSender<Report>,
) -> webrtc::error::Result<()> {
    match command {
        Command::CreateOffer { round } => {
            for track in outgoing {
                track.add_to(connection).await?;
            }
            let offer = connection.create_offer(None).await?;
            let sdp = offer.sdp.clone();
            connection.set_local_description(offer).await?;
            let _ = reports.unbounded_send(Report::Offer { round, sdp });
        }
        Command::AcceptOffer { round, sdp } => {
            connection
                .set_remote_description(RTCSessionDescription::offer(sdp)?)
                .await?;
            // Added after the offer, the tracks take the offer's transceivers (send and receive).
            for track in outgoing {
                track.add_to(connection).await?;
            }
            let answer = connection.create_answer(None).await?;
            let sdp = answer.sdp.clone();
            connection.set_local_description(answer).await?;
            let _ = reports.unbounded_send(Report::Answer { round, sdp });
        }
        Command::AcceptAnswer { sdp } => {
            connection
                .set_remote_description(RTCSessionDescription::answer(sdp)?)
                .await?;
        }
        Command::AddCandidate { candidate } => {
            // Checked by the negotiation already; a candidate that still does not parse is skipped.
            if let Ok(init) = serde_json::from_str::<RTCIceCandidateInit>(&candidate) {
                connection.add_ice_candidate(init).await?;
            }
        }
        Command::AddForward(_) | Command::RemoveForward(_) => {}
    }
    Ok(())
}

/// Reads the connection's statistics once a second and reports the path.
async fn report_path(
    connection: &impl PeerConnection,
    estimate: &AtomicU64,
    observed: &ObservedPath,
    reports: &UnboundedSender<Report>,
) {
    loop {
        futures_timer::Delay::new(Duration::from_secs(1)).await;
        let stats = connection
            .get_stats(Instant::now(), StatsSelector::None)
            .await;
        let target = f64::from_bits(estimate.load(Ordering::Relaxed));
        let mut path = PathReport {
            estimate: target
                .is_finite()
                .then(|| target.clamp(0.0, f64::from(u32::MAX)) as u32),
            ..PathReport::default()
        };
        for entry in stats.iter() {
            match entry {
                RTCStatsReportEntry::RemoteInboundRtp(remote) => {
                    let kind = remote.received_rtp_stream_stats.rtp_stream_stats.kind;
                    if remote.round_trip_time_measurements > 0 && remote.round_trip_time > 0.0 {
                        path.rtt = Some(Duration::from_secs_f64(
                            remote.round_trip_time.clamp(0.0, 60.0),
                        ));
                    }
                    let loss = Some(remote.fraction_lost);
                    match kind {
                        RtpCodecKind::Audio => path.audio_loss = loss,
                        RtpCodecKind::Video => path.video_loss = loss,
                        _ => {}
                    }
                }
                RTCStatsReportEntry::InboundRtp(inbound)
                    if inbound.received_rtp_stream_stats.rtp_stream_stats.kind
                        == RtpCodecKind::Audio =>
                {
                    // webrtc-rs 0.21 fills this from the RTCP field as it is: RTP timestamp
                    // units (48 kHz for Opus), not seconds.
                    let units = inbound.received_rtp_stream_stats.jitter;
                    path.jitter = Some(units / f64::from(huddle_media::SAMPLE_RATE));
                }
                _ => {}
            }
        }
        // The peer's own reports, read as they came, where webrtc-rs's statistics lack them.
        path.rtt = observed.rtt().or(path.rtt);
        path.audio_loss = observed.loss(0).or(path.audio_loss);
        path.video_loss = observed.loss(1).or(path.video_loss);
        if reports.unbounded_send(Report::Path(path)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that floods keyframe requests gets one passed on per 250 ms, not one a packet.
    #[test]
    fn a_flood_of_keyframe_requests_is_passed_on_once() {
        let (reports, mut rx) = unbounded();
        let requests = KeyframeRequests {
            reports,
            last: Mutex::new(None),
        };
        let pli: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        })];
        let other: Vec<Box<dyn rtc::rtcp::Packet>> =
            vec![Box::new(rtc::rtcp::sender_report::SenderReport::default())];
        for _ in 0..10_000 {
            requests.requested(&pli);
            requests.requested(&other);
        }
        let passed = std::iter::from_fn(|| rx.try_recv().ok())
            .filter(|r| matches!(r, Report::KeyframeWanted))
            .count();
        assert_eq!(passed, 1);
    }
}
