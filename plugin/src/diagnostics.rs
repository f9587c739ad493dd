//! Link statistics as Bevy diagnostics and as the [`PeerLinks`] resource.

use crate::session::HuddleSession;
use bevy::diagnostic::{Diagnostic, DiagnosticPath, Diagnostics, RegisterDiagnostic};
use bevy::prelude::*;
use huddle_protocol::endpoint::LinkStats;
use matchbox_socket::PeerId;
use std::collections::HashMap;
use std::time::Duration;
use web_time::Instant;

/// Each joined peer's link statistics (RTT, loss, bytes and messages in and out), updated every
/// frame in [`HuddleSystems::Receive`](crate::HuddleSystems::Receive).
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct PeerLinks(pub HashMap<PeerId, LinkStats>);

/// The diagnostics the plugin registers.
pub struct HuddleDiagnostics;

impl HuddleDiagnostics {
    /// Mean smoothed round trip over the joined peers, in ms.
    pub const RTT_MS: DiagnosticPath = DiagnosticPath::const_new("huddle/rtt_ms");
    /// Mean ping loss over the joined peers, 0 to 1.
    pub const LOSS: DiagnosticPath = DiagnosticPath::const_new("huddle/loss");
    /// Bytes received per second, all peers.
    pub const BYTES_IN: DiagnosticPath = DiagnosticPath::const_new("huddle/bytes_in_per_s");
    /// Bytes sent per second, all peers.
    pub const BYTES_OUT: DiagnosticPath = DiagnosticPath::const_new("huddle/bytes_out_per_s");
    /// Game messages received per second.
    pub const MESSAGES_IN: DiagnosticPath = DiagnosticPath::const_new("huddle/messages_in_per_s");
    /// Game messages sent per second.
    pub const MESSAGES_OUT: DiagnosticPath = DiagnosticPath::const_new("huddle/messages_out_per_s");
    /// Joined peers.
    pub const PEERS: DiagnosticPath = DiagnosticPath::const_new("huddle/peers");

    pub(crate) fn register(app: &mut App) {
        for (path, suffix) in [
            (Self::RTT_MS, "ms"),
            (Self::LOSS, ""),
            (Self::BYTES_IN, "B/s"),
            (Self::BYTES_OUT, "B/s"),
            (Self::MESSAGES_IN, "/s"),
            (Self::MESSAGES_OUT, "/s"),
            (Self::PEERS, ""),
        ] {
            app.register_diagnostic(Diagnostic::new(path).with_suffix(suffix));
        }
    }
}

/// How often the diagnostics are measured: recording seven of them every frame cost more than
/// the rest of the plugin's per-frame work.
const MEASURE_EVERY: Duration = Duration::from_millis(250);

/// Totals at the previous measurement, to measure rates.
#[derive(Default)]
pub(crate) struct Totals {
    at: Option<Instant>,
    counts: [u64; 4],
}

pub(crate) fn measure(
    session: Option<Res<HuddleSession>>,
    mut diagnostics: Diagnostics,
    mut links: ResMut<PeerLinks>,
    mut last: Local<Totals>,
) {
    let Some(session) = session else {
        if !links.0.is_empty() {
            links.0.clear();
        }
        return;
    };
    // Update in place: no allocation in the steady state.
    links.0.retain(|p, _| session.peers().contains(p));
    for p in session.peers() {
        if let Some(s) = session.link_stats(*p) {
            match links.0.get_mut(p) {
                Some(l) => l.clone_from(s),
                None => {
                    links.0.insert(*p, s.clone());
                }
            }
        }
    }
    let n = links.0.len();
    let now = Instant::now();
    let elapsed = last.at.map(|t| now.duration_since(t));
    if elapsed.is_some_and(|e| e < MEASURE_EVERY) {
        return;
    }
    let rtts: Vec<f64> = links
        .0
        .values()
        .filter_map(|s| s.rtt)
        .map(|r| r.as_secs_f64() * 1000.0)
        .collect();
    if !rtts.is_empty() {
        let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
        diagnostics.add_measurement(&HuddleDiagnostics::RTT_MS, || mean);
    }
    if n > 0 {
        let loss = links.0.values().map(|s| f64::from(s.loss)).sum::<f64>() / n as f64;
        diagnostics.add_measurement(&HuddleDiagnostics::LOSS, || loss);
    }
    let counts = links.0.values().fold([0u64; 4], |t, s| {
        [
            t[0] + s.bytes_in,
            t[1] + s.bytes_out,
            t[2] + s.messages_in,
            t[3] + s.messages_out,
        ]
    });
    if let Some(elapsed) = elapsed {
        let secs = elapsed.as_secs_f64().max(1e-3);
        for (i, path) in [
            HuddleDiagnostics::BYTES_IN,
            HuddleDiagnostics::BYTES_OUT,
            HuddleDiagnostics::MESSAGES_IN,
            HuddleDiagnostics::MESSAGES_OUT,
        ]
        .iter()
        .enumerate()
        {
            let rate = counts[i].saturating_sub(last.counts[i]) as f64 / secs;
            diagnostics.add_measurement(path, || rate);
        }
    }
    last.at = Some(now);
    last.counts = counts;
    diagnostics.add_measurement(&HuddleDiagnostics::PEERS, || n as f64);
}
