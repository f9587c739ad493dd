//! One media-only peer connection (webrtc-rs, the stack matchbox uses) as an async task: it
//! carries out the negotiation's commands and reports what the connection did. The negotiation
//! itself is `huddle_protocol::media::MediaPeer`'s.

use bevy::tasks::{IoTaskPool, Task};
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::StreamExt;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::sync::Arc;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::runtime::SmolRuntime;

/// What the negotiation asks the connection to do.
#[derive(Debug)]
pub(crate) enum Command {
    CreateOffer { round: u32 },
    AcceptOffer { round: u32, sdp: String },
    AcceptAnswer { sdp: String },
    AddCandidate { candidate: String },
}

/// What the connection did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Report {
    Offer {
        round: u32,
        sdp: String,
    },
    Answer {
        round: u32,
        sdp: String,
    },
    Candidate(String),
    Connected,
    /// Failed or closed, or a step could not be done (with why).
    Failed(String),
}

/// The game side of one media peer connection: dropping it closes the connection.
pub(crate) struct MediaConnection {
    pub(crate) session: u32,
    commands: UnboundedSender<Command>,
    reports: UnboundedReceiver<Report>,
    _task: Task<()>,
}

impl MediaConnection {
    /// Opens a connection for `session` with these ICE servers, bound to `bind`.
    pub(crate) fn open(session: u32, ice: RTCIceServer, bind: Vec<String>) -> Self {
        let (commands, command_rx) = unbounded();
        let (report_tx, reports) = unbounded();
        let task = IoTaskPool::get().spawn(run(ice, bind, command_rx, report_tx));
        Self {
            session,
            commands,
            reports,
            _task: task,
        }
    }

    pub(crate) fn command(&self, command: Command) {
        let _ = self.commands.unbounded_send(command);
    }

    /// What the connection did since the last call.
    pub(crate) fn reports(&mut self) -> Vec<Report> {
        std::iter::from_fn(|| self.reports.try_recv().ok()).collect()
    }
}

struct Handler(UnboundedSender<Report>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let json = event
            .candidate
            .to_json()
            .ok()
            .and_then(|init| serde_json::to_string(&init).ok());
        if let Some(json) = json {
            let _ = self.0.unbounded_send(Report::Candidate(json));
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
        let _ = self.0.unbounded_send(report);
    }
}

async fn run(
    ice: RTCIceServer,
    bind: Vec<String>,
    mut commands: UnboundedReceiver<Command>,
    reports: UnboundedSender<Report>,
) {
    let connection = match connect(ice, bind, reports.clone()).await {
        Ok(c) => c,
        Err(e) => {
            let _ = reports.unbounded_send(Report::Failed(format!("cannot open: {e}")));
            return;
        }
    };
    while let Some(command) = commands.next().await {
        if let Err(e) = carry_out(&connection, command, &reports).await {
            let _ = reports.unbounded_send(Report::Failed(e.to_string()));
        }
    }
    // The game side is gone: close, or webrtc-rs keeps the sockets running.
    let _ = connection.close().await;
}

async fn connect(
    ice: RTCIceServer,
    bind: Vec<String>,
    reports: UnboundedSender<Report>,
) -> webrtc::error::Result<impl PeerConnection> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(vec![ice])
        .build();
    PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_runtime(Arc::new(SmolRuntime))
        .with_handler(Arc::new(Handler(reports)))
        .with_udp_addrs(bind)
        .build()
        .await
}

async fn carry_out(
    connection: &impl PeerConnection,
    command: Command,
    reports: &UnboundedSender<Report>,
) -> webrtc::error::Result<()> {
    match command {
        Command::CreateOffer { round } => {
            if round == 1 {
                // An audio m-line to negotiate the connection on (a kind without a track can
                // only receive); tracks add their own transceivers.
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                };
                connection
                    .add_transceiver_from_kind(RtpCodecKind::Audio, Some(init))
                    .await?;
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
    }
    Ok(())
}
