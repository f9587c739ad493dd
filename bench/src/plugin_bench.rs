//! bevy_huddle benchmark against its anchors, same run, same machine: raw UDP, raw
//! matchbox_socket (both through huddle_server on loopback).
//!
//! - 16-byte round trip on the unreliable channel: plugin vs raw matchbox_socket vs raw UDP. Every
//!   WebRTC peer runs in a thread of its own, polling in the same loop (poll, then sleep 20 µs):
//!   a raw socket polls `receive()`, a plugin peer runs `app.update()`.
//! - time to a full mesh of 4: raw sockets until each has 3 connected peers; plugin apps until each
//!   has 3 `PeerJoined` (and until each is `InLobby` with the host known).
//! - plugin CPU per frame: 8 apps at 60 Hz, each sending a 16-byte move to all 7 every frame; the
//!   thread CPU time of `app.update()` (single-threaded executor, so every system runs on the
//!   measuring thread), minus that of the same app without the plugin. The socket's own work runs
//!   on the IO pool, as it does for a raw socket.
//! - unreliable round trip p99 while a 4 MiB reliable message is in flight vs idle, plugin and raw.
//!
//! - rollback (box game, GGRS through huddle): frames, rollback frames and GGRS bytes per second
//!   per peer, clean link vs 60 ms ± 10 ms with 5 % loss; what a player leaving or vanishing
//!   costs the two others in a match of three (see `rollback.rs`).
//!
//! Must run inside a network namespace with only loopback: `scripts/bench_plugin.sh` does that.

mod measure;
mod rollback;

use measure::{ms, percentile, thread_cpu, us};

