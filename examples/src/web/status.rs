//! The page's status: the lobby (state, ids, host, each peer's role and RTT) and the match, as
//! JSON in `window.huddleStatus` for scripts (the browser tests read it) and as the line above the
//! canvas.

use super::{Dom, Target};
use crate::box_game::final_checksum;
use crate::lobby::{ChatLog, Squares};
use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::{HuddleStats, PeerLinks, RollbackMatch, RollbackStats};
use serde_json::json;

/// The lobby's part of the status: state, ids, host, and each peer's role and RTT.
fn lobby_status(
    state: &LobbyState,
    roster: &Roster,
    links: &PeerLinks,
    stats: &HuddleStats,
) -> serde_json::Value {
    let peers: Vec<_> = roster
        .peers
        .iter()
        .map(|p| {
            json!({
                "id": p.to_string(),
                "role": roster.roles.get(p).map(|r| format!("{r:?}")),
                "rtt_ms": links.0.get(p).and_then(|l| l.rtt).map(|r| r.as_secs_f64() * 1e3),
            })
        })
        .collect();
    json!({
        "state": format!("{state:?}"),
        "me": roster.me.map(|m| m.to_string()),
        "host": roster.host.map(|h| h.to_string()),
        "members": roster.members.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "peers": peers,
        "dropped": stats.frames_dropped,
    })
}

/// The game's last errors (`HuddleError`s), newest last, for the status.
#[derive(Resource, Default)]
pub(super) struct PageErrors(Vec<String>);

/// Errors kept at most.
const ERRORS_KEPT: usize = 16;

/// Keeps the game's errors for the status.
pub(super) fn keep_errors(mut read: MessageReader<HuddleError>, mut kept: ResMut<PageErrors>) {
    for e in read.read() {
        kept.0.push(e.to_string());
    }
    let over = kept.0.len().saturating_sub(ERRORS_KEPT);
    kept.0.drain(..over);
}

/// Publishes `status` as `window.huddleStatus`, and `line` above the canvas of a page drawn in
/// 2D (a page Bevy draws shows its own status line).
fn publish(dom: Option<&Dom>, status: &serde_json::Value, line: String) {
    let text = status.to_string();
    if let Some(window) = web_sys::window() {
        let _ = js_sys::Reflect::set(&window, &"huddleStatus".into(), &text.into());
    }
    if let Some(dom) = dom {
        dom.status.set_text_content(Some(&line));
    }
}

fn human(status: &serde_json::Value) -> String {
    let short_id = |v: &serde_json::Value| {
        v.as_str()
            .map(|s| s.chars().take(6).collect::<String>())
            .unwrap_or_else(|| "-".into())
    };
    let peers: Vec<String> = status["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let rtt = p["rtt_ms"]
                        .as_f64()
                        .map(|r| format!("{r:.1} ms"))
                        .unwrap_or_else(|| "-".into());
                    format!(
                        "{} ({}) rtt {rtt}",
                        short_id(&p["id"]),
                        p["role"].as_str().unwrap_or("-")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} | me {} | host {} | peers: {}",
        status["state"].as_str().unwrap_or("?"),
        short_id(&status["me"]),
        short_id(&status["host"]),
        if peers.is_empty() {
            "none yet".into()
        } else {
            peers.join(", ")
        }
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn publish_lobby(
    dom: NonSend<Dom>,
    state: Res<State<LobbyState>>,
    roster: Res<Roster>,
    links: Res<PeerLinks>,
    stats: Res<HuddleStats>,
    chat: Res<ChatLog>,
    squares: Res<Squares>,
    (media, errors): (Res<super::media::MediaStatus>, Res<PageErrors>),
) {
    let mut status = lobby_status(state.get(), &roster, &links, &stats);
    status["errors"] = json!(errors.0);
    status["media"] = media.0.clone();
    status["chats"] = json!(chat
        .0
        .iter()
        .map(|(from, line)| json!({"from": from.to_string(), "line": line}))
        .collect::<Vec<_>>());
    status["positions_from"] = json!(squares
        .0
        .keys()
        .filter(|p| Some(**p) != roster.me)
        .map(|p| p.to_string())
        .collect::<Vec<_>>());
    let line = format!("{}\narrows: move, m: mute", human(&status));
    publish(Some(&dom), &status, line);
}

pub(super) fn publish_box_game(world: &mut World) {
    let state = *world.resource::<State<LobbyState>>().get();
    let roster = world.resource::<Roster>();
    let mut status = lobby_status(
        &state,
        roster,
        world.resource::<PeerLinks>(),
        world.resource::<HuddleStats>(),
    );
    status["errors"] = json!(world.resource::<PageErrors>().0);
    let game = world.resource::<RollbackMatch>();
    let stats = world.resource::<RollbackStats>();
    status["rollback"] = json!({
        "phase": format!("{:?}", game.phase),
        "local_handle": game.local_handle,
        "players": game.players.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "frame": stats.newest_frame,
        "confirmed": stats.confirmed_frame,
        "rollback_frames": stats.frames_resimulated,
        "ping_ms": stats.peers.values().map(|s| s.ping).max(),
        "epoch": game.epoch,
        "snapshot_frame": stats.snapshot_frame,
    });
    if let Some(target) = world.resource::<Target>().0 {
        status["rollback"]["target"] = json!(target);
        status["rollback"]["checksum"] =
            json!(final_checksum(world, target).map(|c| format!("{c:016x}")));
    }
    let line = format!(
        "{}\nmatch: {} frame {} rollbacks {} | arrows: move, esc: leave, j: join",
        human(&status),
        status["rollback"]["phase"].as_str().unwrap_or("?"),
        status["rollback"]["frame"],
        status["rollback"]["rollback_frames"],
    );
    publish(world.get_non_send::<Dom>(), &status, line);
}
