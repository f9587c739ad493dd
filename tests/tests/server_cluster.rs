//! Three huddle_server instances sharing rooms through a real redis-server: rooms whose peers
//! are spread over every instance (stock matchbox_socket peers, plugin apps, raw clients), a
//! join storm, `?next=N` groups, and an instance killed with SIGKILL.
//! Run inside the loopback-only network namespace (see README).

use huddle_tests::apps::*;
use huddle_tests::cluster::*;
use huddle_tests::*;
use matchbox_protocol::PeerId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const CONNECT: Duration = Duration::from_secs(30);
const LIMIT: Duration = Duration::from_secs(60);

/// The rooms `GET /rooms` of the instance at `addr` lists (JSON).
async fn listed(addr: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let response = http_get(addr, "/rooms").await;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_default()
}

/// Every `NewPeer` and `PeerLeft` a raw client hears until it has been quiet for `quiet`.
async fn events(client: &mut RawClient, quiet: Duration) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Some(event) = client.next_event(quiet).await {
        out.push(event);
    }
    out
}

fn new_peers(events: &[serde_json::Value]) -> Vec<PeerId> {
    events
        .iter()
        .filter_map(|e| serde_json::from_value(e.get("NewPeer")?.clone()).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_room_spread_over_three_instances_forms_and_exchanges_messages() {
    let redis = Redis::start();
    let servers = instances(&redis, "mesh", 3);
    let mut peers: Vec<StockPeer> = (0..5)
        .map(|i| StockPeer::connect(&servers[i % 3].room_url("spread")))
        .collect();
    assert!(
        full_mesh(&mut peers, CONNECT).await,
        "5 peers on 3 instances reach a full mesh"
    );
    exchange_all(&mut peers, Duration::from_secs(20))
        .await
        .expect("every message arrives with its sender");
    let joins: Vec<u64> = servers.iter().map(|s| s.metrics().joins.get()).collect();
    assert_eq!(joins, vec![2, 2, 1], "each instance counts its own joins");
    // Every instance lists the one room with all five, whoever serves them.
    for server in &servers {
        let rooms = listed(server.local_addr()).await;
        assert_eq!(rooms.len(), 1, "{rooms:?}");
        assert_eq!(rooms[0]["peers"], 5);
        let rooms = server.rooms_listed().await.expect("a listing");
        assert_eq!(rooms.iter().map(|r| r.peers).collect::<Vec<_>>(), vec![5]);
    }
    // One leaves: the others (on every instance) hear it and stay linked.
    let gone = peers.pop().expect("a peer");
    gone.leave();
    let ok = settle(&mut peers, CONNECT, |ps| {
        ps.iter().all(|p| p.connected.len() == 3)
    })
    .await;
    assert!(ok, "the four left see each other only");
    for p in peers {
        p.leave();
    }
    for server in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

/// Plugin apps on three instances in a star room: every broadcast reaches everyone through the
/// host; the host leaves and the star re-forms around the oldest client, on another instance.
#[test]
fn a_star_lobby_spread_over_three_instances_relays_and_survives_its_host() {
    let redis = Redis::start();
    let rt = runtime();
    let servers = {
        let _guard = rt.enter();
        instances(&redis, "star", 3)
    };
    let url = |i: usize| servers[i % 3].room_url("big?capacity=8");
    let mut players = vec![Player::join(&url(0))];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.extend((1..5).map(|i| Player::join(&url(i))));
    assert!(
        run_until(&mut players, LIMIT, lobby_complete),
        "5 players in one star lobby"
    );
    for p in &players {
        assert_eq!(p.roster().members.len(), 5);
    }
    broadcast_round(&mut players, "before");
    let next_host = players[1].id();
    drop(players.remove(0));
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter()
            .all(|p| p.roster().host == next_host && p.roster().members.len() == 4)
    });
    assert!(ok, "the oldest client (on instance 1) hosts the four left");
    broadcast_round(&mut players, "after");
    drop(players);
    drop(rt);
}

/// 30 peers join one mesh room at once through three instances: each pair is introduced exactly
/// once (the older peer hears of the newer), whatever instance either is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_across_instances_introduces_every_pair_once() {
    let redis = Redis::start();
    let servers = instances(&redis, "storm", 3);
    let urls: Vec<String> = (0..30).map(|i| servers[i % 3].room_url("storm")).collect();
    let joins = urls.iter().map(|url| RawClient::connect(url));
    let mut clients: Vec<RawClient> = futures::future::join_all(joins)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every client is admitted");
    let heard = futures::future::join_all(
        clients
            .iter_mut()
            .map(|c| events(c, Duration::from_secs(2))),
    )
    .await;
    let mut pairs = BTreeMap::<(PeerId, PeerId), usize>::new();
    for (client, events) in clients.iter().zip(&heard) {
        for newcomer in new_peers(events) {
            let pair = (client.id.min(newcomer), client.id.max(newcomer));
            *pairs.entry(pair).or_default() += 1;
        }
    }
    assert_eq!(pairs.len(), 30 * 29 / 2, "every pair is introduced");
    assert!(pairs.values().all(|&n| n == 1), "and once only");
    // In one join order: the k-th to join hears of the 29 - k after it, and the first hosts.
    let mut heard_of: Vec<(usize, PeerId)> = clients
        .iter()
        .zip(&heard)
        .map(|(c, e)| (new_peers(e).len(), c.id))
        .collect();
    heard_of.sort();
    let counts: Vec<usize> = heard_of.iter().map(|(n, _)| *n).collect();
    assert_eq!(counts, (0..30).collect::<Vec<_>>(), "one join order");
    let rooms = listed(servers[2].local_addr()).await;
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["peers"], 30);
    assert_eq!(
        rooms[0]["host"],
        heard_of[29].1.to_string(),
        "the first to join hosts"
    );
    for server in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

