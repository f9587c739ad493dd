//! Rollback network stats: the [`RollbackStats`] resource and Bevy diagnostics.

use super::socket::HuddleGgrsSocket;
use super::{InputLog, RollbackMatch};
use bevy::diagnostic::{Diagnostic, DiagnosticPath, Diagnostics, RegisterDiagnostic};
use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bevy_ggrs::Session;
use ggrs::{Config, NetworkStats};
use matchbox_socket::PeerId;
use std::time::Duration;
use web_time::Instant;

/// The match's numbers, updated every frame after bevy_ggrs ran.
#[derive(Resource, Debug, Default)]
pub struct RollbackStats {
    /// GGRS's view of each remote player: ping, frames behind, send queue, kbps.
    pub peers: HashMap<PeerId, NetworkStats>,
    /// Frames we are ahead of the others (bevy_ggrs slows down while positive).
    pub frames_ahead: i32,
    /// The newest confirmed frame (all players' inputs known).
    pub confirmed_frame: i32,
    /// Frames simulated, resimulations included.
    pub frames_simulated: u64,
    /// Frames simulated again after a rollback.
    pub frames_resimulated: u64,
    /// The newest frame simulated.
    pub newest_frame: i32,
    /// Spectator frames stepped without their inputs (0 unless something is wrong).
    pub spectator_starved: u64,
    /// A spectator: the frame of the snapshot it started from (`None`: it replayed the match
    /// from the first frame).
    pub snapshot_frame: Option<i32>,
    /// Snapshot answers dropped (unasked, from another peer) or that did not fit.
    pub snapshots_refused: u64,
    /// GGRS packets dropped: not GGRS messages, too many, or saying what their sender may not
    /// (a request to disconnect, a first frame far ahead).
    pub packets_dropped: u64,
    /// Match plans of the host refused (a player named twice, more than 64 players, players we
    /// did not link to within `RollbackSettings::plan_link_wait`).
    pub plans_refused: u64,
    /// GGRS bytes received.
    pub bytes_in: u64,
    /// GGRS bytes sent.
    pub bytes_out: u64,
    /// Seat requests refused (drop-ins off, from a player, or too many).
    pub seats_refused: u64,
    /// The size of the last snapshot we went on from (a resync's, or a late spectator's), bytes.
    pub snapshot_bytes: usize,
    /// Resyncs this match went through ([`RollbackEvent::Resynced`](super::RollbackEvent)).
    pub resyncs: u32,
    /// Resync offers refused: not from the leader, not for the next epoch, dropping a player we
    /// still hear, or a snapshot that does not fit.
    pub resyncs_refused: u64,
    pub(crate) socket: Option<HuddleGgrsSocket>,
    /// The sessions' counters before the last resync (dropped, bytes in, bytes out).
    pub(crate) before_resync: [u64; 3],
}

/// The rollback diagnostics.
pub struct RollbackDiagnostics;

impl RollbackDiagnostics {
    /// Highest ping to a remote player, ms.
    pub const PING_MS: DiagnosticPath = DiagnosticPath::const_new("huddle/ggrs/ping_ms");
    /// Frames we run ahead of the others.
    pub const FRAMES_AHEAD: DiagnosticPath = DiagnosticPath::const_new("huddle/ggrs/frames_ahead");
    /// Most frames a remote player is behind us.
    pub const FRAMES_BEHIND: DiagnosticPath =
        DiagnosticPath::const_new("huddle/ggrs/remote_frames_behind");
    /// Frames resimulated per second.
    pub const ROLLBACK_FRAMES: DiagnosticPath =
        DiagnosticPath::const_new("huddle/ggrs/rollback_frames_per_s");
    /// GGRS bytes sent per second.
    pub const BYTES_OUT: DiagnosticPath = DiagnosticPath::const_new("huddle/ggrs/bytes_out_per_s");

