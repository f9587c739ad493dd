//! Headless Bevy apps running bevy_huddle (MinimalPlugins, updated by hand), for end-to-end tests.

use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::{HuddleConfig, HuddleStats};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// A chat line (reliable).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Chat(pub String);

/// A position update (unreliable).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Pos {
    /// Sequence number.
    pub seq: u32,
    /// A coordinate.
    pub x: f32,
}

/// A large payload (reliable, chunked when above 64 KiB).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Blob(pub Vec<u8>);

/// Everything a player's app heard, in order.
#[derive(Resource, Default, Debug)]
pub struct Log {
    /// `PeerJoined` messages.
    pub joined: Vec<PeerJoined>,
    /// `PeerLeft` messages.
    pub left: Vec<PeerLeft>,
    /// `HostChanged` messages, with when they arrived.
    pub hosts: Vec<(HostChanged, Instant)>,
    /// `HuddleError` messages.
    pub errors: Vec<HuddleError>,
    /// `RoomList` answers.
    pub room_lists: Vec<RoomList>,
    /// Chat lines received.
    pub chats: Vec<(PeerId, Chat)>,
    /// Positions received.
    pub positions: Vec<(PeerId, Pos)>,
    /// Blobs received.
    pub blobs: Vec<(PeerId, Blob)>,
    /// The signaling states it went through, in order.
    pub signaling: Vec<SignalingState>,
}

fn collect_game(
    mut log: ResMut<Log>,
    mut positions: MessageReader<Incoming<Pos>>,
    mut blobs: MessageReader<Incoming<Blob>>,
) {
    log.positions
        .extend(positions.read().map(|m| (m.from, m.message.clone())));
    log.blobs
        .extend(blobs.read().map(|m| (m.from, m.message.clone())));
}

/// Which message types a player registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Types {
    /// Chat, Pos and Blob.
    All,
    /// Chat only (to provoke a type mismatch).
    ChatOnly,
    /// None: the game's plugin registers its own.
    Nothing,
}

/// One player: a headless app with the plugin.
pub struct Player {
    /// The app.
    pub app: App,
}

impl Player {
    /// A player joining `url` with test-friendly settings.
    pub fn join(url: &str) -> Self {
        Self::join_with(url, Types::All, HuddleConfig::room(url))
    }

    /// A player with a message set and settings of its own.
    pub fn join_with(url: &str, types: Types, mut config: HuddleConfig) -> Self {
        config.room_url = Some(url.to_string());
        let mut app = App::new();
        app.add_plugins(MinimalPlugins)
            .add_plugins(HuddlePlugin::new(config));
        if types != Types::Nothing {
            app.add_huddle_message::<Chat>(Channel::Reliable);
        }
        if types == Types::All {
            app.add_huddle_message::<Pos>(Channel::Unreliable)
                .add_huddle_message::<Blob>(Channel::Reliable);
        }
        app.init_resource::<Log>();
        app.add_systems(Update, collect_lobby);
        if types != Types::Nothing {
            app.add_systems(Update, collect_chats);
        }
        if types == Types::All {
            app.add_systems(Update, collect_game);
        }
        Self { app }
    }

    /// Runs one frame.
    pub fn update(&mut self) {
        self.app.update();
    }

    /// What it heard.
    pub fn log(&self) -> &Log {
        self.app.world().resource::<Log>()
    }

    /// Its roster.
    pub fn roster(&self) -> &Roster {
        self.app.world().resource::<Roster>()
    }

    /// Its drop counters.
    pub fn stats(&self) -> &HuddleStats {
        self.app.world().resource::<HuddleStats>()
    }

    /// Its lobby state.
    pub fn state(&self) -> LobbyState {
        *self.app.world().resource::<State<LobbyState>>().get()
    }

    /// Its connection to the signaling server.
    pub fn signaling(&self) -> SignalingState {
        *self.app.world().resource::<State<SignalingState>>().get()
    }

    /// Its id.
    pub fn id(&self) -> Option<PeerId> {
        self.roster().me
    }

