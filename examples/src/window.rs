//! The lobby demo's window (feature `window`): every player a colored square, ours moved with the
//! arrow keys, the host's labelled; keys 1-3 send chat lines, the last ones shown on screen; M
//! toggles the microphone and C the camera (this machine's own where it has one), a peer's camera
//! is drawn on its square and its voice plays from there (Bevy's spatial audio, heard from ours).

use crate::lobby::{short, ChatLine, ChatLog, Squares};
use crate::lobby_media::{toggle_camera, toggle_microphone, Voice};
use bevy::audio::{DefaultSpatialScale, SpatialScale};
use bevy::prelude::*;
use bevy_huddle::media::{
    cameras, microphones, CameraDevice, CameraSource, LocalMedia, MicDevice, MicSource,
    RemoteMedia, VoiceStream,
};
use bevy_huddle::prelude::*;
use std::collections::BTreeMap;

/// Adds the window systems (the app must have `DefaultPlugins`).
pub struct LobbyWindow;

impl Plugin for LobbyWindow {
    fn build(&self, app: &mut App) {
        // A hundred pixels to a metre: a square across the window is far away.
        app.init_resource::<Drawn>()
            .insert_resource(DefaultSpatialScale(SpatialScale::new_2d(0.01)))
            .add_systems(Startup, setup)
            .add_systems(
                Update,
                (
                    steer,
                    chat_keys,
                    media_keys,
                    draw_squares,
                    place_voices.after(draw_squares),
                    draw_text,
                ),
            );
    }
}

#[derive(Component)]
struct ChatText;

#[derive(Resource, Default)]
struct Drawn(BTreeMap<PeerId, Entity>);

fn setup(mut commands: Commands) {
    crate::view::camera_and_text(&mut commands, ChatText);
}

/// A stable color per peer.
fn color(id: PeerId) -> Color {
    let hue = (id.0.as_u128() % 360) as f32;
    Color::hsl(hue, 0.7, 0.55)
}

fn steer(
    keys: Res<ButtonInput<KeyCode>>,
    time: Res<Time>,
    roster: Res<Roster>,
    mut squares: ResMut<Squares>,
) {
    let Some(me) = roster.me else { return };
    let mut dir = Vec2::ZERO;
    for (key, d) in [
        (KeyCode::ArrowLeft, Vec2::NEG_X),
        (KeyCode::ArrowRight, Vec2::X),
        (KeyCode::ArrowUp, Vec2::Y),
        (KeyCode::ArrowDown, Vec2::NEG_Y),
    ] {
        if keys.pressed(key) {
            dir += d;
        }
    }
    let pos = squares
        .0
        .entry(me)
        .or_insert(crate::lobby::Position { x: 0.0, y: 0.0 });
    let step = dir.normalize_or_zero() * 250.0 * time.delta_secs();
    pos.x += step.x;
    pos.y += step.y;
}

fn chat_keys(
    keys: Res<ButtonInput<KeyCode>>,
    roster: Res<Roster>,
    mut log: ResMut<ChatLog>,
    mut out: MessageWriter<Outgoing<ChatLine>>,
) {
    let Some(me) = roster.me else { return };
    for (key, line) in [
        (KeyCode::Digit1, "hello!"),
        (KeyCode::Digit2, "good game"),
        (KeyCode::Digit3, "follow me"),
    ] {
        if keys.just_pressed(key) {
            out.write(Outgoing::to_all(ChatLine(line.into())));
            log.0.push((me, line.into()));
        }
    }
}

/// M and C: this machine's microphone and camera where it has them, else the synthetic ones.
fn media_keys(keys: Res<ButtonInput<KeyCode>>, voice: Res<Voice>, mut media: ResMut<LocalMedia>) {
    if keys.just_pressed(KeyCode::KeyM) {
        if media.tracks().audio || microphones().is_empty() {
            toggle_microphone(&mut media, voice.0);
        } else {
            media.start_microphone(MicSource::Device(MicDevice::default()));
        }
    }
    if keys.just_pressed(KeyCode::KeyC) {
        if media.tracks().video || cameras().is_empty() {
            toggle_camera(&mut media);
        } else {
            media.start_camera(CameraSource::Device(CameraDevice::new(0)));
        }
    }
}

