//! Media connections (feature `media`): a media-only peer connection per pair of peers with
//! media, negotiated over the control channel; peers without media are `Unsupported` and the game
//! goes on. Run inside the loopback-only network namespace (see README).

use bevy_huddle::media::{tone, FRAME_SAMPLES};
use bevy_huddle::media::{
    CameraSource, LocalMedia, MediaKind, MediaState, MediaStateChanged, MediaStates, MediaStats,
    MicSource, RemoteMedia, RemoteTrackEnded, RemoteTrackStarted, SineWave, TestPattern,
};
use bevy_huddle::prelude::*;
use bevy_huddle::HuddleConfig;
use huddle_tests::apps::*;
use huddle_tests::*;
use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

const LIMIT: Duration = Duration::from_secs(30);

fn player(url: &str, media: bool) -> Player {
    let mut config = HuddleConfig::room(url);
    config.media.enabled = media;
    let mut p = Player::join_with(url, Types::All, config);
    p.app.init_resource::<Changes>().add_systems(
        bevy::prelude::Update,
        |mut log: bevy::prelude::ResMut<Changes>,
         mut c: bevy::prelude::MessageReader<MediaStateChanged>| {
            log.0.extend(c.read().copied())
        },
    );
    p
}

#[derive(bevy::prelude::Resource, Default)]
struct Changes(Vec<MediaStateChanged>);

fn media(p: &Player, peer: PeerId) -> Option<MediaState> {
    p.app
        .world()
        .resource::<MediaStates>()
        .0
        .get(&peer)
        .copied()
}

/// Three peers, two with media: the two connect their media, both see the third as
/// `Unsupported`, and game messages flow between all three.
#[test]
fn peers_with_media_connect_and_a_peer_without_is_unsupported() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("media");
    let mut players = vec![player(&url, true)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.push(player(&url, true));
    players.push(player(&url, false));
    assert!(
        run_until(&mut players, LIMIT, lobby_complete),
        "a lobby of three"
    );
    let ids: Vec<PeerId> = players.iter().map(|p| p.id().expect("an id")).collect();
    let settled = run_until(&mut players, LIMIT, |ps| {
        media(&ps[0], ids[1]) == Some(MediaState::Connected)
            && media(&ps[1], ids[0]) == Some(MediaState::Connected)
            && media(&ps[0], ids[2]) == Some(MediaState::Unsupported)
            && media(&ps[1], ids[2]) == Some(MediaState::Unsupported)
    });
    let states: Vec<_> = players
        .iter()
        .map(|p| p.app.world().resource::<MediaStates>().0.clone())
        .collect();
    assert!(settled, "media states: {states:?}");
    assert!(
        players[2]
            .app
            .world()
            .resource::<MediaStates>()
            .0
            .is_empty(),
        "the peer without media keeps no media state"
    );
    // Each of the two went Connecting -> Connected toward the other, once.
    for (me, other) in [(0, 1), (1, 0)] {
        let seen: Vec<MediaState> = players[me]
            .app
            .world()
            .resource::<Changes>()
            .0
            .iter()
            .filter(|c| c.peer == ids[other])
            .map(|c| c.state)
            .collect();
        assert_eq!(seen, [MediaState::Connecting, MediaState::Connected]);
    }
    // The game goes on for everyone.
    for p in players.iter_mut() {
        p.send(Outgoing::to_all(Chat("still here".into())));
    }
    assert!(run_until(&mut players, LIMIT, |ps| ps.iter().all(|p| p
        .log()
        .chats
        .len()
        >= 2)));
    // A peer that leaves takes its media state with it.
    players.remove(1);
    assert!(run_until(&mut players, LIMIT, |ps| media(&ps[0], ids[1]).is_none()));
}

/// A media player sending a tone of `tone` Hz and a 320×240 test pattern at 30 fps.
fn sender(url: &str, tone: f32) -> Player {
    let mut p = player(url, true);
    p.app
        .init_resource::<Tracks>()
        .add_systems(bevy::prelude::Update, collect_tracks);
    let mut local = p.app.world_mut().resource_mut::<LocalMedia>();
    local.start_microphone(MicSource::SineWave(SineWave::new(tone, 0.5)));
    local.start_camera(CameraSource::TestPattern(TestPattern::new(320, 240, 30)));
    p
}

/// Track starts and ends a player saw.
#[derive(bevy::prelude::Resource, Default)]
struct Tracks {
    started: Vec<RemoteTrackStarted>,
    ended: Vec<RemoteTrackEnded>,
}

fn collect_tracks(
    mut log: bevy::prelude::ResMut<Tracks>,
    mut started: bevy::prelude::MessageReader<RemoteTrackStarted>,
    mut ended: bevy::prelude::MessageReader<RemoteTrackEnded>,
) {
    log.started.extend(started.read().copied());
    log.ended.extend(ended.read().copied());
}

fn remote(p: &Player) -> &RemoteMedia {
    p.app.world().resource::<RemoteMedia>()
}

fn tracks(p: &Player) -> &Tracks {
    p.app.world().resource::<Tracks>()
}

/// What one player heard and saw of another during a window.
#[derive(Default)]
struct Received {
    pcm: Vec<f32>,
    frames_at_start: Option<u64>,
    frames: u64,
    last_index: Option<u32>,
    out_of_order: u32,
}

