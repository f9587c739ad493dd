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

/// The JSON body of a `GET /rooms` response, and the rooms' paths.
fn room_list(response: &str) -> (serde_json::Value, Vec<String>) {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let list: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let paths = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["path"].as_str().map(String::from))
        .collect();
    (list, paths)
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
    let (list, paths) = room_list(&rooms);
    assert_eq!(paths, ["public", "stars"], "private rooms are not listed");
    assert_eq!(list[0]["capacity"], 4);
    assert_eq!(list[1]["topology"], "star");
    assert_eq!(list[0]["host"], json!(_a.id));
    let metrics = http_get(server.local_addr(), "/metrics").await;
    assert!(metrics.contains("huddle_joins_total 3"), "{metrics}");
    assert!(metrics.contains("huddle_connections 3"), "{metrics}");
    assert!(metrics.contains(r#"huddle_signals_dropped_total{reason="not_in_room"} 0"#));
}

/// A member that reads nothing while a room mate sends it valid 32 KiB offers (under the rate
/// limit) is closed once its queue is full: nothing piles up for it (this grew the server by
/// 133-144 MiB in 20 s when the queue was unbounded). The sender hears it left; the server goes on.
/// Returns how many offers went before.
async fn a_deaf_peer_is_closed(config: ServerConfig) -> usize {
    let config = ServerConfig {
        signal_rate: 10_000.0,
        signal_burst: 10_000,
        ..config
    };
    let server = server_with(config);
    let url = server.room_url("deaf");
    let deaf = RawClient::connect(&url).await.unwrap();
    let mut talker = RawClient::connect(&url).await.unwrap();
    let offer = json!({ "Offer": format!("{VALID_SDP}a=x-pad:{}\r\n", "p".repeat(32 * 1024)) });
    let mut sent = 0;
    while server.metrics().refused_count(RefusalReason::SlowReader) == 0 && sent < 20_000 {
        talker.signal(deaf.id, offer.clone()).await.unwrap();
        sent += 1;
    }
    assert_eq!(
        server.metrics().refused_count(RefusalReason::SlowReader),
        1,
        "closed after {sent} offers of 32 KiB"
    );
    eprintln!("the deaf peer was closed after {sent} offers of 32 KiB");
    // The talker hears it left.
    assert_eq!(talker.next_left().await, Some(deaf.id));
    drop(deaf);
    still_serves(&server).await;
    sent
}

/// The queue's message bound closes a deaf peer (8 messages)...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_is_closed_when_its_queue_is_full() {
    let config = ServerConfig {
        max_queued_messages: 8,
        max_queued_bytes: usize::MAX,
        ..ServerConfig::loopback()
    };
    a_deaf_peer_is_closed(config).await;
}

/// ... and so does its byte bound, whatever the message count (256 KiB: eight offers of 32 KiB
/// fill it, and the socket's own buffers take a few more before the writer stalls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_is_closed_when_its_queued_bytes_are_full() {
    let config = ServerConfig {
        max_queued_messages: 100_000,
        max_queued_bytes: 256 * 1024,
        ..ServerConfig::loopback()
    };
    let sent = a_deaf_peer_is_closed(config).await;
    assert!(sent < 1_000, "closed by its bytes, not after {sent} offers");
}

/// A connection that says nothing (not even the keep-alive matchbox clients send every 10 s) is
/// closed after the idle timeout, with the reason; one that keeps alive stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let config = ServerConfig {
        idle_timeout_secs: 1,
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let url = server.room_url("quiet");
    let mut silent = RawClient::connect(&url).await.unwrap();
    let mut lively = RawClient::connect(&url).await.unwrap();
    let mut closed = None;
    for _ in 0..10 {
        lively.send_text(r#""KeepAlive""#).await.unwrap();
        match silent.next_within(Duration::from_millis(300)).await {
            Ok(Some(Message::Close(frame))) => {
                closed = frame;
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("ended without a close frame: {e}"),
        }
    }
    let frame = closed.expect("the silent connection is closed");
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(frame.reason.contains("silent for 1s"), "{}", frame.reason);
    assert_eq!(server.metrics().refused_count(RefusalReason::Idle), 1);
    let ev = lively.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        ev["PeerLeft"],
        json!(silent.id),
        "the lively one stays and hears it"
    );
}