/// 12 arrivals on `?next=3`, spread over three instances, form exactly four groups of three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_groups_across_instances_are_exact() {
    let redis = Redis::start();
    let servers = instances(&redis, "next", 3);
    let mut clients = Vec::new();
    for i in 0..12 {
        let url = servers[i % 3].room_url("trio?next=3");
        clients.push(RawClient::connect(&url).await.expect("admitted"));
    }
    let heard = futures::future::join_all(
        clients
            .iter_mut()
            .map(|c| events(c, Duration::from_secs(2))),
    )
    .await;
    // Who met whom: the groups are the connected parts of the introductions.
    let ids: Vec<PeerId> = clients.iter().map(|c| c.id).collect();
    let mut group: BTreeMap<PeerId, usize> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    for (client, events) in clients.iter().zip(&heard) {
        for newcomer in new_peers(events) {
            let (a, b) = (group[&client.id], group[&newcomer]);
            for g in group.values_mut() {
                if *g == b {
                    *g = a;
                }
            }
        }
    }
    let mut sizes = BTreeMap::<usize, usize>::new();
    for g in group.values() {
        *sizes.entry(*g).or_default() += 1;
    }
    let sizes: Vec<usize> = sizes.into_values().collect();
    assert_eq!(sizes, vec![3, 3, 3, 3], "four groups of three");
    let introductions: usize = heard.iter().map(|e| new_peers(e).len()).sum();
    assert_eq!(introductions, 4 * 3, "three introductions in each group");
    for server in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