    /// Queues a message for the next frame.
    pub fn send<T: bevy_huddle::HuddleMessage>(&mut self, out: Outgoing<T>) {
        self.app.world_mut().write_message(out);
    }

    /// The link statistics of `peer`.
    pub fn link_stats(&self, peer: PeerId) -> Option<bevy_huddle::LinkStats> {
        self.app
            .world()
            .get_resource::<bevy_huddle::HuddleSession>()
            .and_then(|s| s.link_stats(peer).cloned())
    }
}

fn collect_lobby(
    mut log: ResMut<Log>,
    mut joined: MessageReader<PeerJoined>,
    mut left: MessageReader<PeerLeft>,
    mut hosts: MessageReader<HostChanged>,
    mut errors: MessageReader<HuddleError>,
    mut room_lists: MessageReader<RoomList>,
    signaling: Res<State<SignalingState>>,
) {
    if log.signaling.last() != Some(signaling.get()) {
        log.signaling.push(*signaling.get());
    }
    log.room_lists.extend(room_lists.read().cloned());
    log.joined.extend(joined.read().cloned());
    log.left.extend(left.read().cloned());
    let now = Instant::now();
    log.hosts.extend(hosts.read().cloned().map(|h| (h, now)));
    log.errors.extend(errors.read().cloned());
}

fn collect_chats(mut log: ResMut<Log>, mut chats: MessageReader<Incoming<Chat>>) {
    log.chats
        .extend(chats.read().map(|m| (m.from, m.message.clone())));
}

