//! The voice example does what its docs say: two of them in one room hear each other's pitch.
//! Run inside the loopback-only network namespace (see README).

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
    let start = Instant::now();
    for (mut child, hears) in children {
        while child.try_wait().expect("wait").is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("voice did not quit in 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("output");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(&format!("speaks at {hears} Hz")), "{text}");
    }
}
