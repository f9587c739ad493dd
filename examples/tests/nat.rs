//! NAT traversal, for real: two box-game players behind two NAT routers play a match, meeting
//! through huddle_server and the STUN of a coturn on a "public" segment. Everything is built by
//! the test inside the loopback-only test namespace (see README): a bridge for the public segment
//! in the test's own namespace (the server and coturn listen there), and for each player a router
//! namespace (iptables: masquerade out, and every UDP port in to its one player: a full-cone NAT,
//! the kind STUN gets through) with a private namespace behind it, where the player's process
//! runs. Nothing leaves the sandbox. Each player joins through its own huddle_server instance
//! (two, sharing rooms through a redis-server on the public segment, as behind a load
//! balancer). The players take their ICE servers from huddle_server
//! (`--ice-from-server`: coturn's STUN, and TURN with credentials from the shared secret); each
//! learns its public address from STUN and the link goes straight between the two NATs.
//!
//! Needs `ip` (iproute2), `iptables`, `nsenter`/`unshare` (util-linux), coturn's `turnserver`
//! and `redis-server`.
//! `HUDDLE_NAT_LOGS=DIR` keeps the players' logs and coturn's there.

mod common;
#[path = "common/lab.rs"]
mod lab;

use lab::{sh, Holder};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TURN_SECRET: &str = "shared by huddle_server and coturn";