/// A connection that sends no request head (or only part of one, a line at a time) is closed
/// after the handshake timeout: it never holds a socket for long. A kept-alive HTTP connection
/// that goes quiet after a request is closed the same way; websockets are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_a_request_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = ServerConfig {
        handshake_timeout_secs: 1,
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let addr = server.local_addr();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    let websocket = RawClient::connect(&server.room_url("stays")).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let answered = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..answered]).starts_with("HTTP/1.1 200"));
    for (name, stream) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("kept", &mut kept),
    ] {
        let end = bounded(Duration::from_secs(5), name, async {
            loop {
                // A line a while, while it lasts (the slow one).
                let _ = stream.write_all(b"X-Slow: 1\r\n").await;
                match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) | Err(_) => continue,
                }
            }
        });
        end.await;
    }
    let waited = started.elapsed();
    eprintln!("closed after {waited:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "not before the timeout: {waited:?}"
    );
    assert_eq!(
        server.rooms().first().map(|r| r.peers),
        Some(1),
        "the websocket stays"
    );
    drop(websocket);
    still_serves(&server).await;
}

/// A message far over the limit, sent as 1 MiB frames, is refused at its first frame (the
/// server used to take the whole 32 MiB before its 1009 close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_message_is_refused_as_it_arrives() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let server = server();
    let mut big = RawClient::connect(&server.room_url("huge")).await.unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    for i in 0..32 {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(chunk.clone(), opcode, i == 31);
        if big.send_raw(Message::Frame(frame)).await.is_err() {
            break;
        }
        sent += 1;
    }
    if let Some(frame) = big.next_close().await {
        assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
    }
    assert_eq!(
        server.metrics().refused_count(RefusalReason::FrameTooLarge),
        1,
        "refused ({sent} MiB sent before the client noticed)"
    );
    still_serves(&server).await;
}

/// Room names are letters, digits and `-_.~`, of bounded length: others are refused with 400 and
/// the reason, before any websocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_names_are_bounded_and_plain() {
    let server = server();
    let long = "r".repeat(129);
    for (room, why) in [
        (long.as_str(), "exceeds 128"),
        ("caf%C3%A9", "letters, digits"),
        ("a%20b", "letters, digits"),
    ] {
        let err = RawClient::connect(&server.room_url(room))
            .await
            .err()
            .expect("refused");
        assert!(err.contains("400") && err.contains(why), "{room}: {err}");
    }
    assert_eq!(server.metrics().refused_count(RefusalReason::BadRequest), 3);
    let _ok = RawClient::connect(&server.room_url("Plain-name_1.2~x"))
        .await
        .unwrap();
}

/// One address holds `--max-connections-per-address` connections at most: the next is refused
/// with 429 and the reason, and a seat comes back when a connection ends. The server's own limit
/// is a seat taken at admission too (it was checked against a gauge, so a burst could pass it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address_and_in_all() {
    let config = ServerConfig {
        max_connections_per_address: 2,
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let a = RawClient::connect(&server.room_url("one")).await.unwrap();
    let _b = RawClient::connect(&server.room_url("two")).await.unwrap();
    let err = RawClient::connect(&server.room_url("three"))
        .await
        .err()
        .expect("a third from the same address is refused");
    assert!(
        err.contains("429") && err.contains("too many connections from 127.0.0.1 (at most 2)"),
        "{err}"
    );
    assert_eq!(
        server.metrics().refused_count(RefusalReason::AddressFull),
        1
    );
    drop(a);
    let mut back = false;
    for _ in 0..50 {
        if RawClient::connect(&server.room_url("three")).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the seat comes back when a connection ends");

    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let urls = ["x", "y", "z"].map(|room| server.room_url(room));
    let (a, b, c) = tokio::join!(
        RawClient::connect(&urls[0]),
        RawClient::connect(&urls[1]),
        RawClient::connect(&urls[2]),
    );
    let refused: Vec<String> = [a, b, c].into_iter().filter_map(Result::err).collect();
    assert_eq!(refused.len(), 1, "two seats for three at once: {refused:?}");
    assert!(refused[0].contains("503") && refused[0].contains("server is full"));
}

/// `GET /rooms` pages through the public rooms (sorted by path) with the total in a header, and
/// refuses a page it cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_is_paged() {
    let server = server();
    let mut clients = Vec::new();
    for room in ["r1", "r2", "r3", "r4", "r5"] {
        clients.push(RawClient::connect(&server.room_url(room)).await.unwrap());
    }
    let page = http_get(server.local_addr(), "/rooms?offset=1&limit=2").await;
    assert!(page.to_lowercase().contains("x-total-count: 5"), "{page}");
    assert_eq!(room_list(&page).1, ["r2", "r3"]);
    let bad = http_get(server.local_addr(), "/rooms?limit=many").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
}

