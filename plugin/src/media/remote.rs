//! Remote tracks: what a peer sends, decoded on a thread per track. A voice goes through the
//! jitter buffer ([`huddle_protocol::media::jitter`]) and the Opus decoder, one 20 ms frame per
//! tick, into a PCM queue the game reads ([`RemoteAudio::take_pcm`]); a camera goes through
//! RTP reassembly and the VP8 decoder into the latest frame ([`RemoteVideo::latest_frame`]).
//!
//! Everything here comes from the network: packet queues are bounded (overflow is counted),
//! undecodable data is counted and concealed, and nothing plays while the peer says its track
//! is off.

use super::local::lock;
use super::SPEAKING_DB;
use huddle_media::audio::AudioDecoder;
use huddle_media::echo::{FarEnd, Stream};
use huddle_media::tone::rms_db;
use huddle_media::vp8::Vp8Decoder;
use huddle_media::{VideoFrame, FRAME_SAMPLES, SAMPLE_RATE};
use huddle_protocol::conditioner::{Conditions, Delayer};
use huddle_protocol::media::jitter::{JitterBuffer, JitterSettings, JitterStats, Playout};
use huddle_protocol::media::lipsync::LipSync;
use huddle_protocol::media::MediaKind;
use huddle_protocol::Lane;
use matchbox_socket::PeerId;
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::codec::vp8::Vp8Packet;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// RTP packets queued for a track's thread at most.
const PACKET_QUEUE: usize = 512;
/// Decoded frames held for lip sync at most (a second at 30 fps); more are shown early.
const HELD_FRAMES: usize = 30;
/// Decoded PCM kept for the game at most (two seconds); older samples are dropped.
const PCM_KEPT: usize = 2 * SAMPLE_RATE as usize;

/// Whether the peer says the track is on, and whether a frame was decoded since it went on.
#[derive(Debug, Default)]
struct Liveness {
    live: AtomicBool,
    started: AtomicBool,
    /// Bumped with every change, so a thread that slept through off-and-on again sees it.
    changes: AtomicU64,
}

impl Liveness {
    fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// Live, and a frame decoded since it went live.
    fn started(&self) -> bool {
        self.is_live() && self.started.load(Ordering::Relaxed)
    }