/// A `redis-server` (Debian's package) on the public segment; killed when dropped.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start(ip: &str) -> Self {
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", ip])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            // Not on loopback: Redis refuses other addresses without a password otherwise (this
            // segment exists only inside the test's namespace).
            .args(["--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let start = Instant::now();
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server listens"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("redis://{ip}:{port}/"),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The public segment `10.<net>.0.0/24` (us at .1), two routers (.2 and .3) and a private
/// network behind each (`192.168.<net*2+i>.0/24`, the player at .2), and coturn.
struct Lab {
    net: u8,
    /// Held open for the lab's life.
    _routers: [Holder; 2],
    players: [Holder; 2],
    coturn: Child,
    dir: std::path::PathBuf,
}

impl Lab {
    /// Builds it; with `block_direct` the routers drop what goes between the two NATs' public
    /// addresses (as a symmetric NAT or a firewall would), so only coturn's relay joins the
    /// players.
    fn build(net: u8, block_direct: bool) -> Self {
        let routers = [Holder::new(), Holder::new()];
        let players = [Holder::new(), Holder::new()];
        std::thread::sleep(Duration::from_millis(200));
        let public = format!("10.{net}.0");
        sh(&format!(
            "ip link set lo up 2>/dev/null || true
             ip link add hb{net} type bridge
             ip addr add {public}.1/24 dev hb{net}
             ip link set hb{net} up"
        ));
        for i in 0..2 {
            let (r, p) = (routers[i].pid(), players[i].pid());
            let (wan, other) = (2 + i, 3 - i);
            let lan = format!("192.168.{}", u32::from(net) * 2 + i as u32);
            let block = if block_direct {
                format!(
                    "iptables -A FORWARD -d {public}.{other} -j DROP
                   iptables -A FORWARD -s {public}.{other} -j DROP"
                )
            } else {
                String::new()
            };
            sh(&format!(
                "ip link add hv{net}{i} type veth peer name wan netns {r}
                 ip link set hv{net}{i} master hb{net} up
                 nsenter -t {r} -n sh -ec '
                   ip link set lo up
                   ip addr add {public}.{wan}/24 dev wan
                   ip link set wan up
                   ip link add lan type veth peer name eth0 netns {p}
                   ip addr add {lan}.1/24 dev lan
                   ip link set lan up
                   sysctl -qw net.ipv4.ip_forward=1
                   iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
                   iptables -t nat -A PREROUTING -i wan -p udp -j DNAT --to-destination {lan}.2
                   {block}'
                 nsenter -t {p} -n sh -ec '
                   ip link set lo up
                   ip addr add {lan}.2/24 dev eth0
                   ip link set eth0 up
                   ip route add default via {lan}.1'"
            ));
        }
        let dir = std::env::temp_dir().join(format!("huddle-nat-{}-{net}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let ports = (40_000 + u32::from(net) * 100, 40_099 + u32::from(net) * 100);
        let coturn = Command::new("turnserver")
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--fingerprint",
                "--use-auth-secret",
                &format!("--static-auth-secret={TURN_SECRET}"),
                "--realm=huddle.test",
                // As a public TURN server should: no relaying into private networks. (Without
                // it coturn relays a check to a player's private address, finds no route to it
                // here, and closes that player's allocation.)
                "--denied-peer-ip=192.168.0.0-192.168.255.255",
                &format!("--listening-ip={public}.1"),
                &format!("--relay-ip={public}.1"),
                "--listening-port=3478",
                &format!("--min-port={}", ports.0),
                &format!("--max-port={}", ports.1),
                "--simple-log",
                // With HUDDLE_NAT_LOGS its log tells each session's allocations and peers.
                if std::env::var_os("HUDDLE_NAT_LOGS").is_some() {
                    "--verbose"
                } else {
                    "--no-stdout-log"
                },
                &format!("--log-file={}", dir.join("turn.log").display()),
                &format!("--pidfile={}", dir.join("turn.pid").display()),
                &format!("--userdb={}", dir.join("turndb").display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver runs (apt-get install coturn)");
        let mut lab = Self {
            net,
            _routers: routers,
            players,
            coturn,
            dir,
        };
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            lab.coturn.try_wait().ok().flatten().is_none(),
            "coturn started: {}",
            std::fs::read_to_string(lab.dir.join("turn.log")).unwrap_or_default()
        );
        lab
    }

    fn public(&self, host: u8) -> String {
        format!("10.{}.0.{host}", self.net)
    }

    /// Two huddle_server instances on the public segment sharing their rooms through a Redis
    /// there, handing out coturn's STUN and TURN (with credentials from the shared secret).
    fn servers(&self, rt: &tokio::runtime::Runtime) -> (Redis, Vec<huddle_server::RunningServer>) {
        let redis = Redis::start(&self.public(1));
        let bind: SocketAddr = format!("{}:0", self.public(1)).parse().expect("an address");
        let turn = format!("{}:3478", self.public(1));
        let _guard = rt.enter();
        let servers = (0..2)
            .map(|_| {
                huddle_server::start(huddle_server::ServerConfig {
                    bind,
                    stun_url: vec![format!("stun:{turn}")],
                    turn_url: vec![format!("turn:{turn}")],
                    turn_secret: Some(TURN_SECRET.into()),
                    redis: Some(redis.url.clone()),
                    resume_secret: Some("both instances have it".into()),
                    ..huddle_server::ServerConfig::loopback()
                })
                .expect("an instance starts")
            })
            .collect();
        (redis, servers)
    }

    /// Runs the box game's player `i` in the private network `lan` to frame 600; its output.
    fn play(&self, lan: usize, room: &str) -> Child {
        self.players[lan]
            .command(env!("CARGO_BIN_EXE_box_game"))
            .args([
                "--room",
                room,
                "--headless",
                "--frames",
                "600",
                "--ice-from-server",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter runs")
    }

    /// Two players meet in `room` and play to frame 600: each one's checksum line and the kinds
    /// of candidates (ours/theirs) its link took.
    /// With `same_lan` both players are in the first private network (behind one NAT).
    fn match_in(&self, room: &str, same_lan: bool) -> Vec<(String, String)> {
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        let (_redis, servers) = self.servers(&rt);
        // Each player on its own instance: their room is shared through Redis.
        let first = self.play(0, &servers[0].room_url(room));
        std::thread::sleep(Duration::from_millis(500));
        let second = self.play(usize::from(!same_lan), &servers[1].room_url(room));
        let deadline = Instant::now() + Duration::from_secs(120);
        let finished: Vec<(bool, String, String)> = [first, second]
            .into_iter()
            .map(|child| common::finish(child, deadline, "a player behind a NAT"))
            .collect();
        if let Ok(dir) = std::env::var("HUDDLE_NAT_LOGS") {
            // Keep the players' logs and coturn's (e.g. with RUST_LOG=rtc_ice=trace).
            for (i, (_, _, err)) in finished.iter().enumerate() {
                let _ = std::fs::write(format!("{dir}/player-{i}.log"), err);
            }
            let _ = std::fs::copy(self.dir.join("turn.log"), format!("{dir}/turn.log"));
        }
        let results = finished
            .into_iter()
            .map(|(ok, out, err)| {
                let warnings: Vec<&str> = err
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .take(20)
                    .collect();
                assert!(
                    ok,
                    "the player finished its match: {out}\n{}",
                    warnings.join("\n")
                );
                let line = |prefix: &str| {
                    out.lines()
                        .find(|l| l.starts_with(prefix))
                        .unwrap_or_default()
                        .to_string()
                };
                let path = line("link ");
                let path = path.split(' ').nth(2).unwrap_or_default().to_string();
                // Figures for BENCHMARKS.md (run with --nocapture); never asserted.
                println!("{room}: {} via {path}", line("connected in"));
                (line("frame 600 checksum"), path)
            })
            .collect();
        for server in servers {
            rt.block_on(server.shutdown()).expect("the instance stops");
        }
        results
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.coturn.kill();
        let _ = self.coturn.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("hb{}", self.net)])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Both players' checksums agree, and `expect` holds for the path each one's link took.
fn assert_match(results: &[(String, String)], expect: impl Fn(&str) -> bool, what: &str) {
    assert!(
        !results[0].0.is_empty() && results[0].0 == results[1].0,
        "equal checksums at frame 600: {results:?}"
    );
    for (_, path) in results {
        assert!(expect(path), "{what}: {results:?}");
    }
}

/// The players are on two signaling instances sharing the room through Redis, as behind a load
/// balancer.
#[test]
fn players_behind_two_nats_on_two_instances_meet_through_stun() {
    let lab = Lab::build(61, false);
    let results = lab.match_in("stun", false);
    // We send from our own socket (a host candidate) to the other's NAT mapping (as STUN told
    // it, or as our checks learned it): never the relay, never a private address of theirs.
    assert_match(
        &results,
        |path| {
            let theirs = path.split('/').nth(1).unwrap_or_default();
            !path.contains("Relay") && (theirs == "ServerReflexive" || theirs == "PeerReflexive")
        },
        "a direct path between the NATs",
    );
}

/// The routers drop everything between the two NATs: the players meet through coturn's relay,
/// with the credentials huddle_server hands out, each on its own instance.
#[test]
fn players_whose_nats_cannot_reach_each_other_meet_through_turn() {
    let lab = Lab::build(62, true);
    let results = lab.match_in("turn", false);
    assert_match(
        &results,
        |path| path.contains("Relay"),
        "a path through the relay",
    );
}

/// Two players behind the same NAT link straight over their LAN (host candidates at both ends),
/// though STUN and TURN are offered too. A peer's connectivity check may overtake the signaling
/// of its host candidate: then its end is learned from the check, peer-reflexive, at the same
/// LAN address (the lab's NAT does not hairpin, and a relayed or server-reflexive path names
/// itself so).
#[test]
fn players_behind_one_nat_link_over_their_lan() {
    let lab = Lab::build(63, false);
    let results = lab.match_in("lan", true);
    assert_match(
        &results,
        |path| matches!(path, "Host/Host" | "Host/PeerReflexive"),
        "a direct path over the LAN",
    );
}
