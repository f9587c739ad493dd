//! A join storm against huddle_server with stock matchbox_socket 0.15 clients over real WebRTC: 100
//! clients join 25 rooms at once, 10 times, while a client asks `GET /rooms` all along. A test
//! binary of its own, so its 100 peers do not starve the other WebRTC tests of CPU. Run inside
//! the loopback-only network namespace (see README).

use huddle_tests::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The rooms `GET /rooms` lists: (path, peers) each; panics on anything but a 200 with a list.
async fn listed(addr: std::net::SocketAddr) -> Vec<(String, u64)> {
    let response = http_get(addr, "/rooms?limit=1000").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let list: serde_json::Value = serde_json::from_str(body).expect("a JSON list");
    list.as_array()
        .expect("a JSON list")
        .iter()
        .map(|r| {
            let path = r["path"].as_str().unwrap_or_default().to_string();
            (path, r["peers"].as_u64().unwrap_or_default())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_storm_every_room_fully_meshed() {
    let server = server();
    let addr = server.local_addr();
    // The room list stays served and sane during the storm (answered from a snapshot, never
    // more than 25 rooms of at most 4).
    let storming = Arc::new(AtomicBool::new(true));
    let poller = tokio::spawn({
        let storming = storming.clone();
        async move {
            let mut answers = 0u64;
            while storming.load(Ordering::Relaxed) {
                let rooms = listed(addr).await;
                assert!(rooms.len() <= 25, "{rooms:?}");
                assert!(rooms.iter().all(|(_, peers)| *peers <= 4), "{rooms:?}");
                answers += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        }
    });
    for rep in 0..10 {
        let mut peers: Vec<StockPeer> = (0..100)
            .map(|i| StockPeer::connect(&server.room_url(&format!("storm{rep}-{}", i % 25))))
            .collect();
        let ok = settle(&mut peers, Duration::from_secs(90), |ps| {
            ps.iter().all(|p| p.connected.len() == 3)
        })
        .await;
        let short = peers.iter().filter(|p| p.connected.len() != 3).count();
        assert!(
            ok,
            "repetition {rep}: {short} of 100 peers not fully meshed"
        );
        // Once the snapshot is refreshed, the list shows every room full.
        let mut full = false;
        for _ in 0..40 {
            let rooms = listed(addr).await;
            if rooms.len() == 25 && rooms.iter().all(|(_, peers)| *peers == 4) {
                full = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(full, "repetition {rep}: /rooms lists the 25 full rooms");
        for p in peers {
            p.leave();
        }
        let drained = eventually(Duration::from_secs(10), || server.rooms().is_empty()).await;
        assert!(drained, "rooms are forgotten when their peers leave");
    }
    storming.store(false, Ordering::Relaxed);
    let answers = bounded(Duration::from_secs(10), "the poller", poller)
        .await
        .expect("every /rooms answer was a sane list");
    eprintln!("/rooms answered {answers} times during the storms");
    assert!(answers > 10);
    assert_eq!(server.metrics().joins.get(), 1000);
    server.shutdown().await.unwrap();
}
