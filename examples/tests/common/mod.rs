//! What the examples' tests share: running an example's binary to its end, bounded in time.

use std::process::Child;
use std::time::{Duration, Instant};

/// Waits for `child` to end, killing it (and failing) past `deadline`; returns whether it
/// succeeded, its standard output, and its standard error.
pub fn finish(mut child: Child, deadline: Instant, what: &str) -> (bool, String, String) {
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