/// A star room on three instance processes; the instance holding the host and one client is
/// killed with SIGKILL: within the heartbeat window the clients on the other instances hear that
/// both left, the oldest of them is the new host and is introduced to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_takes_its_peers_out_and_the_host_moves_on() {
    let redis = Redis::start();
    let mut processes: Vec<Process> = (0..3).map(|_| Process::start(&redis, "kill")).collect();
    let room = "arena?topology=star&resumable";
    // Joined one after the other: host (instance 0), then instances 1, 2 and 0 again.
    let mut clients = Vec::new();
    for i in [0, 1, 2, 0] {
        let mut client = RawClient::connect(&processes[i].room_url(room))
            .await
            .expect("admitted");
        // The token comes once it is in the room (its id comes before).
        client.resume_token().await.expect("a token");
        clients.push(client);
    }
    let ids: Vec<PeerId> = clients.iter().map(|c| c.id).collect();
    // The host hears of each client.
    let host_heard = new_peers(&events(&mut clients[0], Duration::from_secs(1)).await);
    assert_eq!(host_heard, ids[1..].to_vec());
    for c in &mut clients[1..3] {
        assert!(
            events(c, Duration::from_millis(300)).await.is_empty(),
            "clients hear nothing yet"
        );
    }
    let killed = Instant::now();
    processes[0].kill();
    let limit = huddle_server::HEARTBEAT_TTL + 3 * huddle_server::HEARTBEAT;
    let mut survivors: Vec<RawClient> = clients.drain(1..3).collect();
    let mut heard = Vec::new();
    for c in &mut survivors {
        let mut seen = Vec::new();
        while let Some(event) = c.next_event(limit).await {
            seen.push(event);
            if seen.iter().any(|e| e.get("PeerLeft").is_some()) {
                break;
            }
        }
        heard.push(seen);
    }
    let after = killed.elapsed();
    println!("instance killed: its peers' PeerLeft reached the others after {after:?}");
    let left = |seen: &[serde_json::Value]| -> BTreeSet<PeerId> {
        seen.iter()
            .filter_map(|e| serde_json::from_value(e.get("PeerLeft")?.clone()).ok())
            .collect()
    };
    // The new host (client 1) hears the host left, and is introduced to client 2 (the gone
    // client 3 was taken out first, so it is not introduced).
    let more = events(&mut survivors[0], Duration::from_millis(500)).await;
    let host_view: Vec<serde_json::Value> = heard[0].iter().cloned().chain(more).collect();
    assert_eq!(left(&host_view), BTreeSet::from([ids[0]]), "{host_view:?}");
    assert_eq!(new_peers(&host_view), vec![ids[2]], "{host_view:?}");
    assert_eq!(left(&heard[1]), BTreeSet::from([ids[0]]), "{:?}", heard[1]);
    assert!(
        after < limit + Duration::from_secs(1),
        "within the heartbeat window: {after:?}"
    );
    let rooms = listed(processes[1].addr).await;
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    assert_eq!(rooms[0]["peers"], 2);
    assert_eq!(rooms[0]["host"], ids[1].to_string());
}

/// A peer whose connection to one instance drops resumes its place through another: the same
/// id, the others told nothing, and it calls the newcomer that joined meanwhile on a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_dropped_on_one_instance_resumes_through_another() {
    let redis = Redis::start();
    let servers = instances(&redis, "resume", 3);
    let mut a = RawClient::connect(&servers[0].room_url("keep?resumable"))
        .await
        .expect("admitted");
    let token = a.resume_token().await.expect("a resume token after our id");
    let mut b = RawClient::connect(&servers[1].room_url("keep"))
        .await
        .expect("admitted");
    let a_id = a.id;
    let heard = new_peers(&events(&mut a, Duration::from_millis(300)).await);
    assert_eq!(heard, vec![b.id], "a hears of b through b's instance");
    a.drop_connection();
    assert!(
        eventually(Duration::from_secs(5), || servers[0].metrics().held.get()
            == 1)
        .await
    );
    let c = RawClient::connect(&servers[2].room_url("keep"))
        .await
        .expect("admitted");
    let seen = events(&mut b, Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        vec![serde_json::json!({ "NewPeer": c.id })],
        "b hears of c, not that a left"
    );
    let url = format!("{}?resume={token}", servers[1].room_url("keep"));
    let mut back = RawClient::connect(&url).await.expect("resumed");
    assert_eq!(back.id, a_id, "the same id");
    assert!(
        back.resume_token().await.is_some(),
        "a token for the next drop"
    );
    let seen = events(&mut back, Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        vec![serde_json::json!({ "NewPeer": c.id })],
        "it calls the newcomer it missed"
    );
    let rooms = listed(servers[2].local_addr()).await;
    assert_eq!(rooms[0]["peers"], 3);
    assert_eq!(rooms[0]["host"], a_id.to_string(), "still the host");
    for server in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

