//! Voice and camera (feature `media`): a media-only peer connection per pair of peers with media,
//! negotiated over the control channel (peers without media are `Unsupported` and the game goes
//! on); real Opus and VP8 between headless apps, checked by what arrives: each sender's tone
//! (Goertzel) and its test pattern's frame indices. Run inside the loopback-only network
//! namespace (see README).

use bevy_huddle::media::{tone, FRAME_SAMPLES};
use bevy_huddle::media::{
    CameraSource, LocalMedia, MediaKind, MediaState, MediaStateChanged, MediaStates, MediaStats,
    MicSource, RemoteMedia, RemoteTrackEnded, RemoteTrackStarted, SineWave, TestPattern,
    VideoFrame, VideoPush,
};
use bevy_huddle::prelude::*;
use bevy_huddle::{Conditions, HuddleConfig, LinkConditioner};
use huddle_tests::apps::*;
use huddle_tests::tones::frames_with_tone;
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

/// The first player of a room, run until it is the host.
fn hosting(first: Player) -> Vec<Player> {
    let mut players = vec![first];
    assert!(
        run_until(&mut players, LIMIT, |ps| ps[0].roster().is_host()),
        "the first player hosts"
    );
    players
}

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
    let _crowd = shared();
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("media");
    let mut players = hosting(player(&url, true));
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
                        // The same frame read again (one decoded between the two reads) is not
                        // out of order; an older one is.
                        if let (Some(i), Some(last)) = (index, entry.last_index) {
                            if i < last {
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

/// Three peers in a mesh, each sending its own tone and a test pattern: every peer hears each
/// other peer's tone (its frequency ±2 Hz, 20 dB over the other two in ≥ 90 % of 20 ms frames
/// over 5 s) and sees its video (right size, indices increasing, ≥ 80 % of frames).
#[test]
fn three_peers_hear_and_see_each_other() {
    let _crowd = shared();
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("media-av");
    let tones = [440.0, 550.0, 660.0];
    let mut players = hosting(sender(&url, tones[0]));
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
            // Diagnostics in their units: a loopback path's round trip and jitter are small.
            assert!(
                s.rtt.is_some_and(|r| r < Duration::from_millis(500)),
                "{s:?}"
            );
            assert!(s.jitter_seconds.is_none_or(|j| j < 0.5), "{s:?}");
            assert!(s.frames_decoded > 0 && s.audio_packets > 0, "{s:?}");
        }
    }
}

fn local(p: &mut Player) -> bevy::prelude::Mut<'_, LocalMedia> {
    p.app.world_mut().resource_mut::<LocalMedia>()
}

/// Drains what `p` heard of `peer` so far.
fn drain(p: &Player, peer: PeerId) -> Vec<f32> {
    remote(p)
        .audio(peer)
        .map(|a| a.take_pcm())
        .unwrap_or_default()
}

/// Runs for `d` and returns what `players[who]` heard of `peer` in that time.
fn listen(players: &mut [Player], who: usize, peer: PeerId, d: Duration) -> Vec<f32> {
    let mut pcm = Vec::new();
    let deadline = Instant::now() + d;
    run_until(players, d + Duration::from_secs(1), |ps| {
        pcm.extend(drain(&ps[who], peer));
        Instant::now() >= deadline
    });
    pcm
}

/// Two peers: the first sends a tone and a pattern to the second (which sends nothing).
fn pair(
    room: &str,
) -> (
    tokio::runtime::Runtime,
    huddle_server::RunningServer,
    Vec<Player>,
    PeerId,
) {
    pair_with(room, |_| {})
}

/// [`pair`], the listener set up by `setup` first.
fn pair_with(
    room: &str,
    setup: impl FnOnce(&mut Player),
) -> (
    tokio::runtime::Runtime,
    huddle_server::RunningServer,
    Vec<Player>,
    PeerId,
) {
    let (rt, server) = server_on_runtime();
    let url = server.room_url(room);
    let mut players = hosting(sender(&url, 440.0));
    let mut listener = player(&url, true);
    listener
        .app
        .init_resource::<Tracks>()
        .add_systems(bevy::prelude::Update, collect_tracks);
    setup(&mut listener);
    players.push(listener);
    assert!(
        run_until(&mut players, LIMIT, lobby_complete),
        "a lobby of two"
    );
    let talker = players[0].id().expect("an id");
    let both = run_until(&mut players, LIMIT, |ps| {
        let t = &tracks(&ps[1]).started;
        t.contains(&RemoteTrackStarted {
            peer: talker,
            kind: MediaKind::Audio,
        }) && t.contains(&RemoteTrackStarted {
            peer: talker,
            kind: MediaKind::Video,
        })
    });
    assert!(
        both,
        "voice and camera started: {:?}",
        tracks(&players[1]).started
    );
    (rt, server, players, talker)
}

/// Mute silences the receiver within 200 ms and unmute brings the tone back, with no
/// renegotiation (the RTP audio level says voice, then silence); stopping the camera ends its track at the receiver and starting it again
/// starts it again, while the voice goes on.
#[test]
fn mute_unmute_and_a_stopped_camera() {
    let _crowd = shared();
    let (_rt, _server, mut players, talker) = pair("media-mute");
    let tone_in = |pcm: &[f32]| frames_with_tone(pcm, 440.0, &[550.0, 660.0]);
    let before = listen(&mut players, 1, talker, Duration::from_millis(500));
    assert!(tone_in(&before) >= 20, "the tone before muting");
    // The RTP header says how loud: a sine of amplitude 0.5 is -9 dBov RMS, a voice.
    let activity = |p: &Player| remote(p).audio(talker).and_then(|a| a.activity());
    let said = activity(&players[1]).expect("the audio level header extension");
    assert!(said.voice && (said.level_db + 9.0).abs() <= 1.5, "{said:?}");
    let offers = |p: &Player| p.app.world().resource::<Changes>().0.len();
    let changes = offers(&players[1]);

    local(&mut players[0]).set_muted(true);
    let _ = listen(&mut players, 1, talker, Duration::from_millis(200));
    let muted = listen(&mut players, 1, talker, Duration::from_millis(500));
    let loud = muted
        .chunks_exact(FRAME_SAMPLES)
        .filter(|f| tone::level_db(f, 440.0) > -40.0)
        .count();
    assert_eq!(loud, 0, "the tone 200 ms after muting, in {loud} frames");
    let said = activity(&players[1]).expect("the audio level while muted");
    assert!(!said.voice && said.level_db <= -100.0, "muted: {said:?}");

    local(&mut players[0]).set_muted(false);
    let _ = listen(&mut players, 1, talker, Duration::from_millis(300));
    let back = listen(&mut players, 1, talker, Duration::from_millis(500));
    assert!(
        tone_in(&back) >= 20,
        "the tone after unmuting: {} frames",
        tone_in(&back)
    );
    assert_eq!(
        offers(&players[1]),
        changes,
        "no media state change (no renegotiation)"
    );

    local(&mut players[0]).stop_camera();
    let ended = RemoteTrackEnded {
        peer: talker,
        kind: MediaKind::Video,
    };
    assert!(run_until(&mut players, LIMIT, |ps| tracks(&ps[1])
        .ended
        .contains(&ended)));
    let voice = listen(&mut players, 1, talker, Duration::from_millis(500));
    assert!(
        tone_in(&voice) >= 20,
        "the voice goes on without the camera"
    );
    let audio_ended = RemoteTrackEnded {
        peer: talker,
        kind: MediaKind::Audio,
    };
    assert!(!tracks(&players[1]).ended.contains(&audio_ended));

    local(&mut players[0]).start_camera(CameraSource::TestPattern(TestPattern::new(160, 120, 30)));
    let again = run_until(&mut players, LIMIT, |ps| {
        tracks(&ps[1])
            .started
            .iter()
            .filter(|s| s.kind == MediaKind::Video)
            .count()
            == 2
    });
    assert!(again, "the camera started again");
    // The listener's decoder asked for a keyframe of the new stream (PLI), and the talker's
    // camera heard it at once.
    let listener = players[1].id().expect("an id");
    let asked = run_until(&mut players, LIMIT, |ps| {
        ps[0]
            .app
            .world()
            .resource::<MediaStats>()
            .0
            .get(&listener)
            .is_some_and(|s| s.keyframe_requests > 0)
    });
    assert!(asked, "a keyframe request reached the talker's camera");
    // The listener's RTCP reports give the talker the round trip of the media path (reports
    // come about once a second, statistics are read once a second).
    let rtt_of = |p: &Player| {
        p.app
            .world()
            .resource::<MediaStats>()
            .0
            .get(&listener)
            .and_then(|s| s.rtt)
    };
    run_until(&mut players, LIMIT, |ps| rtt_of(&ps[0]).is_some());
    let rtt = rtt_of(&players[0]);
    println!("media round trip from RTCP: {rtt:?}");
    assert!(
        rtt.is_some_and(|r| r < Duration::from_millis(500)),
        "the media round trip: {rtt:?}"
    );
    let frame = remote(&players[1])
        .video(talker)
        .and_then(|v| v.latest_frame());
    assert_eq!(frame.map(|f| (f.width, f.height)), Some((160, 120)));
}