    fn mark_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// The peer turned the track on or off; a track that goes off must start again.
    fn set(&self, live: bool) {
        if self.live.swap(live, Ordering::Relaxed) != live {
            self.started.store(false, Ordering::Relaxed);
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters both kinds of remote track keep.
#[derive(Debug, Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Packets the track's thread could not take in time.
    overflow: AtomicU64,
    /// Frames that did not decode.
    decode_errors: AtomicU64,
}

/// A peer's voice. The game reads its PCM, its level and its jitter buffer's counters.
#[derive(Debug)]
pub struct RemoteAudio {
    pcm: Mutex<VecDeque<f32>>,
    /// Frames play while the peer says its microphone is on.
    liveness: Liveness,
    volume: AtomicU32,
    level: AtomicU32,
    jitter: Mutex<JitterStats>,
    pcm_dropped: AtomicU64,
    counters: Counters,
    /// The link conditioner's media conditions, applied before the jitter buffer.
    conditions: Mutex<Option<Conditions>>,
    /// Samples delivered so far, and when the last frame was.
    delivered: Mutex<(u64, Option<Instant>)>,
    /// The sender's word on its latest packet (RFC 6464): bit 8 set once it said anything,
    /// bit 7 voice, bits 0-6 the level in -dBov.
    activity: AtomicU32,
    /// The echo canceller's reference, which gets what this voice plays, as one stream.
    far_end: Arc<FarEnd>,
    far_end_stream: Mutex<Stream>,
}

impl RemoteAudio {
    fn new(far_end: Arc<FarEnd>) -> Self {
        Self {
            far_end,
            far_end_stream: Mutex::new(Stream::default()),
            activity: AtomicU32::new(0),
            pcm: Mutex::new(VecDeque::new()),
            liveness: Liveness::default(),
            volume: AtomicU32::new(1f32.to_bits()),
            level: AtomicU32::new((-200f32).to_bits()),
            jitter: Mutex::new(JitterStats::default()),
            pcm_dropped: AtomicU64::new(0),
            counters: Counters::default(),
            conditions: Mutex::new(None),
            delivered: Mutex::new((0, None)),
        }
    }

    /// Samples decoded into the PCM queue so far (silence included, from the first decoded
    /// frame on), and when the latest frame was: the moment its samples left the decoder.
    pub fn delivered(&self) -> (u64, Option<Instant>) {
        *lock(&self.delivered)
    }

    pub(crate) fn set_conditions(&self, conditions: Option<Conditions>) {
        *lock(&self.conditions) = conditions;
    }

    /// Takes the PCM decoded since the last call (48 kHz mono `f32`, volume applied): one 20 ms
    /// frame per 20 ms from the first decoded frame on, silence included. At most two seconds
    /// are kept for a game that reads nothing.
    pub fn take_pcm(&self) -> Vec<f32> {
        lock(&self.pcm).drain(..).collect()
    }

    /// The level of the latest frame in dBFS (-200 for silence).
    pub fn level_db(&self) -> f32 {
        f32::from_bits(self.level.load(Ordering::Relaxed))
    }

    /// Whether the peer is speaking (its latest frame is above -45 dBFS).
    pub fn speaking(&self) -> bool {
        self.level_db() > SPEAKING_DB
    }

    /// What the sender says of its latest packet (the RFC 6464 audio level in its RTP header),
    /// known as it arrives, before the jitter buffer and without decoding: the cheap speaking
    /// indicator (a relaying host reads it too). `None` until a packet carried it.
    pub fn activity(&self) -> Option<VoiceActivity> {
        let bits = self.activity.load(Ordering::Relaxed);
        (bits & 0x100 != 0).then(|| VoiceActivity {
            level_db: -f32::from((bits & 0x7f) as u8),
            voice: bits & 0x80 != 0,
        })
    }

    pub(crate) fn set_activity(&self, level: u8, voice: bool) {
        let bits = 0x100 | u32::from(voice) << 7 | u32::from(level & 0x7f);
        self.activity.store(bits, Ordering::Relaxed);
    }

    /// Its playout volume (1 = as sent, 0 = deafened to this peer).
    pub fn volume(&self) -> f32 {
        f32::from_bits(self.volume.load(Ordering::Relaxed))
    }

    pub(crate) fn set_volume(&self, volume: f32) {
        let volume = if volume.is_finite() {
            volume.clamp(0.0, 4.0)
        } else {
            1.0
        };
        self.volume.store(volume.to_bits(), Ordering::Relaxed);
    }

    /// The jitter buffer's counters (played, recovered by FEC, concealed, late, restarts).
    pub fn jitter_stats(&self) -> JitterStats {
        *lock(&self.jitter)
    }

    /// RTP packets received.
    pub fn packets(&self) -> u64 {
        self.counters.packets.load(Ordering::Relaxed)
    }

    /// Packets and PCM dropped for lack of room (the game did not read, or a flood), and
    /// packets that did not decode.
    pub fn dropped(&self) -> u64 {
        self.counters.overflow.load(Ordering::Relaxed)
            + self.pcm_dropped.load(Ordering::Relaxed)
            + self.counters.decode_errors.load(Ordering::Relaxed)
    }

    /// Payload bytes received (Opus, without RTP headers).
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }

    /// Whether a frame has been decoded since the track went live.
    pub(crate) fn started(&self) -> bool {
        self.liveness.started()
    }

    /// The peer turned its microphone on or off.
    pub(crate) fn set_live(&self, live: bool) {
        self.liveness.set(live);
    }

    fn deliver(&self, pcm: &[f32]) {
        let volume = self.volume();
        let played: Vec<f32> = pcm.iter().map(|x| x * volume).collect();
        self.far_end
            .played_in(&mut lock(&self.far_end_stream), &played, Instant::now());
        let mut out = lock(&self.pcm);
        out.extend(played);
        let over = out.len().saturating_sub(PCM_KEPT);
        out.drain(..over);
        self.pcm_dropped.fetch_add(over as u64, Ordering::Relaxed);
        drop(out);
        let mut delivered = lock(&self.delivered);
        delivered.0 += pcm.len() as u64;
        delivered.1 = Some(Instant::now());
        self.level.store(rms_db(pcm).to_bits(), Ordering::Relaxed);
    }
}

/// How loud a peer's latest voice packet is and whether it holds voice, as its sender says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceActivity {
    /// The level in dBov (0 loudest, -127 silence).
    pub level_db: f32,
    /// Whether the sender's voice detector heard a voice.
    pub voice: bool,
}

