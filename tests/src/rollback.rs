//! Headless box-game players (the `box_game` example's game, bots at the keys) for the rollback
//! tests.

use crate::apps::run_until;
use crate::apps::{Player, Types};
use bevy::prelude::*;
use bevy_huddle::prelude::{Conditions, LinkConditioner};
use bevy_huddle::{
    HuddleConfig, RollbackEvent, RollbackMatch, RollbackSettings, RollbackStats, Topology,
};
use huddle_examples::box_game::{final_checksum, BoxGame};
use huddle_examples::lobby::Pilot;
use std::time::Duration;

/// How long a match's step may take in the rollback tests.
pub const MATCH_LIMIT: Duration = Duration::from_secs(60);

/// Every rollback event a player saw.
#[derive(Resource, Default, Debug)]
pub struct RollbackLog(pub Vec<RollbackEvent>);

fn collect(mut log: ResMut<RollbackLog>, mut events: MessageReader<RollbackEvent>) {
    log.0.extend(events.read().cloned());
}

/// A headless box-game player in a match of `players` joining `url`.
pub fn box_player(url: &str, players: usize) -> Player {
    box_player_with(
        url,
        RollbackSettings {
            players,
            max_prediction: 12,
            ..RollbackSettings::default()
        },
    )
}

/// A headless box-game player with `rollback` settings joining `url`, in a mesh.
pub fn box_player_with(url: &str, rollback: RollbackSettings) -> Player {
    box_player_in(url, rollback, Some(Topology::Mesh))
}

/// [`box_player_with`] asking for `topology` (`None`: `Topology::Auto`).
pub fn box_player_in(url: &str, rollback: RollbackSettings, topology: Option<Topology>) -> Player {
    let mut config = HuddleConfig::room(url);
    config.topology = topology;
    let mut player = Player::join_with(url, Types::Nothing, config);
    player
        .app
        .add_plugins(BoxGame {
            pilot: Pilot::Bot,
            rollback,
            snapshots: true,
        })
        .init_resource::<RollbackLog>()
        .add_systems(Update, collect);
    player
}

/// The player's view of the match.
pub fn game(player: &Player) -> &RollbackMatch {
    player.app.world().resource::<RollbackMatch>()
}

/// The player's rollback stats.
pub fn rollback_stats(player: &Player) -> &RollbackStats {
    player.app.world().resource::<RollbackStats>()
}

/// The rollback events the player saw.
pub fn rollback_log(player: &Player) -> &[RollbackEvent] {
    player
        .app
        .world()
        .get_resource::<RollbackLog>()
        .map_or(&[], |log| &log.0)
}

/// The world checksum of `frame`, once final for this player.
pub fn checksum_at(player: &Player, frame: i32) -> Option<u64> {
    final_checksum(player.app.world(), frame)
}

/// Players joined one after the other (so join order is known), in a complete lobby.
pub fn lobby(url: &str, n: usize, players: usize) -> Vec<Player> {
    lobby_with(n, || box_player(url, players))
}

/// [`lobby`] of the players `join` makes.
pub fn lobby_with(n: usize, join: impl Fn() -> Player) -> Vec<Player> {
    let mut ps = vec![join()];
    assert!(run_until(&mut ps, MATCH_LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    ps.extend((1..n).map(|_| join()));
    ps
}

/// Drops the process of `peers[index]` (a player) and runs the others until every one of them
/// counts its seat gone (and only that seat).
pub fn vanish(peers: &mut Vec<Player>, index: usize) {
    let handle = game(&peers[index]).local_handle.expect("a player");
    drop(peers.remove(index));
    let gone = run_until(peers, MATCH_LIMIT, |ps| {
        ps.iter().all(|p| game(p).disconnected == vec![handle])
    });
    assert!(gone, "all see seat {handle} go");
}

/// Runs the peers until every one made `frame` final.
pub fn play_to(peers: &mut [Player], frame: i32) {
    let ok = run_until(peers, MATCH_LIMIT, |ps| {
        ps.iter().all(|p| checksum_at(p, frame).is_some())
    });
    let at: Vec<_> = peers
        .iter()
        .map(|p| {
            let events: Vec<_> = rollback_log(p)
                .iter()
                .filter(|e| !matches!(e, RollbackEvent::Synchronizing { .. }))
                .collect();
            (game(p).phase, rollback_stats(p).newest_frame, events)
        })
        .collect();
    assert!(ok, "every peer makes frame {frame} final: {at:?}");
}

/// No desync was reported to `player`.
pub fn no_desync(player: &Player) {
    let desyncs: Vec<_> = rollback_log(player)
        .iter()
        .filter(|e| matches!(e, RollbackEvent::DesyncDetected { .. }))
        .collect();
    assert!(desyncs.is_empty(), "desync reported: {desyncs:?}");
}

/// 60 ms ± 10 ms latency and 5 % loss on every link of `peers`.
pub fn condition(peers: &mut [Player]) {
    let conditions = Conditions::new(Duration::from_millis(60), Duration::from_millis(10), 0.05);
    for p in peers {
        p.app.insert_resource(LinkConditioner::both(conditions));
    }
}