/// A peer that joins later sees the others' video within a second of its media connection, and
/// a peer that leaves ends its tracks while the others' media goes on.
#[test]
fn a_late_joiner_gets_media_and_a_leaver_takes_its_tracks() {
    let _crowd = shared();
    let (_rt, server, mut players, talker) = pair("media-late");
    let url = server.room_url("media-late");
    players.push(sender(&url, 660.0));
    assert!(
        run_until(&mut players, LIMIT, lobby_complete),
        "a lobby of three"
    );
    let late = players[2].id().expect("an id");
    let connected = run_until(&mut players, LIMIT, |ps| {
        media(&ps[2], talker) == Some(MediaState::Connected)
    });
    assert!(connected);
    let at = Instant::now();
    let video = RemoteTrackStarted {
        peer: talker,
        kind: MediaKind::Video,
    };
    assert!(run_until(&mut players, LIMIT, |ps| tracks(&ps[2])
        .started
        .contains(&video)));
    let first_frame = at.elapsed();
    println!("late joiner: first video frame {first_frame:?} after its media connection");
    assert!(first_frame < Duration::from_secs(1), "{first_frame:?}");
    // It hears the talker, and the listener hears it.
    let heard = run_until(&mut players, LIMIT, |ps| {
        let voice = |peer| RemoteTrackStarted {
            peer,
            kind: MediaKind::Audio,
        };
        tracks(&ps[1]).started.contains(&voice(late))
            && tracks(&ps[2]).started.contains(&voice(talker))
    });
    assert!(heard);
    println!(
        "late joiner: first audio frame {:?} after its media connection",
        at.elapsed()
    );

    // The talker leaves: its tracks end at both others; they still hear each other.
    players.remove(0);
    let ended = |p: &Player| {
        [MediaKind::Audio, MediaKind::Video].iter().all(|&kind| {
            tracks(p)
                .ended
                .contains(&RemoteTrackEnded { peer: talker, kind })
        })
    };
    let gone = run_until(&mut players, LIMIT, |ps| ended(&ps[0]) && ended(&ps[1]));
    assert!(
        gone,
        "{:?} / {:?}",
        tracks(&players[0]).ended,
        tracks(&players[1]).ended
    );
    assert!(remote(&players[0]).audio(talker).is_none());
    let pcm = listen(&mut players, 0, late, Duration::from_millis(600));
    let good = frames_with_tone(&pcm, 660.0, &[440.0, 550.0]);
    assert!(
        good >= 25,
        "the late joiner's voice after the leave: {good} frames"
    );
}

/// Under 5 % loss and 40 ms ± 10 ms jitter on the media path the tone is recognised in at
/// least 90 % of 20 ms frames: the jitter buffer reorders, FEC and concealment fill the gaps.
#[test]
fn the_voice_survives_loss_and_jitter() {
    let _crowd = shared();
    let (_rt, _server, mut players, talker) = pair("media-lossy");
    players[1].app.insert_resource(LinkConditioner {
        media: Some(Conditions::new(
            Duration::from_millis(40),
            Duration::from_millis(10),
            0.05,
        )),
        ..Default::default()
    });
    let _ = listen(&mut players, 1, talker, Duration::from_millis(500));
    let pcm = listen(&mut players, 1, talker, Duration::from_secs(5));
    let frames = pcm.len() / FRAME_SAMPLES;
    let good = frames_with_tone(&pcm, 440.0, &[550.0, 660.0]);
    let stats = remote(&players[1])
        .audio(talker)
        .expect("a voice")
        .jitter_stats();
    println!("under loss: {frames} frames, {good} with the tone; {stats:?}");
    assert!(frames >= 225, "{frames} of 250 frames");
    assert!(
        good * 10 >= 250 * 9,
        "the tone in only {good} of 250 frames"
    );
    assert!(
        stats.recovered + stats.concealed > 0,
        "loss was applied: {stats:?}"
    );
}

/// A member that speaks the protocol but lies in its media signals (answers nobody asked for,
/// offers to the offerer, huge and malformed SDP, bogus candidates, stale sessions): every lie is
/// dropped and counted, nothing panics, and an honest peer still gets media with the victim.
/// The media signals from `peer` that `p` dropped.
fn signals_dropped(p: &Player, peer: PeerId) -> u64 {
    p.app
        .world()
        .resource::<MediaStats>()
        .0
        .get(&peer)
        .map_or(0, |s| s.signals_dropped)
}