    pub(crate) fn register(app: &mut App) {
        for (path, suffix) in [
            (Self::PING_MS, "ms"),
            (Self::FRAMES_AHEAD, ""),
            (Self::FRAMES_BEHIND, ""),
            (Self::ROLLBACK_FRAMES, "/s"),
            (Self::BYTES_OUT, "B/s"),
        ] {
            app.register_diagnostic(Diagnostic::new(path).with_suffix(suffix));
        }
    }
}

const MEASURE_EVERY: Duration = Duration::from_millis(250);

/// Totals at the previous measurement.
#[derive(Default)]
pub(crate) struct Last {
    at: Option<Instant>,
    resimulated: u64,
    bytes_out: u64,
}

/// Reads the session's stats into [`RollbackStats`] and the diagnostics.
pub(crate) fn measure<C: Config<Address = PeerId>>(
    session: Option<Res<Session<C>>>,
    state: Res<RollbackMatch>,
    log: Res<InputLog>,
    mut stats: ResMut<RollbackStats>,
    mut diagnostics: Diagnostics,
    mut last: Local<Last>,
) {
    let Some(session) = session else { return };
    if let Some(socket) = &stats.socket {
        let dropped = socket.dropped();
        let (bytes_in, bytes_out) = socket.bytes();
        let [d, i, o] = stats.before_resync;
        stats.packets_dropped = d.saturating_add(dropped);
        stats.bytes_in = i.saturating_add(bytes_in);
        stats.bytes_out = o.saturating_add(bytes_out);
    }
    match &*session {
        Session::P2P(p2p) => {
            stats.frames_ahead = p2p.frames_ahead();
            stats.confirmed_frame = p2p.confirmed_frame().saturating_add(state.frame_offset);
            let playing = p2p
                .remote_player_handles()
                .into_iter()
                .filter(|h| !state.disconnected.contains(h));
            for handle in playing {
                let Some(peer) = state.players.get(handle).copied() else {
                    continue;
                };
                match p2p.network_stats(handle) {
                    Ok(s) => {
                        stats.peers.insert(peer, s);
                    }
                    Err(_) => {
                        stats.peers.remove(&peer);
                    }
                }
            }
        }
        Session::SyncTest(_) | Session::Spectator(_) => {
            stats.confirmed_frame = log.last_final();
        }
    }
    let now = Instant::now();
    // A new match counts from zero again (a rematch after an abandoned match).
    let restarted = stats.frames_resimulated < last.resimulated || stats.bytes_out < last.bytes_out;
    let Some(at) = last.at.filter(|_| !restarted) else {
        *last = Last {
            at: Some(now),
            resimulated: stats.frames_resimulated,
            bytes_out: stats.bytes_out,
        };
        return;
    };
    let secs = now.duration_since(at);
    if secs < MEASURE_EVERY {
        return;
    }
    let secs = secs.as_secs_f64();
    let ping = stats.peers.values().map(|s| s.ping).max().unwrap_or(0) as f64;
    let behind = stats
        .peers
        .values()
        .map(|s| s.remote_frames_behind)
        .max()
        .unwrap_or(0);
    let rollbacks = (stats.frames_resimulated - last.resimulated) as f64 / secs;
    let bytes = (stats.bytes_out - last.bytes_out) as f64 / secs;
    diagnostics.add_measurement(&RollbackDiagnostics::PING_MS, || ping);
    diagnostics.add_measurement(&RollbackDiagnostics::FRAMES_AHEAD, || {
        f64::from(stats.frames_ahead)
    });
    diagnostics.add_measurement(&RollbackDiagnostics::FRAMES_BEHIND, || f64::from(behind));
    diagnostics.add_measurement(&RollbackDiagnostics::ROLLBACK_FRAMES, || rollbacks);
    diagnostics.add_measurement(&RollbackDiagnostics::BYTES_OUT, || bytes);
    *last = Last {
        at: Some(now),
        resimulated: stats.frames_resimulated,
        bytes_out: stats.bytes_out,
    };
}
