//! Upload probes and heirs: the host measures each member's upload and the one with the most
//! hosts next; hostile members cannot look faster, nor make others flood.

use crate::net::{Sim, FRAME};
use crate::{conditions, SEEDS};
use huddle_protocol::control::Control;
use huddle_protocol::uplink::{probe_train, ANSWER_INTERVAL, REMEASURE};
use huddle_protocol::{Lane, Topology};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// A star of four: the host (0), a member with a 1 Mbit/s upload (1, the next in join order), one
/// with 8 Mbit/s (2), one with 500 kbit/s (3).
fn star_of_uplinks(seed: u64, by_upload: bool) -> Sim {
    let mut sim = Sim::new(Topology::Star, conditions(20, 5, 0.0), seed);
    sim.config.settings.host_by_upload = by_upload;
    for uplink in [None, Some(1_000_000), Some(8_000_000), Some(500_000)] {
        let i = sim.join();
        sim.nodes[i].uplink_bps = uplink;
        sim.run_for(FRAME * 4);
    }
    assert!(sim.run_until(LIMIT, Sim::settled), "seed {seed}: settles");
    sim
}

/// Whether every member still here names `heir` as the next host.
/// Whether `host` measured every other member still here.
fn all_measured(sim: &Sim, host: usize) -> bool {
    (0..sim.nodes.len())
        .filter(|i| *i != host && sim.nodes[*i].alive)
        .all(|i| {
            let stats = sim.nodes[host].ep.link_stats(Sim::id(i));
            stats.is_some_and(|s| s.upload_headroom.is_some())
        })
}

fn all_name(sim: &Sim, heir: usize) -> bool {
    let heir = Sim::id(heir);
    sim.nodes
        .iter()
        .filter(|n| n.alive)
        .all(|n| n.ep.next_host() == Some(heir))
}

#[test]
fn the_member_with_the_most_upload_hosts_next() {
    for seed in SEEDS {
        let mut sim = star_of_uplinks(seed, true);
        assert!(
            sim.run_until(LIMIT, |s| all_measured(s, 0) && all_name(s, 2)),
            "seed {seed}: the 8 Mbit/s member is everyone's heir"
        );
        let host = &sim.nodes[0].ep;
        let measured = |i: usize| {
            host.link_stats(Sim::id(i))
                .and_then(|s| s.upload_headroom)
                .unwrap_or(0)
        };
        // Within the frame's grain of what the links carry.
        assert!(
            (700_000..1_300_000).contains(&measured(1)),
            "seed {seed}: {}",
            measured(1)
        );
        assert!(
            (5_000_000..11_000_000).contains(&measured(2)),
            "seed {seed}: {}",
            measured(2)
        );
        assert!(
            (350_000..650_000).contains(&measured(3)),
            "seed {seed}: {}",
            measured(3)
        );
        sim.leave(0, true);
        assert!(
            sim.run_until(LIMIT, |s| (1..4)
                .all(|i| s.nodes[i].ep.host() == Some(Sim::id(2)))),
            "seed {seed}: 2 hosts"
        );
        assert!(
            sim.run_until(LIMIT, Sim::settled),
            "seed {seed}: the star settles again"
        );
        // The new host measures for itself: the 1 Mbit/s member ranks before the 500 kbit/s one.
        assert!(
            sim.run_until(LIMIT, |s| all_measured(s, 2) && all_name(s, 1)),
            "seed {seed}: 1 is next"
        );
    }
}

#[test]
fn without_it_the_next_in_join_order_hosts_and_nobody_probes() {
    let mut sim = star_of_uplinks(3, false);
    sim.run_for(Duration::from_secs(5));
    assert!(sim.nodes[0]
        .ep
        .link_stats(Sim::id(2))
        .unwrap()
        .upload_headroom
        .is_none());
    sim.leave(0, true);
    assert!(sim.run_until(LIMIT, |s| (1..4)
        .all(|i| s.nodes[i].ep.host() == Some(Sim::id(1)))));
}

