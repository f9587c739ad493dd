//! huddle_server with stock matchbox_socket 0.15 clients over real WebRTC: mesh rooms, `?next=N`,
//! isolation, star rooms with host migration, and a join storm.
//! Run inside the loopback-only network namespace (see README).

use huddle_tests::*;
use std::collections::BTreeSet;
use std::time::Duration;

const CONNECT: Duration = Duration::from_secs(30);

async fn mesh_of(n: usize) {
    let server = server();
    let url = server.room_url(&format!("mesh{n}"));
    let mut peers: Vec<StockPeer> = (0..n).map(|_| StockPeer::connect(&url)).collect();
    assert!(
        full_mesh(&mut peers, CONNECT).await,
        "{n} peers reach a full mesh"
    );
    exchange_all(&mut peers, Duration::from_secs(20))
        .await
        .expect("every message arrives with its sender");
    assert_eq!(server.metrics().joins.get(), n as u64);
    assert_eq!(server.rooms().len(), 1);
    assert_eq!(server.rooms()[0].peers, n);
    for p in peers {
        assert!(p.is_running());
        p.leave();
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_of_two() {
    mesh_of(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_of_three() {
    mesh_of(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_of_four() {
    mesh_of(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_two_pairs_arrivals_and_rooms_stay_isolated() {
    let server = server();
    let pair_url = server.room_url("duel?next=2");
    let mut peers: Vec<StockPeer> = (0..4).map(|_| StockPeer::connect(&pair_url)).collect();
    // Two more peers in another room, at the same time.
    peers.push(StockPeer::connect(&server.room_url("other")));
    peers.push(StockPeer::connect(&server.room_url("other")));
    let ok = settle(&mut peers, CONNECT, |ps| {
        ps.iter().all(|p| p.connected.len() == 1)
    })
    .await;
    let counts: Vec<usize> = peers.iter().map(|p| p.connected.len()).collect();
    assert!(ok, "every peer has exactly one partner: {counts:?}");
    // Let any stray introduction show up before checking who met whom.
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(&mut peers, Duration::ZERO, |_| true).await;
    let ids: Vec<_> = peers.iter_mut().map(|p| p.id().unwrap()).collect();
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(p.connected.len(), 1, "peer {i} has one partner");
        let partner = *p.connected.iter().next().unwrap();
        let j = ids.iter().position(|id| *id == partner).unwrap();
        assert!(peers[j].connected.contains(&ids[i]), "pairing is mutual");
        assert_eq!(
            i < 4,
            j < 4,
            "duel peers pair among themselves, the others too"
        );
    }
    let rooms = server.rooms();
    assert_eq!(rooms.iter().filter(|r| r.next == Some(2)).count(), 2);
    assert_eq!(rooms.iter().filter(|r| r.path == "other").count(), 1);
    server.shutdown().await.unwrap();
}

/// A peer that arrives in a `?next=2` room and leaves before anyone came frees its seat: the
/// next two arrivals meet (they were each left alone in a room of their own, 4 of 4 runs, while
/// stock matchbox_server paired them), and no group is left behind once they go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_leaver_of_a_next_group_strands_nobody() {
    let server = server();
    let url = server.room_url("pair?next=2");
    let mut early = vec![StockPeer::connect(&url)];
    assert!(settle(&mut early, CONNECT, |ps| ps[0].id().is_some()).await);
    let joined = settle(&mut early, CONNECT, |_| server.rooms().len() == 1).await;
    assert!(joined, "the early peer is in its room");
    early.pop().expect("the early peer").leave();
    let gone = settle(&mut [], CONNECT, |_| server.rooms().is_empty()).await;
    assert!(gone, "its room is gone");
    let mut pair: Vec<StockPeer> = (0..2).map(|_| StockPeer::connect(&url)).collect();
    assert!(full_mesh(&mut pair, CONNECT).await, "the next two meet");
    assert_eq!(server.rooms().len(), 1);
    for p in pair {
        p.leave();
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_room_connects_to_host_and_survives_host_leaving() {
    let server = server();
    let url = server.room_url("big?topology=star");
    // Join one by one (each in the room before the next connects) so the join order is known.
    let mut peers = Vec::new();
    for k in 0..4 {
        peers.push(StockPeer::connect(&url));
        let joined = eventually(CONNECT, || {
            server.rooms().first().map(|r| r.peers) == Some(k + 1)
        });
        assert!(joined.await, "peer {k} joins");
        let ok = settle(&mut peers, CONNECT, |ps| ps[0].connected.len() == k).await;
        assert!(ok, "client {k} connects to the host");
    }
    let ids: Vec<_> = peers.iter_mut().map(|p| p.id().unwrap()).collect();
    assert_eq!(server.rooms()[0].host, Some(ids[0].to_string()));
    // Clients see the host only (each end reports its link in its own time).
    let host_only = BTreeSet::from([ids[0]]);
    let ok = settle(&mut peers, CONNECT, |ps| {
        ps[1..].iter().all(|p| p.connected == host_only)
    })
    .await;
    let seen: Vec<_> = peers.iter().map(|p| p.connected.clone()).collect();
    assert!(ok, "clients are linked to the host only: {seen:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle(&mut peers, Duration::ZERO, |_| true).await;
    for p in &peers[1..] {
        assert_eq!(p.connected, host_only, "and stay so");
    }

    // The host leaves: the oldest client becomes host and the others connect to it.
    let host = peers.remove(0);
    host.leave();
    let ok = settle(&mut peers, CONNECT, |ps| {
        ps[0].connected == BTreeSet::from([ids[2], ids[3]])
            && ps[1].connected == BTreeSet::from([ids[1]])
            && ps[2].connected == BTreeSet::from([ids[1]])
    })
    .await;
    let seen: Vec<_> = peers.iter().map(|p| p.connected.clone()).collect();
    assert!(ok, "the star re-forms around the oldest client: {seen:?}");
    assert_eq!(server.rooms()[0].host, Some(ids[1].to_string()));
    assert_eq!(server.metrics().host_changes.get(), 1);
    // Messages flow both ways between the new host and each client.
    exchange(
        &mut peers,
        &[(0, 1), (1, 0), (0, 2), (2, 0)],
        Duration::from_secs(20),
    )
    .await
    .expect("traffic resumes through the new host");
    server.shutdown().await.unwrap();
}

/// `url` with `query` added (`?` or `&`).
fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// The `NewPeer`s and `PeerLeft`s a client gets within `limit`, in order.
async fn introductions(client: &mut RawClient, limit: Duration) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    while let Some(event) = client.next_event(limit).await {
        if event.get("NewPeer").is_some() || event.get("PeerLeft").is_some() {
            seen.push(event);
        }
    }
    seen
}

/// A peer whose connection drops keeps its place for the grace period: the others are not told
/// it left, and when it comes back with its resume token it has the same id, is still the host,
/// and is introduced to the newcomer that joined while it was away (which it calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_peer_resumes_its_place() {
    let server = server_with(huddle_server::ServerConfig {
        resume_grace_secs: 10,
        ..huddle_server::ServerConfig::loopback()
    });
    let url = server.room_url("keep?resumable");
    let mut a = RawClient::connect(&url).await.unwrap();
    let token = a.resume_token().await.expect("a resume token after our id");
    let mut b = RawClient::connect(&url).await.unwrap();
    b.resume_token().await.unwrap();
    let a_id = a.id;
    a.drop_connection();
    assert!(eventually(Duration::from_secs(5), || server.metrics().held.get() == 1).await);
    let c = RawClient::connect(&server.room_url("keep")).await.unwrap();
    let seen = introductions(&mut b, Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        vec![serde_json::json!({ "NewPeer": c.id })],
        "b hears of c, not that a left"
    );

    let mut back = RawClient::connect(&with_query(
        &server.room_url("keep"),
        &format!("resume={token}"),
    ))
    .await
    .unwrap();
    assert_eq!(back.id, a_id, "the same id");
    assert!(
        back.resume_token().await.is_some(),
        "a token for the next drop"
    );
    let seen = introductions(&mut back, Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        vec![serde_json::json!({ "NewPeer": c.id })],
        "it calls the newcomer it missed"
    );
    assert_eq!(server.metrics().resumes.get(), 1);
    assert_eq!(server.metrics().held.get(), 0);
    assert_eq!(server.metrics().leaves.get(), 0);
    let rooms = server.rooms();
    assert_eq!(
        (rooms[0].peers, rooms[0].host.clone()),
        (3, Some(a_id.to_string()))
    );
    server.shutdown().await.unwrap();
}

/// A place not resumed within the grace period is gone: the others hear the peer left, and its
/// token is refused (410) from then on. A client that closes its websocket itself has left at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_not_resumed_in_time_is_gone() {
    let server = server_with(huddle_server::ServerConfig {
        resume_grace_secs: 1,
        ..huddle_server::ServerConfig::loopback()
    });
    let url = server.room_url("brief?resumable");
    let mut a = RawClient::connect(&url).await.unwrap();
    let token = a.resume_token().await.unwrap();
    let mut b = RawClient::connect(&url).await.unwrap();
    b.resume_token().await.unwrap();
    let a_id = a.id;
    a.drop_connection();
    assert_eq!(
        b.next_left().await,
        Some(a_id),
        "within the grace period and 5 s"
    );
    let refused = RawClient::connect(&with_query(
        &server.room_url("brief"),
        &format!("resume={token}"),
    ))
    .await
    .err()
    .unwrap_or_default();
    assert!(refused.starts_with("HTTP 410"), "{refused}");
    // A close frame is a goodbye: no place is held.
    let mut c = RawClient::connect(&url).await.unwrap();
    c.resume_token().await.unwrap();
    let c_id = c.id;
    c.send_raw(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
    assert_eq!(b.next_left().await, Some(c_id));
    assert_eq!(server.metrics().held.get(), 0);
    server.shutdown().await.unwrap();
}

/// A restarted server (same address, same `--resume-secret`) rebuilds a room from the tokens of
/// the peers that come back, in join order whatever order they come in: nobody is introduced to
/// a peer it already knows, and each returning peer calls the newcomer that joined meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_rebuilds_the_room_from_resume_tokens() {
    let config = huddle_server::ServerConfig {
        resume_secret: Some("shared by every restart".into()),
        ..huddle_server::ServerConfig::loopback()
    };
    let first = server_with(config.clone());
    let url = first.room_url("phoenix?resumable");
    let mut a = RawClient::connect(&url).await.unwrap();
    let token_a = a.resume_token().await.unwrap();
    let mut b = RawClient::connect(&url).await.unwrap();
    let token_b = b.resume_token().await.unwrap();
    let (a_id, b_id) = (a.id, b.id);
    let addr = first.local_addr();
    first.shutdown().await.unwrap();
    assert!(a.next_close().await.is_some() && b.next_close().await.is_some());

    let second = server_with(huddle_server::ServerConfig {
        bind: addr,
        ..config
    });
    let plain = second.room_url("phoenix");
    let mut c = RawClient::connect(&plain).await.unwrap();
    let mut b = RawClient::connect(&with_query(&plain, &format!("resume={token_b}")))
        .await
        .unwrap();
    assert_eq!(b.id, b_id);
    b.resume_token().await.unwrap();
    let mut a = RawClient::connect(&with_query(&plain, &format!("resume={token_a}")))
        .await
        .unwrap();
    assert_eq!(a.id, a_id);
    a.resume_token().await.unwrap();
    let new_peer_c = serde_json::json!({ "NewPeer": c.id });
    assert_eq!(
        introductions(&mut b, Duration::from_millis(500)).await,
        vec![new_peer_c.clone()]
    );
    assert_eq!(
        introductions(&mut a, Duration::from_millis(300)).await,
        vec![new_peer_c]
    );
    assert!(
        introductions(&mut c, Duration::from_millis(300))
            .await
            .is_empty(),
        "c calls nobody"
    );
    let rooms = second.rooms();
    assert_eq!(
        (rooms[0].peers, rooms[0].host.clone()),
        (3, Some(a_id.to_string()))
    );
    assert_eq!(second.metrics().resumes.get(), 2);
    second.shutdown().await.unwrap();
}