/// The host on one instance kicks a member on another: the member is closed with the reason,
/// the others hear it left, and it is refused by every instance for the ban; its resume token is
/// refused too (a hostile member cannot come back through another door).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_on_one_instance_bans_on_every_instance() {
    let redis = Redis::start();
    let servers = instances(&redis, "kick", 3);
    let mut host = RawClient::connect(&servers[0].room_url("club?resumable"))
        .await
        .expect("admitted");
    // Its token comes once it is in the room (our id comes before): it joined first.
    host.resume_token().await.expect("a token");
    let mut member = RawClient::connect(&servers[1].room_url("club?resumable"))
        .await
        .expect("admitted");
    let token = member.resume_token().await.expect("a token");
    let mut third = RawClient::connect(&servers[2].room_url("club"))
        .await
        .expect("admitted");
    events(&mut host, Duration::from_millis(300)).await;
    let kick = serde_json::json!({ "Kick": { "peer": member.id, "ban_secs": 60 } });
    host.send_text(kick.to_string()).await.expect("sent");
    let close = member.next_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "kicked by the host");
    assert_eq!(
        third.next_left().await,
        Some(member.id),
        "the others hear it left"
    );
    for server in &servers {
        let refused = RawClient::connect(&server.room_url("club")).await.err();
        let refused = refused.expect("refused");
        assert!(refused.starts_with("HTTP 403"), "{refused}");
        let resumed = format!("{}?resume={token}", server.room_url("club"));
        let refused = RawClient::connect(&resumed).await.err().expect("refused");
        assert!(
            refused.starts_with("HTTP 403") || refused.starts_with("HTTP 410"),
            "{refused}"
        );
    }
    // Another room is open to it.
    RawClient::connect(&servers[2].room_url("elsewhere"))
        .await
        .expect("another room admits it");
    for server in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

/// The heir a star's host names on one instance hosts next for the whole room: clients on the
/// other instances are introduced to it when the host goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heir_named_on_one_instance_hosts_next_on_all() {
    let redis = Redis::start();
    let servers = instances(&redis, "heir", 3);
    let room = |i: usize| servers[i].room_url("stage?topology=star");
    let host = RawClient::connect(&room(0)).await.expect("admitted");
    let mut oldest = RawClient::connect(&room(1)).await.expect("admitted");
    let mut heir = RawClient::connect(&room(2)).await.expect("admitted");
    let mut host = host;
    events(&mut host, Duration::from_millis(300)).await;
    let name = serde_json::json!({ "Heir": { "peer": heir.id } });
    host.send_text(name.to_string()).await.expect("sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(host);
    let heard = events(&mut heir, Duration::from_secs(1)).await;
    assert_eq!(
        new_peers(&heard),
        vec![oldest.id],
        "the heir calls the others"
    );
    let heard = events(&mut oldest, Duration::from_millis(300)).await;
    assert!(new_peers(&heard).is_empty(), "{heard:?}");
    let hosts: Vec<_> = listed(servers[1].local_addr()).await;
    assert_eq!(hosts[0]["host"], serde_json::json!(heir.id.to_string()));
    for server in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

/// A hostile client opens `?next=2` rooms under 40 made-up names and goes, or fills a pair: the
/// arrival counters it made in Redis go with it (nothing keyed by its room names stays), and so
/// do the rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_counters_made_up_by_a_client_do_not_stay_in_redis() {
    let redis = Redis::start();
    let servers = instances(&redis, "junk", 2);
    let mut waiting = Vec::new();
    for i in 0..40 {
        let url = servers[i % 2].room_url(&format!("junk{i}?next=2"));
        waiting.push(RawClient::connect(&url).await.expect("admitted"));
    }
    // Two fill a pair on another name (one on each instance).
    let mut pair = Vec::new();
    for server in &servers {
        pair.push(
            RawClient::connect(&server.room_url("duel?next=2"))
                .await
                .expect("admitted"),
        );
    }
    let heard = new_peers(&events(&mut pair[0], Duration::from_millis(500)).await);
    assert_eq!(heard, vec![pair[1].id], "the pair meets");
    let counters = || redis.keys("junk:next:*");
    assert!(
        eventually(Duration::from_secs(5), || counters().len() == 40).await,
        "one counter per waiting name (the filled pair's is gone): {:?}",
        counters()
    );
    for client in waiting.drain(..) {
        client.drop_connection();
    }
    let gone = eventually(Duration::from_secs(10), || counters().is_empty()).await;
    assert!(gone, "the counters go with their waiters: {:?}", counters());
    drop(pair);
    let rooms = || redis.keys("junk:room:*");
    assert!(
        eventually(Duration::from_secs(10), || rooms().is_empty()).await,
        "{:?}",
        rooms()
    );
    for server in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}