/// Lip sync of one peer's voice and camera ([`LipSync`] on the wall clock), shared by both
/// tracks' threads.
#[derive(Debug)]
pub(crate) struct AvSync {
    epoch: Instant,
    inner: Mutex<LipSync>,
}

impl Default for AvSync {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            inner: Mutex::new(LipSync::new()),
        }
    }
}

impl AvSync {
    /// RTCP from the peer for its track of `kind` (whose RTP packets come from `ssrc`): the
    /// sender reports of that stream set its clock.
    pub(crate) fn reports(
        &self,
        kind: MediaKind,
        ssrc: Option<u32>,
        packets: &[Box<dyn rtc::rtcp::Packet>],
    ) {
        let reports = packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
            .filter(|sr| Some(sr.ssrc) == ssrc);
        for sr in reports {
            lock(&self.inner).sender_report(kind, sr.ntp_time, sr.rtp_time);
        }
    }

    fn audio_played(&self, rtp: u32) {
        lock(&self.inner).audio_played(rtp, self.epoch.elapsed());
    }

    fn hold(&self, rtp: u32) -> Duration {
        lock(&self.inner).hold(rtp, self.epoch.elapsed())
    }
}

/// A peer's camera: the latest decoded frame and counters.
#[derive(Debug, Default)]
pub struct RemoteVideo {
    latest: Mutex<Option<VideoFrame>>,
    /// A frame did not decode, or a new stream began: ask the sender for a keyframe.
    keyframe_wanted: AtomicBool,
    /// Bumped with every decoded frame.
    generation: AtomicU64,
    liveness: Liveness,
    frames: AtomicU64,
    counters: Counters,
    /// How long the latest frame was held for its voice (lip sync), in microseconds.
    held_us: AtomicU64,
}

impl RemoteVideo {
    fn show(&self, frame: VideoFrame) {
        *lock(&self.latest) = Some(frame);
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.liveness.mark_started();
    }

    /// How long the latest frame was held back so that it shows when its voice plays (lip
    /// sync; zero without a voice, or when the voice is ahead).
    pub fn lip_sync_hold(&self) -> Duration {
        Duration::from_micros(self.held_us.load(Ordering::Relaxed))
    }

    /// The latest decoded frame (I420).
    pub fn latest_frame(&self) -> Option<VideoFrame> {
        lock(&self.latest).clone()
    }

    /// The latest decoded frame as RGBA: width, height, pixels (what the image shows).
    pub(crate) fn latest_rgba(&self) -> Option<(u32, u32, Vec<u8>)> {
        self.latest_frame()
            .map(|f| (f.width, f.height, f.to_rgba()))
    }

    /// Frames decoded so far.
    pub fn frames_decoded(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Frames that did not decode (lost packets; the next keyframe repairs the picture).
    pub fn frames_dropped(&self) -> u64 {
        self.counters.decode_errors.load(Ordering::Relaxed)
    }

    /// RTP packets received.
    pub fn packets(&self) -> u64 {
        self.counters.packets.load(Ordering::Relaxed)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }

    /// Whether a keyframe should be asked for (and the wish taken).
    pub(crate) fn take_keyframe_wish(&self) -> bool {
        self.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub(crate) fn started(&self) -> bool {
        self.liveness.started()
    }

    pub(crate) fn set_live(&self, live: bool) {
        self.liveness.set(live);
        if !live {
            *lock(&self.latest) = None;
        }
    }
}

/// Where the connection's reader puts a remote track's packets.
pub(crate) struct Inlet<T> {
    queue: SyncSender<T>,
    overflow: Arc<dyn Fn() + Send + Sync>,
}

impl<T> Clone for Inlet<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            overflow: self.overflow.clone(),
        }
    }
}

impl<T> Inlet<T> {
    /// Queues a packet; a full queue drops it (counted). `false` once the track's thread ended.
    pub(crate) fn put(&self, item: T) -> bool {
        match self.queue.try_send(item) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                (self.overflow)();
                true
            }
            Err(_) => false,
        }
    }
}