#[test]
fn hostile_media_signals_are_dropped_and_counted() {
    let _crowd = shared();
    use bevy_huddle::protocol::control::Control;
    use bevy_huddle::protocol::media::{MediaSignal, TrackSet};
    let (rt, server) = server_on_runtime();
    let url = server.room_url("media-hostile");
    let mut players = hosting(sender(&url, 440.0));
    let mut hostile = hostile_member(&rt, &url, &mut players, LIMIT);
    let victim = players[0].id().expect("an id");
    let bad = hostile.id().expect("an id");
    let sdp =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
               a=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz\r\n\
               a=fingerprint:sha-256 AB:CD\r\na=mid:0\r\n";
    let candidate = r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"}"#;
    let lies = [
        // The victim is the caller, so it offers: an offer to it is out of place.
        MediaSignal::Offer {
            session: 1,
            round: 1,
            sdp: sdp.into(),
        },
        // Answers to rounds and sessions that were never offered.
        MediaSignal::Answer {
            session: 1,
            round: 7,
            sdp: sdp.into(),
        },
        MediaSignal::Answer {
            session: u32::MAX,
            round: u32::MAX,
            sdp: sdp.into(),
        },
        // A malformed SDP for the right round, and a huge one.
        MediaSignal::Answer {
            session: 1,
            round: 1,
            sdp: "v=0\r\nnot sdp".into(),
        },
        MediaSignal::Answer {
            session: 1,
            round: 1,
            sdp: format!("{sdp}a={}\r\n", "x".repeat(40_000)),
        },
        // Bogus and stale candidates.
        MediaSignal::Candidate {
            session: 1,
            candidate: "{\"candidate\":\"rm -rf /\"}".into(),
        },
        MediaSignal::Candidate {
            session: 99,
            candidate: candidate.into(),
        },
        MediaSignal::Renegotiate { session: 42 },
    ];
    for lie in &lies {
        hostile.send(0, victim, &Control::Media(lie.clone()).encode());
    }
    // Well-formed state that is the member's to say: harmless.
    hostile.send(
        0,
        victim,
        &Control::Media(MediaSignal::Tracks(TrackSet::ALL)).encode(),
    );
    let dropped = |p: &Player| signals_dropped(p, bad);
    let counted = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        dropped(&ps[0]) >= 7
    });
    assert!(counted, "{} of 7 lies counted", dropped(&players[0]));
    // An honest peer still gets the victim's voice.
    players.push(sender(&url, 550.0));
    let honest = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        tracks(&ps[1]).started.contains(&RemoteTrackStarted {
            peer: victim,
            kind: MediaKind::Audio,
        })
    });
    assert!(honest, "an honest peer hears the victim");
    assert_eq!(players[0].state(), LobbyState::InLobby);
}

/// A hostile client of a star speaks the star's signals well and lies: it wants the cameras of
/// peers that are not in the lobby (ten thousand of them) and its own, and tells the host what
/// the host forwards. All of it is dropped and counted, and two honest clients still hear each
/// other through the host.
#[test]
fn a_hostile_star_clients_wants_are_dropped_and_counted() {
    use bevy_huddle::protocol::control::Control;
    use bevy_huddle::protocol::media::{MediaSignal, TrackSet};
    let _crowd = alone();
    let (rt, server) = server_on_runtime();
    let url = server.room_url("media-star-hostile?capacity=8");
    let mut players = hosting(star_sender(&url, 440.0, false, 4));
    let mut hostile = hostile_member(&rt, &url, &mut players, LIMIT);
    let host = players[0].id().expect("an id");
    let bad = hostile.id().expect("an id");
    let stranger = |i: u128| PeerId(uuid::Uuid::from_u128(0xbad0_0000 + i));
    for i in 0..10_000 {
        let lie = MediaSignal::WantOf {
            origin: stranger(i),
            tracks: TrackSet::ALL,
        };
        hostile.send(0, host, &Control::Media(lie).encode());
    }
    let lies = [
        MediaSignal::WantOf {
            origin: bad,
            tracks: TrackSet::ALL,
        },
        MediaSignal::Forwarded {
            origin: host,
            tracks: TrackSet::ALL,
        },
    ];
    for lie in lies {
        hostile.send(0, host, &Control::Media(lie).encode());
    }
    let dropped = |p: &Player| signals_dropped(p, bad);
    let counted = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        dropped(&ps[0]) >= 10_002
    });
    assert!(counted, "{} of 10002 lies counted", dropped(&players[0]));
    players.push(star_sender(&url, 550.0, false, 4));
    players.push(star_sender(&url, 660.0, false, 4));
    let joined = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        ps.iter().all(|p| p.id().is_some())
    });
    assert!(joined, "the honest peers join");
    let ids: Vec<PeerId> = players.iter().map(|p| p.id().expect("an id")).collect();
    let heard = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        all_hear_all(ps, &ids)
    });
    assert!(heard, "the honest peers hear each other through the host");
    assert_eq!(players[0].state(), LobbyState::InLobby);
}

/// A hostile star *host* (a raw peer, first in the room, that the players follow) offers a
/// player three voices named after a lobby member, a stranger and the player itself, and says it
/// forwards the stranger's, the player's and its own. A host may name a member's voice (that is
/// what forwarding is), so the member's is heard as the member's; a stranger or the player
/// itself never becomes a publisher (what such a stream carries counts as the host's own), the
/// lying signals are dropped and counted, and the lobby is unharmed.
#[test]
fn a_hostile_star_hosts_forged_stream_names_are_not_believed() {
    use bevy_huddle::protocol::control::Control;
    use bevy_huddle::protocol::media::{MediaSignal, TrackSet};
    use huddle_tests::forged_media::{Forged, ForgedMedia};
    let _crowd = alone();
    let (rt, server) = server_on_runtime();
    let url = server.room_url("media-hostile-host?topology=star&capacity=8");
    let _guard = rt.enter();
    let mut hostile = hostile_first(&url, LIMIT);
    let mut players = vec![star_sender(&url, 440.0, false, 4)];
    players.push(star_sender(&url, 550.0, false, 4));
    hostile_hosts(&mut hostile, &mut players, LIMIT);
    let bad = hostile.id().expect("an id");
    let (victim, member) = (
        players[0].id().expect("an id"),
        players[1].id().expect("an id"),
    );
    let stranger = PeerId(uuid::Uuid::from_u128(0x5752_a49e));
    // The victim's media side waits for its host's offer.
    let ready = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        media(&ps[0], bad) == Some(MediaState::Connecting)
    });
    assert!(ready, "the victim waits for its host's offer");
    let tones = [770.0, 880.0, 990.0];
    let streams = [member, stranger, victim]
        .iter()
        .zip(tones)
        .map(|(id, tone)| Forged {
            stream: id.0.to_string(),
            tone,
        })
        .collect();
    let mut forged = ForgedMedia::offer(&rt, streams);
    let connected = run_until(&mut players, LIMIT, |ps| {
        forged.pump(&mut hostile, victim);
        media(&ps[0], bad) == Some(MediaState::Connected)
    });
    assert!(connected, "the victim's media connects to its host");
    // What a host says it forwards, once connected.
    for origin in [member, stranger, victim, bad] {
        let signal = MediaSignal::Forwarded {
            origin,
            tracks: TrackSet::ALL.with(MediaKind::Video, false),
        };
        hostile.send(0, victim, &Control::Media(signal).encode());
    }
    let heard = run_until(&mut players, LIMIT, |ps| {
        forged.pump(&mut hostile, victim);
        remote(&ps[0])
            .audio(member)
            .is_some_and(|a| a.delivered().0 > 50)
    });
    assert!(
        heard,
        "the victim hears the voice its host names after a member: {:?}",
        players[0].app.world().resource::<MediaStats>().0.get(&bad)
    );
    let mut pcm = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    run_until(&mut players, LIMIT, |ps| {
        forged.pump(&mut hostile, victim);
        pcm.extend(drain(&ps[0], member));
        Instant::now() >= deadline
    });
    let frames = pcm.len() / FRAME_SAMPLES;
    let with_tone = frames_with_tone(&pcm, 770.0, &[880.0, 990.0, 440.0, 550.0]);
    assert!(
        frames >= 50 && with_tone * 10 >= frames * 8,
        "the member's name carries the member's stream: {with_tone} of {frames} frames at 770 Hz"
    );
    let started = &tracks(&players[0]).started;
    for fake in [stranger, victim] {
        assert!(
            remote(&players[0]).audio(fake).is_none(),
            "no voice of {fake}"
        );
        assert!(
            started.iter().all(|t| t.peer != fake),
            "no track of {fake} started"
        );
    }
    assert!(
        signals_dropped(&players[0], bad) >= 3,
        "the three forged Forwarded are counted: {}",
        signals_dropped(&players[0], bad)
    );
    assert_eq!(players[0].state(), LobbyState::InLobby);
    assert_eq!(players[0].roster().host, Some(bad));
    assert_eq!(players[1].state(), LobbyState::InLobby);
}

