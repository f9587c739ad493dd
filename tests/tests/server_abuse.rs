//! What huddle_server does with hostile clients: each abuse gets its documented outcome, victims
//! do not panic, and the server keeps serving other rooms.
//! Run inside the loopback-only network namespace (see README).

use huddle_server::{DropReason, RefusalReason, ServerConfig};
use huddle_tests::*;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const QUIET: Duration = Duration::from_millis(300);

/// After any abuse, a fresh pair of stock peers still meets in a new room.
async fn still_serves(server: &huddle_server::RunningServer) {
    let url = server.room_url("afterwards");
    let mut peers = vec![StockPeer::connect(&url), StockPeer::connect(&url)];
    assert!(
        full_mesh(&mut peers, Duration::from_secs(30)).await,
        "server still serves"
    );
    exchange_all(&mut peers, Duration::from_secs(10))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_room_signals_are_dropped() {
    let server = server();
    let mut a = RawClient::connect(&server.room_url("a")).await.unwrap();
    let mut b1 = RawClient::connect(&server.room_url("b")).await.unwrap();
    let mut b2 = RawClient::connect(&server.room_url("b")).await.unwrap();
    // b1 hears of b2 (it is the caller).
    let ev = b1.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["NewPeer"], json!(b2.id));

    let offer = json!({ "Offer": VALID_SDP });
    a.signal(b1.id, offer.clone()).await.unwrap();
    assert!(
        b1.next_within(QUIET).await.unwrap().is_none(),
        "no cross-room delivery"
    );
    assert_eq!(server.metrics().dropped_count(DropReason::NotInRoom), 1);

    // The same signal inside the room passes, with the true sender.
    b2.signal(b1.id, offer.clone()).await.unwrap();
    let ev = b1.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["Signal"]["sender"], json!(b2.id));
    assert_eq!(ev["Signal"]["data"], offer);
    assert_eq!(server.metrics().signals_relayed.get(), 1);
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_dropped_and_counted() {
    let server = server();
    let mut x = RawClient::connect(&server.room_url("junk")).await.unwrap();
    let mut y = RawClient::connect(&server.room_url("junk")).await.unwrap();
    let _ = x.next_event(Duration::from_secs(5)).await; // NewPeer(y)
    x.send_text("this is not json").await.unwrap();
    x.send_text(r#"{"Signal":{"receiver":"nope","data":1}}"#)
        .await
        .unwrap();
    x.ws_binary(vec![0xff; 64]).await.unwrap();
    x.signal(y.id, json!({ "Offer": 42 })).await.unwrap();
    x.signal(y.id, json!({ "IceCandidate": "{not json" }))
        .await
        .unwrap();
    x.send_text(r#""KeepAlive""#).await.unwrap();
    assert!(
        y.next_within(QUIET).await.unwrap().is_none(),
        "nothing reaches y"
    );
    assert_eq!(
        server.metrics().dropped_count(DropReason::MalformedRequest),
        3
    );
    assert_eq!(server.metrics().dropped_count(DropReason::InvalidSignal), 2);
    // The sender stays connected: a valid signal still goes through.
    x.signal(y.id, json!({ "IceCandidate": "null" }))
        .await
        .unwrap();
    let ev = y.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["Signal"]["sender"], json!(x.id));
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sdp_never_reaches_a_stock_peer() {
    let server = server();
    let url = server.room_url("victim");
    // The attacker is first in the room, so the victim would answer the attacker's offer.
    let mut attacker = RawClient::connect(&url).await.unwrap();
    let victim = StockPeer::connect(&url);
    let ev = attacker.next_event(Duration::from_secs(10)).await.unwrap();
    let victim_id: matchbox_protocol::PeerId =
        serde_json::from_value(ev["NewPeer"].clone()).unwrap();
    for garbage in [
        json!({ "Offer": "garbage" }),
        json!({ "Offer": "v=0\r\n" }),
        json!({ "Offer": VALID_SDP.replace("a=fingerprint:sha-256 AB:CD\r\n", "") }),
        json!({ "IceCandidate": "{\"candidate\":\"candidate:zzz\"}" }),
    ] {
        attacker.signal(victim_id, garbage).await.unwrap();
    }
    // A barrier, not a quiet period: the four are counted, then nothing more.
    let dropped = || server.metrics().dropped_count(DropReason::InvalidSignal);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dropped() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(dropped(), 4);
    assert!(
        victim.is_running(),
        "the victim's message loop did not panic"
    );
    // The victim still connects to an honest peer.
    let mut peers = vec![victim, StockPeer::connect(&url)];
    let ok = settle(&mut peers, Duration::from_secs(30), |ps| {
        ps[0].connected.len() == 1 && ps[1].connected.len() == 1
    })
    .await;
    assert!(ok, "victim connects to an honest newcomer");
    exchange(&mut peers, &[(0, 1), (1, 0)], Duration::from_secs(10))
        .await
        .unwrap();
    let victim = peers.remove(0);
    assert_eq!(
        victim.loop_result().await,
        None,
        "message loop still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_the_connection_with_a_reason() {
    let server = server();
    let mut big = RawClient::connect(&server.room_url("big")).await.unwrap();
    let mut other = RawClient::connect(&server.room_url("big")).await.unwrap();
    let _ = big.next_event(Duration::from_secs(5)).await; // NewPeer(other)
    let huge = "x".repeat(70 * 1024);
    big.signal(other.id, json!({ "Offer": huge }))
        .await
        .unwrap();
    let msg = big.next_within(Duration::from_secs(5)).await;
    match msg {
        Ok(Some(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Size);
            assert!(
                frame.reason.contains("exceeds the limit of 65536 bytes"),
                "{}",
                frame.reason
            );
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(
        server.metrics().refused_count(RefusalReason::FrameTooLarge),
        1
    );
    // The other peer hears that it left.
    let ev = other.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["PeerLeft"], json!(big.id));
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_flood_is_rate_limited_then_closed() {
    let config = ServerConfig {
        signal_rate: 20.0,
        signal_burst: 50,
        max_violations: 100,
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let mut flooder = RawClient::connect(&server.room_url("flood")).await.unwrap();
    let mut target = RawClient::connect(&server.room_url("flood")).await.unwrap();
    let _ = flooder.next_event(Duration::from_secs(5)).await; // NewPeer(target)
    let candidate = json!({ "IceCandidate": "null" });
    let mut sent = 0;
    for _ in 0..2000 {
        if flooder.signal(target.id, candidate.clone()).await.is_err() {
            break;
        }
        sent += 1;
    }
    // The flooder is closed with a policy reason once it passed its violation budget.
    let closed = loop {
        match flooder.next_within(Duration::from_secs(5)).await {
            Ok(Some(Message::Close(Some(frame)))) => break Some(frame),
            Ok(Some(_)) => continue,
            _ => break None,
        }
    };
    let frame = closed.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(frame.reason.contains("rate-limited"), "{}", frame.reason);
    let mut delivered = 0;
    while let Some(ev) = target.next_event(QUIET).await {
        if ev.get("Signal").is_some() {
            delivered += 1;
        }
    }
    // Burst plus what the rate allowed while the flood lasted; far below what was sent.
    assert!(
        (50..150).contains(&delivered),
        "delivered {delivered} of {sent}"
    );
    assert!(server.metrics().dropped_count(DropReason::RateLimited) > 100);
    assert_eq!(server.metrics().refused_count(RefusalReason::Abuse), 1);
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_overflow_is_refused_with_a_reason() {
    let server = server();
    let url = server.room_url("small?capacity=2");
    let _a = RawClient::connect(&url).await.unwrap();
    let _b = RawClient::connect(&url).await.unwrap();
    let refused = RawClient::connect(&url)
        .await
        .err()
        .expect("third peer is refused");
    assert!(refused.contains("503"), "{refused}");
    assert!(
        refused.contains("room `small` is full (capacity 2)"),
        "{refused}"
    );
    assert_eq!(server.metrics().refused_count(RefusalReason::RoomFull), 1);
    // A capacity above the server's maximum is a bad request.
    let err = RawClient::connect(&server.room_url("x?capacity=100000"))
        .await
        .err()
        .unwrap();
    assert!(
        err.contains("400") && err.contains("exceeds the server maximum"),
        "{err}"
    );
    assert_eq!(server.metrics().refused_count(RefusalReason::BadRequest), 1);
    // One leaving frees a seat.
    drop(_a);
    let ok = eventually(Duration::from_secs(5), || server.rooms()[0].peers == 1).await;
    assert!(ok);
    RawClient::connect(&url)
        .await
        .expect("a seat is free again");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints() {
    let server = server();
    let _a = RawClient::connect(&server.room_url("public?capacity=4"))
        .await
        .unwrap();
    let _b = RawClient::connect(&server.room_url("hidden?private=1"))
        .await
        .unwrap();
    let _c = RawClient::connect(&server.room_url("stars?topology=star"))
        .await
        .unwrap();
    let health = http_get(server.local_addr(), "/health").await;
    assert!(health.contains(r#""status":"ok""#), "{health}");
    let rooms = http_get(server.local_addr(), "/rooms").await;
    let body = rooms.split("\r\n\r\n").nth(1).unwrap_or_default();
    let list: serde_json::Value = serde_json::from_str(body).unwrap();
    let paths: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["public", "stars"], "private rooms are not listed");
    assert_eq!(list[0]["capacity"], 4);
    assert_eq!(list[1]["topology"], "star");
    assert_eq!(list[0]["host"], json!(_a.id));
    let metrics = http_get(server.local_addr(), "/metrics").await;
    assert!(metrics.contains("huddle_joins_total 3"), "{metrics}");
    assert!(metrics.contains("huddle_connections 3"), "{metrics}");
    assert!(metrics.contains(r#"huddle_signals_dropped_total{reason="not_in_room"} 0"#));
}
