//! huddle_server alone (rooms in memory) against instances sharing rooms through Redis, same run:
//! the latency of one signal relayed between two room mates (ping-pong, 2000 samples), joins/s
//! and signals relayed/s with 1 and 3 instances. Needs Debian's `redis-server`.

use crate::{cpu_us_of, drive, free_port, median, Args, Kind, Sample, Server, CANDIDATE};
use futures::{SinkExt, StreamExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Ping-pong samples per latency figure.
const SAMPLES: usize = 2000;

/// A `redis-server` on a loopback port, without persistence.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start() -> Result<Self, String> {
        let addr = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not listen".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            url: format!("redis://{addr}/"),
        })
    }

    /// Its CPU time so far in µs.
    fn cpu_us(&self) -> f64 {
        cpu_us_of(self.child.id())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deployment to measure.
#[derive(Clone, Copy)]
enum Setup {
    /// One instance, rooms in memory.
    Alone,
    /// `n` instances sharing rooms through Redis.
    Shared(usize),
}

impl Setup {
    fn name(self) -> String {
        match self {
            Setup::Alone => "1 instance, in memory".into(),
            Setup::Shared(1) => "1 instance, Redis".into(),
            Setup::Shared(n) => format!("{n} instances, Redis"),
        }
    }

    /// Starts its instances (a Redis key prefix of their own: `run`).
    fn start(self, args: &Args, redis: &Redis, run: &str) -> Result<Vec<Server>, String> {
        let (n, more) = match self {
            Setup::Alone => (1, Vec::new()),
            Setup::Shared(n) => (
                n,
                ["--redis", &redis.url, "--redis-prefix", run]
                    .into_iter()
                    .chain(["--resume-secret", "bench"])
                    .map(String::from)
                    .collect(),
            ),
        };
        (0..n)
            .map(|_| Server::start_with_args(Kind::Huddle, args, true, &more))
            .collect()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next event of `ws` with `key`, skipping others.
async fn next_with(ws: &mut Ws, key: &str) -> Result<serde_json::Value, String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| format!("no {key} within 10 s"))?
            .ok_or("connection ended")?
            .map_err(|e| e.to_string())?;
        let Message::Text(text) = message else {
            continue;
        };
        let event: serde_json::Value =
            serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
        if let Some(value) = event.get(key) {
            return Ok(value.clone());
        }
    }
}

fn signal(to: &serde_json::Value) -> Message {
    let text =
        serde_json::json!({ "Signal": { "receiver": to, "data": { "IceCandidate": CANDIDATE } } });
    Message::text(text.to_string())
}

/// One-way relay latency of a signal between two room mates (half the round trip), p50 and p99
/// in µs: the first on instance `a`, the second on the last instance.
async fn latency(servers: &[Server]) -> Result<(f64, f64), String> {
    let room = |s: &Server| format!("ws://{}/latency", s.addr);
    let first = &servers[0];
    let last = &servers[servers.len() - 1];
    let (mut a, _) = tokio_tungstenite::connect_async(room(first))
        .await
        .map_err(|e| e.to_string())?;
    let a_id = next_with(&mut a, "IdAssigned").await?;
    let (mut b, _) = tokio_tungstenite::connect_async(room(last))
        .await
        .map_err(|e| e.to_string())?;
    next_with(&mut b, "IdAssigned").await?;
    let b_id = next_with(&mut a, "NewPeer").await?;
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        a.send(signal(&b_id)).await.map_err(|e| e.to_string())?;
        next_with(&mut b, "Signal").await?;
        b.send(signal(&a_id)).await.map_err(|e| e.to_string())?;
        next_with(&mut a, "Signal").await?;
        samples.push(start.elapsed().as_secs_f64() * 1e6 / 2.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok((median(samples.clone()), samples[samples.len() * 99 / 100]))
}

pub(crate) async fn run(args: &Args) -> Result<(), String> {
    let redis = Redis::start()?;
    let setups = [Setup::Alone, Setup::Shared(1), Setup::Shared(2)];
    println!("One signal between two room mates (one-way, {SAMPLES} ping-pongs; with 2 instances each on its own):\n");
    println!("| setup | p50 µs | p99 µs |\n|---|---|---|");
    let mut anchor = None;
    for (k, setup) in setups.into_iter().enumerate() {
        let servers = setup.start(args, &redis, &format!("lat{k}"))?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (p50, p99) = latency(&servers).await?;
        let ratio = anchor.map_or(String::new(), |(a50, a99): (f64, f64)| {
            format!(" ({:.1}x / {:.1}x)", p50 / a50, p99 / a99)
        });
        anchor.get_or_insert((p50, p99));
        println!("| {}{ratio} | {p50:.0} | {p99:.0} |", setup.name());
    }

    let peers = args.peers.first().copied().unwrap_or(1000);
    println!(
        "\n{peers} peers in rooms of {} (each room spread over the instances), {} runs:\n",
        args.room_size, args.runs
    );
    println!("| setup | run | joins/s | servers' CPU µs/join | Redis CPU µs/join | signals relayed/s | servers' CPU µs/signal | Redis CPU µs/signal |\n|---|---|---|---|---|---|---|---|");
    let mut medians: Vec<(String, Sample)> = Vec::new();
    for (k, setup) in [Setup::Alone, Setup::Shared(1), Setup::Shared(3)]
        .into_iter()
        .enumerate()
    {
        let mut samples = Vec::new();
        for run in 1..=args.runs {
            let servers = setup.start(args, &redis, &format!("load{k}-{run}"))?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let s = drive(&servers, peers, args, &|| redis.cpu_us()).await?;
            println!(
                "| {} | {run} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} |",
                setup.name(),
                s.joins_per_s,
                s.cpu_us_per_join,
                s.other_cpu_us_per_join,
                s.signals_per_s,
                s.cpu_us_per_signal,
                s.other_cpu_us_per_signal
            );
            samples.push(s);
        }
        let med = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        medians.push((
            setup.name(),
            Sample {
                joins_per_s: med(|s| s.joins_per_s),
                cpu_us_per_join: med(|s| s.cpu_us_per_join),
                rss_per_peer_kib: med(|s| s.rss_per_peer_kib),
                signals_per_s: med(|s| s.signals_per_s),
                cpu_us_per_signal: med(|s| s.cpu_us_per_signal),
                other_cpu_us_per_join: med(|s| s.other_cpu_us_per_join),
                other_cpu_us_per_signal: med(|s| s.other_cpu_us_per_signal),
            },
        ));
    }
    println!("\nMedians, and ratios to one instance in memory:\n");
    println!("| setup | joins/s | servers' + Redis CPU µs/join | signals/s | servers' + Redis CPU µs/signal |\n|---|---|---|---|---|");
    let base = medians[0].1;
    let join_cpu = |m: &Sample| m.cpu_us_per_join + m.other_cpu_us_per_join;
    let signal_cpu = |m: &Sample| m.cpu_us_per_signal + m.other_cpu_us_per_signal;
    for (name, m) in &medians {
        println!(
            "| {name} | {:.0} ({:.2}x) | {:.1} ({:.2}x) | {:.0} ({:.2}x) | {:.2} ({:.2}x) |",
            m.joins_per_s,
            m.joins_per_s / base.joins_per_s,
            join_cpu(m),
            join_cpu(m) / join_cpu(&base),
            m.signals_per_s,
            m.signals_per_s / base.signals_per_s,
            signal_cpu(m),
            signal_cpu(m) / signal_cpu(&base)
        );
    }
    Ok(())
}
