//! The lobby demo's game: every player is a colored square that moves; positions go over the
//! unreliable channel, chat lines over the reliable one; the host is marked.

use bevy::prelude::*;
use bevy_huddle::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a player's square is (sent 20 times a second, unreliable).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// Horizontal.
    pub x: f32,
    /// Vertical.
    pub y: f32,
}

/// A chat line (reliable).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChatLine(pub String);

/// Every square we know, ours included.
#[derive(Resource, Default, Debug)]
pub struct Squares(pub BTreeMap<PeerId, Position>);

/// The last chat lines, newest last.
#[derive(Resource, Default, Debug)]
pub struct ChatLog(pub Vec<(PeerId, String)>);

/// Who moves this player's square.
#[derive(Resource, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pilot {
    /// It circles on its own (the host one way, the others the other way): bots and headless runs.
    Bot,
    /// Someone at the keyboard (the window, feature `window`).
    Player,
}

/// The game: registers its messages and systems.
pub struct LobbyGame {
    /// Who moves our square.
    pub pilot: Pilot,
}

impl Plugin for LobbyGame {
    fn build(&self, app: &mut App) {
        app.add_huddle_message::<Position>(Channel::Unreliable)
            .add_huddle_message::<ChatLine>(Channel::Reliable)
            .insert_resource(self.pilot)
            .init_resource::<Squares>()
            .init_resource::<ChatLog>()
            .add_systems(
                Update,
                (bot_moves, send_position, receive, greet, forget_leavers)
                    .run_if(in_state(LobbyState::InLobby)),
            );
    }
}

fn bot_moves(
    pilot: Res<Pilot>,
    time: Res<Time>,
    roster: Res<Roster>,
    mut squares: ResMut<Squares>,
) {
    let (Pilot::Bot, Some(me)) = (*pilot, roster.me) else {
        return;
    };
    let t = time.elapsed_secs() * if roster.is_host() { 1.0 } else { -0.7 };
    squares.0.insert(
        me,
        Position {
            x: 100.0 * t.cos(),
            y: 100.0 * t.sin(),
        },
    );
}

fn send_position(
    roster: Res<Roster>,
    squares: Res<Squares>,
    time: Res<Time>,
    mut last: Local<f32>,
    mut out: MessageWriter<Outgoing<Position>>,
) {
    let Some(pos) = roster.me.and_then(|me| squares.0.get(&me)) else {
        return;
    };
    if time.elapsed_secs() - *last >= 0.05 {
        *last = time.elapsed_secs();
        out.write(Outgoing::to_all(*pos));
    }
}

fn receive(
    mut positions: MessageReader<Incoming<Position>>,
    mut chat: MessageReader<Incoming<ChatLine>>,
    mut squares: ResMut<Squares>,
    mut log: ResMut<ChatLog>,
) {
    for p in positions.read() {
        squares.0.insert(p.from, p.message);
    }
    for c in chat.read() {
        log.0.push((c.from, c.message.0.clone()));
        let excess = log.0.len().saturating_sub(8);
        log.0.drain(..excess);
    }
}

fn greet(
    mut joined: MessageReader<PeerJoined>,
    roster: Res<Roster>,
    mut out: MessageWriter<Outgoing<ChatLine>>,
) {
    for j in joined.read() {
        let who = if roster.is_host() {
            "the host"
        } else {
            "a player"
        };
        out.write(Outgoing::to_peer(
            j.peer,
            ChatLine(format!("hello from {who}")),
        ));
    }
}

fn forget_leavers(mut left: MessageReader<PeerLeft>, mut squares: ResMut<Squares>) {
    for l in left.read() {
        squares.0.remove(&l.peer);
    }
}

/// A short name for a peer id.
pub fn short(id: PeerId) -> String {
    id.to_string().chars().take(6).collect()
}
