//! The box game's window (feature `window`, and `webgl` in a browser): the boxes, ours steered with the arrow keys, and a
//! line with the match's state, the host and the ping; Escape leaves the match cleanly, J (while
//! watching) asks to play.

use crate::box_game::{BoxBody, BoxInput, Steering, ARENA};
use crate::lobby::short;
use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::{RollbackMatch, RollbackStats};

/// Adds the window systems (the app must have `DefaultPlugins`).
pub struct BoxWindow;

impl Plugin for BoxWindow {
    fn build(&self, app: &mut App) {
        app.add_systems(Startup, setup).add_systems(
            Update,
            (
                steer,
                leave_on_escape,
                join_on_j,
                dress_boxes,
                place_boxes,
                status_line,
            ),
        );
    }
}

#[derive(Component)]
struct StatusText;

fn steer(keys: Res<ButtonInput<KeyCode>>, mut steering: ResMut<Steering>) {
    let mut bits = 0;
    for (key, bit) in [
        (KeyCode::ArrowLeft, BoxInput::LEFT),
        (KeyCode::ArrowRight, BoxInput::RIGHT),
        (KeyCode::ArrowUp, BoxInput::UP),
        (KeyCode::ArrowDown, BoxInput::DOWN),
    ] {
        if keys.pressed(key) {
            bits |= bit;
        }
    }
    steering.0 = BoxInput(bits);
}

/// J, while watching, asks to play: a drop-in, seated at the match's next resync.
fn join_on_j(keys: Res<ButtonInput<KeyCode>>, mut join: MessageWriter<JoinRollback>) {
    if keys.just_pressed(KeyCode::KeyJ) {
        join.write(JoinRollback::default());
    }
}

/// Escape leaves the match cleanly (the other players play on without us), then the app exits.
fn leave_on_escape(
    keys: Res<ButtonInput<KeyCode>>,
    state: Res<State<LobbyState>>,
    mut leave: MessageWriter<LeaveRollback>,
    mut exit: MessageWriter<AppExit>,
    mut leaving: Local<bool>,
) {
    if keys.just_pressed(KeyCode::Escape) && !*leaving {
        leave.write(LeaveRollback);
        *leaving = true;
    }
    if *leaving && *state.get() == LobbyState::Offline {
        exit.write(AppExit::Success);
    }
}

fn setup(mut commands: Commands) {
    crate::view::camera_and_text(&mut commands, StatusText);
    // The arena's border.
    let side = 2.0 * ARENA as f32 / 100.0 + 40.0;
    commands.spawn((
        Sprite::from_color(Color::srgb(0.12, 0.12, 0.16), Vec2::splat(side)),
        Transform::from_xyz(0.0, 0.0, -1.0),
    ));
}

const COLORS: [Color; 4] = [
    Color::srgb(0.9, 0.3, 0.3),
    Color::srgb(0.3, 0.6, 0.95),
    Color::srgb(0.35, 0.85, 0.4),
    Color::srgb(0.95, 0.8, 0.3),
];

fn dress_boxes(mut commands: Commands, boxes: Query<(Entity, &BoxBody), Without<Sprite>>) {
    for (entity, body) in &boxes {
        commands.entity(entity).insert((
            Sprite::from_color(
                COLORS[body.handle as usize % COLORS.len()],
                Vec2::splat(40.0),
            ),
            Transform::default(),
        ));
    }
}

fn place_boxes(mut boxes: Query<(&BoxBody, &mut Transform)>) {
    for (body, mut t) in &mut boxes {
        t.translation.x = body.x as f32 / 100.0;
        t.translation.y = body.y as f32 / 100.0;
    }
}

fn status_line(
    roster: Res<Roster>,
    state: Res<State<LobbyState>>,
    game: Res<RollbackMatch>,
    stats: Res<RollbackStats>,
    mut text: Query<&mut Text, With<StatusText>>,
) {
    let Ok(mut text) = text.single_mut() else {
        return;
    };
    let host = roster.host.map(short).unwrap_or_default();
    let ping = stats.peers.values().map(|s| s.ping).max().unwrap_or(0);
    text.0 = format!(
        "{:?}  {:?}  you: {}  host {host}  peers {}  ping {ping} ms  frame {}  rollbacks {}\narrows: move  esc: leave  j: join",
        state.get(),
        game.phase,
        game.local_handle
            .map(|h| format!("player {h}"))
            .unwrap_or_else(|| "watching".into()),
        roster.peers.len(),
        stats.newest_frame.max(stats.confirmed_frame),
        stats.frames_resimulated,
    );
}
