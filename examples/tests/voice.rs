//! The voice example does what its docs say: two of them in one room hear each other's pitch.
//! Run inside the loopback-only network namespace (see README).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn two_voices_hear_each_other() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let server = rt
        .block_on(async { huddle_server::start(huddle_server::ServerConfig::loopback()) })
        .expect("the server starts");
    let url = server.room_url("voice");
    let run = |pitch: &str| {
        Command::new(env!("CARGO_BIN_EXE_voice"))
            .args([url.as_str(), pitch, "8"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("voice starts")
    };
    let children = vec![(run("440"), "550"), (run("550"), "440")];
    let deadline = Instant::now() + Duration::from_secs(60);
    for (child, hears) in children {
        let (ok, stdout, stderr) = common::finish(child, deadline, "voice");
        let text = stderr + &stdout;
        assert!(ok, "{text}");
        assert!(text.contains(&format!("speaks at {hears} Hz")), "{text}");
    }
}
