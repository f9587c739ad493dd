//! Media benchmark (feature `media`): mouth-to-ear latency, media connection time, codec CPU, and
//! game-message round trips while media runs, each next to its anchor from the same run.
//! `./scripts/bench_media.sh` (release, inside a loopback-only namespace);
//! `HUDDLE_BENCH_ONLY=latency` runs one section (latency, connect, cpu, rtt, forward, star; `lobby` runs only the star's voice lobby).

use bevy::prelude::*;
use bevy_huddle::media::{
    AudioPush, CameraSource, LocalMedia, MediaState, MediaStates, MicProcessing, MicSource,
    RemoteMedia, SineWave, TestPattern, VideoPush, FRAME_SAMPLES, SAMPLE_RATE,
};
use bevy_huddle::prelude::*;
use huddle_media::audio::{AudioDecoder, AudioEncoder};
use huddle_media::echo::FarEnd;
use huddle_media::process::Processor;
use huddle_media::vp8::{Vp8Decoder, Vp8Encoder};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code, reason = "shared with plugin_bench, which uses all of it")]
mod measure;

use measure::{ms, percentile, process_cpu, thread_cpu};

const LIMIT: Duration = Duration::from_secs(60);

/// An app in `url`; with `loopback`, media connections bind 127.0.0.1 only.
fn app_bound(url: &str, media: bool, loopback: bool) -> App {
    let mut config = HuddleConfig::room(url);
    config.media.enabled = media;
    if loopback {
        config.media.bind = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))];
    }
    let mut app = App::new();
    app.add_plugins(MinimalPlugins)
        .add_plugins(HuddlePlugin::new(config))
        .add_huddle_message::<Ping>(Channel::Unreliable)
        .init_resource::<Pongs>()
        .add_systems(Update, echo);
    app
}

fn app(url: &str, media: bool) -> App {
    app_bound(url, media, false)
}