/// In a mesh only a peer's own streams come on its connection: a hostile member (first in the
/// room, so it offers) names a voice after another member. The victim takes it as the hostile
/// member's own, and the member's voice stays the member's.
#[test]
fn a_mesh_peer_cannot_speak_for_another_member() {
    use bevy_huddle::protocol::control::Control;
    use bevy_huddle::protocol::media::{MediaSignal, TrackSet};
    use huddle_tests::forged_media::{Forged, ForgedMedia};
    let _crowd = alone();
    let (rt, server) = server_on_runtime();
    let url = server.room_url("media-hostile-mesh");
    let _guard = rt.enter();
    let mut hostile = hostile_first(&url, LIMIT);
    let mut players = vec![sender(&url, 440.0), sender(&url, 550.0)];
    hostile_hosts(&mut hostile, &mut players, LIMIT);
    let bad = hostile.id().expect("an id");
    let (victim, member) = (
        players[0].id().expect("an id"),
        players[1].id().expect("an id"),
    );
    let ready = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        media(&ps[0], bad) == Some(MediaState::Connecting)
    });
    assert!(ready, "the victim waits for the hostile member's offer");
    let forged = vec![Forged {
        stream: member.0.to_string(),
        tone: 770.0,
    }];
    let mut forged = ForgedMedia::offer(&rt, forged);
    // It says it sends a voice: its own, as far as the victim is concerned.
    let voice = TrackSet::ALL.with(MediaKind::Video, false);
    let said = Control::Media(MediaSignal::Tracks(voice)).encode();
    hostile.send(0, victim, &said);
    let both = run_until(&mut players, LIMIT, |ps| {
        forged.pump(&mut hostile, victim);
        [bad, member].iter().all(|p| {
            remote(&ps[0])
                .audio(*p)
                .is_some_and(|a| a.delivered().0 > 0)
        })
    });
    assert!(both, "the victim hears the hostile member and the member");
    for p in [bad, member] {
        drain(&players[0], p);
    }
    let (mut of_bad, mut of_member) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(2);
    run_until(&mut players, LIMIT, |ps| {
        forged.pump(&mut hostile, victim);
        of_bad.extend(drain(&ps[0], bad));
        of_member.extend(drain(&ps[0], member));
        Instant::now() >= deadline
    });
    let frames = |pcm: &[f32]| pcm.len() / FRAME_SAMPLES;
    let forged_as_own = frames_with_tone(&of_bad, 770.0, &[440.0, 550.0]);
    let member_own = frames_with_tone(&of_member, 550.0, &[770.0]);
    assert!(
        forged_as_own * 10 >= frames(&of_bad) * 8 && frames(&of_bad) >= 50,
        "the forged voice is the hostile member's own: {forged_as_own} of {} frames",
        frames(&of_bad)
    );
    assert!(
        member_own * 10 >= frames(&of_member) * 8 && frames(&of_member) >= 50,
        "the member's voice stays its own: {member_own} of {} frames",
        frames(&of_member)
    );
    assert_eq!(players[0].state(), LobbyState::InLobby);
}

/// When the path's capacity is cut (a token bucket on this namespace's loopback), congestion
/// control brings the camera's bitrate down within seconds, and video keeps decoding.
#[test]
fn the_camera_bitrate_comes_down_when_the_path_is_cut() {
    let _crowd = shared();
    if in_own_namespace(
        "the_camera_bitrate_comes_down_when_the_path_is_cut",
        LIMIT * 3,
    ) {
        return;
    }
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("media-cut");
    let mut players = hosting(player(&url, true));
    // Noise is what makes an encoder use its bitrate (the test pattern alone needs little).
    let camera = VideoPush::new(320, 240, 30);
    local(&mut players[0]).start_camera(CameraSource::Push(camera.clone()));
    players.push(player(&url, true));
    assert!(run_until(&mut players, LIMIT, lobby_complete));
    let talker = players[0].id().expect("an id");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut pattern = TestPattern::new(320, 240, 30);
    let mut noise = |camera: &VideoPush| {
        // The pattern over a band of noise 40 rows high: costly at a fine quantizer, cheap at
        // a coarse one, as a real picture is.
        let mut frame = pattern.next_frame();
        rng.fill(&mut frame.y_mut()[320 * 200..]);
        camera.push(frame);
    };
    let frames = |p: &Player| remote(p).video(talker).map_or(0, |v| v.frames_decoded());
    let rate = |p: &Player| {
        p.app
            .world()
            .resource::<LocalMedia>()
            .camera_bitrate()
            .unwrap_or(0)
    };
    let mut last_push = Instant::now();
    let mut feed = |ps: &[Player]| {
        if last_push.elapsed() >= Duration::from_millis(33) {
            last_push = Instant::now();
            noise(&camera);
        }
        let _ = ps;
    };
    assert!(run_until(&mut players, LIMIT, |ps| {
        feed(ps);
        frames(&ps[1]) >= 60
    }));
    let before = rate(&players[0]);
    let shaped = std::process::Command::new("tc")
        .args([
            "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "250kbit", "burst", "16kb",
            "latency", "60ms",
        ])
        .status()
        .expect("tc");
    assert!(shaped.success(), "tc could not shape loopback");
    let cut = Instant::now();
    let came_down = run_until(&mut players, Duration::from_secs(15), |ps| {
        feed(ps);
        rate(&ps[0]) < before * 6 / 10
    });
    let after = rate(&players[0]);
    println!(
        "camera bitrate {before} -> {after} in {:?} after the cut",
        cut.elapsed()
    );
    assert!(came_down, "the bitrate stayed at {after} (was {before})");
    let decoded = frames(&players[1]);
    let ok = run_until(&mut players, Duration::from_secs(15), |ps| {
        feed(ps);
        frames(&ps[1]) >= decoded + 15
    });
    let stats = players[0]
        .app
        .world()
        .resource::<MediaStats>()
        .0
        .values()
        .next()
        .cloned();
    println!("after the cut: {stats:?}");
    assert!(ok, "video keeps decoding on the cut path");
}

