//! bevy_huddle against hostile peers: garbage on the data channels, malformed signals. Counted
//! and dropped, nothing panics, the lobby goes on.
//! Run inside the loopback-only network namespace (see README).

use bevy_huddle::prelude::*;
use huddle_tests::apps::*;
use huddle_tests::*;
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn garbage_frames_are_counted_and_dropped() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("hostile");
    let mut players = vec![Player::join(&url)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    let _guard = rt.enter();
    let mut hostile = StockPeer::connect_huddle_layout(&url);
    let ok = run_until(&mut players, LIMIT, |_| {
        hostile.poll();
        !hostile.connected.is_empty()
    });
    assert!(ok, "the hostile peer connects");
    let victim = players[0].id().unwrap();

    // Garbage on the control channel, then a valid hello so its game frames are read.
    hostile.send(0, victim, &[0xff, 0x00, 0x13, 0x37]);
    hostile.send(0, victim, &hello_like(&players[0]));
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .log()
        .joined
        .len()
        == 1));

    // Type ids follow the sorted type names: Blob 0, Chat 1, Pos 2.
    let garbage: Vec<Vec<u8>> = vec![
        vec![],                                                      // empty
        vec![0xC0, 1, 2, 3],                                         // unknown frame kind
        vec![0x3f],                   // type id continues in a missing varint
        vec![0x05, 1, 2, 3],          // unregistered type 5
        vec![0x01, 0xff, 0xff, 0xff], // Chat with a string length far past the end
        encode_message(1, &"x").into_iter().chain([9, 9]).collect(), // trailing bytes
        vec![0x41, 0, 3, 4, 1, 2],    // chunk 3 of 4 with no chunk 0
        vec![0x80, 1],                // truncated ping
    ];
    for g in &garbage {
        hostile.send(1, victim, g);
        hostile.send(2, victim, g);
    }
    // Then a valid chat line: it still arrives, with the true sender.
    hostile.send(1, victim, &encode_message(1, &Chat("still here".into())));
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps[0].log().chats.iter().any(|(_, c)| c.0 == "still here")
    });
    assert!(ok, "a valid message after the garbage arrives");
    let hostile_id = hostile.id().unwrap();
    assert_eq!(players[0].log().chats[0].0, hostile_id);
    // 8 garbage frames on each of 2 channels (the empty one may not be delivered by SCTP; the
    // one of kind 3 is a routed frame without an origin: forged). The unreliable channel's may
    // come after the chat line: wait for them.
    let dropped = |p: &Player| {
        let s = p.stats();
        s.frames_dropped + s.chunks_dropped + s.forged_dropped
    };
    run_until(&mut players, LIMIT, |ps| dropped(&ps[0]) >= 14);
    let stats = players[0].stats().clone();
    println!("{stats:?}");
    assert_eq!(stats.control_dropped, 1);
    assert!(dropped(&players[0]) >= 14, "{stats:?}");
    assert!(stats.chunks_dropped >= 1, "{stats:?}");

    // The lobby goes on: another player joins and talks.
    players.push(Player::join(&url));
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps[1].state() == LobbyState::InLobby
            && ps[1].roster().host == Some(victim)
            && ps[0].roster().peers.len() == 2
    });
    assert!(ok, "a newcomer joins the lobby");
    players[1].send(Outgoing::to_host(Chat("hi host".into())));
    let newcomer = players[1].id().unwrap();
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .log()
        .chats
        .iter()
        .any(|(f, c)| *f == newcomer && c.0 == "hi host")));
}

#[test]
fn malformed_signals_are_dropped_by_our_signaller() {
    // The stock server relays anything, so only our signaller stands between the garbage and
    // matchbox_socket's `unwrap`.
    let (rt, addr) = stock_server_on_runtime();
    let url = format!("ws://{addr}/signals");
    let mut attacker = rt
        .block_on(RawClient::connect(&url))
        .expect("attacker connects");
    let mut players = vec![Player::join(&url)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0].id().is_some()));
    let event = rt
        .block_on(attacker.next_event(Duration::from_secs(10)))
        .expect("attacker hears of the victim");
    let victim: bevy_huddle::PeerId = serde_json::from_value(event["NewPeer"].clone()).unwrap();
    for bad in [
        json!({ "Offer": "garbage" }),
        json!({ "Offer": "v=0\r\n" }),
        json!({ "Answer": 17 }),
        json!({ "IceCandidate": "{not json" }),
    ] {
        rt.block_on(attacker.signal(victim, bad)).unwrap();
    }
    let ok = run_until(&mut players, LIMIT, |ps| ps[0].stats().signals_dropped >= 4);
    assert!(ok, "all four dropped: {:?}", players[0].stats());
    // The victim never heard a valid offer from the attacker, so it is first: host. A newcomer
    // joins it and they talk.
    players.push(Player::join(&url));
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter()
            .all(|p| p.state() == LobbyState::InLobby && p.roster().peers.len() == 1)
    });
    assert!(ok, "the lobby forms despite the attacker");
    assert_eq!(players[1].roster().host, Some(victim));
    players[1].send(Outgoing::to_all(Chat("hello".into())));
    assert!(run_until(&mut players, LIMIT, |ps| !ps[0]
        .log()
        .chats
        .is_empty()));
}