/// Members that speak the protocol and lie: one floods probe frames nobody asked for, for every
/// train id it might get, and answers its own train twice; another asks the others for trains
/// (it is no host). The flooding member is measured at what its link carried, the others send
/// nothing for the false host, and everything refused is counted.
#[test]
fn hostile_members_neither_look_faster_nor_make_others_send() {
    let mut sim = star_of_uplinks(5, true);
    let (liar, asker) = (3, 1);
    for guess in 0..8 {
        for frame in probe_train(guess) {
            sim.inject(liar, 0, Lane::Unreliable, frame.clone());
            sim.inject(liar, 0, Lane::Unreliable, frame);
        }
    }
    for id in 0..50 {
        let ask = Control::UploadProbe { id }.encode();
        sim.inject(asker, 0, Lane::Control, ask.clone());
        sim.inject(asker, 2, Lane::Control, ask);
    }
    sim.run_for(FRAME * 4);
    assert!(
        sim.nodes[0].ep.counters().probes_dropped >= 50,
        "the host counts what it did not ask for"
    );
    assert!(
        sim.run_until(LIMIT, |s| all_measured(s, 0) && all_name(s, 2)),
        "the ranking holds"
    );
    let liar_measured = sim.nodes[0]
        .ep
        .link_stats(Sim::id(liar))
        .unwrap()
        .upload_headroom;
    assert!(
        liar_measured.is_some_and(|b| b < 700_000),
        "{liar_measured:?}"
    );
    // Member 2, asked 50 times by a member, sent no train to it.
    let to_asker = sim.nodes[2]
        .ep
        .link_stats(Sim::id(asker))
        .map_or(0, |s| s.bytes_out);
    assert!(to_asker < 10_000, "{to_asker} bytes");
}

/// A host that asks again and again gets one train per interval from a member.
#[test]
fn a_host_asking_again_and_again_gets_a_train_per_interval() {
    let mut sim = star_of_uplinks(7, true);
    sim.run_for(Duration::from_secs(5));
    let before = sim.nodes[2].ep.link_stats(Sim::id(0)).unwrap().bytes_out;
    let refused = sim.nodes[2].ep.counters().probes_dropped;
    let span = ANSWER_INTERVAL * 2;
    let end = sim.now + span;
    let mut id = 1000;
    while sim.now < end {
        sim.inject(0, 2, Lane::Control, Control::UploadProbe { id }.encode());
        id += 1;
        sim.run_for(Duration::from_millis(100));
    }
    let sent = sim.nodes[2].ep.link_stats(Sim::id(0)).unwrap().bytes_out - before;
    let train: u64 = probe_train(0).map(|f| f.len() as u64).sum();
    assert!(
        sent <= train * 3,
        "{sent} bytes: at most one train per interval"
    );
    assert!(sent >= train, "it does answer");
    assert!(sim.nodes[2].ep.counters().probes_dropped - refused >= 150);
}

/// Uploads change (a player starts a video): the host measures again every `REMEASURE`, and the
/// heirs follow.
#[test]
fn the_host_measures_again_and_the_heirs_follow() {
    let mut sim = star_of_uplinks(11, true);
    assert!(sim.run_until(LIMIT, |s| all_measured(s, 0) && all_name(s, 2)));
    sim.nodes[1].uplink_bps = Some(8_000_000);
    sim.nodes[2].uplink_bps = Some(300_000);
    let slow = |s: &Sim| {
        let stats = s.nodes[0].ep.link_stats(Sim::id(2));
        stats
            .and_then(|s| s.upload_headroom)
            .is_some_and(|b| b < 500_000)
    };
    assert!(
        sim.run_until(REMEASURE + LIMIT, |s| slow(s) && all_name(s, 1)),
        "measured again, the new best upload is the heir"
    );
}
