//! A join storm against huddle_server with stock matchbox_socket 0.15 clients over real WebRTC: 100
//! clients join 25 rooms at once, 10 times. A test binary of its own, so its 100 peers do not
//! starve the other WebRTC tests of CPU. Run inside the loopback-only network namespace (see
//! README).

use huddle_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_storm_every_room_fully_meshed() {
    let server = server();
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
        for p in peers {
            p.leave();
        }
        let drained = eventually(Duration::from_secs(10), || server.rooms().is_empty()).await;
        assert!(drained, "rooms are forgotten when their peers leave");
    }
    assert_eq!(server.metrics().joins.get(), 1000);
    server.shutdown().await.unwrap();
}