/// With an auth secret a room admits only peers bringing a token for it: none, one for another
/// room, an expired one or garbage are refused with 401 and the reason (also by `GET /admit`, the
/// browsers' way to ask); stock matchbox peers with valid tokens meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_need_a_join_token_when_the_server_has_a_secret() {
    use huddle_server::token::mint;
    use std::time::SystemTime;
    const SECRET: &[u8] = b"shared with the game's backend";
    let config = ServerConfig {
        auth_secret: Some(String::from_utf8_lossy(SECRET).into_owned()),
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let hour = Duration::from_secs(3600);
    let url = |token: &str| server.room_url(&format!("lobby?next=2&token={token}"));
    let refusals = [
        (server.room_url("lobby?next=2"), "needs a join token"),
        (
            url(&mint(SECRET, "duel", SystemTime::now() + hour)),
            "not valid for room `lobby`",
        ),
        (
            url(&mint(b"guessed", "lobby", SystemTime::now() + hour)),
            "not valid",
        ),
        (
            url(&mint(SECRET, "lobby", SystemTime::now() - hour)),
            "expired",
        ),
        (url("12.zz"), "malformed"),
    ];
    for (bad, why) in &refusals {
        let err = RawClient::connect(bad).await.err().expect("refused");
        assert!(err.contains("401") && err.contains(why), "{why}: {err}");
    }
    assert_eq!(
        server.metrics().refused_count(RefusalReason::Unauthorized),
        refusals.len() as u64
    );
    // The same answer without a websocket, for browsers (`GET /admit/<room>`), counting nothing.
    let addr = server.local_addr();
    let probe = http_get(addr, "/admit/lobby?next=2").await;
    assert!(
        probe.starts_with("HTTP/1.1 401") && probe.contains("needs a join token"),
        "{probe}"
    );
    let token = mint(SECRET, "lobby", SystemTime::now() + hour);
    let probe = http_get(addr, &format!("/admit/lobby?next=2&token={token}")).await;
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
    assert_eq!(
        server.metrics().refused_count(RefusalReason::Unauthorized),
        refusals.len() as u64
    );
    let good = url(&mint(SECRET, "lobby", SystemTime::now() + hour));
    let mut peers = vec![StockPeer::connect(&good), StockPeer::connect(&good)];
    assert!(
        full_mesh(&mut peers, Duration::from_secs(30)).await,
        "peers with tokens meet"
    );
}

/// A room policy beats a squatter's query: the first arrival asks `capacity=1&topology=star` for
/// a well-known room, the policy fixes 8 seats in a mesh, and the next peers get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_policy_beats_a_squatters_query() {
    let config = ServerConfig {
        room_policy: vec!["pub-?capacity=8&topology=mesh".parse().unwrap()],
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let _squatter = RawClient::connect(&server.room_url("pub-main?capacity=1&topology=star"))
        .await
        .unwrap();
    let _b = RawClient::connect(&server.room_url("pub-main"))
        .await
        .unwrap();
    let _c = RawClient::connect(&server.room_url("pub-main"))
        .await
        .unwrap();
    let rooms = server.rooms();
    assert_eq!(rooms.len(), 1);
    assert_eq!((rooms[0].capacity, rooms[0].peers), (8, 3));
    assert_eq!(rooms[0].topology, huddle_server::Topology::Mesh);
    // Rooms outside the policy are as their first arrival asks.
    let _d = RawClient::connect(&server.room_url("mine?capacity=1"))
        .await
        .unwrap();
    let err = RawClient::connect(&server.room_url("mine"))
        .await
        .err()
        .expect("full");
    assert!(err.contains("503"), "{err}");
}

/// With a certificate and key the server speaks `wss://` (rustls): a client that trusts the
/// (self-signed, generated here) certificate gets its id; plain `ws://` to it gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_wss_with_a_certificate() {
    use futures::StreamExt;
    use std::sync::Arc;
    let (cert, key, der) = self_signed_tls("wss");
    let config = ServerConfig {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let url = server.room_url("secure");
    assert!(url.starts_with("wss://"), "{url}");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(client));
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(&url, None, false, Some(connector))
            .await
            .expect("a TLS websocket");
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("no error");
    assert!(
        first.to_text().unwrap_or_default().contains("IdAssigned"),
        "{first:?}"
    );
    let plain = url.replacen("wss://", "ws://", 1);
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(&plain),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "plain ws:// gets no websocket"
    );
}

