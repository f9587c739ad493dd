//! The hello example does what its docs say: two of them in one room greet each other.
//! Run inside the loopback-only network namespace (see README).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn two_hellos_greet_each_other() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let server = rt
        .block_on(async { huddle_server::start(huddle_server::ServerConfig::loopback()) })
        .expect("the server starts");
    let url = server.room_url("hello");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_hello"))
            .args([url.as_str(), "8"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hello starts")
    };
    let mut children = vec![run()];
    std::thread::sleep(Duration::from_millis(700));
    children.push(run());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut texts = Vec::new();
    for child in children {
        let (ok, stdout, stderr) = common::finish(child, deadline, "hello");
        assert!(ok, "{stderr}{stdout}");
        texts.push(stderr + &stdout);
    }
    for text in &texts {
        assert!(text.contains("joined; the host is Some("), "{text}");
        assert!(text.contains("says hello!"), "{text}");
        // Quiet by default: no warnings from the WebRTC stack or matchbox, which are chatter
        // here, not faults (`RUST_LOG=info` shows them: DTLS's server name, matchbox's closed
        // queue as a player leaves, ICE's early pings).
        let plain = strip_colors(text);
        let noisy: Vec<&str> = plain
            .lines()
            .filter(|l| {
                l.contains(" WARN ")
                    && ["rtc", "webrtc", "matchbox_socket"]
                        .iter()
                        .any(|t| l.contains(&format!(" {t}")))
            })
            .collect();
        assert!(noisy.is_empty(), "dependency warnings printed: {noisy:#?}");
    }
}

/// The text without its terminal colour codes (`ESC [ ... m`).
fn strip_colors(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