use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::{HuddleConfig, Topology};
use matchbox_socket::{PeerState, RtcIceServerConfig, WebRtcSocket};
use serde::{Deserialize, Serialize};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SAMPLES: usize = 2000;
const WARMUP: usize = 200;
const POLL_SLEEP: Duration = Duration::from_micros(20);

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
struct Ping {
    seq: u32,
    pad: [u8; 12],
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
struct Pong {
    seq: u32,
    pad: [u8; 12],
}

/// Bulk bytes: `serde_bytes` makes bincode copy them whole instead of element by element.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

/// Runs every schedule of `app` on the calling thread: no executor overhead, and the thread's
/// CPU time is the app's.
fn single_threaded(app: &mut App) {
    use bevy::ecs::schedule::{Schedules, SingleThreadedExecutor};
    app.finish();
    app.cleanup();
    for (_, schedule) in app.world_mut().resource_mut::<Schedules>().iter_mut() {
        schedule.set_executor(SingleThreadedExecutor::new());
    }
}

// ---------------------------------------------------------------- raw UDP

fn udp_rtt() -> Vec<Duration> {
    let echo = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let pinger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let echo_addr = echo.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    echo.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    let mut samples = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..SAMPLES + WARMUP {
        let t0 = Instant::now();
        pinger.send_to(&[7u8; 16], echo_addr).expect("send");
        pinger.recv_from(&mut buf).expect("recv");
        if i >= WARMUP {
            samples.push(t0.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    samples
}

// ---------------------------------------------------------------- raw matchbox_socket

fn raw_socket(url: &str, rt: &tokio::runtime::Handle) -> WebRtcSocket {
    let (socket, fut) = WebRtcSocket::builder(url)
        .ice_server(RtcIceServerConfig {
            urls: vec![],
            username: None,
            credential: None,
        })
        .add_reliable_channel()
        .add_unreliable_channel()
        .build();
    rt.spawn(fut);
    socket
}

fn wait_connected(socket: &mut WebRtcSocket, n: usize) -> Vec<matchbox_socket::PeerId> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        socket.update_peers();
        let peers: Vec<_> = socket.connected_peers().collect();
        if peers.len() >= n {
            return peers;
        }
        assert!(Instant::now() < deadline, "raw sockets did not connect");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Round trips on the unreliable channel of raw sockets; with `bulk`, the pinger also sends
/// 4 MiB as 64 KiB messages on the reliable channel, again each time the last one arrived.
fn raw_rtt(server: &str, rt: &tokio::runtime::Runtime, bulk: bool) -> Vec<Duration> {
    let url = format!("{server}/raw-rtt-{bulk}");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let url2 = url.clone();
    let mut a = raw_socket(&url, rt.handle());
    let handle = rt.handle().clone();
    let echo = std::thread::spawn(move || {
        let mut b = raw_socket(&url2, &handle);
        wait_connected(&mut b, 1);
        let mut bulk_bytes = 0usize;
        while !stop2.load(Ordering::Relaxed) {
            for (peer, packet) in b.channel_mut(1).receive() {
                b.channel_mut(1).send(packet, peer);
            }
            for (peer, packet) in b.channel_mut(0).receive() {
                bulk_bytes += packet.len();
                if bulk_bytes >= 4 << 20 {
                    bulk_bytes = 0;
                    b.channel_mut(0).send(vec![1u8].into(), peer);
                }
            }
            std::thread::sleep(POLL_SLEEP);
        }
    });
    let peer = wait_connected(&mut a, 1)[0];
    let send_bulk = |a: &mut WebRtcSocket| {
        for _ in 0..64 {
            a.channel_mut(0).send(vec![0u8; 65_536].into(), peer);
        }
    };
    if bulk {
        send_bulk(&mut a);
    }
    let mut samples = Vec::new();
    let mut seq: u32 = 0;
    while samples.len() < SAMPLES {
        seq += 1;
        let t0 = Instant::now();
        a.channel_mut(1)
            .send(seq.to_le_bytes().repeat(4).into(), peer);
        let deadline = t0 + Duration::from_millis(500);
        'wait: while Instant::now() < deadline {
            for (_, packet) in a.channel_mut(1).receive() {
                if packet.len() == 16 && packet[..4] == seq.to_le_bytes() {
                    if seq as usize > WARMUP {
                        samples.push(t0.elapsed());
                    }
                    break 'wait;
                }
            }
            if bulk && !a.channel_mut(0).receive().is_empty() {
                send_bulk(&mut a);
            }
            std::thread::sleep(POLL_SLEEP);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    samples
}

// ---------------------------------------------------------------- plugin

#[derive(Resource, Default)]
struct Pongs(Vec<u32>);

#[derive(Resource, Default)]
struct Blobs(usize);

fn echo(mut pings: MessageReader<Incoming<Ping>>, mut out: MessageWriter<Outgoing<Pong>>) {
    for p in pings.read() {
        out.write(Outgoing::to_peer(
            p.from,
            Pong {
                seq: p.message.seq,
                pad: p.message.pad,
            },
        ));
    }
}

fn collect(
    mut pongs: MessageReader<Incoming<Pong>>,
    mut blobs: MessageReader<Incoming<Blob>>,
    mut got: ResMut<Pongs>,
    mut got_blobs: ResMut<Blobs>,
) {
    got.0.extend(pongs.read().map(|p| p.message.seq));
    got_blobs.0 += blobs.read().count();
}

fn plugin_app(url: &str, single: bool) -> App {
    let mut app = plugin_app_multi(url);
    if single {
        single_threaded(&mut app);
    }
    app
}

fn plugin_app_multi(url: &str) -> App {
    let mut app = App::new();
    app.add_plugins(MinimalPlugins)
        .add_plugins(HuddlePlugin::new(HuddleConfig::room(url)))
        .add_huddle_message::<Ping>(Channel::Unreliable)
        .add_huddle_message::<Pong>(Channel::Unreliable)
        .add_huddle_message::<Blob>(Channel::Reliable)
        .init_resource::<Pongs>()
        .init_resource::<Blobs>()
        .add_systems(Update, (echo, collect));
    app
}

fn joined(app: &App, n: usize) -> bool {
    app.world().resource::<Roster>().peers.len() >= n
}

/// Round trips of `Ping`/`Pong` between two apps, each on its own thread; with `bulk`, the
/// pinger keeps a 4 MiB `Blob` in flight to the other.
fn plugin_rtt(server: &str, bulk: bool, single: bool) -> Vec<Duration> {
    let url = format!("{server}/plugin-rtt-{bulk}-{single}");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let url2 = url.clone();
    let mut a = plugin_app(&url, single);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a.world().resource::<Roster>().is_host() {
        a.update();
        std::thread::sleep(Duration::from_millis(1));
        assert!(Instant::now() < deadline);
    }
    let echo = std::thread::spawn(move || {
        let mut b = plugin_app(&url2, single);
        while !stop2.load(Ordering::Relaxed) {
            b.update();
            std::thread::sleep(POLL_SLEEP);
        }
    });
    while !joined(&a, 1) {
        a.update();
        std::thread::sleep(Duration::from_millis(1));
        assert!(Instant::now() < deadline, "plugin apps did not connect");
    }
    let peer = a.world().resource::<Roster>().peers[0];
    let blob = Blob(vec![0u8; 4 << 20]);
    if bulk {
        a.world_mut()
            .write_message(Outgoing::to_peer(peer, blob.clone()));
    }
    let mut samples = Vec::new();
    let mut seq: u32 = 0;
    while samples.len() < SAMPLES {
        seq += 1;
        let t0 = Instant::now();
        a.world_mut()
            .write_message(Outgoing::to_peer(peer, Ping { seq, pad: [0; 12] }));
        let deadline = t0 + Duration::from_millis(500);
        while Instant::now() < deadline {
            a.update();
            let got = std::mem::take(&mut a.world_mut().resource_mut::<Pongs>().0);
            if got.contains(&seq) {
                if seq as usize > WARMUP {
                    samples.push(t0.elapsed());
                }
                break;
            }
            if bulk {
                let session = a.world().resource::<bevy_huddle::HuddleSession>();
                if session.bulk_pending(peer) == 0 {
                    a.world_mut()
                        .write_message(Outgoing::to_peer(peer, blob.clone()));
                }
            }
            std::thread::sleep(POLL_SLEEP);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    samples
}

// ---------------------------------------------------------------- mesh time

fn raw_mesh_time(server: &str, rt: &tokio::runtime::Runtime, run: usize) -> Duration {
    let url = format!("{server}/raw-mesh-{run}");
    let start = Instant::now();
    let mut sockets: Vec<WebRtcSocket> = (0..4).map(|_| raw_socket(&url, rt.handle())).collect();
    let mut connected = [0usize; 4];
    loop {
        for (i, s) in sockets.iter_mut().enumerate() {
            for (_, state) in s.update_peers() {
                match state {
                    PeerState::Connected => connected[i] += 1,
                    PeerState::Disconnected => connected[i] -= 1,
                }
            }
        }
        if connected.iter().all(|c| *c == 3) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "raw mesh did not form"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// (all joined, all in lobby with the host known)
fn plugin_mesh_time(server: &str, run: usize) -> (Duration, Duration) {
    let url = format!("{server}/plugin-mesh-{run}");
    let start = Instant::now();
    let mut apps: Vec<App> = (0..4).map(|_| plugin_app(&url, false)).collect();
    let mut all_joined = None;
    loop {
        for a in apps.iter_mut() {
            a.update();
        }
        if all_joined.is_none() && apps.iter().all(|a| joined(a, 3)) {
            all_joined = Some(start.elapsed());
        }
        let in_lobby = apps.iter().all(|a| {
            joined(a, 3) && *a.world().resource::<State<LobbyState>>().get() == LobbyState::InLobby
        });
        if let (Some(j), true) = (all_joined, in_lobby) {
            return (j, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "plugin mesh did not form"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------- CPU per frame

#[derive(Serialize, Deserialize, Clone, Copy)]
struct Move([u8; 14]);

fn frame_cost(server: &str) -> (Duration, Duration, Duration) {
    const PEERS: usize = 8;
    const FRAMES: usize = 600;
    let url = format!("{server}/cpu");
    let barrier = Arc::new(std::sync::Barrier::new(PEERS));
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for i in 0..PEERS {
        let url = url.clone();
        let barrier = barrier.clone();
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            // The first app hosts; the others join once it does.
            std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 800 }));
            let mut app = App::new();
            app.add_plugins(MinimalPlugins)
                .add_plugins(HuddlePlugin::new(HuddleConfig::room(url)))
                .add_huddle_message::<Move>(Channel::Unreliable);
            single_threaded(&mut app);
            let mut bare = App::new();
            bare.add_plugins(MinimalPlugins)
                .add_message::<Outgoing<Move>>();
            single_threaded(&mut bare);
            // The plugin's fixed Bevy cost: states, messages, systems, with no room joined.
            let mut idle = App::new();
            idle.add_plugins(MinimalPlugins)
                .add_plugins(HuddlePlugin::new(HuddleConfig::default()))
                .add_huddle_message::<Move>(Channel::Unreliable);
            single_threaded(&mut idle);
            let deadline = Instant::now() + Duration::from_secs(90);
            while !joined(&app, PEERS - 1) {
                app.update();
                std::thread::sleep(Duration::from_millis(2));
                assert!(
                    Instant::now() < deadline,
                    "8 apps did not mesh: app {i} has {:?}",
                    app.world().resource::<Roster>()
                );
            }
            barrier.wait();
            let mut with = Duration::ZERO;
            let mut without = Duration::ZERO;
            let mut offline = Duration::ZERO;
            let tick = Duration::from_secs_f64(1.0 / 60.0);
            let mut next = Instant::now();
            for _ in 0..FRAMES {
                app.world_mut()
                    .write_message(Outgoing::to_all(Move([0; 14])));
                let t0 = thread_cpu();
                app.update();
                with += thread_cpu().saturating_sub(t0);
                bare.world_mut()
                    .write_message(Outgoing::to_all(Move([0; 14])));
                let t0 = thread_cpu();
                bare.update();
                without += thread_cpu().saturating_sub(t0);
                idle.world_mut()
                    .write_message(Outgoing::to_all(Move([0; 14])));
                let t0 = thread_cpu();
                idle.update();
                offline += thread_cpu().saturating_sub(t0);
                next += tick;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let n = FRAMES as u32;
            let _ = tx.send((with / n, without / n, offline / n));
            barrier.wait();
        }));
    }
    drop(tx);
    let results: Vec<(Duration, Duration, Duration)> = rx.iter().collect();
    for t in threads {
        let _ = t.join();
    }
    let n = results.len() as u32;
    let with = results.iter().map(|r| r.0).sum::<Duration>() / n;
    let without = results.iter().map(|r| r.1).sum::<Duration>() / n;
    let offline = results.iter().map(|r| r.2).sum::<Duration>() / n;
    (with, without, offline)
}

/// The same traffic as [`frame_cost`] on raw matchbox sockets: each of 8 threads polls its socket
/// once per 60 Hz frame, sends 16 bytes to each of the 7 others and reads what came. Returns the
/// mean thread CPU time of that per frame: what the socket costs a game without the plugin.
fn frame_cost_raw(server: &str, rt: &tokio::runtime::Runtime) -> Duration {
    const PEERS: usize = 8;
    const FRAMES: usize = 600;
    let url = format!("{server}/cpu-raw");
    let barrier = Arc::new(std::sync::Barrier::new(PEERS));
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for _ in 0..PEERS {
        let url = url.clone();
        let barrier = barrier.clone();
        let tx = tx.clone();
        let handle = rt.handle().clone();
        threads.push(std::thread::spawn(move || {
            let mut socket = raw_socket(&url, &handle);
            let peers = wait_connected(&mut socket, PEERS - 1);
            barrier.wait();
            let mut cost = Duration::ZERO;
            let tick = Duration::from_secs_f64(1.0 / 60.0);
            let mut next = Instant::now();
            for _ in 0..FRAMES {
                let t0 = thread_cpu();
                socket.update_peers();
                for p in &peers {
                    socket.channel_mut(1).send(vec![0u8; 16].into(), *p);
                }
                let _ = socket.channel_mut(1).receive();
                let _ = socket.channel_mut(0).receive();
                cost += thread_cpu().saturating_sub(t0);
                next += tick;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let _ = tx.send(cost / FRAMES as u32);
            barrier.wait();
        }));
    }
    drop(tx);
    let results: Vec<Duration> = rx.iter().collect();
    for t in threads {
        let _ = t.join();
    }
    results.iter().sum::<Duration>() / results.len() as u32
}

// ---------------------------------------------------------------- star

/// A 64-byte move.
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Move64 {
    a: [u8; 32],
    b: [u8; 32],
}

/// `peers` apps at 60 Hz, each broadcasting a 64-byte move every frame, in a room of
/// `topology`. Returns (host CPU µs per frame, mean client CPU µs per frame, mean bytes each
/// client uploads per second).
fn broadcast_load(server: &str, peers: usize, topology: Topology) -> (f64, f64, f64) {
    const FRAMES: usize = 600;
    let url = format!("{server}/load-{peers}-{topology:?}?capacity={peers}");
    let barrier = Arc::new(std::sync::Barrier::new(peers));
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..peers)
        .map(|i| {
            let (url, barrier, tx) = (url.clone(), barrier.clone(), tx.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 800 }));
                let config = HuddleConfig {
                    topology: Some(topology),
                    ..HuddleConfig::room(url)
                };
                let mut app = App::new();
                app.add_plugins(MinimalPlugins)
                    .add_plugins(HuddlePlugin::new(config))
                    .add_huddle_message::<Move64>(Channel::Unreliable);
                single_threaded(&mut app);
                let deadline = Instant::now() + Duration::from_secs(120);
                while !joined(&app, peers - 1) {
                    app.update();
                    std::thread::sleep(Duration::from_millis(2));
                    assert!(
                        Instant::now() < deadline,
                        "{peers} apps did not form a lobby"
                    );
                }
                barrier.wait();
                let uploaded = |app: &App| -> u64 {
                    let session = app.world().resource::<bevy_huddle::HuddleSession>();
                    let roster = app.world().resource::<Roster>();
                    roster
                        .peers
                        .iter()
                        .filter_map(|p| session.link_stats(*p))
                        .map(|s| s.bytes_out)
                        .sum()
                };
                let before = uploaded(&app);
                let started = Instant::now();
                let mut cpu = Duration::ZERO;
                let tick = Duration::from_secs_f64(1.0 / 60.0);
                let mut next = Instant::now();
                for _ in 0..FRAMES {
                    app.world_mut().write_message(Outgoing::to_all(Move64 {
                        a: [1; 32],
                        b: [2; 32],
                    }));
                    let t0 = thread_cpu();
                    app.update();
                    cpu += thread_cpu().saturating_sub(t0);
                    next += tick;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                let rate = (uploaded(&app) - before) as f64 / started.elapsed().as_secs_f64();
                let is_host = app.world().resource::<Roster>().is_host();
                let _ = tx.send((is_host, us(cpu / FRAMES as u32), rate));
                barrier.wait();
            })
        })
        .collect();
    drop(tx);
    let results: Vec<(bool, f64, f64)> = rx.iter().collect();
    for t in threads {
        let _ = t.join();
    }
    let host = results.iter().find(|r| r.0).map_or(0.0, |r| r.1);
    let clients: Vec<&(bool, f64, f64)> = results.iter().filter(|r| !r.0).collect();
    let n = clients.len().max(1) as f64;
    (
        host,
        clients.iter().map(|r| r.1).sum::<f64>() / n,
        clients.iter().map(|r| r.2).sum::<f64>() / n,
    )
}

/// In a star of host H and clients A, B (tight loops): A's round trips to H (a direct link)
/// and to B (relayed by H).
fn star_rtt(server: &str) -> (Vec<Duration>, Vec<Duration>) {
    let url = format!("{server}/star-rtt?capacity=8");
    let stop = Arc::new(AtomicBool::new(false));
    let spawn_echo = |delay: u64| {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay));
            let mut app = plugin_app(&url, true);
            while !stop.load(Ordering::Relaxed) {
                app.update();
                std::thread::sleep(POLL_SLEEP);
            }
        })
    };
    let host = spawn_echo(0);
    let b = spawn_echo(800);
    std::thread::sleep(Duration::from_millis(1600));
    let mut a = plugin_app(&url, true);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !joined(&a, 2) {
        a.update();
        std::thread::sleep(Duration::from_millis(1));
        assert!(Instant::now() < deadline, "the star did not form");
    }
    let roster = a.world().resource::<Roster>().clone();
    let h = roster.host.expect("a host");
    let other = *roster
        .peers
        .iter()
        .find(|p| **p != h)
        .expect("another client");
    let mut direct = Vec::new();
    let mut relayed = Vec::new();
    let mut seq: u32 = 0;
    while relayed.len() < SAMPLES {
        seq += 1;
        let to = if seq.is_multiple_of(2) { h } else { other };
        let t0 = Instant::now();
        a.world_mut()
            .write_message(Outgoing::to_peer(to, Ping { seq, pad: [0; 12] }));
        while t0.elapsed() < Duration::from_millis(500) {
            a.update();
            let got = std::mem::take(&mut a.world_mut().resource_mut::<Pongs>().0);
            if got.contains(&seq) {
                if seq as usize > WARMUP {
                    if to == h {
                        direct.push(t0.elapsed());
                    } else {
                        relayed.push(t0.elapsed());
                    }
                }
                break;
            }
            std::thread::sleep(POLL_SLEEP);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = host.join();
    let _ = b.join();
    (direct, relayed)
}

fn main() {
    let (rt, server, base) = measure::loopback_server(2);
    let _g = rt.enter();
    // `HUDDLE_BENCH_ONLY=cpu` runs one section (rtt, mesh, cpu, bulk, star, ggrs, leave, join).
    let only = std::env::var("HUDDLE_BENCH_ONLY").ok();
    let run = |section: &str| only.as_deref().is_none_or(|o| o == section);

    if run("rtt") {
        println!("## 16-byte round trip, unreliable channel ({SAMPLES} samples)\n");
        println!("| path | p50 µs | p99 µs |\n|---|---|---|");
        let mut udp = udp_rtt();
        let (u50, u99) = (percentile(&mut udp, 0.5), percentile(&mut udp, 0.99));
        println!("| raw UDP | {:.0} | {:.0} |", us(u50), us(u99));
        let mut raw = raw_rtt(&base, &rt, false);
        let (r50, r99) = (percentile(&mut raw, 0.5), percentile(&mut raw, 0.99));
        println!("| raw matchbox_socket | {:.0} | {:.0} |", us(r50), us(r99));
        let mut multi = plugin_rtt(&base, false, false);
        println!(
            "| bevy_huddle, multi-threaded executor | {:.0} | {:.0} |",
            us(percentile(&mut multi, 0.5)),
            us(percentile(&mut multi, 0.99))
        );
        let mut plugin = plugin_rtt(&base, false, true);
        let (p50, p99) = (percentile(&mut plugin, 0.5), percentile(&mut plugin, 0.99));
        println!(
            "| bevy_huddle, single-threaded executor | {:.0} | {:.0} |",
            us(p50),
            us(p99)
        );
        println!(
            "\nplugin (single-threaded) / raw matchbox: p50 {:.2}x, p99 {:.2}x; raw matchbox / UDP: p50 {:.1}x\n",
            us(p50) / us(r50),
            us(p99) / us(r99),
            us(r50) / us(u50)
        );
    }

    if run("mesh") {
        println!("## Time to a full mesh of 4 (5 runs, median)\n");
        let mut raw_times: Vec<Duration> = (0..5).map(|r| raw_mesh_time(&base, &rt, r)).collect();
        let plugin_times: Vec<(Duration, Duration)> =
            (0..5).map(|r| plugin_mesh_time(&base, r)).collect();
        let mut joined_times: Vec<Duration> = plugin_times.iter().map(|t| t.0).collect();
        let mut lobby_times: Vec<Duration> = plugin_times.iter().map(|t| t.1).collect();
        let (rm, pj, pl) = (
            percentile(&mut raw_times, 0.5),
            percentile(&mut joined_times, 0.5),
            percentile(&mut lobby_times, 0.5),
        );
        println!("| what | median ms |\n|---|---|");
        println!(
            "| raw matchbox_socket: all 4 connected to all | {:.0} |",
            ms(rm)
        );
        println!(
            "| bevy_huddle: all 4 joined (links open, hellos exchanged) | {:.0} |",
            ms(pj)
        );
        println!(
            "| bevy_huddle: all 4 InLobby with the host agreed | {:.0} |",
            ms(pl)
        );
        println!("\nplugin / raw: {:.2}x (joined)\n", ms(pj) / ms(rm));
    }

    if run("cpu") {
        println!("## Plugin cost per frame: 8 peers, 60 Hz, a 16-byte move to all 7 every frame\n");
        let (with, without, offline) = frame_cost(&base);
        let raw = frame_cost_raw(&base, &rt);
        println!("| per frame (single-threaded executor) | mean CPU µs |\n|---|---|");
        println!("| MinimalPlugins + bevy_huddle: update | {:.1} |", us(with));
        println!(
            "| MinimalPlugins + bevy_huddle, not in a room: update | {:.1} |",
            us(offline)
        );
        println!("| MinimalPlugins alone: update | {:.1} |", us(without));
        println!(
            "| raw matchbox_socket: poll, 7 sends, receive | {:.1} |",
            us(raw)
        );
        let plugin = with.saturating_sub(without);
        println!(
            "\nplugin systems: {:.1} µs per frame, of which the socket calls a raw game makes too: \
             {:.1} µs; the plugin's own work: {:.1} µs\n",
            us(plugin),
            us(raw),
            us(plugin.saturating_sub(raw))
        );
    }

    if run("bulk") {
        println!("## Unreliable round trip while 4 MiB reliable is in flight\n");
        println!(
            "| path | idle p50 µs | idle p99 µs | bulk p50 µs | bulk p99 µs | p99 bulk/idle |"
        );
        println!("|---|---|---|---|---|---|");
        for (name, idle, bulk) in [
            (
                "raw matchbox_socket (64 KiB messages, unpaced)",
                raw_rtt(&base, &rt, false),
                raw_rtt(&base, &rt, true),
            ),
            (
                "bevy_huddle (16 KiB chunks, 256 KiB window)",
                plugin_rtt(&base, false, true),
                plugin_rtt(&base, true, true),
            ),
        ] {
            let (mut idle, mut bulk) = (idle, bulk);
            let (i50, i99) = (percentile(&mut idle, 0.5), percentile(&mut idle, 0.99));
            let (b50, b99) = (percentile(&mut bulk, 0.5), percentile(&mut bulk, 0.99));
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x |",
                us(i50),
                us(i99),
                us(b50),
                us(b99),
                us(b99) / us(i99)
            );
        }
    }
    if run("star") {
        println!("## Star: 64-byte moves at 60 Hz, every peer to everyone\n");
        println!(
            "| lobby | host CPU µs/frame | client CPU µs/frame | bytes uploaded per client per s |"
        );
        println!("|---|---|---|---|");
        for (peers, topology) in [
            (16, Topology::Star),
            (8, Topology::Star),
            (8, Topology::Mesh),
        ] {
            let (host, client, upload) = broadcast_load(&base, peers, topology);
            println!("| {peers} peers, {topology:?} | {host:.1} | {client:.1} | {upload:.0} |");
        }
        println!("\n## Star: added latency of the relay hop (tight loops, 2000 samples each)\n");
        let (mut direct, mut relayed) = star_rtt(&base);
        let (d50, d99) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
        let (r50, r99) = (
            percentile(&mut relayed, 0.5),
            percentile(&mut relayed, 0.99),
        );
        println!("| round trip | p50 µs | p99 µs |\n|---|---|---|");
        println!(
            "| client to host (direct link) | {:.0} | {:.0} |",
            us(d50),
            us(d99)
        );
        println!(
            "| client to client (through the host) | {:.0} | {:.0} |",
            us(r50),
            us(r99)
        );
        println!("\nrelayed / direct: p50 {:.2}x\n", us(r50) / us(d50));
    }

    if run("ggrs") {
        let window = Duration::from_secs(20);
        println!(
            "## Rollback: the box game at 60 Hz ({} s measured per row, per peer)\n",
            window.as_secs()
        );
        println!(
            "| link | room | players | frames/s | rollback frames/s | GGRS bytes/s sent | GGRS ping ms (highest) |"
        );
        println!("|---|---|---|---|---|---|---|");
        let lossy = Conditions::new(Duration::from_millis(60), Duration::from_millis(10), 0.05);
        let (mesh, star) = (Topology::Mesh, Topology::Star);
        for (name, conditions, n, topology) in [
            ("loopback", None, 2, mesh),
            ("60 ms ± 10, 5 % loss", Some(lossy), 2, mesh),
            ("60 ms ± 10, 5 % loss", Some(lossy), 4, mesh),
            ("loopback", None, 4, mesh),
            ("loopback", None, 4, star),
            ("60 ms ± 10, 5 % loss", Some(lossy), 4, star),
        ] {
            let room = format!("bench-ggrs-{n}-{}-{topology}", conditions.is_some());
            let rates = rollback::measure(&base, &room, n, conditions, topology, window);
            let mean = |f: &dyn Fn(&rollback::Rates) -> f64| {
                rates.iter().map(f).sum::<f64>() / rates.len() as f64
            };
            println!(
                "| {name} | {topology} | {n} | {:.1} | {:.1} | {:.0} | {} |",
                mean(&|r| r.frames),
                mean(&|r| r.rollback_frames),
                mean(&|r| r.bytes_out),
                rates.iter().map(|r| r.ping_ms).max().unwrap_or(0),
            );
        }
        println!();
    }

    if run("leave") {
        const RUNS: usize = 10;
        let lossy = Conditions::new(Duration::from_millis(60), Duration::from_millis(10), 0.05);
        println!(
            "## Rollback: the third player of three goes at frame 120, 60 ms ± 10, 5 % loss \
             ({RUNS} matches a row; stall: the longest time a remaining peer went without a new \
             frame in the {} s after, in the matches that went on)\n",
            rollback::AFTER.as_secs()
        );
        println!("| the third player | known gone p50 ms | stall p50 ms | stall max ms | parting p50 ms | parting max ms | played on | through a resync (snapshot bytes) |");
        println!("|---|---|---|---|---|---|---|---|");
        for (name, how) in [
            ("stays (anchor)", rollback::Going::Stays),
            ("leaves (`LeaveRollback`)", rollback::Going::Leaves),
            ("vanishes (app dropped)", rollback::Going::Vanishes),
        ] {
            let mut stalls = Vec::new();
            let mut partings = Vec::new();
            let mut detections = Vec::new();
            let mut played_on = 0;
            let mut resyncs = Vec::new();
            for i in 0..RUNS {
                let room = format!("bench-leave-{how:?}-{i}");
                let d = rollback::departure(&base, &room, Some(lossy), how);
                if d.played_on {
                    stalls.push(d.longest_stall);
                }
                partings.extend(d.parting);
                detections.extend(d.detected);
                played_on += usize::from(d.played_on);
                resyncs.extend(d.resynced);
            }
            let cell = |v: &mut Vec<Duration>, p: f64| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.0}", percentile(v, p).as_secs_f64() * 1e3)
                }
            };
            let snapshot = resyncs
                .iter()
                .max()
                .map_or("-".to_string(), |b| b.to_string());
            println!(
                "| {name} | {} | {} | {} | {} | {} | {played_on}/{RUNS} | {}/{RUNS} ({snapshot}) |",
                cell(&mut detections, 0.5),
                cell(&mut stalls, 0.5),
                cell(&mut stalls, 1.0),
                cell(&mut partings, 0.5),
                cell(&mut partings, 1.0),
                resyncs.len(),
            );
        }
        println!();
    }

    if run("join") {
        // One hour at 60 frames a second.
        const HOUR: i32 = 216_000;
        println!(
            "## Rollback: a spectator joins a running match of two (loopback; caught up: from \
             its app's start until it trailed the players' newest final frame by {} frames or \
             fewer)\n",
            rollback::CAUGHT_UP
        );
        println!("| the match | joined at frame | started from | caught up s |");
        println!("|---|---|---|---|");
        for (name, first, played, snapshots) in [
            (
                "no snapshots (anchor): replays from frame 1",
                0,
                1200,
                false,
            ),
            ("snapshots, 20 s in", 0, 1200, true),
            ("snapshots, one hour in (generated)", HOUR, 300, true),
        ] {
            let room = format!("bench-join-{first}-{snapshots}");
            let j = rollback::spectator_join(&base, &room, first, played, snapshots);
            let from = j.snapshot.map_or("frame 1 (replay)".to_string(), |(f, b)| {
                format!("snapshot of frame {f} ({b} bytes)")
            });
            let caught = j
                .caught_up
                .map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64()));
            println!("| {name} | {} | {from} | {caught} |", j.at);
        }
        println!();
    }

    rt.block_on(async {
        let _ = server.shutdown().await;
    });
}
