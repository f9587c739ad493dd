//! The host's forwarding of media in a star room: what a client sends goes, packet by packet
//! and rewritten for each leg (`huddle_protocol::media::forward`), to every other client the
//! routes name. No decoding and no jitter buffer on the way.
//!
//! The [`Hub`] holds the routes: for each publisher and kind, the viewers and a bounded queue to
//! each one's forwarding task ([`ForwardedTrack`]). A viewer whose queue is full loses packets
//! (counted); its video then asks the publisher for a keyframe, so a slow viewer never holds up
//! the others and never stays frozen. A viewer's keyframe requests (PLI/FIR on the forwarded
//! track) go back to the publisher the same way, at most every 250 ms per publisher.

use super::codecs;
use super::local::lock;
use futures::channel::mpsc::{channel, Receiver, Sender};
use futures::StreamExt;
use huddle_protocol::media::forward::{LegNumbers, OutStream};
use huddle_protocol::media::sdp::AUDIO_LEVEL_URI;
use huddle_protocol::media::MediaKind;
use matchbox_socket::PeerId;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::shared::marshal::{Marshal, Unmarshal};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::rtp_transceiver::RtpSender;

/// Packets queued for one viewer's forwarded stream before it loses some (~0.3 s of video).
const LEG_QUEUE: usize = 128;
/// Keyframe requests to a publisher at most this often.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(250);

/// A packet from a publisher, as the host received it.
#[derive(Clone)]
pub(crate) struct Forwardable {
    pub(crate) packet: rtp::Packet,
    /// The id the publisher sends its audio level under (0: none).
    pub(crate) level_id: u8,
    pub(crate) at: Instant,
}

/// Where one viewer's forwarded stream of one publisher's kind is queued.
pub(crate) type LegSink = Sender<Forwardable>;

/// For each publisher and kind, its viewers and their queues.
pub(crate) type HubRoutes = HashMap<(PeerId, MediaKind), Vec<(PeerId, LegSink)>>;

/// Packets forwarded and lost, per viewer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LegCounts {
    pub(crate) forwarded: u64,
    pub(crate) dropped: u64,
}

/// The host's routes and queues. Shared by every media connection of the host.
#[derive(Default)]
pub(crate) struct Hub {
    routes: Mutex<HubRoutes>,
    /// Publishers a viewer wants a keyframe of, and when one was last asked for.
    keyframes: Mutex<HashMap<PeerId, (bool, Option<Instant>)>>,
    counts: Mutex<HashMap<PeerId, LegCounts>>,
}

impl Hub {
    /// Replaces the routes. A viewer newly getting a publisher's video asks it for a keyframe.
    pub(crate) fn set_routes(&self, routes: HubRoutes) {
        let mut current = lock(&self.routes);
        for ((origin, kind), viewers) in &routes {
            let before: HashSet<PeerId> = current
                .get(&(*origin, *kind))
                .map(|v| v.iter().map(|(p, _)| *p).collect())
                .unwrap_or_default();
            if *kind == MediaKind::Video && viewers.iter().any(|(v, _)| !before.contains(v)) {
                self.want_keyframe(*origin);
            }
        }
        let viewers: HashSet<PeerId> = routes.values().flatten().map(|(v, _)| *v).collect();
        let origins: HashSet<PeerId> = routes.keys().map(|(o, _)| *o).collect();
        lock(&self.counts).retain(|v, _| viewers.contains(v));
        lock(&self.keyframes).retain(|o, _| origins.contains(o));
        *current = routes;
    }

    /// A packet of `origin`'s `kind`, to every viewer of it.
    pub(crate) fn forward(&self, origin: PeerId, kind: MediaKind, packet: &Forwardable) {
        let mut routes = lock(&self.routes);
        let Some(viewers) = routes.get_mut(&(origin, kind)) else {
            return;
        };
        let mut lost = false;
        let mut counts = lock(&self.counts);
        for (viewer, sink) in viewers.iter_mut() {
            let count = counts.entry(*viewer).or_default();
            if sink.try_send(packet.clone()).is_ok() {
                count.forwarded += 1;
            } else {
                count.dropped += 1;
                lost = true;
            }
        }
        drop(counts);
        drop(routes);
        if lost && kind == MediaKind::Video {
            self.want_keyframe(origin);
        }
    }

    /// A viewer needs a keyframe of `origin`'s video.
    pub(crate) fn want_keyframe(&self, origin: PeerId) {
        lock(&self.keyframes).entry(origin).or_default().0 = true;
    }

    /// Whether to ask `origin` for a keyframe now (once per wish, at most every 250 ms).
    pub(crate) fn take_keyframe_wish(&self, origin: PeerId) -> bool {
        let mut keyframes = lock(&self.keyframes);
        let Some((wanted, last)) = keyframes.get_mut(&origin) else {
            return false;
        };
        if !*wanted || last.is_some_and(|at| at.elapsed() < KEYFRAME_INTERVAL) {
            return false;
        }
        *wanted = false;
        *last = Some(Instant::now());
        true
    }

    /// What was forwarded to and lost for `viewer`.
    pub(crate) fn counts(&self, viewer: PeerId) -> LegCounts {
        lock(&self.counts).get(&viewer).copied().unwrap_or_default()
    }
}

/// The queue to a new forwarded stream and its end for the leg's task.
pub(crate) fn leg_queue() -> (LegSink, Receiver<Forwardable>) {
    channel(LEG_QUEUE)
}

