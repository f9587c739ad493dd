//! The hello example does what its docs say: two of them in one room greet each other.
//! Run inside the loopback-only network namespace (see README).

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
    let start = Instant::now();
    let mut texts = Vec::new();
    for mut child in children {
        while child.try_wait().expect("wait").is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("hello did not quit in 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("output");
        assert!(out.status.success());
        texts.push(
            String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout),
        );
    }
    for text in &texts {
        assert!(text.contains("joined; the host is Some("), "{text}");
        assert!(text.contains("says hello!"), "{text}");
    }
}