/// Starts the thread of a remote voice.
pub(crate) fn spawn_audio(
    settings: JitterSettings,
    far_end: Arc<FarEnd>,
    sync: Arc<AvSync>,
) -> (Inlet<VoicePacket>, Arc<RemoteAudio>) {
    let out = Arc::new(RemoteAudio::new(far_end));
    let inlet = spawn_track(
        "huddle-voice",
        out.clone(),
        |o| &o.counters,
        move |rx, o| play(rx, settings, o, &sync),
    );
    (inlet, out)
}

/// Starts the thread of a remote camera.
pub(crate) fn spawn_video(sync: Arc<AvSync>) -> (Inlet<rtc::rtp::Packet>, Arc<RemoteVideo>) {
    let out = Arc::new(RemoteVideo::default());
    let inlet = spawn_track(
        "huddle-video",
        out.clone(),
        |o| &o.counters,
        move |rx, o| decode_video(rx, o, &sync),
    );
    (inlet, out)
}

/// Runs `work` on a thread named `name` over a bounded packet queue; the inlet counts what a
/// full queue drops in `counters(out)`.
fn spawn_track<T: Send + 'static, O: Send + Sync + 'static>(
    name: &str,
    out: Arc<O>,
    counters: fn(&O) -> &Counters,
    work: impl FnOnce(Receiver<T>, &O) + Send + 'static,
) -> Inlet<T> {
    let (queue, rx) = sync_channel(PACKET_QUEUE);
    let thread_out = out.clone();
    let _ = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || work(rx, &thread_out));
    let overflow = Arc::new(move || {
        counters(&out).overflow.fetch_add(1, Ordering::Relaxed);
    });
    Inlet { queue, overflow }
}

/// A voice's thread: packets into the jitter buffer, one decoded frame out every 20 ms.
/// A voice packet: sequence number, RTP timestamp, Opus payload.
pub(crate) type VoicePacket = (u16, u32, Vec<u8>);

/// The RTP timestamp the jitter buffer carries in front of each payload (for lip sync).
fn with_timestamp(timestamp: u32, payload: Vec<u8>) -> Vec<u8> {
    let mut held = timestamp.to_be_bytes().to_vec();
    held.extend(payload);
    held
}

/// A held payload's RTP timestamp and Opus bytes.
fn split_timestamp(held: &[u8]) -> Option<(u32, &[u8])> {
    let (ts, payload) = held.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*ts), payload))
}

