//! Signaling server benchmark: huddle_server against stock matchbox_server, same run, same machine.
//!
//! For each server and each peer count it starts the server as its own process on loopback, then:
//! - **joins/s**: N websocket clients join rooms of `--room-size` (at most `--in-flight` handshakes
//!   at a time); the clock stops when every client has its id and every pair in every room has been
//!   introduced (`NewPeer`);
//! - **RSS per connection**: the server's resident memory with N peers, minus before, over N;
//! - **signal relay rate**: every caller sends ICE candidates to each peer it was introduced to,
//!   `--signals` in all; the clock stops when all have arrived.
//!
//! With `--attacks` it measures instead what two attacks cost each server in memory (a fresh
//! server per attack, each with its default settings): a member that reads nothing while a room
//! mate sends it valid offers just under huddle_server's rate limit, and a client that sends one
//! 32 MiB message, as one frame and as 1 MiB frames.
//!
//! Run by `scripts/bench_signaling.sh`, which builds both servers and raises the fd limit.

mod attacks;
mod cluster;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

/// Signaling server benchmark (huddle_server vs stock matchbox_server).
#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// The huddle_server binary.
    #[arg(long)]
    huddle: PathBuf,
    /// The stock matchbox_server binary.
    #[arg(long)]
    stock: PathBuf,
    /// Peer counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
    peers: Vec<usize>,
    /// Peers per room.
    #[arg(long, default_value_t = 4)]
    room_size: usize,
    /// Runs per server and peer count (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Signals relayed in the relay phase, spread evenly over the introduced pairs (so the phase
    /// lasts about as long at every peer count).
    #[arg(long, default_value_t = 300_000)]
    signals: usize,
    /// Websocket handshakes in flight at once.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Measure the attacks instead (slow reader, 32 MiB message).
    #[arg(long)]
    attacks: bool,
    /// How long the slow-reader attack lasts, in seconds.
    #[arg(long, default_value_t = 30)]
    attack_secs: u64,
    /// Source addresses the clients connect from (127.0.0.1, 127.0.0.2, ...): one address has
    /// about 28,000 ephemeral ports towards the server.
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Instead: huddle_server alone against instances sharing rooms through Redis (needs
    /// `redis-server`): signal latency and throughput, joins/s with 1 and 3 instances.
    #[arg(long)]
    cluster: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Stock,
    Huddle,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stock => "matchbox_server 0.15",
            Kind::Huddle => "huddle_server",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) joins_per_s: f64,
    /// Server CPU time (user + system) per join, in µs: the server's own cost, whatever the
    /// client's speed.
    pub(crate) cpu_us_per_join: f64,
    pub(crate) rss_per_peer_kib: f64,
    pub(crate) signals_per_s: f64,
    pub(crate) cpu_us_per_signal: f64,
    /// CPU of what else serves the servers (Redis), per join.
    pub(crate) other_cpu_us_per_join: f64,
    /// The same, per signal.
    pub(crate) other_cpu_us_per_signal: f64,
}

#[derive(Default)]
struct Counters {
    ids: AtomicUsize,
    introductions: AtomicUsize,
    signals: AtomicUsize,
    errors: AtomicUsize,
}

pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Server {
    fn start(kind: Kind, args: &Args) -> Result<Self, String> {
        Self::start_with(kind, args, true)
    }

    /// Starts `kind`; `open`: huddle_server's abuse limits opened wide (the throughput runs), or
    /// its defaults (the attacks).
    fn start_with(kind: Kind, args: &Args, open: bool) -> Result<Self, String> {
        Self::start_with_args(kind, args, open, &[])
    }

    /// [`Server::start_with`], with more arguments for huddle_server.
    pub(crate) fn start_with_args(
        kind: Kind,
        args: &Args,
        open: bool,
        more: &[String],
    ) -> Result<Self, String> {
        let addr = free_port()?;
        let mut cmd = match kind {
            Kind::Stock => {
                let mut c = Command::new(&args.stock);
                c.arg(addr.to_string());
                c
            }
            Kind::Huddle if !open => {
                let mut c = Command::new(&args.huddle);
                c.args(["--bind", &addr.to_string()]);
                c
            }
            Kind::Huddle => {
                let mut c = Command::new(&args.huddle);
                // Limits wide open: this measures the server, not its abuse limits.
                c.args(["--bind", &addr.to_string(), "--max-connections", "10000000"])
                    .args(["--max-connections-per-address", "10000000"])
                    .args(["--idle-timeout-secs", "86400"])
                    // Its clients read as fast as the load generator lets them, behind 300,000
                    // signals sent at full speed: a real client's queue never holds that many.
                    .args(["--max-queued-messages", "1000000"])
                    .args(["--max-queued-bytes", "100000000000"])
                    .args(["--signal-rate", "1e9", "--signal-burst", "1000000000"]);
                c
            }
        };
        if kind == Kind::Huddle {
            cmd.args(more);
        }
        let child = cmd
            .env("RUST_LOG", "error")
            .env("HUDDLE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kind.name()))?;
        let server = Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{} did not listen on {addr}", kind.name()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// CPU time used so far (user + system), in µs.
    fn cpu_us(&self) -> f64 {
        cpu_us_of(self.child.id())
    }

    fn rss_kib(&self) -> f64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory the server had at any moment so far.
    fn peak_rss_kib(&self) -> f64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time process `pid` used so far (user + system), in µs (Linux reports clock ticks of
/// 10 ms).
pub(crate) fn cpu_us_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0);
    ticks * 10_000.0
}

pub(crate) fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

pub(crate) const CANDIDATE: &str = r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}"#;

/// One client: joins, records introductions, and on `go` signals each introduced peer.
/// Connects to `url` (plain `ws://`) from the loopback address `source`.
pub(crate) async fn connect_from(
    url: &str,
    server: SocketAddr,
    source: std::net::IpAddr,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| e.to_string())?;
    let stream = socket.connect(server).await.map_err(|e| e.to_string())?;
    let plain = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (ws, _) = tokio_tungstenite::client_async(url, plain)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn client(
    (url, server, source): (String, SocketAddr, std::net::IpAddr),
    counters: Arc<Counters>,
    permit: Arc<Semaphore>,
    mut go: watch::Receiver<bool>,
    signals_per_pair: usize,
) {
    let connected = {
        let _permit = permit.acquire().await;
        connect_from(&url, server, source).await
    };
    let Ok(mut ws) = connected else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let signal = |to: &serde_json::Value| {
        serde_json::json!({ "Signal": { "receiver": to, "data": { "IceCandidate": CANDIDATE } } })
            .to_string()
    };
    let mut introduced = Vec::new();
    let mut sent = false;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(Message::Text(text))) = msg else {
                    if msg.is_none() || matches!(msg, Some(Err(_))) {
                        return;
                    }
                    continue;
                };
                let Ok(event) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                    continue;
                };
                if event.get("IdAssigned").is_some() {
                    counters.ids.fetch_add(1, Ordering::Relaxed);
                } else if let Some(peer) = event.get("NewPeer") {
                    introduced.push(peer.clone());
                    counters.introductions.fetch_add(1, Ordering::Relaxed);
                } else if event.get("Signal").is_some() {
                    counters.signals.fetch_add(1, Ordering::Relaxed);
                }
            }
            changed = go.changed(), if !sent => {
                if changed.is_err() {
                    return;
                }
                sent = true;
                for to in &introduced {
                    for _ in 0..signals_per_pair {
                        if ws.send(Message::text(signal(to))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

async fn wait_for(
    what: &str,
    limit: Duration,
    done: impl Fn() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return Err(format!("{what}: not done after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(start.elapsed())
}

async fn run_once(kind: Kind, peers: usize, args: &Args) -> Result<Sample, String> {
    let server = Server::start(kind, args)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drive(std::slice::from_ref(&server), peers, args, &|| 0.0).await
}

/// Drives `servers` (the instances of one deployment; client `i` goes to instance `i % len`, so
/// each room spans them) with `peers` clients: joins, then the signal relay. CPU and memory are
/// the sum over the instances; `other` reads the CPU time (µs) of what else serves them (Redis).
pub(crate) async fn drive(
    servers: &[Server],
    peers: usize,
    args: &Args,
    other: &(dyn Fn() -> f64 + Sync),
) -> Result<Sample, String> {
    let cpu = || servers.iter().map(Server::cpu_us).sum::<f64>();
    let rss = || servers.iter().map(Server::rss_kib).sum::<f64>();
    let rss_before = rss();
    let cpu_before = cpu();
    let other_before = other();
    let counters = Arc::new(Counters::default());
    let permit = Arc::new(Semaphore::new(args.in_flight));
    let (go_tx, go_rx) = watch::channel(false);
    let rooms = peers / args.room_size;
    let pairs = rooms * args.room_size * (args.room_size - 1) / 2;
    let signals_per_pair = (args.signals / pairs.max(1)).max(1);

    let mut clients = JoinSet::new();
    let start = Instant::now();
    for i in 0..rooms * args.room_size {
        let addr = servers[i % servers.len()].addr;
        let url = format!("ws://{addr}/bench{}", i / args.room_size);
        let source =
            std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % args.sources.max(1) as usize) as u8);
        clients.spawn(client(
            (url, addr, source.into()),
            counters.clone(),
            permit.clone(),
            go_rx.clone(),
            signals_per_pair,
        ));
    }
    let c = counters.clone();
    let n = rooms * args.room_size;
    wait_for("joins", Duration::from_secs(180), || {
        c.ids.load(Ordering::Relaxed) == n && c.introductions.load(Ordering::Relaxed) == pairs
            || c.errors.load(Ordering::Relaxed) > 0
    })
    .await?;
    let join_time = start.elapsed();
    let errors = counters.errors.load(Ordering::Relaxed);
    if errors > 0 {
        return Err(format!("{errors} clients failed to connect"));
    }
    let cpu_joined = cpu();
    let other_joined = other();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = rss();
    let cpu_idle = cpu();
    let other_idle = other();

    let expected = pairs * signals_per_pair;
    let c = counters.clone();
    let _ = go_tx.send(true);
    let relay_time = wait_for("signals", Duration::from_secs(180), || {
        c.signals.load(Ordering::Relaxed) >= expected
    })
    .await?;
    let cpu_relayed = cpu();
    let other_relayed = other();
    clients.abort_all();
    Ok(Sample {
        joins_per_s: n as f64 / join_time.as_secs_f64(),
        cpu_us_per_join: (cpu_joined - cpu_before) / n as f64,
        rss_per_peer_kib: (rss_after - rss_before) / n as f64,
        signals_per_s: expected as f64 / relay_time.as_secs_f64(),
        cpu_us_per_signal: (cpu_relayed - cpu_idle) / expected as f64,
        other_cpu_us_per_join: (other_joined - other_before) / n as f64,
        other_cpu_us_per_signal: (other_relayed - other_idle) / expected as f64,
    })
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.attacks {
        return attacks::run(&args).await;
    }
    if args.cluster {
        return cluster::run(&args).await;
    }
    println!(
        "| server | peers | run | joins/s | server CPU µs/join | RSS/peer KiB | signals relayed/s | server CPU µs/signal |\n|---|---|---|---|---|---|---|---|"
    );
    let mut summary = Vec::new();
    for &peers in &args.peers {
        let mut medians = Vec::new();
        for kind in [Kind::Stock, Kind::Huddle] {
            let mut samples = Vec::new();
            for run in 1..=args.runs {
                let s = run_once(kind, peers, &args).await?;
                println!(
                    "| {} | {peers} | {run} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} |",
                    kind.name(),
                    s.joins_per_s,
                    s.cpu_us_per_join,
                    s.rss_per_peer_kib,
                    s.signals_per_s,
                    s.cpu_us_per_signal
                );
                samples.push(s);
            }
            let med = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
            let m = Sample {
                joins_per_s: med(|s| s.joins_per_s),
                cpu_us_per_join: med(|s| s.cpu_us_per_join),
                rss_per_peer_kib: med(|s| s.rss_per_peer_kib),
                signals_per_s: med(|s| s.signals_per_s),
                cpu_us_per_signal: med(|s| s.cpu_us_per_signal),
                other_cpu_us_per_join: 0.0,
                other_cpu_us_per_signal: 0.0,
            };
            medians.push((kind, m));
        }
        summary.push((peers, medians));
    }
    println!("\nMedians, and huddle / stock ratios:\n");
    println!(
        "| peers | server | joins/s | CPU µs/join | RSS/peer KiB | signals/s | CPU µs/signal |\n|---|---|---|---|---|---|---|"
    );
    for (peers, medians) in &summary {
        for (kind, m) in medians {
            println!(
                "| {peers} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} |",
                kind.name(),
                m.joins_per_s,
                m.cpu_us_per_join,
                m.rss_per_peer_kib,
                m.signals_per_s,
                m.cpu_us_per_signal
            );
        }
        if let [(_, stock), (_, huddle)] = medians.as_slice() {
            println!(
                "| {peers} | **huddle / stock** | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
                huddle.joins_per_s / stock.joins_per_s,
                huddle.cpu_us_per_join / stock.cpu_us_per_join,
                huddle.rss_per_peer_kib / stock.rss_per_peer_kib,
                huddle.signals_per_s / stock.signals_per_s,
                huddle.cpu_us_per_signal / stock.cpu_us_per_signal
            );
        }
    }
    Ok(())
}