/// Updates every player (a round every 2 ms; in crowds of five or more, 3 ms per player, about a
/// game's 60 frames a second: six apps at 500 frames a second take a core from their own media
/// threads) until `done` or `limit`; returns whether `done` held.
pub fn run_until(
    players: &mut [Player],
    limit: Duration,
    mut done: impl FnMut(&[Player]) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        for p in players.iter_mut() {
            p.update();
        }
        if done(players) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let pause = match players.len() {
            n @ 5.. => 3 * n as u64,
            _ => 2,
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// Runs every player for `d`.
pub fn run_for(players: &mut [Player], d: Duration) {
    run_until(players, d, |_| false);
}

/// Whether every player is in the lobby with all others joined and the same host.
pub fn lobby_complete(players: &[Player]) -> bool {
    let n = players.len();
    let host = players.first().and_then(|p| p.roster().host);
    players.iter().all(|p| {
        p.state() == LobbyState::InLobby
            && p.roster().peers.len() == n - 1
            && p.roster().members.len() == n
            && p.roster().host.is_some()
            && p.roster().host == host
    })
}

/// A valid hello from a peer with `player`'s message set, as a hostile peer would forge it.
pub fn hello_like(player: &Player) -> Vec<u8> {
    let registry = player
        .app
        .world()
        .resource::<bevy_huddle::MessageRegistry>();
    let topology = player
        .app
        .world()
        .get_resource::<bevy_huddle::HuddleSession>()
        .map_or(bevy_huddle::Topology::Mesh, |s| s.topology());
    bevy_huddle::protocol::control::Control::Hello(bevy_huddle::protocol::control::Hello {
        version: bevy_huddle::protocol::control::PROTOCOL_VERSION,
        types_hash: registry.hash(),
        types: registry.names(),
        topology,
        seen: true,
        meta: Vec::new(),
    })
    .encode()
}

/// A huddle message as a hostile member writes it by hand: its wire type id, then `value` in
/// bincode.
pub fn encode_message<T: serde::Serialize>(type_id: u8, value: &T) -> Vec<u8> {
    let mut frame = vec![type_id];
    frame.extend(
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default(),
    );
    frame
}

/// A raw peer with huddle's channel layout that joins `url`, links to `players[0]` (the host)
/// and says a valid hello, so the host counts it as a lobby member: the hostile peer of tests.
/// `players` keep running while it joins.
pub fn hostile_member(
    rt: &tokio::runtime::Runtime,
    url: &str,
    players: &mut [Player],
    limit: Duration,
) -> crate::StockPeer {
    let _guard = rt.enter();
    let host = players[0].id().expect("the host has an id");
    let before = players[0].roster().peers.len();
    let mut hostile = crate::StockPeer::connect_huddle_layout(url);
    let linked = run_until(players, limit, |_| {
        hostile.poll();
        hostile.connected.contains(&host)
    });
    assert!(linked, "the hostile peer links to the host");
    hostile.send(0, host, &hello_like(&players[0]));
    let member = run_until(players, limit, |ps| ps[0].roster().peers.len() > before);
    assert!(member, "the host counts the hostile peer in");
    hostile
}

/// Links the hostile peer of [`hostile_member`] to `players[i]` too (a mesh) and says a valid
/// hello there; `players` keep running meanwhile.
pub fn hostile_greets(
    hostile: &mut crate::StockPeer,
    players: &mut [Player],
    i: usize,
    limit: Duration,
) {
    let peer = players[i].id().expect("the player has an id");
    let linked = run_until(players, limit, |_| {
        hostile.poll();
        hostile.connected.contains(&peer)
    });
    assert!(linked, "the hostile peer links to {peer}");
    hostile.send(0, peer, &hello_like(&players[i]));
}

/// A raw peer with huddle's channel layout, first in the room at `url`, once the server gave it
/// its id (within `limit`): the hostile host of tests, before any player joins. Call it inside
/// the server's runtime (`rt.enter()`).
pub fn hostile_first(url: &str, limit: Duration) -> crate::StockPeer {
    let mut hostile = crate::StockPeer::connect_huddle_layout(url);
    let started = std::time::Instant::now();
    while hostile.id().is_none() && started.elapsed() < limit {
        hostile.poll();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(hostile.id().is_some(), "the hostile peer gets an id");
    hostile
}

/// Makes the raw peer `hostile`, first in its room, the host of `players` (who joined after it):
/// as each links, it says a valid hello and publishes a roster naming itself host, then every
/// member in the order they linked, so the players follow it. The hostile *host* of tests;
/// `players` keep running meanwhile.
pub fn hostile_hosts(hostile: &mut crate::StockPeer, players: &mut [Player], limit: Duration) {
    let me = hostile.id().expect("the hostile peer has an id");
    let mut order = vec![me];
    let mut epoch = 0;
    let followed = run_until(players, limit, |ps| {
        hostile.poll();
        let new: Vec<PeerId> = hostile
            .connected
            .iter()
            .copied()
            .filter(|p| !order.contains(p))
            .collect();
        for peer in new {
            // Made once the players run: their session knows the room's topology by then.
            hostile.send(0, peer, &hello_like(&ps[0]));
            order.push(peer);
            epoch += 1;
            let roster = bevy_huddle::protocol::control::Control::Succession(
                bevy_huddle::protocol::election::Succession::in_join_order(epoch, order.clone()),
            )
            .encode();
            for p in &order[1..] {
                hostile.send(0, *p, &roster);
            }
        }
        hostile.inbox.clear();
        ps.iter()
            .all(|p| p.roster().host == Some(me) && p.id().is_some_and(|i| order.contains(&i)))
    });
    assert!(followed, "the players follow the hostile host");
}

/// Every player broadcasts a line tagged `tag`; each must hear the other n-1 with their ids.
pub fn broadcast_round(players: &mut [Player], tag: &str) {
    let ids: Vec<PeerId> = players.iter().map(|p| p.id().unwrap()).collect();
    for (i, p) in players.iter_mut().enumerate() {
        p.send(Outgoing::to_all(Chat(format!("{tag} {i}"))));
    }
    let n = players.len();
    let ok = run_until(players, Duration::from_secs(60), |ps| {
        ps.iter().enumerate().all(|(j, p)| {
            (0..n).filter(|&i| i != j).all(|i| {
                p.log()
                    .chats
                    .contains(&(ids[i], Chat(format!("{tag} {i}"))))
            })
        })
    });
    assert!(
        ok,
        "every broadcast of round `{tag}` reaches everyone with its origin"
    );
    for p in players.iter() {
        let mine = p
            .log()
            .chats
            .iter()
            .filter(|(_, c)| c.0.starts_with(tag))
            .count();
        assert_eq!(mine, n - 1, "each once");
    }
}