/// Updates `apps` (1 ms apart) until `done` or the limit.
fn run_until(apps: &mut [App], mut done: impl FnMut(&mut [App]) -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done(apps) {
        for a in apps.iter_mut() {
            a.update();
        }
        assert!(Instant::now() < deadline, "the benchmark's setup timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn roster(app: &App) -> &Roster {
    app.world().resource::<Roster>()
}

/// Two apps with media in `room` (settings changed by `configure`), the first hosting; returns
/// them once linked.
fn pair_with(server: &str, room: &str, configure: impl Fn(&mut HuddleConfig)) -> Vec<App> {
    let url = format!("{server}/{room}");
    let make = || {
        let mut config = HuddleConfig::room(&url);
        config.media.enabled = true;
        configure(&mut config);
        let mut app = App::new();
        app.add_plugins(MinimalPlugins)
            .add_plugins(HuddlePlugin::new(config));
        app
    };
    let mut apps = vec![make()];
    run_until(&mut apps, |a| roster(&a[0]).is_host());
    apps.push(make());
    run_until(&mut apps, |a| a.iter().all(|a| roster(a).peers.len() == 1));
    apps
}

// ---------------------------------------------------------------- mouth to ear

/// One burst of 1 kHz every 500 ms, 60 ms long, silence between: `n` bursts.
fn bursts(n: usize) -> (Vec<f32>, Vec<u64>) {
    let period = SAMPLE_RATE as usize / 2;
    let burst = SAMPLE_RATE as usize * 60 / 1000;
    let mut pcm = vec![0f32; period * n];
    let mut onsets = Vec::new();
    for k in 0..n {
        let start = k * period + period / 2;
        onsets.push(start as u64);
        for i in 0..burst {
            let t = i as f32 / SAMPLE_RATE as f32;
            pcm[start + i] = 0.5 * (std::f32::consts::TAU * 1000.0 * t).sin();
        }
    }
    (pcm, onsets)
}

/// When sample `index` of a stream crossed a boundary, from `(count after, at)` records of whole
/// frames: the frame's instant plus the sample's place in it.
fn instant_of(index: u64, log: &[(u64, Instant)]) -> Option<Instant> {
    let &(after, at) = log.iter().find(|(after, _)| *after > index)?;
    let frame_start = after.saturating_sub(FRAME_SAMPLES as u64);
    let offset = index.saturating_sub(frame_start) as f64 / f64::from(SAMPLE_RATE);
    Some(at + Duration::from_secs_f64(offset))
}

/// Sender's pushed samples entering its encoder vs the receiver's decoded samples leaving its
/// jitter buffer, burst onset by burst onset.
fn mouth_to_ear(server: &str, processing: MicProcessing) -> Vec<Duration> {
    let room = format!("m2e-{}", processing.noise_suppression);
    let mut apps = pair_with(server, &room, |config| config.media.processing = processing);
    mouth_to_ears(&mut apps, 0, &[1]).remove(0)
}

/// A host and two clients in the star room `url`, bound to loopback, once all are in.
fn star_of_three(url: &str) -> Vec<App> {
    let mut apps = vec![app_bound(url, true, true)];
    run_until(&mut apps, |a| roster(&a[0]).is_host());
    apps.push(app_bound(url, true, true));
    apps.push(app_bound(url, true, true));
    run_until(&mut apps, |a| {
        a.iter().all(|a| roster(a).members.len() == 3)
    });
    apps
}

/// In a star of three (bound to loopback): a client talks; what the host hears directly (the
/// anchor) and what the other client hears through the host.
fn mouth_to_ear_star(server: &str) -> [Vec<Duration>; 2] {
    let url = format!("{server}/m2e-star?topology=star&capacity=8");
    let mut apps = star_of_three(&url);
    let mut heard = mouth_to_ears(&mut apps, 1, &[0, 2]);
    let through = heard.remove(1);
    [heard.remove(0), through]
}

/// In a star of three, a client starts wanting another client's camera (it took only its voice
/// before): from that moment until the first picture decodes, five times. The host asks the
/// publisher for a keyframe for the new viewer (the encoder also makes one every second).
fn keyframe_recovery(server: &str) -> Vec<Duration> {
    use bevy_huddle::media::{MediaKind, TrackSet};
    let url = format!("{server}/keyframe-star?topology=star&capacity=8");
    let mut apps = star_of_three(&url);
    let publisher = roster(&apps[1]).me.expect("an id");
    apps[1]
        .world_mut()
        .resource_mut::<LocalMedia>()
        .start_camera(CameraSource::TestPattern(TestPattern::new(320, 240, 30)));
    let decoded = |a: &[App]| {
        a[2].world()
            .resource::<RemoteMedia>()
            .video(publisher)
            .map_or(0, |v| v.frames_decoded())
    };
    run_until(&mut apps, |a| decoded(a) > 30);
    let voice_only = TrackSet::default().with(MediaKind::Audio, true);
    let mut times = Vec::new();
    for _ in 0..5 {
        apps[2]
            .world_mut()
            .resource_mut::<LocalMedia>()
            .receive(publisher, voice_only);
        let off = Instant::now();
        run_until(&mut apps, |_| off.elapsed() > Duration::from_millis(1500));
        let before = decoded(&apps);
        apps[2]
            .world_mut()
            .resource_mut::<LocalMedia>()
            .receive(publisher, TrackSet::ALL);
        let on = Instant::now();
        run_until(&mut apps, |a| decoded(a) > before);
        times.push(on.elapsed());
    }
    times
}

/// The host of [`voice_lobby`], in a process of its own so that its CPU time is its alone, its
/// game loop at 60 frames a second: it hosts `url` and says `hosting`; at each `measure` on its
/// input it measures its CPU for a phase and says `cpu_ms=.. forwarded=.. dropped=..`; `done`
/// (or its input closing) ends it.
fn voice_lobby_host(url: &str) {
    use std::io::BufRead;
    use std::sync::mpsc::TryRecvError;
    let mut apps = vec![app_bound(url, true, true)];
    run_until(&mut apps, |a| roster(&a[0]).is_host());
    println!("hosting");
    let (asks, asked) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if asks.send(line).is_err() {
                return;
            }
        }
    });
    let counts = |a: &App| {
        let stats = a.world().resource::<bevy_huddle::media::MediaStats>();
        stats
            .0
            .values()
            .fold((0, 0), |(f, d), s| (f + s.forwarded, d + s.forward_dropped))
    };
    let frame = |app: &mut App| {
        let t = Instant::now();
        app.update();
        std::thread::sleep(Duration::from_micros(16_667).saturating_sub(t.elapsed()));
    };
    let deadline = Instant::now() + 6 * LIMIT;
    while Instant::now() < deadline {
        match asked.try_recv() {
            Err(TryRecvError::Empty) => frame(&mut apps[0]),
            Ok(line) if line == "measure" => {
                let (cpu0, t0, before) = (process_cpu(), Instant::now(), counts(&apps[0]));
                while t0.elapsed() < PHASE {
                    frame(&mut apps[0]);
                }
                let (cpu, after) = (process_cpu() - cpu0, counts(&apps[0]));
                println!(
                    "cpu_ms={} forwarded={} dropped={}",
                    cpu.as_millis(),
                    after.0 - before.0,
                    after.1 - before.1
                );
            }
            Ok(_) | Err(TryRecvError::Disconnected) => return,
        }
    }
}