fn play(rx: Receiver<VoicePacket>, settings: JitterSettings, out: &RemoteAudio, sync: &AvSync) {
    let Ok(mut decoder) = AudioDecoder::new() else {
        return;
    };
    let mut buffer = JitterBuffer::new(settings);
    let mut played = 0u32;
    let mut conditioner = Delayer::new(fastrand::u64(..));
    let clock = Instant::now();
    let mut next = clock;
    let silence = [0f32; FRAME_SAMPLES];
    loop {
        loop {
            match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok((seq, timestamp, payload)) => {
                    out.counters.packets.fetch_add(1, Ordering::Relaxed);
                    out.counters
                        .bytes
                        .fetch_add(payload.len() as u64, Ordering::Relaxed);
                    if !out.liveness.is_live() {
                        continue;
                    }
                    let payload = with_timestamp(timestamp, payload);
                    match *lock(&out.conditions) {
                        Some(conditions) => {
                            let mut held = seq.to_be_bytes().to_vec();
                            held.extend(payload);
                            let (lane, nobody) = (Lane::Unreliable, PeerId(uuid::Uuid::nil()));
                            conditioner.submit(
                                clock.elapsed(),
                                &conditions,
                                lane,
                                nobody,
                                held.into(),
                            );
                        }
                        None => buffer.push(seq, payload, clock.elapsed()),
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        for (_, _, held) in conditioner.due(clock.elapsed()) {
            if let [a, b, payload @ ..] = &held[..] {
                buffer.push(
                    u16::from_be_bytes([*a, *b]),
                    payload.to_vec(),
                    clock.elapsed(),
                );
            }
        }
        next += Duration::from_millis(20);
        let now = Instant::now();
        if next + Duration::from_millis(100) < now {
            next = now;
        }
        // The frame's RTP timestamp: its packet's, the next one's less a frame, or the last
        // one's plus a frame.
        let frame = FRAME_SAMPLES as u32;
        let playout = buffer.pop(clock.elapsed());
        let voiced = !matches!(playout, Playout::Silence);
        let decoded = match playout {
            Playout::Packet(held) => {
                out.liveness.mark_started();
                let (ts, packet) =
                    split_timestamp(&held).unwrap_or((played.wrapping_add(frame), &[]));
                played = ts;
                decoder.decode(packet)
            }
            Playout::Recover(held) => {
                let (ts, next) = split_timestamp(&held).unwrap_or((played, &[]));
                played = ts.wrapping_sub(frame);
                decoder.recover(next)
            }
            Playout::Conceal => {
                played = played.wrapping_add(frame);
                decoder.conceal()
            }
            Playout::Silence => Ok(silence.to_vec()),
        };
        if voiced && out.started() {
            sync.audio_played(played);
        }
        match decoded {
            Ok(pcm) if out.started() => out.deliver(&pcm),
            Ok(_) => {}
            Err(_) => {
                out.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                if out.started() {
                    out.deliver(&silence);
                }
            }
        }
        *lock(&out.jitter) = buffer.stats();
    }
}

/// A camera's thread: RTP packets reassembled into VP8 frames and decoded. Frames decode while
/// the peer's camera is not (yet) announced, so a keyframe that outruns the announcement is not
/// lost, but only frames of a live camera are shown; when the camera goes off, reassembly and
/// decoder start afresh, so nothing of the old stream leaks into the next. A decoded frame is
/// held until its voice plays (lip sync, at most [`MAX_HOLD`](huddle_protocol::media::lipsync::MAX_HOLD)).
fn decode_video(rx: Receiver<rtc::rtp::Packet>, out: &RemoteVideo, sync: &AvSync) {
    // A lost packet holds its frame back 400 ms or 64 packets at most, then the frame is given
    // up (the decoder conceals until the next keyframe).
    let builder = || {
        SampleBuilder::new(64, Vp8Packet::default(), 90_000)
            .with_max_time_delay(Duration::from_millis(400))
    };
    let (Ok(mut decoder), mut frames) = (Vp8Decoder::new(), builder()) else {
        return;
    };
    let mut was_live = false;
    let mut held: VecDeque<(Instant, VideoFrame)> = VecDeque::new();
    let mut seen_changes = out.liveness.changes.load(Ordering::Relaxed);
    loop {
        let wait = held.front().map_or(Duration::from_millis(100), |(due, _)| {
            due.saturating_duration_since(Instant::now())
        });
        let packet = match rx.recv_timeout(wait) {
            Ok(packet) => Some(packet),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let live = out.liveness.is_live();
        let changes = out.liveness.changes.load(Ordering::Relaxed);
        let restarted = changes != seen_changes;
        seen_changes = changes;
        if live && (!was_live || restarted) {
            out.keyframe_wanted.store(true, Ordering::Relaxed);
        }
        // Frames held for lip sync show only while the camera is live: held frames of a
        // camera that went off must not start it again, nor show an old picture after a restart.
        if !live || restarted {
            held.clear();
        }
        while held
            .front()
            .is_some_and(|(due, _)| *due <= Instant::now() || held.len() > HELD_FRAMES)
        {
            if let Some((_, frame)) = held.pop_front() {
                out.show(frame);
            }
        }
        if was_live && (!live || restarted) {
            frames = builder();
            match Vp8Decoder::new() {
                Ok(fresh) => decoder = fresh,
                Err(_) => return,
            }
        }
        was_live = live;
        let Some(packet) = packet else {
            continue;
        };
        out.counters.packets.fetch_add(1, Ordering::Relaxed);
        out.counters
            .bytes
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        frames.push(Instant::now(), packet);
        while let Some(sample) = frames.pop(Instant::now()) {
            match decoder.decode(&sample.data) {
                Ok(Some(frame)) if live => {
                    let hold = sync.hold(sample.packet_timestamp);
                    out.held_us
                        .store(hold.as_micros() as u64, Ordering::Relaxed);
                    if hold.is_zero() && held.is_empty() {
                        out.show(frame);
                    } else {
                        held.push_back((Instant::now() + hold, frame));
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    out.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    out.keyframe_wanted.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}
