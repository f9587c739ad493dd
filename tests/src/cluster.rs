//! Many server instances sharing rooms through a real Redis: a `redis-server` per test on a
//! loopback port, instances in this process or as `huddle_server` processes (to kill -9).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits up to 20 s for something to listen on `port`.
fn wait_listening(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} does not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` (Debian's package) on a loopback port, without persistence; killed when
/// dropped.
pub struct Redis {
    child: Child,
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
}

impl Redis {
    /// Starts one and waits until it listens.
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        wait_listening(port, "redis-server");
        Self {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    /// The keys matching `pattern` (`redis-cli --scan`).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-u", &self.url, "--scan", "--pattern", pattern])
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Settings of one instance of a set sharing rooms through `redis` under `prefix`.
pub fn instance_config(redis: &Redis, prefix: &str) -> huddle_server::ServerConfig {
    huddle_server::ServerConfig {
        redis: Some(redis.url.clone()),
        redis_prefix: prefix.to_string(),
        resume_secret: Some("every instance has this".into()),
        ..huddle_server::ServerConfig::loopback()
    }
}

/// `n` instances in this process sharing rooms through `redis` (a key prefix of their own).
pub fn instances(redis: &Redis, prefix: &str, n: usize) -> Vec<huddle_server::RunningServer> {
    crate::init_logs();
    (0..n)
        .map(|_| huddle_server::start(instance_config(redis, prefix)).expect("an instance starts"))
        .collect()
}

/// The `huddle_server` binary cargo built beside this test (`cargo test --workspace` builds it;
/// a focused run needs `cargo build -p huddle_server` first).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = dir.join("huddle_server");
    assert!(
        binary.exists(),
        "{} is missing: build it (cargo build -p huddle_server)",
        binary.display()
    );
    binary
}

/// An instance running as its own `huddle_server` process: it can be killed like a crashed
/// machine.
pub struct Process {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Process {
    /// Starts an instance sharing rooms through `redis` under `prefix`; waits until it listens.
    pub fn start(redis: &Redis, prefix: &str) -> Self {
        let port = free_port();
        let child = Command::new(server_binary())
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--redis", &redis.url, "--redis-prefix", prefix])
            .args(["--resume-secret", "every instance has this"])
            .env("HUDDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("huddle_server starts");
        wait_listening(port, "huddle_server");
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The websocket URL of `room` on this instance.
    pub fn room_url(&self, room: &str) -> String {
        format!("ws://{}/{room}", self.addr)
    }

    /// Kills it with SIGKILL: no close frames, no goodbye to Redis.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