fn draw_squares(
    mut commands: Commands,
    squares: Res<Squares>,
    roster: Res<Roster>,
    remote: Res<RemoteMedia>,
    mut drawn: ResMut<Drawn>,
    mut sprites: Query<(&mut Transform, &mut Sprite)>,
) {
    drawn.0.retain(|id, entity| {
        let keep = squares.0.contains_key(id);
        if !keep {
            commands.entity(*entity).despawn();
        }
        keep
    });
    for (id, pos) in &squares.0 {
        let entity = *drawn.0.entry(*id).or_insert_with(|| {
            commands
                .spawn((
                    Sprite::from_color(color(*id), Vec2::splat(40.0)),
                    Transform::from_xyz(pos.x, pos.y, 0.0),
                ))
                .with_child((
                    Text2d::new(short(*id)),
                    TextFont::from_font_size(14.0),
                    Transform::from_xyz(0.0, 34.0, 1.0),
                ))
                .id()
        });
        if let Ok((mut t, mut sprite)) = sprites.get_mut(entity) {
            t.translation.x = pos.x;
            t.translation.y = pos.y;
            // The host's square is bigger.
            t.scale = Vec3::splat(if roster.host == Some(*id) { 1.5 } else { 1.0 });
            // A peer's camera, where it sends one, fills its square.
            let image = remote.image(*id).unwrap_or_default();
            if sprite.image != image {
                sprite.image = image;
                sprite.color = if sprite.image == Handle::default() {
                    color(*id)
                } else {
                    Color::WHITE
                };
            }
        }
    }
}

/// Each peer's voice plays from its square, heard from ours: left or right, nearer or farther.
fn place_voices(
    mut commands: Commands,
    roster: Res<Roster>,
    remote: Res<RemoteMedia>,
    drawn: Res<Drawn>,
    mut voiced: Local<BTreeMap<PeerId, Entity>>,
    mut listener: Local<Option<Entity>>,
) {
    let ours = roster.me.and_then(|me| drawn.0.get(&me).copied());
    if let Some(entity) = ours.filter(|e| *listener != Some(*e)) {
        commands.entity(entity).insert(SpatialListener::new(0.4));
        *listener = Some(entity);
    }
    // A square's voice goes with the square.
    voiced.retain(|peer, _| drawn.0.contains_key(peer));
    for (peer, &square) in &drawn.0 {
        if Some(*peer) == roster.me || voiced.contains_key(peer) {
            continue;
        }
        if let Some(voice) = remote.voice(*peer) {
            let player = commands
                .spawn((
                    AudioPlayer::<VoiceStream>(voice),
                    PlaybackSettings::LOOP.with_spatial(true),
                    Transform::default(),
                    ChildOf(square),
                ))
                .id();
            voiced.insert(*peer, player);
        }
    }
}

fn draw_text(
    roster: Res<Roster>,
    state: Res<State<LobbyState>>,
    log: Res<ChatLog>,
    mut text: Query<&mut Text, With<ChatText>>,
) {
    let Ok(mut text) = text.single_mut() else {
        return;
    };
    let me = roster.me.map(short).unwrap_or_default();
    let host = roster.host.map(short).unwrap_or_default();
    let mut s = format!(
        "{:?}  me {me}  host {host} (big square)  peers {}\narrows: move   1-3: chat   M: microphone   C: camera\n",
        state.get(),
        roster.peers.len()
    );
    for (from, line) in log.0.iter().rev().take(6).rev() {
        s.push_str(&format!("{}: {line}\n", short(*from)));
    }
    text.0 = s;
}
