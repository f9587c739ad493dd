//! What the examples' windows share (native `window`, browser `webgl`).

use bevy::prelude::*;

/// A 2D camera, and a text line in the top left marked with `marker` (the examples' windows).
pub(crate) fn camera_and_text(commands: &mut Commands, marker: impl Component) {
    commands.spawn(Camera2d);
    commands.spawn((
        marker,
        Text::new("connecting..."),
        Node {
            position_type: PositionType::Absolute,
            top: px(10.0),
            left: px(10.0),
            ..default()
        },
    ));
}