/// What a game shows and plays: the remote camera as a Bevy `Image` (its test-pattern index
/// reads back from the RGBA), and the remote voice as a `VoiceStream` asset whose audio source
/// (what Bevy's `AudioPlayer` plays) carries the sender's tone, 48 kHz mono.
#[test]
fn remote_camera_and_voice_as_bevy_assets() {
    let _crowd = shared();
    use bevy::asset::{AssetApp, AssetPlugin, Assets};
    use bevy::audio::{Decodable, Source};
    use bevy::image::Image;
    use bevy_huddle::media::VoiceStream;
    let (_rt, _server, mut players, talker) = pair_with("media-assets", |p| {
        p.app
            .add_plugins(AssetPlugin::default())
            .init_asset::<Image>()
            .init_asset::<VoiceStream>();
    });
    let shown = run_until(&mut players, LIMIT, |ps| {
        let image = remote(&ps[1]).image(talker);
        let images = ps[1].app.world().resource::<Assets<Image>>();
        image.and_then(|h| images.get(&h)).is_some_and(|i| {
            let size = i.texture_descriptor.size;
            let frame = i
                .data
                .as_deref()
                .and_then(|rgba| VideoFrame::from_rgba(size.width, size.height, rgba));
            frame
                .and_then(|f| TestPattern::read_index(&f))
                .is_some_and(|n| n > 10)
        })
    });
    assert!(
        shown,
        "the camera shows as an image whose frame index reads back"
    );

    let handle = remote(&players[1]).voice(talker).expect("a voice asset");
    run_for(&mut players, Duration::from_millis(700));
    let streams = players[1].app.world().resource::<Assets<VoiceStream>>();
    let mut source = streams.get(&handle).expect("the stream").decoder();
    assert_eq!(
        (source.channels().get(), source.sample_rate().get()),
        (1, 48_000)
    );
    let pcm: Vec<f32> = source.by_ref().take(24_000).collect();
    let good = frames_with_tone(&pcm, 440.0, &[550.0, 660.0]);
    assert!(
        good >= 20,
        "the tone in {good} of 25 frames of the played stream"
    );
    // It never ends: silence when nothing is new.
    assert_eq!(source.by_ref().take(96_000).count(), 96_000);
}

/// Pushed microphone sound is processed before it is encoded: steady hiss with nobody speaking
/// reaches the listener as silence (noise suppression and the voice gate), and as hiss with
/// processing off.
#[test]
fn pushed_hiss_is_gated_unless_processing_is_off() {
    let _crowd = shared();
    use bevy_huddle::media::{AudioPush, MicProcessing};
    let (rt, server) = server_on_runtime();
    let _guard = rt.enter();
    for (processing, room) in [
        (MicProcessing::default(), "hiss-on"),
        (MicProcessing::OFF, "hiss-off"),
    ] {
        let url = server.room_url(room);
        let mut config = HuddleConfig::room(&url);
        config.media.enabled = true;
        config.media.processing = processing;
        let mut players = hosting(Player::join_with(&url, Types::All, config));
        players.push(player(&url, true));
        assert!(run_until(&mut players, LIMIT, lobby_complete));
        let talker = players[0].id().expect("an id");
        let mic = AudioPush::new();
        local(&mut players[0]).start_microphone(MicSource::Push(mic.clone()));
        let mut rng = fastrand::Rng::with_seed(5);
        let mut feed = move || {
            if mic.queued() < 4_800 {
                let hiss: Vec<f32> = (0..960).map(|_| (rng.f32() * 2.0 - 1.0) * 0.05).collect();
                mic.push(&hiss);
            }
        };
        // Until the voice track plays, then half a second to settle, then a second to listen.
        let playing = run_until(&mut players, LIMIT, |ps| {
            feed();
            remote(&ps[1])
                .audio(talker)
                .is_some_and(|a| a.delivered().1.is_some())
        });
        assert!(playing, "{room}: the voice track plays");
        let mut heard = Vec::new();
        let start = Instant::now();
        run_until(&mut players, Duration::from_secs(3), |ps| {
            feed();
            let pcm = drain(&ps[1], talker);
            if start.elapsed() > Duration::from_millis(500) {
                heard.extend(pcm);
            }
            start.elapsed() > Duration::from_millis(1500)
        });
        let level = tone::rms_db(&heard);
        println!("{room}: {} samples heard at {level:.1} dBFS", heard.len());
        assert!(
            heard.len() >= 24_000,
            "{room}: only {} samples in a second",
            heard.len()
        );
        if processing == MicProcessing::OFF {
            assert!(level > -40.0, "hiss passes unprocessed: {level:.1} dBFS");
        } else {
            assert!(
                level < -60.0,
                "hiss is suppressed and gated: {level:.1} dBFS"
            );
        }
    }
}