/// Records, for every (receiver, sender) pair, the PCM and the video indices for `window`.
fn record(
    players: &mut [Player],
    ids: &[PeerId],
    window: Duration,
) -> HashMap<(usize, usize), Received> {
    let mut got: HashMap<(usize, usize), Received> = HashMap::new();
    let deadline = Instant::now() + window;
    run_until(players, window + Duration::from_secs(1), |ps| {
        for (r, p) in ps.iter().enumerate() {
            for (s, &sender) in ids.iter().enumerate() {
                if r == s {
                    continue;
                }
                let entry = got.entry((r, s)).or_default();
                if let Some(audio) = remote(p).audio(sender) {
                    entry.pcm.extend(audio.take_pcm());
                }
                if let Some(video) = remote(p).video(sender) {
                    let decoded = video.frames_decoded();
                    let start = *entry.frames_at_start.get_or_insert(decoded);
                    if decoded != start + entry.frames {
                        entry.frames = decoded - start;
                        let index = video
                            .latest_frame()
                            .and_then(|f| TestPattern::read_index(&f));
                        if let (Some(i), Some(last)) = (index, entry.last_index) {
                            if i <= last {
                                entry.out_of_order += 1;
                            }
                        }
                        entry.last_index = index.or(entry.last_index);
                    }
                }
            }
        }
        Instant::now() >= deadline
    });
    got
}

/// 20 ms frames of `pcm` in which `tone` is at least 20 dB above each of `others`.
fn frames_with_tone(pcm: &[f32], tone: f32, others: &[f32]) -> usize {
    pcm.chunks_exact(FRAME_SAMPLES)
        .filter(|f| {
            let own = tone::level_db(f, tone);
            others.iter().all(|&o| own - tone::level_db(f, o) >= 20.0)
        })
        .count()
}

/// Three peers in a mesh, each sending its own tone and a test pattern: every peer hears each
/// other peer's tone (its frequency ±2 Hz, 20 dB over the other two in ≥ 90 % of 20 ms frames
/// over 5 s) and sees its video (right size, indices increasing, ≥ 80 % of frames).
#[test]
fn three_peers_hear_and_see_each_other() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("media-av");
    let tones = [440.0, 550.0, 660.0];
    let mut players = vec![sender(&url, tones[0])];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.push(sender(&url, tones[1]));
    players.push(sender(&url, tones[2]));
    assert!(
        run_until(&mut players, LIMIT, lobby_complete),
        "a lobby of three"
    );
    let ids: Vec<PeerId> = players.iter().map(|p| p.id().expect("an id")).collect();
    let all_started = run_until(&mut players, LIMIT, |ps| {
        ps.iter().enumerate().all(|(r, p)| {
            ids.iter()
                .enumerate()
                .filter(|(s, _)| *s != r)
                .all(|(_, &id)| {
                    let t = &tracks(p).started;
                    t.contains(&RemoteTrackStarted {
                        peer: id,
                        kind: MediaKind::Audio,
                    }) && t.contains(&RemoteTrackStarted {
                        peer: id,
                        kind: MediaKind::Video,
                    })
                })
        })
    });
    let started: Vec<_> = players.iter().map(|p| tracks(p).started.clone()).collect();
    assert!(all_started, "every track started: {started:?}");
    // Let the jitter buffers settle, then listen and watch for 5 s.
    run_for(&mut players, Duration::from_millis(500));
    for p in &players {
        for &id in &ids {
            let _ = remote(p).audio(id).map(|a| a.take_pcm());
        }
    }
    let got = record(&mut players, &ids, Duration::from_secs(5));
    for ((r, s), heard) in &got {
        let tone = tones[*s];
        let others: Vec<f32> = tones.iter().copied().filter(|&t| t != tone).collect();
        let frames = heard.pcm.len() / FRAME_SAMPLES;
        let good = frames_with_tone(&heard.pcm, tone, &others);
        let peak = tone::peak_frequency(&heard.pcm, 300.0, 800.0);
        println!(
            "peer {r} hears peer {s}: {frames} frames, {good} with its tone, peak {peak:.2} Hz; \
             video {} frames, last index {:?}, {} out of order",
            heard.frames, heard.last_index, heard.out_of_order
        );
        assert!(
            frames >= 225,
            "{r} <- {s}: only {frames} of 250 frames of audio"
        );
        assert!(
            good * 10 >= 250 * 9,
            "{r} <- {s}: the tone in only {good} of 250 frames"
        );
        assert!(
            (peak - tone).abs() <= 2.0,
            "{r} <- {s}: peak at {peak} Hz, sent {tone}"
        );
        assert!(
            heard.frames >= 120,
            "{r} <- {s}: only {} of 150 video frames",
            heard.frames
        );
        assert_eq!(
            heard.out_of_order, 0,
            "{r} <- {s}: video indices went backwards"
        );
        let video = remote(&players[*r]).video(ids[*s]).expect("video");
        let frame = video.latest_frame().expect("a frame");
        assert_eq!((frame.width, frame.height), (320, 240));
    }
    for p in &players {
        let stats = p.app.world().resource::<MediaStats>();
        for (peer, s) in &stats.0 {
            println!("stats toward {peer}: {s:?}");
        }
    }
}
