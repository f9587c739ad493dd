//! Headless box-game players (the `box_game` example's game, bots at the keys) for the rollback
//! tests.

use crate::apps::{Player, Types};
use bevy::prelude::*;
use bevy_huddle::{
    HuddleConfig, RollbackEvent, RollbackMatch, RollbackSettings, RollbackStats, Topology,
};
use huddle_examples::box_game::{final_checksum, BoxGame};
use huddle_examples::lobby::Pilot;

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