/// Echo: the listener's microphone picks up what it plays of the talker (half as loud) under its
/// own voice, as a room does: a thread of the test is the sound card, every 20 ms playing the
/// listener's next PCM (silence if none came in time) and recording the microphone's frame. The talker speaks broadband noise (as a voice is;
/// a pure tone is the one signal an echo canceller cannot tell its path from), the listener a
/// 660 Hz tone. Two seconds in, the sound card's microphone hiccups (half a second at once, which
/// then waits in the microphone's queue: the echo's delay must not move with it).
/// With echo cancellation the talker hears itself back at least 20 dB weaker than
/// without (measured over 1-3 kHz, where the listener's tone is not), and the listener's voice
/// stays far above what is left of the echo.
#[test]
fn the_echo_of_a_played_voice_is_cancelled() {
    let _crowd = alone();
    use bevy_huddle::media::{AudioPush, MicProcessing};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (rt, server) = server_on_runtime();
    let _guard = rt.enter();
    let mut heard = Vec::new();
    for (echo_cancellation, room) in [(true, "echo-on"), (false, "echo-off")] {
        let url = server.room_url(room);
        let mut talker = HuddleConfig::room(&url);
        talker.media.enabled = true;
        talker.media.processing = MicProcessing::OFF;
        let mut players = hosting(Player::join_with(&url, Types::All, talker));
        let talk = AudioPush::new();
        local(&mut players[0]).start_microphone(MicSource::Push(talk.clone()));
        let mut config = HuddleConfig::room(&url);
        config.media.enabled = true;
        config.media.processing = MicProcessing {
            echo_cancellation,
            ..MicProcessing::OFF
        };
        players.push(Player::join_with(&url, Types::All, config));
        assert!(run_until(&mut players, LIMIT, lobby_complete));
        let ids: Vec<PeerId> = players.iter().map(|p| p.id().expect("an id")).collect();
        let mic = AudioPush::new();
        // A device's buffer: the microphone does not run dry between the room's pushes.
        mic.push(&[0.0; 6 * FRAME_SAMPLES]);
        local(&mut players[1]).start_microphone(MicSource::Push(mic.clone()));
        assert!(run_until(&mut players, LIMIT, |ps| remote(&ps[1])
            .audio_shared(ids[0])
            .is_some()));
        let played = remote(&players[1])
            .audio_shared(ids[0])
            .expect("the talker's voice");
        let stop = Arc::new(AtomicBool::new(false));
        let room_stop = stop.clone();
        let room_thread = std::thread::spawn(move || {
            let mut voice = SineWave::new(660.0, 0.1);
            let mut pending = Vec::new();
            let mut rng = fastrand::Rng::with_seed(11);
            let mut next = Instant::now();
            let mut playing = false;
            // What the speaker's buffer held at most, and how often it ran dry while playing.
            let (mut deepest, mut dry) = (0, 0);
            // The sound card hiccups once, as they do: its microphone hands over nothing for
            // half a second, then all it captured at once.
            let (mut tick, mut held) = (0u32, Vec::new());
            while !room_stop.load(Ordering::Relaxed) {
                // The room's clock, as a sound card's: every 20 ms the speaker plays a frame and
                // the microphone records one.
                next += Duration::from_millis(20);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                // The talker's voice: noise, kept 100 ms ahead of its microphone.
                while talk.queued() < 4_800 {
                    let noise: Vec<f32> = (0..FRAME_SAMPLES)
                        .map(|_| (rng.f32() * 2.0 - 1.0) * 0.3)
                        .collect();
                    talk.push(&noise);
                }
                pending.extend(played.take_pcm());
                // What the speaker plays: the talker's next 20 ms, silence if none came in time.
                // Like a sound card's, its buffer fills (120 ms) before it starts playing, so
                // the decoder's scheduling jitter does not run it dry (at 60 ms, a suite run now
                // and then ran dry, moved the echo path and measured 9-17 dB, not 24+).
                playing |= pending.len() >= 6 * FRAME_SAMPLES;
                deepest = deepest.max(pending.len() / FRAME_SAMPLES);
                dry += usize::from(playing && pending.len() < FRAME_SAMPLES);
                let n = if playing {
                    pending.len().min(FRAME_SAMPLES)
                } else {
                    0
                };
                let mut frame: Vec<f32> = pending.drain(..n).collect();
                frame.resize(FRAME_SAMPLES, 0.0);
                let own = voice.next_frame();
                let mixed: Vec<f32> = frame.iter().zip(own).map(|(e, v)| 0.5 * e + v).collect();
                tick += 1;
                held.extend(mixed);
                if !(100..125).contains(&tick) {
                    mic.push(&held);
                    held.clear();
                }
            }
            (deepest, dry)
        });
        let both = run_until(&mut players, LIMIT, |ps| {
            remote(&ps[0])
                .audio(ids[1])
                .is_some_and(|a| a.delivered().1.is_some())
        });
        assert!(both, "{room}: the listener's voice plays at the talker");
        // Seven seconds for the canceller to find the echo's delay (three were not always
        // enough with the other media tests running beside it, five not always in a CI run:
        // 19.2 dB), two to listen.
        let start = Instant::now();
        let mut back = Vec::new();
        run_until(&mut players, Duration::from_secs(11), |ps| {
            let pcm = drain(&ps[0], ids[1]);
            if start.elapsed() > Duration::from_secs(7) {
                back.extend(pcm);
            }
            start.elapsed() > Duration::from_secs(9)
        });
        stop.store(true, Ordering::Relaxed);
        let (deepest, dry) = room_thread.join().unwrap_or_default();
        let echo = echo_band_db(&back);
        let near = tone::level_db(&back, 660.0);
        println!(
            "{room}: {} samples; the talker's echo {echo:.1} dB, the listener's voice {near:.1} dB \
             (the speaker held {deepest} frames at most, ran dry {dry} times)",
            back.len()
        );
        assert!(back.len() >= 48_000, "{room}: two seconds heard");
        heard.push((echo, near));
    }
    let ((echo_on, near_on), (echo_off, near_off)) = (heard[0], heard[1]);
    assert!(
        echo_off - echo_on >= 20.0,
        "echo {echo_off:.1} dB without cancellation, {echo_on:.1} dB with"
    );
    // While both speak, AEC3 lets the near voice through (measured within 1.5 dB).
    assert!(
        near_on - echo_on >= 20.0 && near_on >= near_off - 6.0,
        "the listener's voice {near_off:.1} dB without, {near_on:.1} dB with (echo {echo_on:.1} dB)"
    );
}

/// The mean level of `pcm` at 1-3 kHz (every 100 Hz, frame by frame: noise spreads over a
/// long window's narrow bins), in dB.
fn echo_band_db(pcm: &[f32]) -> f32 {
    let frames = pcm.chunks_exact(FRAME_SAMPLES);
    let n = (frames.len() * 21).max(1) as f32;
    let power: f32 = frames
        .flat_map(|f| {
            (10..=30).map(move |k| 10f32.powf(tone::level_db(f, k as f32 * 100.0) / 10.0))
        })
        .sum();
    10.0 * (power / n).log10()
}

/// Set in the process that runs the device test proper (see below).
const DEVICE_CHILD: &str = "HUDDLE_DEVICE_TEST";