/// A hostile signaling server that assigns our id twice (matchbox `expect`s one): the second is
/// dropped and counted, the first id stays, nothing panics.
#[test]
fn a_second_id_from_the_server_is_dropped() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    let (first, second) = (
        "00000000-0000-0000-0000-000000000001",
        "00000000-0000-0000-0000-000000000002",
    );
    rt.spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        for id in [first, second] {
            let text = json!({ "IdAssigned": id }).to_string();
            let _ = ws.send(Message::Text(text.into())).await;
        }
        // Keep the connection open, reading what the client says.
        while let Some(Ok(_)) = ws.next().await {}
    });
    let url = format!("ws://{addr}/room");
    let mut players = vec![Player::join(&url)];
    let dropped = run_until(&mut players, LIMIT, |ps| ps[0].stats().signals_dropped >= 1);
    assert!(dropped, "the second id is dropped and counted");
    run_for(&mut players, Duration::from_millis(500));
    let id = players[0].id().map(|p| p.to_string());
    assert_eq!(id.as_deref(), Some(first), "the first id stays");
    // Still in the room: alone, it may have become its own host meanwhile.
    assert_ne!(players[0].state(), LobbyState::Offline, "still connected");
}

/// A member that speaks the protocol perfectly and lies about who hosts: it sends every peer a
/// roster naming itself host, with epochs from small to the largest. Nobody follows it (each
/// refusal counted), host-bound messages still reach the true host, a newcomer that hears the
/// lie first still follows the host the other members back, and when the host leaves its true
/// successor takes over, not the liar.
#[test]
fn a_member_that_claims_to_host_is_refused_everywhere() {
    use bevy_huddle::protocol::control::Control;
    use bevy_huddle::protocol::election::Succession;
    let (rt, server) = server_on_runtime();
    let url = server.room_url("usurper");
    let mut players = vec![Player::join(&url)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.push(Player::join(&url));
    assert!(run_until(&mut players, LIMIT, lobby_complete));
    let (host, member) = (players[0].id().unwrap(), players[1].id().unwrap());
    let mut hostile = hostile_member(&rt, &url, &mut players, LIMIT);
    let _guard = rt.enter();
    hostile_greets(&mut hostile, &mut players, 1, LIMIT);
    assert!(run_until(&mut players, LIMIT, |ps| ps[1]
        .roster()
        .peers
        .len()
        == 2));
    let me = hostile.id().unwrap();
    let lie = |epoch: u64, others: &[PeerId]| {
        let mut order = vec![me];
        order.extend_from_slice(others);
        Control::Succession(Succession::in_join_order(epoch, order)).encode()
    };
    for epoch in [3, 1 << 20, u64::MAX] {
        for to in [host, member] {
            hostile.send(0, to, &lie(epoch, &[host, member]));
        }
    }
    let refused = |p: &Player| p.stats().election_refused;
    let counted = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        refused(&ps[0]) >= 3 && refused(&ps[1]) >= 3
    });
    assert!(
        counted,
        "every lie is refused and counted: {} and {}",
        refused(&players[0]),
        refused(&players[1])
    );
    for p in &players {
        assert_eq!(p.roster().host, Some(host), "nobody follows the liar");
        assert_eq!(p.roster().members.first(), Some(&host));
    }
    players[1].send(Outgoing::to_host(Chat("for the host".into())));
    assert!(run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        ps[0]
            .log()
            .chats
            .iter()
            .any(|(f, c)| *f == member && c.0 == "for the host")
    }));

    // A newcomer: the liar tells it first that it hosts, as soon as their link opens.
    players.push(Player::join(&url));
    let linked = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        ps[2].id().is_some_and(|n| hostile.connected.contains(&n))
    });
    assert!(linked, "the liar links to the newcomer");
    let newcomer = players[2].id().unwrap();
    hostile.send(0, newcomer, &hello_like(&players[2]));
    hostile.send(0, newcomer, &lie(1 << 40, &[host, member, newcomer]));
    let settled = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        ps[2].roster().host == Some(host) && ps[0].roster().peers.len() == 3
    });
    assert!(
        settled,
        "the newcomer follows the host: {:?}",
        players[2].roster()
    );
    // Past the newcomer's grace, and still so.
    run_for(&mut players, Duration::from_secs(1));
    assert_eq!(players[2].roster().host, Some(host));

    // The host leaves: its successor is the member that joined next, whatever the liar says.
    players.remove(0);
    let moved = run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        ps.iter().all(|p| p.roster().host == Some(member))
    });
    assert!(moved, "the true successor hosts");
    let before = refused(&players[0]) + refused(&players[1]);
    for to in [member, newcomer] {
        hostile.send(0, to, &lie(u64::MAX, &[member, newcomer]));
    }
    assert!(run_until(&mut players, LIMIT, |ps| {
        hostile.poll();
        refused(&ps[0]) + refused(&ps[1]) >= before + 2
    }));
    for p in &players {
        assert_eq!(p.roster().host, Some(member));
    }
}