/// A room's host kicks a member (huddle's `Kick` request): the member is closed with the reason,
/// the others hear it left, and its address is refused in that room (403) for the ban, not in
/// others. A kick from a peer that is not the host is dropped and counted. The operator kicks too,
/// with the auth secret as its bearer (a wrong one: 401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_and_the_operator_kick_and_the_kicked_stay_out_for_the_ban() {
    const SECRET: &str = "operator secret";
    let config = ServerConfig {
        auth_secret: Some(SECRET.into()),
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let token = |room: &str| {
        let expires = std::time::SystemTime::now() + Duration::from_secs(600);
        huddle_server::token::mint(SECRET.as_bytes(), room, expires)
    };
    let url = |room: &str| server.room_url(&format!("{room}?token={}", token(room)));
    let mut host = RawClient::connect(&url("k")).await.unwrap();
    let mut member = RawClient::connect(&url("k")).await.unwrap();
    let mut other = RawClient::connect(&url("k")).await.unwrap();
    let kick = |peer: matchbox_protocol::PeerId, ban_secs: u64| {
        json!({ "Kick": { "peer": peer, "ban_secs": ban_secs } }).to_string()
    };
    // Not the host: dropped.
    member.send_text(kick(other.id, 60)).await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(server.metrics().dropped_count(DropReason::NotHost), 1);
    assert_eq!(server.rooms()[0].peers, 3);
    // The host kicks the member for 2 s.
    host.send_text(kick(member.id, 2)).await.unwrap();
    let frame = member
        .next_close()
        .await
        .expect("a close frame with a reason");
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(
        frame.reason.contains("kicked by the host"),
        "{}",
        frame.reason
    );
    assert_eq!(other.next_left().await, Some(member.id));
    let err = RawClient::connect(&url("k")).await.err().expect("banned");
    assert!(
        err.contains("403") && err.contains("banned from room `k`"),
        "{err}"
    );
    let _elsewhere = RawClient::connect(&url("elsewhere")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let _back = RawClient::connect(&url("k"))
        .await
        .expect("the ban is over");
    // The operator.
    let path = format!("/rooms/k/kick?peer={}", other.id);
    let wrong = http_post(server.local_addr(), &path, Some("guess")).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let done = http_post(server.local_addr(), &path, Some(SECRET)).await;
    assert!(done.starts_with("HTTP/1.1 200"), "{done}");
    let closed = other.next_close().await;
    assert!(closed.is_some_and(|f| f.reason.contains("kicked by the operator")));
    assert_eq!(server.metrics().refused_count(RefusalReason::Kicked), 2);
    assert!(server.metrics().refused_count(RefusalReason::Banned) >= 1);
}

/// A star room's host names its heir (huddle's `Heir` request): when the host leaves, the heir
/// hosts and the others are introduced to it, not to the oldest client. An heir named by a member,
/// or an heir that is not in the room, is dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_hosts_heir_hosts_next_and_only_the_host_names_it() {
    let server = server();
    let url = server.room_url("heirs?topology=star");
    let mut host = RawClient::connect(&url).await.unwrap();
    let mut oldest = RawClient::connect(&url).await.unwrap();
    let mut heir = RawClient::connect(&url).await.unwrap();
    let mut last = RawClient::connect(&url).await.unwrap();
    let name = |peer: matchbox_protocol::PeerId| json!({ "Heir": { "peer": peer } }).to_string();
    // A member names itself; the host names a stranger: both dropped.
    oldest.send_text(name(oldest.id)).await.unwrap();
    let stranger = matchbox_protocol::PeerId(uuid::Uuid::from_u128(7));
    host.send_text(name(stranger)).await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(server.metrics().dropped_count(DropReason::NotHost), 1);
    assert_eq!(server.metrics().dropped_count(DropReason::NotInRoom), 1);
    host.send_text(name(heir.id)).await.unwrap();
    tokio::time::sleep(QUIET).await;
    drop(host);
    for client in [&mut oldest, &mut last] {
        let mut left = false;
        while let Some(event) = client.next_event(QUIET * 3).await {
            left |= event.get("PeerLeft").is_some();
            assert!(
                event.get("NewPeer").is_none(),
                "a client hears of nobody: {event}"
            );
        }
        assert!(left, "the host's leaving is told");
    }
    let mut introduced = Vec::new();
    while let Some(event) = heir.next_event(QUIET * 3).await {
        if let Some(peer) = event.get("NewPeer") {
            introduced.push(peer.as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(introduced, vec![oldest.id.to_string(), last.id.to_string()]);
    assert_eq!(server.rooms()[0].host, Some(heir.id.to_string()));
}

/// A host that names its heir again and again, well-formed every time: past the signal budget
/// each `Heir` is dropped and counted (a shared room would be written each time), and past the
/// violation budget the host is closed like any flooder; its heir then hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_repeating_its_heir_is_rate_limited_and_closed() {
    let server = server();
    let url = server.room_url("heir-flood?topology=star");
    let mut host = RawClient::connect(&url).await.unwrap();
    let _oldest = RawClient::connect(&url).await.unwrap();
    let heir = RawClient::connect(&url).await.unwrap();
    let name = json!({ "Heir": { "peer": heir.id } }).to_string();
    for _ in 0..2000 {
        if host.send_text(name.clone()).await.is_err() {
            break;
        }
    }
    let closed = loop {
        match host.next_within(Duration::from_secs(5)).await {
            Ok(Some(Message::Close(Some(frame)))) => break Some(frame),
            Ok(Some(_)) => continue,
            _ => break None,
        }
    };
    let frame = closed.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(server.metrics().dropped_count(DropReason::RateLimited) > 100);
    assert_eq!(server.metrics().refused_count(RefusalReason::Abuse), 1);
    let took = eventually(Duration::from_secs(5), || {
        server.rooms().first().and_then(|r| r.host.clone()) == Some(heir.id.to_string())
    });
    assert!(
        took.await,
        "the heir hosts after the flooder: {:?}",
        server.rooms()
    );
    still_serves(&server).await;
}

/// Join tokens carry a name and a role: a `moderator` that is not the room's host may kick, and a
/// kick bans the kicked player's name with its address, so the same name from another address is
/// refused (403) during the ban while another name from there gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_kicks_and_the_name_stays_out_from_any_address() {
    use huddle_server::token::{mint_with, Claims, MODERATOR};
    const SECRET: &str = "backend secret";
    let config = ServerConfig {
        auth_secret: Some(SECRET.into()),
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let url = |name: &str, role: Option<&str>| {
        let expires = std::time::SystemTime::now() + Duration::from_secs(600);
        let claims = Claims {
            name: Some(name.into()),
            role: role.map(str::to_string),
        };
        let token = mint_with(SECRET.as_bytes(), "m", expires, &claims).unwrap();
        server.room_url(&format!("m?token={token}"))
    };
    let mut host = RawClient::connect(&url("host", None)).await.unwrap();
    let mut moderator = RawClient::connect(&url("mod", Some(MODERATOR)))
        .await
        .unwrap();
    let mut troll = RawClient::connect(&url("troll", None)).await.unwrap();
    let kick = |peer: matchbox_protocol::PeerId| {
        json!({ "Kick": { "peer": peer, "ban_secs": 60 } }).to_string()
    };
    // A player with no role cannot kick the moderator.
    troll.send_text(kick(moderator.id)).await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(server.metrics().dropped_count(DropReason::NotHost), 1);
    moderator.send_text(kick(troll.id)).await.unwrap();
    let frame = troll.next_close().await.expect("a close frame");
    assert!(frame.reason.contains("kicked by a moderator"), "{frame:?}");
    assert_eq!(host.next_left().await, Some(troll.id));
    // The same name from another address: refused; another name from there: in.
    let other_address = "127.0.0.2".parse().unwrap();
    let err = RawClient::connect_from(&url("troll", None), other_address)
        .await
        .err()
        .expect("the name is banned");
    assert!(err.contains("403") && err.contains("banned"), "{err}");
    RawClient::connect_from(&url("newcomer", None), other_address)
        .await
        .expect("another name from another address gets in");
}

/// `GET /ice/<room>` hands a peer the STUN servers and short-lived TURN credentials (coturn's
/// `use-auth-secret` scheme: `<expiry>:<name>` and an HMAC of it), only with a join token for the
/// room when the server has an auth secret; the TURN secret itself never leaves the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_come_with_short_lived_turn_credentials() {
    use huddle_server::token::{mint_with, Claims};
    const SECRET: &str = "backend";
    let config = ServerConfig {
        auth_secret: Some(SECRET.into()),
        stun_url: vec!["stun:stun.example.com:3478".into()],
        turn_url: vec!["turn:turn.example.com:3478".into()],
        turn_secret: Some("turn-secret".into()),
        turn_ttl_secs: 600,
        ..ServerConfig::loopback()
    };
    let server = server_with(config);
    let addr = server.local_addr();
    let refused = http_get(addr, "/ice/lobby").await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let now = std::time::SystemTime::now();
    let token = mint_with(
        SECRET.as_bytes(),
        "lobby",
        now + Duration::from_secs(60),
        &Claims::named("ann"),
    )
    .unwrap();
    let answer = http_get(addr, &format!("/ice/lobby?token={token}")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("turn-secret"));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let servers: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(servers[0]["urls"][0], "stun:stun.example.com:3478");
    assert_eq!(servers[1]["urls"][0], "turn:turn.example.com:3478");
    let user = servers[1]["username"].as_str().unwrap_or_default();
    let (expiry, name) = user.split_once(':').unwrap_or_default();
    assert_eq!(name, "ann");
    let expiry: u64 = expiry.parse().unwrap();
    let in_ten = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    assert!(expiry.abs_diff(in_ten) <= 5, "{expiry} vs {in_ten}");
    assert!(servers[1]["credential"]
        .as_str()
        .is_some_and(|c| c.len() == 28));
    // A token for another room opens nothing here.
    let other =
        huddle_server::token::mint(SECRET.as_bytes(), "duel", now + Duration::from_secs(60));
    let refused = http_get(addr, &format!("/ice/lobby?token={other}")).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
}

/// A member knows every other member's id (and the join order), and may speak the resume
/// protocol perfectly: it still cannot take another's place. A token rebuilt around the victim's
/// id, or its own token in another room, is refused (401); a kicked member's own token is refused
/// (410) even after its ban; and a member that drops and resumes over and over holds one place,
/// not one per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_resume_anyone_elses_place() {
    let server = server_with(ServerConfig {
        resume_grace_secs: 30,
        ..ServerConfig::loopback()
    });
    let url = server.room_url("r?resumable");
    let resume_url = |room: &str, token: &str| server.room_url(&format!("{room}?resume={token}"));
    let mut host = RawClient::connect(&url).await.unwrap();
    host.resume_token().await.unwrap();
    let mut victim = RawClient::connect(&url).await.unwrap();
    victim.resume_token().await.unwrap();
    let mut liar = RawClient::connect(&url).await.unwrap();
    let own = liar.resume_token().await.unwrap();
    let victim_id = victim.id;
    victim.drop_connection();
    assert!(eventually(Duration::from_secs(5), || server.metrics().held.get() == 1).await);

    // The liar's own token with the victim's id in it.
    let forged = own.replacen(
        &liar.id.0.simple().to_string(),
        &victim_id.0.simple().to_string(),
        1,
    );
    let refused = RawClient::connect(&resume_url("r", &forged))
        .await
        .err()
        .unwrap_or_default();
    assert!(refused.starts_with("HTTP 401"), "{refused}");
    // Its own token, in another room.
    let refused = RawClient::connect(&resume_url("s", &own))
        .await
        .err()
        .unwrap_or_default();
    assert!(refused.starts_with("HTTP 401"), "{refused}");
    assert_eq!(server.metrics().refused_count(RefusalReason::Resume), 2);

    // Dropping and resuming again and again: one place, the same id.
    let liar_id = liar.id;
    liar.drop_connection();
    for _ in 0..5 {
        let again = RawClient::connect(&resume_url("r", &own)).await.unwrap();
        assert_eq!(again.id, liar_id);
        again.drop_connection();
    }
    assert!(eventually(Duration::from_secs(5), || server.metrics().held.get() == 2).await);
    assert_eq!(
        server.rooms()[0].peers,
        3,
        "host, victim (held), liar (held)"
    );

    // The host kicks the liar while it is away: its place goes at once, its token with it.
    let kick = json!({ "Kick": { "peer": liar_id, "ban_secs": 1 } }).to_string();
    host.send_text(kick).await.unwrap();
    assert_eq!(host.next_left().await, Some(liar_id));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = RawClient::connect(&resume_url("r", &own))
        .await
        .err()
        .unwrap_or_default();
    assert!(refused.starts_with("HTTP 410"), "{refused}");
    assert_eq!(server.rooms()[0].peers, 2);
    still_serves(&server).await;
}