/// The machine's own devices (feature `media-devices`): a microphone through cpal and ALSA is
/// heard by the other peer; a microphone or camera that is not there is a `HuddleError::Media`,
/// its track ends at the other peer, and the lobby goes on.
///
/// The test machine has no sound card, so ALSA's `file` plugin is the default capture device:
/// it reads a 550 Hz tone from a file (as fast as it is asked: the microphone keeps the first
/// second and drops the rest, counted). ALSA reads its configuration from the process's
/// environment, so the test runs itself again as a child process with `ALSA_CONFIG_PATH` set.
#[test]
fn a_microphone_device_is_heard_and_missing_devices_are_errors() {
    let _crowd = shared();
    if std::env::var_os(DEVICE_CHILD).is_none() {
        let dir = std::env::temp_dir().join(format!("huddle-alsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let tone = dir.join("tone.raw");
        let mut sine = SineWave::new(550.0, 0.5);
        let samples: Vec<u8> = (0..500)
            .flat_map(|_| sine.next_frame())
            .flat_map(f32::to_le_bytes)
            .collect();
        std::fs::write(&tone, samples).expect("the tone file");
        let config = dir.join("asound.conf");
        let pcm = format!(
            "pcm.!default {{\n type file\n slave.pcm \"null\"\n file \"/dev/null\"\n \
             infile \"{}\"\n format \"raw\"\n}}\n",
            tone.display()
        );
        std::fs::write(&config, pcm).expect("the ALSA configuration");
        let mut child = std::process::Command::new(std::env::current_exe().expect("this test"))
            .args([
                "--exact",
                "a_microphone_device_is_heard_and_missing_devices_are_errors",
                "--nocapture",
            ])
            .env(DEVICE_CHILD, "1")
            .env(
                "ALSA_CONFIG_PATH",
                format!("/usr/share/alsa/alsa.conf:{}", config.display()),
            )
            .spawn()
            .expect("the test runs itself");
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(status) = child.try_wait().expect("the child's status") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            status.is_some_and(|s| s.success()),
            "the device test: {status:?}"
        );
        return;
    }
    use bevy_huddle::media::{cameras, microphones, CameraDevice, MicDevice};
    println!("microphones: {:?}; cameras: {:?}", microphones(), cameras());
    let (_rt, _server, mut players, talker) = pair("media-device");
    let errors = |p: &Player| {
        p.log()
            .errors
            .iter()
            .filter(|e| matches!(e, HuddleError::Media(_)))
            .count()
    };

    local(&mut players[0]).start_microphone(MicSource::Device(MicDevice::default()));
    let heard = listen(&mut players, 1, talker, Duration::from_millis(1500));
    let frames = frames_with_tone(&heard, 550.0, &[440.0]);
    println!("{frames} frames of the device's tone in 1.5 s");
    assert!(frames >= 25, "the device's tone in {frames} frames");
    assert_eq!(errors(&players[0]), 0, "{:?}", players[0].log().errors);

    local(&mut players[0]).start_camera(CameraSource::Device(CameraDevice::new(99)));
    local(&mut players[0]).start_microphone(MicSource::Device(MicDevice {
        name: Some("no such microphone".into()),
    }));
    assert!(
        run_until(&mut players, LIMIT, |ps| errors(&ps[0]) == 2),
        "both are errors: {:?}",
        players[0].log().errors
    );
    println!("{:?}", players[0].log().errors);
    assert!(local(&mut players[0]).tracks() == Default::default());
    let ended = run_until(&mut players, LIMIT, |ps| {
        let ended = &tracks(&ps[1]).ended;
        [MediaKind::Audio, MediaKind::Video]
            .iter()
            .all(|&kind| ended.contains(&RemoteTrackEnded { peer: talker, kind }))
    });
    assert!(ended, "both tracks end at the listener");
    players[0].send(Outgoing::to_all(Chat("still here".into())));
    assert!(run_until(&mut players, LIMIT, |ps| ps[1]
        .log()
        .chats
        .iter()
        .any(|(_, c)| c.0 == "still here")));
}

/// Lip sync: the talker's sender reports put its voice and camera on one clock, and a picture
/// waits until its voice plays. With the voice delayed 200 ms more than the picture (the link
/// conditioner on the listener's voices), pictures are held about 200 ms longer than without.
#[test]
fn pictures_wait_for_their_voice() {
    let _crowd = shared();
    let (_rt, _server, mut players, talker) = pair("media-lipsync");
    let holds = |players: &mut [Player]| {
        let mut seen = Vec::new();
        let mut last = None;
        let start = Instant::now();
        run_until(players, Duration::from_secs(5), |ps| {
            let video = remote(&ps[1]).video(talker).expect("a camera");
            let frames = video.frames_decoded();
            if start.elapsed() > Duration::from_secs(1) && last != Some(frames) {
                seen.push(video.lip_sync_hold());
            }
            last = Some(frames);
            start.elapsed() > Duration::from_secs(3)
        });
        seen.sort();
        assert!(seen.len() >= 20, "{} frames", seen.len());
        seen[seen.len() / 2]
    };
    let plain = holds(&mut players);
    players[1].app.insert_resource(LinkConditioner {
        media: Some(Conditions::new(
            Duration::from_millis(200),
            Duration::ZERO,
            0.0,
        )),
        ..Default::default()
    });
    let delayed = holds(&mut players);
    println!("median hold: {plain:?} as it is, {delayed:?} with the voice 200 ms later");
    let more = delayed.saturating_sub(plain);
    assert!(
        more >= Duration::from_millis(150) && more <= Duration::from_millis(250),
        "held {more:?} longer"
    );
}

/// The star tests run a crowd of apps each (six, four): alone, or a crowd and another test on
/// two cores starve each other's voices of CPU. So does the echo test, whose sound card is a
/// thread with a deadline every 20 ms. The other tests share.
static CROWD: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// For a crowd: no other test of this file runs meanwhile, and the media threads of the tests
/// before have ended (their connections close after their apps are gone; 10 s at most).
fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    let guard = CROWD.write().unwrap_or_else(|e| e.into_inner());
    let media_threads = || {
        std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .filter(|name| name.starts_with("huddle-"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while media_threads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    guard
}

/// For the others: any number at once, but not with a crowd.
fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    CROWD.read().unwrap_or_else(|e| e.into_inner())
}

/// A star's media player: media on, a tone and (with `camera`) a small test pattern,
/// `video_slots` cameras of other clients at most.
fn star_sender(url: &str, tone: f32, camera: bool, video_slots: usize) -> Player {
    let mut config = HuddleConfig::room(url);
    config.media.enabled = true;
    config.media.star.video_slots = video_slots;
    // Six apps in one debug process on two cores, after the rest of the suite: the forwarding
    // hop's scheduling jitter reaches 80-100 ms now and then, more while the machine writes back
    // the suite's freshly linked binaries (measured: up to 24 late packets in 3.5 s at an 80 ms
    // target, a CI run's pairs at 86 % with 140 ms), which a deeper buffer absorbs; the release build's hop adds
    // 0.1-0.7 ms (BENCHMARKS.md). Bound to loopback, connections come up ~1 s sooner.
    config.media.jitter.min_delay = Duration::from_millis(200);
    config.media.jitter.max_delay = Duration::from_millis(400);
    config.media.bind = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))];
    let mut p = Player::join_with(url, Types::All, config);
    p.app
        .init_resource::<Tracks>()
        .add_systems(bevy::prelude::Update, collect_tracks);
    let mut local = p.app.world_mut().resource_mut::<LocalMedia>();
    local.start_microphone(MicSource::SineWave(SineWave::new(tone, 0.5)));
    if camera {
        local.start_camera(CameraSource::TestPattern(TestPattern::new(160, 120, 30)));
    }
    p
}

/// Whether every player hears (decoded voice arriving) every other one.
fn all_hear_all(players: &[Player], ids: &[PeerId]) -> bool {
    players.iter().enumerate().all(|(r, p)| {
        ids.iter()
            .enumerate()
            .filter(|(s, _)| *s != r)
            .all(|(_, &id)| {
                remote(p)
                    .audio(id)
                    .is_some_and(|a| a.packets() > 0 && a.delivered().0 > 0)
            })
    })
}

/// Checks every pair's recording: ≥ 90 % of the frames came, the sender's tone is the peak
/// (±2 Hz, the median of each second's) and 20 dB over every other tone in ≥ 80 % of 20 ms
/// frames. The mesh test asks 90 %
/// of three apps; six debug-build apps in one process on CI's two cores stall for up to a
/// second now and then (two pairs at 85 % of 6 s in a CI run, every other pair over 95 %), and
/// a broken forward loses every frame, not one in ten. The release build's forwarding is
/// measured in BENCHMARKS.md.
fn assert_tones(got: &HashMap<(usize, usize), Received>, tones: &[f32], seconds: usize) {
    let expected = seconds * 50;
    let mut failed = Vec::new();
    for ((r, s), heard) in got {
        let tone = tones[*s];
        let others: Vec<f32> = tones.iter().copied().filter(|&t| t != tone).collect();
        let frames = heard.pcm.len() / FRAME_SAMPLES;
        let good = frames_with_tone(&heard.pcm, tone, &others);
        // The median of each second's peak: one second torn by a stall (its concealment's
        // phase jumps) may read off the tone, the tone itself may not (a CI run: 448.75 Hz for
        // a 440 Hz sender over a whole 6 s window with one stall in it).
        let mut peaks: Vec<f32> = heard
            .pcm
            .chunks_exact(FRAME_SAMPLES * 50)
            .map(|second| tone::peak_frequency(second, 300.0, 1000.0))
            .collect();
        peaks.sort_by(f32::total_cmp);
        let peak = peaks.get(peaks.len() / 2).copied().unwrap_or(0.0);
        println!(
            "peer {r} hears peer {s}: {frames} frames, {good} with its tone, peak {peak:.2} Hz"
        );
        if frames * 10 < expected * 9 || good * 10 < expected * 8 || (peak - tone).abs() > 2.0 {
            failed.push((r, s, frames, good, peak));
        }
    }
    assert!(
        failed.is_empty(),
        "(receiver, sender, frames, with tone, peak): {failed:?}"
    );
}

