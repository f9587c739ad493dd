//! Link statistics as Bevy diagnostics and as the [`PeerLinks`] resource.

use crate::link::LinkStats;
use crate::session::HuddleSession;
use bevy::diagnostic::{Diagnostic, DiagnosticPath, Diagnostics, RegisterDiagnostic};
use bevy::prelude::*;
use matchbox_socket::PeerId;
use std::collections::HashMap;

/// Each joined peer's link statistics (RTT, loss, bytes and messages in and out), updated every
/// frame in [`HuddleSet::Receive`](crate::HuddleSet::Receive).
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct PeerLinks(pub HashMap<PeerId, LinkStats>);

/// The diagnostics the plugin registers.
pub struct HuddleDiagnostics;

impl HuddleDiagnostics {
    /// Mean smoothed round trip over the joined peers, in ms.
    pub const RTT_MS: DiagnosticPath = DiagnosticPath::const_new("huddle/rtt_ms");
    /// Mean ping loss over the joined peers, 0 to 1.
    pub const LOSS: DiagnosticPath = DiagnosticPath::const_new("huddle/loss");
    /// Bytes received this frame, all peers.
    pub const BYTES_IN: DiagnosticPath = DiagnosticPath::const_new("huddle/bytes_in");
    /// Bytes sent this frame, all peers.
    pub const BYTES_OUT: DiagnosticPath = DiagnosticPath::const_new("huddle/bytes_out");
    /// Game messages received this frame.
    pub const MESSAGES_IN: DiagnosticPath = DiagnosticPath::const_new("huddle/messages_in");
    /// Game messages sent this frame.
    pub const MESSAGES_OUT: DiagnosticPath = DiagnosticPath::const_new("huddle/messages_out");
    /// Joined peers.
    pub const PEERS: DiagnosticPath = DiagnosticPath::const_new("huddle/peers");

    pub(crate) fn register(app: &mut App) {
        for (path, suffix) in [
            (Self::RTT_MS, "ms"),
            (Self::LOSS, ""),
            (Self::BYTES_IN, "B"),
            (Self::BYTES_OUT, "B"),
            (Self::MESSAGES_IN, ""),
            (Self::MESSAGES_OUT, ""),
            (Self::PEERS, ""),
        ] {
            app.register_diagnostic(Diagnostic::new(path).with_suffix(suffix));
        }
    }
}

/// Totals at the previous frame, to measure per-frame traffic.
#[derive(Default)]
pub(crate) struct Totals([u64; 4]);

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
    let totals = links.0.values().fold([0u64; 4], |t, s| {
        [
            t[0] + s.bytes_in,
            t[1] + s.bytes_out,
            t[2] + s.messages_in,
            t[3] + s.messages_out,
        ]
    });
    for (i, path) in [
        HuddleDiagnostics::BYTES_IN,
        HuddleDiagnostics::BYTES_OUT,
        HuddleDiagnostics::MESSAGES_IN,
        HuddleDiagnostics::MESSAGES_OUT,
    ]
    .iter()
    .enumerate()
    {
        let delta = totals[i].saturating_sub(last.0[i]) as f64;
        diagnostics.add_measurement(path, || delta);
    }
    last.0 = totals;
    diagnostics.add_measurement(&HuddleDiagnostics::PEERS, || n as f64);
}
