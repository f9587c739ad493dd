//! The lobby demo runs as documented: with no arguments it hosts, a bot joins, the lobby forms, and
//! each hears the other's voice and sees its camera.
//! Run inside the loopback-only network namespace (see README).

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn lobby_demo_forms_a_lobby_with_its_bot() {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lobby"))
        .args(["--headless", "--frames", "420"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the demo starts");
    // Bounded: 420 frames at 60 Hz is 7 s; give it 60.
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the demo did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "exit {status}: {text}");
    assert!(text.contains("InLobby"), "{text}");
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