/// One publisher's stream of one kind, forwarded on one viewer's leg: its own SSRC there, the
/// publisher's id as its stream id (so the viewer knows whose it is).
pub(crate) struct ForwardedTrack {
    origin: PeerId,
    kind: MediaKind,
    pub(crate) track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pub(crate) sender: Mutex<Option<Arc<dyn RtpSender>>>,
}

impl ForwardedTrack {
    pub(crate) fn new(origin: PeerId, kind: MediaKind) -> Self {
        let ssrc = fastrand::u32(1..);
        let id = format!("{}-{origin}", codecs::label(kind));
        let track = codecs::track(kind, origin.to_string(), id, ssrc);
        Self {
            origin,
            kind,
            track: Arc::new(TrackLocalStaticRTP::new(track)),
            ssrc,
            sender: Mutex::new(None),
        }
    }

    pub(crate) fn origin(&self) -> PeerId {
        self.origin
    }

    /// How this leg numbers the stream, once negotiated; `source_level` is the publisher's
    /// audio-level id.
    async fn numbers(&self, source_level: u8) -> Option<LegNumbers> {
        let sender = lock(&self.sender).clone()?;
        let parameters = sender.get_parameters().await.ok()?;
        let mime = codecs::mime(self.kind);
        let payload_type = parameters
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))?
            .payload_type;
        let level = parameters
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == AUDIO_LEVEL_URI)
            .and_then(|e| u8::try_from(e.id).ok());
        let extensions = match level {
            Some(to) if source_level != 0 => vec![(source_level, to)],
            _ => Vec::new(),
        };
        Some(LegNumbers {
            payload_type,
            extensions,
        })
    }

    /// Forwards what the hub queues, until the queue's sender is gone. Packets before the leg
    /// is negotiated are dropped (nobody could take them). The hub is only looked at (it holds
    /// the queue: a strong reference would keep both, and the connection, alive for ever).
    pub(crate) async fn run(&self, mut queue: Receiver<Forwardable>, hub: Weak<Hub>) {
        let start = Instant::now();
        let clock_rate = codecs::clock_rate(self.kind);
        let mut stream: Option<OutStream> = None;
        let mut source_level = 0;
        let write = async {
            while let Some(item) = queue.next().await {
                if stream.is_none() || item.level_id != source_level {
                    source_level = item.level_id;
                    let Some(numbers) = self.numbers(source_level).await else {
                        continue;
                    };
                    match &mut stream {
                        Some(s) => s.set_numbers(numbers),
                        None => stream = Some(OutStream::new(self.ssrc, clock_rate, numbers)),
                    }
                }
                let Some(out) = stream.as_mut() else { continue };
                let Ok(mut bytes) = item.packet.marshal() else {
                    continue;
                };
                if out
                    .rewrite(&mut bytes, item.at.saturating_duration_since(start))
                    .is_err()
                {
                    continue;
                }
                if let Ok(packet) = rtp::Packet::unmarshal(&mut &bytes[..]) {
                    let _ = self.track.write_rtp(packet).await;
                }
            }
        };
        // The viewer's keyframe requests on this stream go back to the publisher.
        let feedback = async {
            loop {
                match self.track.poll().await {
                    Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                        let asks = packets.iter().any(|p| {
                            let any = p.as_any();
                            any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                        });
                        match hub.upgrade() {
                            Some(hub) if asks => hub.want_keyframe(self.origin),
                            Some(_) => {}
                            None => return,
                        }
                    }
                    Some(_) => {}
                    None => futures_timer::Delay::new(Duration::from_millis(100)).await,
                }
            }
        };
        futures::pin_mut!(write, feedback);
        futures::future::select(write, feedback).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u128) -> PeerId {
        PeerId(uuid::Uuid::from_u128(i))
    }

    fn packet() -> Forwardable {
        Forwardable {
            packet: rtp::Packet::default(),
            level_id: 0,
            at: Instant::now(),
        }
    }

    /// A viewer that takes nothing loses packets (counted, and a keyframe is asked for) while
    /// the other viewer gets every one.
    #[test]
    fn a_slow_viewer_loses_packets_and_never_holds_up_the_others() {
        let hub = Hub::default();
        let (origin, slow, fast) = (peer(1), peer(2), peer(3));
        let (slow_sink, _slow_queue) = leg_queue();
        let (fast_sink, mut fast_queue) = leg_queue();
        let mut routes = HashMap::new();
        routes.insert(
            (origin, MediaKind::Video),
            vec![(slow, slow_sink), (fast, fast_sink)],
        );
        hub.set_routes(routes);
        assert!(
            hub.take_keyframe_wish(origin),
            "new viewers ask for a keyframe"
        );
        let mut got = 0;
        for _ in 0..1_000 {
            hub.forward(origin, MediaKind::Video, &packet());
            while fast_queue.try_recv().is_ok() {
                got += 1;
            }
        }
        assert_eq!(got, 1_000);
        assert_eq!(hub.counts(fast).dropped, 0);
        let slow_counts = hub.counts(slow);
        assert!(slow_counts.forwarded <= LEG_QUEUE as u64 + 1);
        assert_eq!(slow_counts.forwarded + slow_counts.dropped, 1_000);
        // The wish is there but throttled: asked for again only after 250 ms.
        assert!(!hub.take_keyframe_wish(origin));
        // Packets of a publisher nobody gets go nowhere; unknown kinds cost nothing.
        hub.forward(peer(9), MediaKind::Audio, &packet());
        assert_eq!(hub.counts(peer(9)), LegCounts::default());
        // A route that ends forgets its counts.
        hub.set_routes(HashMap::new());
        assert_eq!(hub.counts(slow), LegCounts::default());
    }
}
