//! A hostile star host's media: a raw webrtc-rs peer connection (the stack the plugin uses) that
//! offers a player audio streams named as it likes — after a lobby member, a stranger, the player
//! itself — and sends an Opus tone on each, speaking huddle's media signals on the control
//! channel as a real host would. What the player makes of the names is the test.

use bevy_huddle::protocol::control::Control;
use bevy_huddle::protocol::media::MediaSignal;
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::{FutureExt, StreamExt};
use huddle_media::audio::AudioEncoder;
use huddle_media::{FRAME_SAMPLES, SAMPLE_RATE};
use matchbox_socket::PeerId;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCPeerConnectionIceEvent, RTCSessionDescription,
};
use webrtc::runtime::SmolRuntime;

/// The media session and round of the one offer made.
const SESSION: u32 = 1;

/// One forged stream: the stream id it carries and the tone sent on it.
#[derive(Debug, Clone)]
pub struct Forged {
    /// The stream id (huddle's forwarded streams name their publisher with it).
    pub stream: String,
    /// The sine sent on it, in Hz.
    pub tone: f32,
}

/// The hostile host's media connection to one player, run on a tokio runtime: feed it what the
/// player says ([`ForgedMedia::heard`]) and send what it says ([`ForgedMedia::to_say`]).
pub struct ForgedMedia {
    incoming: UnboundedSender<MediaSignal>,
    outgoing: UnboundedReceiver<MediaSignal>,
}

impl ForgedMedia {
    /// Opens the connection on `rt`, offers `streams`, and sends each stream's tone every 20 ms
    /// once the player's answer is in, until dropped.
    pub fn offer(rt: &tokio::runtime::Runtime, streams: Vec<Forged>) -> Self {
        let (incoming, heard) = unbounded();
        let (say, outgoing) = unbounded();
        rt.spawn(async move {
            if let Err(e) = run(streams, heard, say).await {
                eprintln!("forged media: {e}");
            }
        });
        Self { incoming, outgoing }
    }

    /// A media signal the player sent the hostile host.
    pub fn heard(&self, signal: MediaSignal) {
        let _ = self.incoming.unbounded_send(signal);
    }

    /// The media signals to send the player now.
    pub fn to_say(&mut self) -> Vec<MediaSignal> {
        std::iter::from_fn(|| self.outgoing.try_recv().ok()).collect()
    }

    /// Passes what `peer` said on the control channel in `inbox` to the connection and sends
    /// the connection's signals to `peer` through `hostile`; the rest of the inbox is dropped.
    pub fn pump(&mut self, hostile: &mut crate::StockPeer, peer: PeerId) {
        hostile.poll();
        for (ch, from, bytes) in std::mem::take(&mut hostile.inbox) {
            if let (0, true, Some(Control::Media(signal))) =
                (ch, from == peer, Control::decode(&bytes))
            {
                self.heard(signal);
            }
        }
        for signal in self.to_say() {
            hostile.send(0, peer, &Control::Media(signal).encode());
        }
    }
}

/// Trickles local candidates to the player.
struct Candidates(UnboundedSender<MediaSignal>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Candidates {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let json = event
            .candidate
            .to_json()
            .ok()
            .and_then(|init| serde_json::to_string(&init).ok());
        if let Some(candidate) = json {
            let _ = self.0.unbounded_send(MediaSignal::Candidate {
                session: SESSION,
                candidate,
            });
        }
    }
}

fn opus_track(stream: &str, index: usize, ssrc: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        stream.to_owned(),
        format!("forged-{index}"),
        "voice".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: SAMPLE_RATE,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )
}

async fn run(
    streams: Vec<Forged>,
    mut heard: UnboundedReceiver<MediaSignal>,
    say: UnboundedSender<MediaSignal>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let connection = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_runtime(Arc::new(SmolRuntime))
        .with_handler(Arc::new(Candidates(say.clone())))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await?;
    let mut tracks = Vec::new();
    for (i, forged) in streams.iter().enumerate() {
        let ssrc = 0x1000 + i as u32;
        let track = Arc::new(TrackLocalStaticSample::new(
            Instant::now(),
            opus_track(&forged.stream, i, ssrc),
        )?);
        let sender = connection
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await?;
        let encoder = AudioEncoder::new(32_000, 0)?;
        tracks.push((track, sender, ssrc, forged.tone, encoder));
    }
    let offer = connection.create_offer(None).await?;
    let sdp = offer.sdp.clone();
    connection.set_local_description(offer).await?;
    say.unbounded_send(MediaSignal::Offer {
        session: SESSION,
        round: 1,
        sdp,
    })?;
    let (mut answered, mut early) = (false, Vec::new());
    let mut payload_type = None;
    let mut sent = 0u64;
    let start = Instant::now();
    loop {
        let tick = futures_timer::Delay::new(Duration::from_millis(5)).fuse();
        futures::pin_mut!(tick);
        futures::select! {
            signal = heard.next() => match signal {
                None => break,
                Some(MediaSignal::Answer { sdp, .. }) => {
                    connection
                        .set_remote_description(RTCSessionDescription::answer(sdp)?)
                        .await?;
                    answered = true;
                    for init in early.drain(..) {
                        connection.add_ice_candidate(init).await?;
                    }
                }
                Some(MediaSignal::Candidate { candidate, .. }) => {
                    if let Ok(init) = serde_json::from_str::<RTCIceCandidateInit>(&candidate) {
                        // The player's candidates may overtake its answer: held until it is in.
                        if answered {
                            connection.add_ice_candidate(init).await?;
                        } else if early.len() < 64 {
                            early.push(init);
                        }
                    }
                }
                Some(_) => {}
            },
            () = tick => {}
        }
        if payload_type.is_none() {
            if let Some((_, sender, ..)) = tracks.first() {
                payload_type = sender.get_parameters().await.ok().and_then(|p| {
                    p.rtp_parameters
                        .codecs
                        .iter()
                        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_OPUS))
                        .map(|c| c.payload_type)
                });
            }
        }
        let Some(pt) = payload_type else { continue };
        // Paced at 20 ms a frame from the first.
        while start.elapsed() >= Duration::from_millis(20 * sent) {
            for (track, _, ssrc, tone, encoder) in &mut tracks {
                let pcm: Vec<f32> = (0..FRAME_SAMPLES)
                    .map(|i| {
                        let t = (sent as usize * FRAME_SAMPLES + i) as f32 / SAMPLE_RATE as f32;
                        0.5 * (std::f32::consts::TAU * *tone * t).sin()
                    })
                    .collect();
                let sample = Sample {
                    data: encoder.encode(&pcm)?.into(),
                    duration: Duration::from_millis(20),
                    ..Sample::new(Instant::now())
                };
                let _ = track.sample_writer(*ssrc, pt).write_sample(&sample).await;
            }
            sent += 1;
        }
    }
    let _ = connection.close().await;
    Ok(())
}