/// Six peers in a star room, each sending a tone: a client's voice goes to the host only, and
/// the host forwards it (rewritten per leg, not decoded). Every peer hears all five others. Then
/// the host leaves: the next host forwards, and every remaining peer hears every other
/// remaining one again.
#[test]
fn six_peers_in_a_star_hear_each_other_through_the_host_and_after_it_leaves() {
    let _crowd = alone();
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("media-star?capacity=8");
    let tones = [330.0, 440.0, 550.0, 660.0, 770.0, 880.0];
    let mut players = hosting(star_sender(&url, tones[0], false, 4));
    players.extend(tones[1..].iter().map(|&t| star_sender(&url, t, false, 4)));
    assert!(
        run_until(&mut players, LIMIT, lobby_complete),
        "a lobby of six"
    );
    let ids: Vec<PeerId> = players.iter().map(|p| p.id().expect("an id")).collect();
    // Clients do media with the host only.
    for p in &players[1..] {
        let states = &p.app.world().resource::<MediaStates>().0;
        assert!(states.keys().all(|k| *k == ids[0]), "{states:?}");
    }
    let heard = run_until(&mut players, LIMIT, |ps| all_hear_all(ps, &ids));
    assert!(heard, "every peer hears every other through the host");
    run_for(&mut players, Duration::from_millis(500));
    for p in &players {
        for &id in &ids {
            let _ = remote(p).audio(id).map(|a| a.take_pcm());
        }
    }
    // Six seconds: a stall of the loaded machine (340 ms seen in a CI run, six debug apps on two
    // cores) is not 10 % of the window, while a lasting fault still is.
    let got = record(&mut players, &ids, Duration::from_secs(6));
    for (r, p) in players.iter().enumerate() {
        for (s, &id) in ids.iter().enumerate() {
            if let Some(a) = remote(p).audio(id) {
                println!("{r} <- {s}: {:?} dropped {}", a.jitter_stats(), a.dropped());
            }
        }
    }
    assert_tones(&got, &tones, 6);
    let host_stats = players[0].app.world().resource::<MediaStats>();
    for id in &ids[1..] {
        let s = &host_stats.0[id];
        println!(
            "host toward {id}: forwarded {} dropped {}",
            s.forwarded, s.forward_dropped
        );
        // Four voices of 50 packets a second for 2.5 s at least (the stats lag up to 1 s).
        assert!(s.forwarded >= 4 * 50 * 5 / 2, "{s:?}");
    }
    // The host leaves. Each remaining voice must come again: half a second of packets more.
    let packets = |p: &Player, id: PeerId| remote(p).audio(id).map_or(0, |a| a.packets());
    let before: Vec<Vec<u64>> = players[1..]
        .iter()
        .map(|p| ids[1..].iter().map(|&id| packets(p, id)).collect())
        .collect();
    let left = Instant::now();
    let old_host = ids[0];
    players.remove(0);
    let ids = ids[1..].to_vec();
    let again = run_until(&mut players, LIMIT, |ps| {
        ps.iter().enumerate().all(|(r, p)| {
            p.roster().host == Some(ids[0])
                && ids
                    .iter()
                    .enumerate()
                    .all(|(s, &id)| s == r || packets(p, id) >= before[r][s] + 25)
        })
    });
    println!(
        "media re-routed through the new host in {:?}",
        left.elapsed()
    );
    assert!(again, "every remaining peer hears every other again");
    // The remaining peers' voices did not restart: no end and no second start; only the old
    // host's voice ended.
    for (r, p) in players.iter().enumerate() {
        let log = tracks(p);
        assert!(
            log.ended.iter().all(|t| t.peer == old_host),
            "{r}: {:?}",
            log.ended
        );
        assert_eq!(
            log.started.len(),
            5,
            "{r}: each voice once: {:?}",
            log.started
        );
    }
    run_for(&mut players, Duration::from_millis(500));
    for p in &players {
        for &id in &ids {
            let _ = remote(p).audio(id).map(|a| a.take_pcm());
        }
    }
    let got = record(&mut players, &ids, Duration::from_secs(4));
    assert_tones(&got, &tones[1..], 4);
}

/// Cameras in a star: four peers with cameras and one video slot each. The host sees every
/// client; a client sees the host's camera (direct) and exactly one other client's, forwarded
/// with its frame indices in order; the others' are not sent to it at all.
#[test]
fn a_star_forwards_cameras_within_each_viewers_slots() {
    let _crowd = alone();
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("media-star-video?capacity=8");
    let tones = [330.0, 550.0, 770.0, 990.0];
    let mut players = hosting(star_sender(&url, tones[0], true, 1));
    players.extend(tones[1..].iter().map(|&t| star_sender(&url, t, true, 1)));
    assert!(
        run_until(&mut players, LIMIT, lobby_complete),
        "a lobby of four"
    );
    let ids: Vec<PeerId> = players.iter().map(|p| p.id().expect("an id")).collect();
    let seen = |p: &Player, id: PeerId| remote(p).video(id).is_some_and(|v| v.frames_decoded() > 0);
    let started = run_until(&mut players, LIMIT, |ps| {
        ps.iter().enumerate().all(|(r, p)| {
            // At least: a slot may have shown another camera while the lobby formed.
            let seeing = ids.iter().filter(|&&id| seen(p, id)).count();
            seeing >= if r == 0 { 3 } else { 2 }
        })
    });
    let views: Vec<Vec<(u64, u64)>> = players
        .iter()
        .map(|p| {
            ids.iter()
                .map(|&id| {
                    remote(p)
                        .video(id)
                        .map_or((0, 0), |v| (v.packets(), v.frames_decoded()))
                })
                .collect()
        })
        .collect();
    assert!(
        started,
        "every peer sees its cameras: (packets, frames) {views:?}"
    );
    let got = record(&mut players, &ids, Duration::from_secs(3));
    for (r, _) in players.iter().enumerate() {
        let seeing: Vec<usize> = (0..4)
            .filter(|&s| s != r && got[&(r, s)].frames > 0)
            .collect();
        println!("peer {r} sees {seeing:?}");
        let wanted = if r == 0 { 3 } else { 2 };
        assert_eq!(seeing.len(), wanted, "{r} sees {seeing:?}");
        assert!(r == 0 || seeing.contains(&0), "{r} sees the host");
        for s in seeing {
            let heard = &got[&(r, s)];
            assert!(
                heard.frames >= 45,
                "{r} <- {s}: {} frames in 3 s",
                heard.frames
            );
            assert_eq!(heard.out_of_order, 0, "{r} <- {s}");
        }
    }
    assert_tones(&got, &tones, 3);
}
