//! The binary as an operator runs it: flags, `/health`, graceful shutdown on SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn serves_health_and_shuts_down_on_sigterm() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_huddle_server"))
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--max-room-peers",
            "8",
        ])
        .env("HUDDLE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let start = Instant::now();
    let health = loop {
        if let Some(h) = get(port, "/health") {
            break h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no /health answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        health.contains("200 OK") && health.contains(r#""status":"ok""#),
        "{health}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("no graceful exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "graceful shutdown exits 0: {exit}");
}

#[test]
fn bad_flags_are_refused_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_huddle_server"))
        .args(["--max-room-peers", "many"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-room-peers"));
}

/// `huddle_server token` prints a token that opens its room (and no other) on a server with the
/// same secret.
#[test]
fn the_token_subcommand_mints_a_token_for_the_room() {
    let out = Command::new(env!("CARGO_BIN_EXE_huddle_server"))
        .args(["token", "--room", "lobby", "--ttl-secs", "60"])
        .env("HUDDLE_AUTH_SECRET", "s3cret")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let now = std::time::SystemTime::now();
    use huddle_server::token::{verify, Claims, MODERATOR};
    assert_eq!(
        verify(b"s3cret", "lobby", Some(&token), now),
        Ok(Claims::default())
    );
    assert!(verify(b"s3cret", "duel", Some(&token), now).is_err());
    // With a name and a role; a name that cannot be one is refused with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_huddle_server"))
        .args([
            "token", "--room", "lobby", "--name", "alice", "--role", MODERATOR,
        ])
        .env("HUDDLE_AUTH_SECRET", "s3cret")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let claims = verify(b"s3cret", "lobby", Some(&token), now);
    assert!(claims.is_ok_and(|c| c.is_moderator() && c.name.as_deref() == Some("alice")));
    let out = Command::new(env!("CARGO_BIN_EXE_huddle_server"))
        .args(["token", "--room", "lobby", "--name", "no spaces"])
        .env("HUDDLE_AUTH_SECRET", "s3cret")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("A-Za-z0-9_-"));
}
