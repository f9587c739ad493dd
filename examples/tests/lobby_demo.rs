//! The lobby demo runs as documented: with no arguments it hosts, a bot joins, the lobby forms, and
//! each hears the other's voice and sees its camera; with `--browse` it picks a room from a
//! server's list.
//! Run inside the loopback-only network namespace (see README).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn lobby_demo_forms_a_lobby_with_its_bot() {
    let child = Command::new(env!("CARGO_BIN_EXE_lobby"))
        .args(["--headless", "--frames", "420"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the demo starts");
    // Bounded: 420 frames at 60 Hz is 7 s; give it 60.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ok, stdout, stderr) = common::finish(child, deadline, "the demo");
    let text = stdout + &stderr;
    assert!(ok, "{text}");
    assert!(text.contains("InLobby"), "{text}");
    // The status line names the players (their metadata): the bot and us.
    assert!(text.contains("me you ") && text.contains("bot "), "{text}");
    assert!(
        text.contains("hello from a player"),
        "the bot's chat line arrived: {text}"
    );
    // The bot speaks 550 Hz and shows a test pattern.
    assert!(
        text.contains("hears 550 Hz") && text.contains("sees frame"),
        "the bot's voice and camera arrived: {text}"
    );
}

/// `--browse`: the demo lists a server's rooms (`commands.list_rooms`), prints them, and joins the
/// open one, where a player waits.
#[test]
fn lobby_demo_browses_the_rooms_and_joins_one() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let server = rt
        .block_on(async { huddle_server::start(huddle_server::ServerConfig::loopback()) })
        .expect("the server starts");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lobby"))
            .args(["--headless", "--no-media"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the demo starts")
    };
    // With a STUN server given (nothing listens there: host candidates still meet on loopback).
    let waiting = run(&[
        "--room",
        &server.room_url("arena"),
        "--frames",
        "600",
        "--ice",
        "stun:127.0.0.1:3478",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let base = format!("ws://{}", server.local_addr());
    let browsing = run(&["--browse", &base, "--frames", "420"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut texts = Vec::new();
    for child in [browsing, waiting] {
        let (ok, stdout, stderr) = common::finish(child, deadline, "the demo");
        let text = stdout + &stderr;
        assert!(ok, "{text}");
        texts.push(text);
    }
    assert!(texts[0].contains("room arena: 1/"), "{}", texts[0]);
    assert!(texts[0].contains("joining room arena"), "{}", texts[0]);
    // They met: each printed its lobby with the other in it (a peer's entry shows its rtt).
    for text in &texts {
        assert!(text.contains(" rtt "), "{text}");
    }
}

/// `--ice` takes `stun:host:port` or `turn:user:credential@host:port`; anything else is refused
/// with the reason, before anything starts.
#[test]
fn lobby_demo_refuses_a_bad_ice_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_lobby"))
        .args([
            "--headless",
            "--no-media",
            "--ice",
            "turn:nocredentials@h:3478",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an ICE server"), "{err}");
}