/// What [`voice_lobby`] measured: the host's CPU (share of a core) in each phase, and what it
/// forwarded.
struct VoiceLobby {
    /// Nobody talking (the anchor).
    idle: f64,
    /// Two talking, every client taking both voices: each phase's share.
    talking: Vec<f64>,
    /// Two talking, no client taking them (the host still receives and decodes both).
    unheard: Vec<f64>,
    /// Copies forwarded in each talking phase.
    copies: Vec<u64>,
    /// Copies lost over all phases.
    lost: u64,
    /// The host's upload of the two voices (Opus payload every client received), bits/s.
    upload: f64,
}

impl VoiceLobby {
    /// The host's whole-path CPU per forwarded copy: each talking phase against the unheard one
    /// after it (same voices received and decoded, no copies), the median of the pairs.
    fn per_copy(&self) -> Duration {
        let mut each: Vec<Duration> = (self.talking.iter().zip(&self.unheard))
            .zip(&self.copies)
            .filter(|(_, c)| **c > 0)
            .map(|((t, u), c)| {
                Duration::from_secs_f64(((t - u) * PHASE.as_secs_f64()).max(0.0) / *c as f64)
            })
            .collect();
        percentile(&mut each, 0.5)
    }
}

/// How long the voice lobby's host measures each phase.
const PHASE: Duration = Duration::from_secs(8);

