//! Media connections (feature `media`): a media-only peer connection per pair of peers with
//! media, negotiated over the control channel; peers without media are `Unsupported` and the game
//! goes on. Run inside the loopback-only network namespace (see README).

use bevy_huddle::media::{MediaState, MediaStateChanged, MediaStates};
use bevy_huddle::prelude::*;
use bevy_huddle::HuddleConfig;
use huddle_tests::apps::*;
use huddle_tests::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn player(url: &str, media: bool) -> Player {
    let mut config = HuddleConfig::room(url);
    config.media = media;
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
