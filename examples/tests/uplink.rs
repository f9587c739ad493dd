//! The next host is the player with the most upload, for real: four lobby demos in a star room
//! (`--host-by-upload`), each in a network namespace of its own on one bridge, where the kernel
//! caps two players' upload at 1 Mbit/s (`tc` token bucket on their link out). The host measures
//! each player's upload headroom with its probe train and names the uncapped one its heir,
//! though it joined after a capped one; when the host leaves, the heir hosts and the others link
//! to it. Everything is built by the test inside the loopback-only test namespace (see README):
//! nothing leaves the sandbox.
//!
//! Needs `ip` and `tc` (iproute2), `nsenter`/`unshare` (util-linux).

mod common;
#[path = "common/lab.rs"]
mod lab;

use lab::{sh, Holder};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A bridge `10.<net>.0.1/24` in the test's namespace (the signaling server listens there), and
/// one namespace per player behind it at `10.<net>.0.<i + 2>`, its upload capped if asked.
struct Segment {
    net: u8,
    players: Vec<Holder>,
}

impl Segment {
    /// `caps[i]`: player `i`'s upload as `tc` spells a rate (`1mbit`), or uncapped.
    fn build(net: u8, caps: &[Option<&str>]) -> Self {
        let players: Vec<Holder> = caps.iter().map(|_| Holder::new()).collect();
        std::thread::sleep(Duration::from_millis(200));
        sh(&format!(
            "ip link set lo up 2>/dev/null || true
             ip link add ub{net} type bridge
             ip addr add 10.{net}.0.1/24 dev ub{net}
             ip link set ub{net} up"
        ));
        for (i, (player, cap)) in players.iter().zip(caps).enumerate() {
            let shape = cap.map_or(String::new(), |rate| {
                format!("tc qdisc add dev eth0 root tbf rate {rate} burst 10kb latency 100ms")
            });
            sh(&format!(
                "ip link add uv{net}{i} type veth peer name eth0 netns {pid}
                 ip link set uv{net}{i} master ub{net} up
                 nsenter -t {pid} -n sh -ec '
                   ip link set lo up
                   ip addr add 10.{net}.0.{host}/24 dev eth0
                   ip link set eth0 up
                   ip route add default via 10.{net}.0.1
                   {shape}'",
                pid = player.pid(),
                host = i + 2,
            ));
        }
        Self { net, players }
    }

    /// The lobby demo as player `i` (named `p<i>`) in `room`, leaving after `frames`.
    fn lobby(&self, i: usize, room: &str, frames: u32) -> Child {
        self.players[i]
            .command(env!("CARGO_BIN_EXE_lobby"))
            .args([
                "--room",
                room,
                "--headless",
                "--no-media",
                "--host-by-upload",
            ])
            .args(["--name", &format!("p{i}"), "--frames", &frames.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter runs")
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &format!("ub{}", self.net)])
            .status();
    }
}

/// The demo's status lines (`InLobby | me … | host … | next … | peers: […]`) in `text`.
fn status_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("InLobby | me "))
        .collect()
}

/// The short id a player's status lines give it (`| me p1 72d4f5 |`).
fn short_id(text: &str) -> String {
    let line = status_lines(text).last().copied().unwrap_or_default();
    let me = line.split("| me ").nth(1).unwrap_or_default();
    me.split(' ').nth(1).unwrap_or_default().to_string()
}

/// The `Mbit/s` the status `line` shows for player `name` (`p1 <id> (x,y) rtt … up 0.9 Mbit/s`).
fn upload_of(line: &str, name: &str) -> Option<f64> {
    let line = &line[line.find("peers: [")?..];
    let from = line.find(&format!("{name} "))?;
    let rest = &line[from..];
    // The entry ends where the next player's or the list does (positions hold commas too).
    let end = rest
        .find(", p")
        .or_else(|| rest.find(']'))
        .unwrap_or(rest.len());
    let entry = &rest[..end];
    let up = entry.split(" up ").nth(1)?;
    up.split(' ').next()?.parse().ok()
}

#[test]
fn the_player_with_the_most_upload_hosts_next() {
    // p0 hosts; p1 joins second but sends at 1 Mbit/s; p2 is uncapped; p3 sends at 1 Mbit/s.
    let segment = Segment::build(64, &[None, Some("1mbit"), None, Some("1mbit")]);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let server = {
        let _guard = rt.enter();
        huddle_server::start(huddle_server::ServerConfig {
            bind: "10.64.0.1:0".parse().expect("an address"),
            ..huddle_server::ServerConfig::loopback()
        })
        .expect("the server starts")
    };
    let room = server.room_url("stage?topology=star");
    // The host stays 20 s: everyone joins (one by one, so the join order is known) and is
    // measured; the others stay 20 s after it left.
    let mut children = Vec::new();
    for (i, frames) in [1200, 2100, 2100, 2100].into_iter().enumerate() {
        children.push(segment.lobby(i, &room, frames));
        std::thread::sleep(Duration::from_millis(1500));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let texts: Vec<String> = children
        .into_iter()
        .map(|child| {
            let (ok, out, err) = common::finish(child, deadline, "a lobby player");
            let text = out + &err;
            assert!(ok, "the player formed its lobby: {text}");
            text
        })
        .collect();
    // The host measured everyone and named the uncapped player next, not the second to join.
    let host_lines = status_lines(&texts[0]);
    let named = host_lines.iter().rev().find(|l| l.contains("| next p2 "));
    let Some(line) = named else {
        panic!("the host names p2 next: {}", texts[0]);
    };
    // A frame's grain each side of the capped ones; the uncapped one counts as "enough" (16) on
    // an idle machine, less when frames come late.
    for (name, range) in [("p1", 0.5..1.5), ("p2", 1.5..100.0), ("p3", 0.5..1.5)] {
        let up = upload_of(line, name);
        assert!(
            up.is_some_and(|up| range.contains(&up)),
            "{name}: {up:?} Mbit/s in {line}"
        );
        // Figures for BENCHMARKS.md (run with --nocapture).
        println!("{name} measured {up:?} Mbit/s");
    }
    // After it left, p2 hosts for everyone, and each sees the two others (a star client knows
    // the members it has no link to by id only: no name) before they leave in turn.
    let ids: Vec<String> = texts.iter().map(|t| short_id(t)).collect();
    for (i, text) in texts.iter().enumerate().skip(1) {
        let lines = status_lines(text);
        let all_under_p2 = lines.iter().any(|l| {
            l.contains("| host p2 ") && (1..4).filter(|j| *j != i).all(|j| l.contains(&ids[j]))
        });
        assert!(all_under_p2, "p{i} sees p2 host the others: {text}");
    }
}