/// A 16-player voice lobby in a star: the host's CPU (its own process, its game loop at 60 Hz)
/// with nobody talking (the anchor), then with two talking at once, alternately heard by every
/// client and by none (the difference is what forwarding costs the host, whole path: queues,
/// webrtc-rs's send path with its interceptors and SRTP, the socket), and its upload then.
fn voice_lobby(server: &str) -> Option<VoiceLobby> {
    use bevy_huddle::media::{MediaKind, TrackSet};
    use std::io::{BufRead, BufReader, Write};
    let url = format!("{server}/voice-lobby?topology=star&capacity=16");
    let mut host = std::process::Command::new(std::env::current_exe().ok()?)
        .env("HUDDLE_BENCH_HOST", &url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut lines = BufReader::new(host.stdout.take()?).lines();
    while lines.next()?.ok()? != "hosting" {}
    let mut input = host.stdin.take()?;
    let mut apps: Vec<App> = (0..15).map(|_| app_bound(&url, true, true)).collect();
    run_until(&mut apps, |a| {
        a.iter().all(|a| roster(a).members.len() == 16)
    });
    let mut measure = |apps: &mut Vec<App>| -> Option<(f64, u64, u64)> {
        writeln!(input, "measure").ok()?;
        let t0 = Instant::now();
        run_until(apps, |_| t0.elapsed() > PHASE);
        let result = lines.find_map(|l| l.ok().filter(|l| l.starts_with("cpu_ms=")))?;
        let field = |name: &str| -> u64 {
            result
                .split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let share = field("cpu_ms=") as f64 / PHASE.as_millis() as f64;
        Some((share, field("forwarded="), field("dropped=")))
    };
    let (idle, _, mut lost) = measure(&mut apps)?;
    let talkers: Vec<PeerId> = apps[..2].iter().filter_map(|a| roster(a).me).collect();
    for (a, tone) in apps.iter_mut().zip([440.0, 660.0]) {
        let mut local = a.world_mut().resource_mut::<LocalMedia>();
        local.start_microphone(MicSource::SineWave(SineWave::new(tone, 0.3)));
    }
    let heard = |a: &[App]| -> u64 {
        a.iter()
            .map(|app| {
                let remote = app.world().resource::<RemoteMedia>();
                talkers
                    .iter()
                    .filter_map(|t| remote.audio(*t))
                    .map(|v| v.bytes())
                    .sum::<u64>()
            })
            .sum()
    };
    let hear = |apps: &mut Vec<App>, on: bool| {
        for app in apps.iter_mut() {
            let mut local = app.world_mut().resource_mut::<LocalMedia>();
            for t in &talkers {
                local.receive(*t, TrackSet::ALL.with(MediaKind::Audio, on));
            }
        }
        // The host's routes follow the clients' wants within a few frames.
        let t0 = Instant::now();
        run_until(apps, |_| t0.elapsed() > Duration::from_secs(1));
    };
    run_until(&mut apps, |a| {
        a.iter().all(|app| {
            let remote = app.world().resource::<RemoteMedia>();
            talkers.iter().all(|t| {
                Some(*t) == roster(app).me || remote.audio(*t).is_some_and(|v| v.packets() > 50)
            })
        })
    });
    let mut result = VoiceLobby {
        idle,
        talking: Vec::new(),
        unheard: Vec::new(),
        copies: Vec::new(),
        lost: 0,
        upload: 0.0,
    };
    for round in 0..3 {
        let bytes0 = heard(&apps);
        let (talking, copies, dropped) = measure(&mut apps)?;
        if round == 0 {
            result.upload = (heard(&apps) - bytes0) as f64 * 8.0 / PHASE.as_secs_f64();
        }
        hear(&mut apps, false);
        let (unheard, _, _) = measure(&mut apps)?;
        hear(&mut apps, true);
        result.talking.push(talking);
        result.unheard.push(unheard);
        result.copies.push(copies);
        lost += dropped;
    }
    writeln!(input, "done").ok()?;
    result.lost = lost;
    let _ = host.wait();
    Some(result)
}

/// `talker` pushes 40 bursts; for each of `listeners`, when each burst's onset came out of its
/// jitter buffer after it entered the talker's encoder.
fn mouth_to_ears(apps: &mut [App], talker: usize, listeners: &[usize]) -> Vec<Vec<Duration>> {
    let talker_id = roster(&apps[talker]).me.expect("an id");
    let push = AudioPush::new();
    apps[talker]
        .world_mut()
        .resource_mut::<LocalMedia>()
        .start_microphone(MicSource::Push(push.clone()));
    run_until(apps, |a| {
        listeners.iter().all(|&l| {
            a[l].world()
                .resource::<RemoteMedia>()
                .audio(talker_id)
                .is_some()
        })
    });
    let (script, onsets) = bursts(40);
    let (mut pushed, mut taken) = (0usize, Vec::new());
    let mut delivered = vec![Vec::new(); listeners.len()];
    let mut heard = vec![Vec::new(); listeners.len()];
    let end = Instant::now() + Duration::from_secs(22);
    while Instant::now() < end {
        for a in apps.iter_mut() {
            a.update();
        }
        // Keep ~100 ms queued so the microphone never runs dry (that would shift the script).
        if pushed < script.len() && push.queued() < 4_800 {
            let n = (script.len() - pushed).min(960);
            push.push(&script[pushed..pushed + n]);
            pushed += n;
        }
        let t = push.taken();
        if let (n, Some(at)) = t {
            if taken.last().is_none_or(|(m, _)| *m != n) {
                taken.push((n, at));
            }
        }
        for (k, &l) in listeners.iter().enumerate() {
            if let Some(voice) = apps[l].world().resource::<RemoteMedia>().audio(talker_id) {
                heard[k].extend(voice.take_pcm());
                if let (n, Some(at)) = voice.delivered() {
                    if delivered[k].last().is_none_or(|(m, _)| *m != n) {
                        delivered[k].push((n, at));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    heard
        .iter()
        .zip(&delivered)
        .map(|(heard, delivered)| onsets_heard(heard, delivered, &onsets, &taken))
        .collect()
}

/// Onsets heard: the first sample above -26 dBFS after 200 ms below, as an index of the
/// delivered stream (which starts where `delivered` started counting), each against the latest
/// burst onset that entered the encoder before it.
fn onsets_heard(
    heard: &[f32],
    delivered: &[(u64, Instant)],
    onsets: &[u64],
    taken: &[(u64, Instant)],
) -> Vec<Duration> {
    let first_delivered = delivered
        .first()
        .map_or(0, |(n, _)| n.saturating_sub(FRAME_SAMPLES as u64));
    let mut quiet = 0usize;
    let mut latencies = Vec::new();
    for (i, &x) in heard.iter().enumerate() {
        if x.abs() < 0.05 {
            quiet += 1;
            continue;
        }
        if quiet >= 9_600 {
            let out = instant_of(first_delivered + i as u64, delivered);
            let sent = onsets
                .iter()
                .filter_map(|&s| instant_of(s, taken))
                .rfind(|&t| out.is_some_and(|o| t <= o));
            if let (Some(out), Some(sent)) = (out, sent) {
                latencies.push(out - sent);
            }
        }
        quiet = 0;
    }
    latencies
}

// ---------------------------------------------------------------- connection time

/// A fresh pair with microphone and camera: (data link open, media negotiation to first decoded
/// audio, to first decoded video), all from the second app's start.
fn connect_once(server: &str, run: usize, loopback: bool) -> (Duration, Duration, Duration) {
    let url = format!("{server}/connect-{run}-{loopback}");
    let app = |url: &str, media| app_bound(url, media, loopback);
    let start_media = |app: &mut App, tone: f32| {
        let mut media = app.world_mut().resource_mut::<LocalMedia>();
        media.start_microphone(MicSource::SineWave(SineWave::new(tone, 0.3)));
        media.start_camera(CameraSource::TestPattern(TestPattern::new(320, 240, 30)));
    };
    let mut apps = vec![app(&url, true)];
    start_media(&mut apps[0], 440.0);
    run_until(&mut apps, |a| roster(&a[0]).is_host());
    let t0 = Instant::now();
    apps.push(app(&url, true));
    start_media(&mut apps[1], 550.0);
    let (mut linked, mut negotiating, mut audio, mut video) = (None, None, None, None);
    run_until(&mut apps, |a| {
        let other = roster(&a[0]).peers.first().copied();
        if linked.is_none() && other.is_some() {
            linked = Some(t0.elapsed());
        }
        if let Some(peer) = other {
            let state = a[0].world().resource::<MediaStates>().0.get(&peer).copied();
            if negotiating.is_none() && state == Some(MediaState::Connecting) {
                negotiating = Some(t0.elapsed());
            }
            let remote = a[0].world().resource::<RemoteMedia>();
            if audio.is_none()
                && remote
                    .audio(peer)
                    .is_some_and(|v| v.delivered().1.is_some())
            {
                audio = Some(t0.elapsed());
            }
            if video.is_none() && remote.video(peer).is_some_and(|v| v.frames_decoded() > 0) {
                video = Some(t0.elapsed());
            }
        }
        audio.is_some() && video.is_some()
    });
    let from = negotiating.unwrap_or_default();
    (
        linked.unwrap_or_default(),
        audio.unwrap_or_default().saturating_sub(from),
        video.unwrap_or_default().saturating_sub(from),
    )
}

// ---------------------------------------------------------------- codec CPU

/// CPU per second of media: Opus 32 kbps mono encode and decode, VP8 320×240 30 fps 500 kbps
/// encode and decode, and the microphone's processing (all on, echo cancellation with a far end
/// playing).
fn codec_cpu() -> [(String, f64); 5] {
    let seconds = 10u32;
    let mut sine = SineWave::new(440.0, 0.5);
    let pcm: Vec<Vec<f32>> = (0..50 * seconds).map(|_| sine.next_frame()).collect();
    let mut encoder = AudioEncoder::new(32_000, 10).expect("opus");
    let t = thread_cpu();
    let packets: Vec<Vec<u8>> = pcm
        .iter()
        .map(|f| encoder.encode(f).expect("encode"))
        .collect();
    let opus_enc = thread_cpu() - t;
    let mut decoder = AudioDecoder::new().expect("opus");
    let t = thread_cpu();
    for p in &packets {
        let _ = decoder.decode(p);
    }
    let opus_dec = thread_cpu() - t;
    let mut pattern = TestPattern::new(320, 240, 30);
    let frames: Vec<_> = (0..30 * seconds).map(|_| pattern.next_frame()).collect();
    let mut vp8 = Vp8Encoder::new(320, 240, 30, 500_000).expect("vp8");
    let t = thread_cpu();
    let encoded: Vec<_> = frames
        .iter()
        .filter_map(|f| vp8.encode(f, false).expect("encode"))
        .collect();
    let vp8_enc = thread_cpu() - t;
    let mut vp8d = Vp8Decoder::new().expect("vp8");
    let t = thread_cpu();
    for e in &encoded {
        let _ = vp8d.decode(&e.data);
    }
    let vp8_dec = thread_cpu() - t;
    let start = std::time::Instant::now();
    let far_end = std::sync::Arc::new(FarEnd::starting(start));
    let mut processor = Processor::new(MicProcessing::default()).with_reference(far_end.clone());
    let mut far = SineWave::new(300.0, 0.3);
    let mut near = pcm.clone();
    let t = thread_cpu();
    for (k, frame) in near.iter_mut().enumerate() {
        let at = start + Duration::from_millis(20 * (k as u64 + 1));
        far_end.played(&far.next_frame(), at);
        processor.process_at(frame, at);
    }
    let processing = thread_cpu() - t;
    let per_second = |d: Duration| ms(d) / f64::from(seconds);
    [
        ("Opus encode, 32 kbps mono".into(), per_second(opus_enc)),
        ("Opus decode".into(), per_second(opus_dec)),
        (
            "VP8 encode, 320x240 30 fps 500 kbps".into(),
            per_second(vp8_enc),
        ),
        ("VP8 decode".into(), per_second(vp8_dec)),
        (
            "microphone processing: AEC3 + RNNoise + gain + gate".into(),
            per_second(processing),
        ),
    ]
}

// ---------------------------------------------------------------- game RTT with media

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
struct Ping {
    seq: u32,
    back: bool,
}

#[derive(Resource, Default)]
struct Pongs(Vec<u32>);

fn echo(
    mut pings: MessageReader<Incoming<Ping>>,
    mut out: MessageWriter<Outgoing<Ping>>,
    mut pongs: ResMut<Pongs>,
) {
    for p in pings.read() {
        if p.message.back {
            pongs.0.push(p.message.seq);
        } else {
            out.write(Outgoing::to_peer(
                p.from,
                Ping {
                    seq: p.message.seq,
                    back: true,
                },
            ));
        }
    }
}

/// Starts a voice and a 320×240 camera whose lower third is noise (so VP8 uses its bitrate).
fn start_busy_media(app: &mut App, tone: f32) {
    let mut local = app.world_mut().resource_mut::<LocalMedia>();
    local.start_microphone(MicSource::SineWave(SineWave::new(tone, 0.3)));
    let camera = VideoPush::new(320, 240, 30);
    let mut frame = TestPattern::new(320, 240, 30).next_frame();
    fastrand::fill(&mut frame.y_mut()[320 * 160..]);
    camera.push(frame);
    local.start_camera(CameraSource::Push(camera));
}

/// 16-byte unreliable round trips between two apps (each on a thread of its own), with both
/// sending voice and a camera, or with media off.
fn game_rtt(server: &str, media: bool) -> Vec<Duration> {
    let url = format!("{server}/rtt-{media}");
    let mut a = vec![app(&url, media)];
    run_until(&mut a, |a| roster(&a[0]).is_host());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut b = app(&url, media);
        if media {
            start_busy_media(&mut b, 550.0);
        }
        while !stop2.load(Ordering::Relaxed) {
            b.update();
            std::thread::sleep(Duration::from_micros(20));
        }
    });
    run_until(&mut a, |a| roster(&a[0]).peers.len() == 1);
    let peer = roster(&a[0]).peers[0];
    if media {
        start_busy_media(&mut a[0], 440.0);
        run_until(&mut a, |a| {
            a[0].world()
                .resource::<RemoteMedia>()
                .video(peer)
                .is_some_and(|v| v.frames_decoded() > 30)
        });
    }
    let a = &mut a[0];
    let mut samples = Vec::new();
    for seq in 1..=1200u32 {
        let t0 = Instant::now();
        a.world_mut()
            .write_message(Outgoing::to_peer(peer, Ping { seq, back: false }));
        while t0.elapsed() < Duration::from_millis(500) {
            a.update();
            let got = std::mem::take(&mut a.world_mut().resource_mut::<Pongs>().0);
            if got.contains(&seq) {
                if seq > 200 {
                    samples.push(t0.elapsed());
                }
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    samples
}

/// What one forwarded copy costs a star host before webrtc-rs sends it: the packet as bytes,
/// the leg's rewrite (payload type, SSRC, extension ids, sequence numbers and timestamps), and
/// the packet again (`plugin/src/media/forward.rs` does exactly this per viewer). Returns
/// nanoseconds per copy for a voice packet and a full video packet.
fn forward_copy_ns() -> [(String, f64); 2] {
    use huddle_protocol::media::forward::{LegNumbers, OutStream};
    use rtc::rtp;
    use rtc::shared::marshal::{Marshal, Unmarshal};
    let copy = |payload: usize, extension: bool| {
        let mut packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: 1,
                timestamp: 960,
                ssrc: 0x1234_5678,
                ..Default::default()
            },
            payload: vec![0x5a; payload].into(),
        };
        if extension {
            let _ = packet.header.set_extension(1, vec![0x80].into());
        }
        let numbers = LegNumbers {
            payload_type: 109,
            extensions: vec![(1, 3)],
        };
        let mut out = OutStream::new(0x0bad_cafe, 48_000, numbers);
        let n = 200_000u32;
        let start = Instant::now();
        let mut kept = 0usize;
        for i in 0..n {
            packet.header.sequence_number = i as u16;
            packet.header.timestamp = i.wrapping_mul(960);
            let Ok(mut bytes) = packet.marshal() else {
                continue;
            };
            if out
                .rewrite(&mut bytes, Duration::from_millis(u64::from(i) * 20))
                .is_ok()
            {
                if let Ok(copy) = rtp::Packet::unmarshal(&mut &bytes[..]) {
                    kept += copy.payload.len();
                }
            }
        }
        std::hint::black_box(kept);
        start.elapsed().as_nanos() as f64 / f64::from(n)
    };
    [
        (
            "voice packet (80 B Opus, audio level)".to_owned(),
            copy(80, true),
        ),
        ("camera packet (1200 B VP8)".to_owned(), copy(1200, false)),
    ]
}

/// Six peers, each sending a voice, in a mesh and in a star: what each sends (the bitrate its
/// receivers get of it, summed: in a star only the host receives from a client directly).
fn upload_per_client(server: &str, topology: &str) -> (f64, f64) {
    let url = format!("{server}/upload-{topology}?topology={topology}&capacity=8");
    let tones = [330.0, 440.0, 550.0, 660.0, 770.0, 880.0];
    let mut apps = vec![app_bound(&url, true, true)];
    run_until(&mut apps, |a| roster(&a[0]).is_host());
    apps.extend((1..6).map(|_| app_bound(&url, true, true)));
    for (a, tone) in apps.iter_mut().zip(tones) {
        let mut local = a.world_mut().resource_mut::<LocalMedia>();
        local.start_microphone(MicSource::SineWave(SineWave::new(tone, 0.3)));
    }
    let ids = |a: &[App]| -> Vec<Option<PeerId>> { a.iter().map(|a| roster(a).me).collect() };
    run_until(&mut apps, |a| {
        let ids = ids(a);
        a.iter().enumerate().all(|(r, app)| {
            let remote = app.world().resource::<RemoteMedia>();
            ids.iter().enumerate().all(|(s, id)| {
                s == r || id.is_some_and(|id| remote.audio(id).is_some_and(|v| v.packets() > 50))
            })
        })
    });
    // Three seconds of steady voice, then what each receiver took in from whom directly.
    let settle = Instant::now();
    run_until(&mut apps, |_| settle.elapsed() > Duration::from_secs(3));
    let ids: Vec<PeerId> = ids(&apps).into_iter().flatten().collect();
    let sent = |s: usize| -> f64 {
        apps.iter()
            .map(|a| {
                let stats = a.world().resource::<bevy_huddle::media::MediaStats>();
                stats
                    .0
                    .get(&ids[s])
                    .filter(|_| a.world().resource::<MediaStates>().0.contains_key(&ids[s]))
                    .map_or(0.0, |p| f64::from(p.audio_bitrate_in))
            })
            .sum()
    };
    let host = sent(0);
    let clients = (1..6).map(sent).sum::<f64>() / 5.0;
    (host, clients)
}

/// The 16-player voice lobby (`voice_lobby`) as a table.
fn print_voice_lobby(base: &str) {
    println!("## A 16-player voice lobby through the host, two talking at once\n");
    let Some(lobby) = voice_lobby(base) else {
        return println!("the host process did not report\n");
    };
    let pct = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.1}", x * 100.0))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let copies =
        lobby.copies.iter().sum::<u64>() as f64 / (lobby.copies.len() as f64 * PHASE.as_secs_f64());
    println!(
        "| host, its own process, game loop at 60 Hz, {} s a phase | CPU, % of a core |\n|---|---|\n\
         | nobody talking (the anchor) | {:.1} |\n\
         | two talking, no client takes them: the host receives and decodes both | {} |\n\
         | two talking, every client takes both: {copies:.0} copies/s forwarded ({} lost) | {} |\n\n\
         the host's whole path per forwarded copy (talking minus the unheard phase after it, over \
         the copies, median of {}): {:.1} µs (goal ≤ 25 µs: mediasoup ~20, Jitsi ~8-16, Pion-based \
         ~50 per copy); the host's upload of the two voices {:.0} kbps, Opus payload (goals ≤ 25 % \
         of a core, ≤ 3000 kbps)\n",
        PHASE.as_secs(),
        lobby.idle * 100.0,
        pct(&lobby.unheard),
        lobby.lost,
        pct(&lobby.talking),
        lobby.copies.len(),
        measure::us(lobby.per_copy()),
        lobby.upload / 1000.0
    );
}

fn main() {
    if let Ok(url) = std::env::var("HUDDLE_BENCH_HOST") {
        return voice_lobby_host(&url);
    }
    let (rt, _server, base) = measure::loopback_server(1);
    let _g = rt.enter();
    let only = std::env::var("HUDDLE_BENCH_ONLY").ok();
    let run = |section: &str| only.as_deref().is_none_or(|o| o == section);

    if run("latency") {
        println!("## Mouth to ear, native to native (40 bursts each)\n");
        println!("| microphone processing | bursts heard | p50 ms | p95 ms | min ms | max ms |");
        println!("|---|---|---|---|---|---|");
        for (what, processing) in [
            ("off", MicProcessing::OFF),
            (
                "echo cancellation, noise suppression, gain control, voice gate",
                MicProcessing::default(),
            ),
        ] {
            let mut l = mouth_to_ear(&base, processing);
            let (p50, p95) = (percentile(&mut l, 0.5), percentile(&mut l, 0.95));
            let (min, max) = (l.first().copied(), l.last().copied());
            println!(
                "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                l.len(),
                ms(p50),
                ms(p95),
                ms(min.unwrap_or_default()),
                ms(max.unwrap_or_default())
            );
        }
        println!("\ngoals: p50 ≤ 70 ms with processing off, ≤ 100 ms with it on\n");
    }
    if run("connect") {
        println!("## Media connection time (5 runs each, median; from the second peer's start)\n");
        println!("| media connections bound to | data link open: the anchor, ms | media: negotiation start to first audio, ms | to first video, ms | audio / anchor |");
        println!("|---|---|---|---|---|");
        for (loopback, bound) in [(false, "every interface (default)"), (true, "127.0.0.1")] {
            let runs: Vec<_> = (0..5).map(|r| connect_once(&base, r, loopback)).collect();
            let mut linked: Vec<_> = runs.iter().map(|r| r.0).collect();
            let mut audio: Vec<_> = runs.iter().map(|r| r.1).collect();
            let mut video: Vec<_> = runs.iter().map(|r| r.2).collect();
            let (l, a, v) = (
                percentile(&mut linked, 0.5),
                percentile(&mut audio, 0.5),
                percentile(&mut video, 0.5),
            );
            println!(
                "| {bound} | {:.0} | {:.0} | {:.0} | {:.2}x |",
                ms(l),
                ms(a),
                ms(v),
                ms(a) / ms(l)
            );
        }
        println!();
    }
    if run("cpu") {
        println!("## Codec CPU per second of media (one core; the anchor is real time, 1000 ms)\n");
        println!("| codec | CPU ms per s | share of a core |\n|---|---|---|");
        for (what, per_s) in codec_cpu() {
            println!("| {what} | {per_s:.1} | {:.1} % |", per_s / 10.0);
        }
        println!();
    }
    if run("rtt") {
        println!("## 16-byte unreliable game round trip, idle vs voice + camera both ways\n");
        let mut idle = game_rtt(&base, false);
        let mut busy = game_rtt(&base, true);
        let (i50, i99) = (percentile(&mut idle, 0.5), percentile(&mut idle, 0.99));
        let (b50, b99) = (percentile(&mut busy, 0.5), percentile(&mut busy, 0.99));
        println!("| media | p50 ms | p99 ms |\n|---|---|---|");
        println!("| off (the anchor) | {:.2} | {:.2} |", ms(i50), ms(i99));
        println!(
            "| voice + camera both ways | {:.2} | {:.2} |",
            ms(b50),
            ms(b99)
        );
        println!(
            "\nwith media / idle: p50 {:.2}x, p99 {:.2}x (goal p99 ≤ 1.5x)\n",
            ms(b50) / ms(i50),
            ms(b99) / ms(i99)
        );
    }
    if run("forward") {
        println!("## A star host's work per forwarded copy, before webrtc-rs sends it\n");
        println!("| packet | ns per copy | copies per second per core |\n|---|---|---|");
        for (what, ns) in forward_copy_ns() {
            println!("| {what} | {ns:.0} | {:.0} |", 1e9 / ns);
        }
        println!(
            "\nanchors (their whole send path): mediasoup ~20 µs, Jitsi ~8-16 µs, Pion-based \
             SFUs ~50 µs per copy; goal ≤ 25 µs\n"
        );
    }
    if only.as_deref() == Some("lobby") {
        print_voice_lobby(&base);
    }
    if run("star") {
        println!("## Upload per peer, six peers each sending a voice (32 kbps Opus)\n");
        println!("| topology | host sends, kbps | a client sends, kbps (mean) | client / one stream |\n|---|---|---|---|");
        for topology in ["mesh", "star"] {
            let (host, client) = upload_per_client(&base, topology);
            println!(
                "| {topology} | {:.0} | {:.0} | {:.1}x |",
                host / 1000.0,
                client / 1000.0,
                client / 32_000.0
            );
        }
        println!("\nin a star the host's own voice goes to every client directly; what it forwards is not counted here\n");
        println!("## Mouth to ear in a star of three: a client talks (40 bursts)\n");
        let [mut direct, mut through] = mouth_to_ear_star(&base);
        println!("| listener | bursts heard | p50 ms | p99 ms |\n|---|---|---|---|");
        let (d50, d99) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
        let (t50, t99) = (
            percentile(&mut through, 0.5),
            percentile(&mut through, 0.99),
        );
        println!(
            "| the host, directly (the anchor) | {} | {:.1} | {:.1} |",
            direct.len(),
            ms(d50),
            ms(d99)
        );
        println!(
            "| another client, through the host | {} | {:.1} | {:.1} |",
            through.len(),
            ms(t50),
            ms(t99)
        );
        println!(
            "\nthe host hop adds p50 {:.1} ms, p99 {:.1} ms (goal ≤ 5 ms p99)\n",
            ms(t50) - ms(d50),
            ms(t99) - ms(d99)
        );
        print_voice_lobby(&base);
        let mut recovery = keyframe_recovery(&base);
        println!(
            "## A new viewer of a forwarded camera: want to first decoded picture (5 times)\n\n\
             p50 {:.0} ms, max {:.0} ms; anchor: the encoder's own keyframe interval, 1000 ms \
             (goal ≤ 1 s)\n",
            ms(percentile(&mut recovery, 0.5)),
            ms(recovery.iter().copied().max().unwrap_or_default())
        );
    }
}
