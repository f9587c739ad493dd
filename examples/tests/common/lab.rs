//! Network namespaces for the tests that need more than loopback, built inside the loopback-only
//! test namespace (see README): nothing they carry leaves it.

use std::process::{Child, Command};

/// A process holding a network namespace open; killed (and the namespace gone) when dropped.
pub struct Holder(Child);

impl Holder {
    /// A new, empty network namespace.
    pub fn new() -> Self {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .spawn()
            .expect("unshare runs (util-linux)");
        Self(child)
    }

    /// The holder's pid, for `nsenter -t <pid> -n` and `ip link ... netns <pid>`.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `program` to run in this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &self.pid().to_string(), "-n"])
            .arg(program);
        command
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `script` with `sh -e`; panics with its output if it fails.
pub fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
