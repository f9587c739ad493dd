//! bevy_huddle end to end: headless Bevy apps over real WebRTC through a real signaling server.
//! Run inside the loopback-only network namespace (see README).

use bevy_huddle::prelude::*;
use bevy_huddle::{Conditions, HuddleConfig, JoinRefusal, LeaveReason, LinkConditioner};
use huddle_tests::apps::*;
use huddle_tests::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// The first player joins and becomes host; then `n - 1` more join at once.
fn lobby(url: &str, n: usize) -> Vec<Player> {
    lobby_joined_by(url, n, Player::join)
}

/// [`lobby`] of players that `join` makes.
fn lobby_joined_by(url: &str, n: usize, join: impl Fn(&str) -> Player) -> Vec<Player> {
    let mut players = vec![join(url)];
    assert!(
        run_until(&mut players, LIMIT, |ps| ps[0].roster().is_host()),
        "the first player becomes host"
    );
    players.extend((1..n).map(|_| join(url)));
    let ok = run_until(&mut players, LIMIT, lobby_complete);
    let views: Vec<_> = players
        .iter()
        .map(|p| (p.state(), p.roster().clone()))
        .collect();
    assert!(ok, "{n} players in one lobby: {views:#?}");
    players
}

fn check_roles_and_host(players: &[Player]) {
    let first = players[0].id().unwrap();
    let order = players[0].roster().members.clone();
    assert_eq!(
        order[0], first,
        "the first player is host and first in line"
    );
    for p in players {
        let r = p.roster();
        assert_eq!(r.host, Some(first));
        assert_eq!(r.members, order, "every peer agrees on the succession");
        let me = order.iter().position(|m| Some(*m) == r.me).unwrap();
        for (i, other) in order.iter().enumerate() {
            if i == me {
                continue;
            }
            let want = if me < i { Role::Caller } else { Role::Receiver };
            assert_eq!(r.roles.get(other), Some(&want), "role of {me} toward {i}");
        }
    }
}

/// Every player sends a chat line and a position to everyone, and one directed line to the next.
fn exchange(players: &mut [Player]) {
    let ids: Vec<PeerId> = players.iter().map(|p| p.id().unwrap()).collect();
    let n = players.len();
    for (i, p) in players.iter_mut().enumerate() {
        p.send(Outgoing::to_all(Chat(format!("hello from {i}"))));
        p.send(Outgoing::to_peer(
            ids[(i + 1) % n],
            Chat(format!("psst from {i}")),
        ));
    }
    // Everything sent must be in before the logs are checked: the directed line from the
    // previous player can come a frame after its broadcast.
    let all_arrived = |ps: &[Player]| {
        ps.iter().enumerate().all(|(j, p)| {
            (0..n).filter(|&i| i != j).all(|i| {
                let log = p.log();
                let has = |line: String| log.chats.contains(&(ids[i], Chat(line)));
                has(format!("hello from {i}"))
                    && ((i + 1) % n != j || has(format!("psst from {i}")))
                    && log
                        .positions
                        .iter()
                        .any(|(f, pos)| *f == ids[i] && pos.x == i as f32)
            })
        })
    };
    // Unreliable positions may be lost: send them every 20 ms until each has arrived.
    let deadline = Instant::now() + LIMIT;
    while !all_arrived(players) {
        assert!(
            Instant::now() < deadline,
            "chat and positions arrive from everyone"
        );
        for (i, p) in players.iter_mut().enumerate() {
            p.send(Outgoing::to_all(Pos {
                seq: 0,
                x: i as f32,
            }));
        }
        run_for(players, Duration::from_millis(20));
    }
    for (j, p) in players.iter().enumerate() {
        let prev = (j + n - 1) % n;
        let directed: Vec<_> = p
            .log()
            .chats
            .iter()
            .filter(|(_, c)| c.0.starts_with("psst"))
            .collect();
        assert_eq!(directed.len(), 1, "one directed line reaches player {j}");
        assert_eq!(directed[0], &(ids[prev], Chat(format!("psst from {prev}"))));
    }
}

fn lobby_of(n: usize) {
    let (_rt, server) = server_on_runtime();
    let mut players = lobby(&server.room_url("game"), n);
    check_roles_and_host(&players);
    exchange(&mut players);
    for p in &players {
        assert!(p.log().errors.is_empty(), "{:?}", p.log().errors);
        assert_eq!(p.log().hosts.len(), 1, "host announced once");
    }
}

#[test]
fn lobby_of_two() {
    lobby_of(2);
}

#[test]
fn lobby_of_three() {
    lobby_of(3);
}

#[test]
fn lobby_of_four() {
    lobby_of(4);
}

#[test]
fn large_reliable_message_arrives_intact() {
    let (_rt, server) = server_on_runtime();
    let mut players = lobby(&server.room_url("big"), 2);
    let data: Vec<u8> = (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let to = players[1].id().unwrap();
    players[0].send(Outgoing::to_peer(to, Blob(data.clone())));
    players[0].send(Outgoing::to_peer(to, Chat("after the blob".into())));
    let ok = run_until(&mut players, LIMIT, |ps| ps[1].log().blobs.len() == 1);
    assert!(ok, "the blob arrives");
    assert_eq!(players[1].log().blobs[0].1 .0, data);
    assert!(players[1]
        .log()
        .chats
        .iter()
        .any(|(_, c)| c.0 == "after the blob"));
}

#[test]
fn reliable_messages_stay_in_order_behind_a_chunked_one() {
    let (_rt, server) = server_on_runtime();
    let mut players = lobby(&server.room_url("order"), 2);
    let to = players[1].id().unwrap();
    // 2 MiB needs many windows, so the transfer spans many frames.
    players[0].send(Outgoing::to_peer(to, Blob(vec![9u8; 2 << 20])));
    // A frame later (within one frame, messages of different types have no defined order).
    players[0].update();
    players[0].send(Outgoing::to_peer(to, Chat("after the blob".into())));
    let mut overtaken = false;
    let ok = run_until(&mut players, LIMIT, |ps| {
        let log = ps[1].log();
        overtaken |= log.blobs.is_empty() && !log.chats.is_empty();
        log.blobs.len() == 1 && log.chats.len() == 1
    });
    assert!(ok, "the blob and the line after it arrive");
    assert!(!overtaken, "the line did not overtake the blob");
    assert_eq!(players[1].log().blobs[0].1 .0.len(), 2 << 20);
}

#[test]
fn stock_matchbox_server_lobby_agrees_on_host() {
    let (_rt, addr) = stock_server_on_runtime();
    let url = format!("ws://{addr}/stock");
    let mut players = lobby(&url, 3);
    // Stock matchbox_signaling orders simultaneous joins inconsistently (a newcomer can be
    // announced before it is inserted), so roles need not follow the host's join order; they
    // must still be mirror images on each link, and everyone agrees on host and succession.
    let first = players[0].id().unwrap();
    let order = players[0].roster().members.clone();
    for p in &players {
        assert_eq!(p.roster().host, Some(first));
        assert_eq!(p.roster().members, order);
        for q in &players {
            let (Some(a), Some(b)) = (p.id(), q.id()) else {
                continue;
            };
            if a != b {
                let ab = p.roster().roles[&b];
                let ba = q.roster().roles[&a];
                assert_ne!(ab, ba, "one calls, the other answers");
            }
        }
    }
    exchange(&mut players);
}

#[test]
fn host_leaving_elects_the_next_in_join_order() {
    let (_rt, server) = server_on_runtime();
    let mut players = lobby(&server.room_url("migrate"), 4);
    let order = players[0].roster().members.clone();
    // Drop the host's app: its socket closes.
    let host_index = players
        .iter()
        .position(|p| p.id() == Some(order[0]))
        .unwrap();
    let gone = players.remove(host_index);
    let left_at = Instant::now();
    drop(gone);
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter()
            .all(|p| p.roster().host == Some(order[1]) && p.roster().peers.len() == 2)
    });
    assert!(ok, "everyone agrees on the next host");
    let mut latest = Duration::ZERO;
    for p in &players {
        let hosts: Vec<_> = p.log().hosts.iter().map(|(h, _)| h.new).collect();
        assert_eq!(hosts, vec![order[0], order[1]], "announced once each");
        latest = latest.max(p.log().hosts[1].1.duration_since(left_at));
        assert_eq!(p.log().left.len(), 1);
        assert_eq!(p.log().left[0].peer, order[0]);
        // `Left` when the server's word comes before the data channels close, else `Disconnected`.
        assert!(matches!(
            p.log().left[0].reason,
            LeaveReason::Left | LeaveReason::Disconnected
        ));
        assert_eq!(p.roster().members, order[1..].to_vec());
    }
    println!("new host agreed by all {latest:?} after the host left");
    // Reliable messages after the switch all arrive.
    for (i, p) in players.iter_mut().enumerate() {
        for k in 0..20 {
            p.send(Outgoing::to_all(Chat(format!("{i}:{k}"))));
        }
    }
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter().all(|p| {
            p.log()
                .chats
                .iter()
                .filter(|(_, c)| c.0.contains(':'))
                .count()
                == 40
        })
    });
    assert!(ok, "every reliable message after the switch arrives");
    for p in &players {
        let from: BTreeSet<_> = p.log().chats.iter().map(|(f, _)| *f).collect();
        assert_eq!(from.len(), 2);
    }
}

#[test]
fn message_type_mismatch_is_reported() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("mismatch");
    let mut players = vec![Player::join(&url)];
    run_until(&mut players, LIMIT, |ps| ps[0].roster().is_host());
    players.push(Player::join_with(
        &url,
        Types::ChatOnly,
        HuddleConfig::default(),
    ));
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps.iter().all(|p| {
            p.log()
                .errors
                .iter()
                .any(|e| matches!(e, HuddleError::MessageTypeMismatch { .. }))
        })
    });
    assert!(ok, "both sides report the mismatch");
    let text = players[0].log().errors[0].to_string();
    assert!(
        text.contains("Pos:Unreliable") && text.contains("Chat:Reliable"),
        "{text}"
    );
    // Neither treats the other as a lobby member.
    assert!(players.iter().all(|p| p.log().joined.is_empty()));
}

#[test]
fn conditioner_at_20_percent_loss_degrades_unreliable_only() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("lossy");
    let mut config = HuddleConfig::default();
    config.protocol.ping_interval = Duration::from_millis(50);
    let mut players = vec![Player::join_with(&url, Types::All, config.clone())];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.push(Player::join_with(&url, Types::All, config));
    assert!(run_until(&mut players, LIMIT, lobby_complete));
    let conditions = Conditions::new(Duration::from_millis(20), Duration::from_millis(5), 0.2);
    for p in &mut players {
        p.app.insert_resource(LinkConditioner::both(conditions));
    }
    for k in 0..200u32 {
        players[0].send(Outgoing::to_all(Chat(k.to_string())));
        players[0].send(Outgoing::to_all(Pos { seq: k, x: 0.0 }));
        run_for(&mut players, Duration::from_millis(5));
    }
    let ok = run_until(&mut players, LIMIT, |ps| ps[1].log().chats.len() == 200);
    assert!(
        ok,
        "every reliable message arrives: {}",
        players[1].log().chats.len()
    );
    run_for(&mut players, Duration::from_secs(1));
    let chats: Vec<String> = players[1]
        .log()
        .chats
        .iter()
        .map(|(_, c)| c.0.clone())
        .collect();
    let want: Vec<String> = (0..200).map(|k: u32| k.to_string()).collect();
    assert_eq!(chats, want, "complete and in order");
    let positions = players[1].log().positions.len();
    // About 160 of 200 (binomial, sd ~6): well inside (120, 190).
    assert!(
        (121..190).contains(&positions),
        "{positions} positions of 200 arrived"
    );
    let stats = players[0].link_stats(players[1].id().unwrap()).unwrap();
    println!(
        "conditioned link: {stats:?}; dropped by the conditioner: {}",
        players[0].stats().conditioner_dropped
    );
    assert!(stats.loss > 0.05, "pings are lost too: {stats:?}");
    assert!(
        stats.rtt.unwrap() >= Duration::from_millis(30),
        "added latency shows: {stats:?}"
    );
}

#[test]
fn embedded_server_hosts_a_lobby_and_links_are_measured() {
    let server = bevy_huddle::EmbeddedServer::start(huddle_server::ServerConfig::loopback())
        .expect("embedded server starts");
    let mut players = lobby(&server.room_url("lan"), 2);
    for k in 0..10 {
        players[0].send(Outgoing::to_all(Chat(k.to_string())));
    }
    run_for(&mut players, Duration::from_millis(1200));
    let other = players[1].id().unwrap();
    let world = players[0].app.world();
    let links = &world.resource::<bevy_huddle::PeerLinks>().0;
    let link = links.get(&other).expect("a link to the other player");
    println!("{link:?}");
    assert!(link.rtt.is_some_and(|r| r > Duration::ZERO));
    assert_eq!(link.messages_out, 10);
    assert!(link.bytes_out > 0 && link.bytes_in > 0);
    let store = world.resource::<bevy::diagnostic::DiagnosticsStore>();
    let rtt = store
        .get(&bevy_huddle::HuddleDiagnostics::RTT_MS)
        .and_then(|d| d.value())
        .expect("RTT diagnostic");
    assert!(rtt > 0.0);
    let peers = store
        .get(&bevy_huddle::HuddleDiagnostics::PEERS)
        .and_then(|d| d.value());
    assert_eq!(peers, Some(1.0));
}

#[test]
fn unreachable_server_is_an_error_and_offline_not_a_panic() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut players = vec![Player::join(&format!("ws://127.0.0.1:{port}/nobody"))];
    let ok = run_until(&mut players, LIMIT, |ps| {
        ps[0]
            .log()
            .errors
            .iter()
            .any(|e| matches!(e, HuddleError::Signaling(_)))
            && ps[0].state() == LobbyState::Offline
    });
    assert!(
        ok,
        "a Signaling error and Offline: {:?}",
        players[0].log().errors
    );
}

/// A lobby over `wss://`: the server has a private (self-signed) certificate, the players' config
/// trusts it (`HuddleConfig::root_certificates`); a player without it gets no id.
#[test]
fn a_lobby_over_wss_with_a_private_root() {
    let (cert, key, der) = self_signed_tls("lobby");
    let (_rt, server) = server_with_on_runtime(huddle_server::ServerConfig {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..huddle_server::ServerConfig::loopback()
    });
    let url = server.room_url("secure");
    assert!(url.starts_with("wss://"));
    let trusting = || {
        let mut config = HuddleConfig::room(&url);
        config.root_certificates = vec![der.clone()];
        Player::join_with(&url, Types::All, config)
    };
    let mut players = vec![trusting()];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.push(trusting());
    assert!(
        run_until(&mut players, LIMIT, lobby_complete),
        "both in over wss://"
    );
    let mut stranger = vec![Player::join(&url)];
    run_for(&mut stranger, Duration::from_secs(3));
    assert!(
        stranger[0].id().is_none(),
        "a player that does not trust the certificate gets no id"
    );
}

/// The host kicks a player (`commands.kick`): the server takes it out of the room and the others
/// see it leave (nothing it still sends on its direct links brings it back); the kicked player's
/// session ends with `HuddleError::Removed`; its address is refused in the room for the ban (a
/// player joining from it meanwhile gets `JoinRefusal::Banned`).
#[test]
fn the_host_kicks_a_player_out_of_the_lobby() {
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("kick");
    let mut players = lobby(&url, 3);
    let kicked = players[2].id().unwrap();
    players[0]
        .app
        .world_mut()
        .commands()
        .kick(kicked, Duration::from_secs(30));
    players[0].app.world_mut().flush();
    let gone = run_until(&mut players, LIMIT, |ps| {
        ps[..2]
            .iter()
            .all(|p| !p.roster().peers.contains(&kicked) && p.roster().members.len() == 2)
            && ps[2].state() == LobbyState::Offline
    });
    assert!(
        gone,
        "the others see the kicked player leave, and it is out"
    );
    assert_eq!(server.rooms().first().map(|r| r.peers), Some(2));
    assert!(
        players[2]
            .log()
            .errors
            .iter()
            .any(|e| matches!(e, HuddleError::Removed { reason } if reason.contains("kicked"))),
        "the kicked player learns why: {:?}",
        players[2].log().errors
    );
    // It stays out: a while later the others still count two.
    run_for(&mut players, Duration::from_secs(2));
    assert!(players[..2].iter().all(|p| p.roster().members.len() == 2));
    // Its address is refused in the room for the ban: a typed refusal, at once.
    let mut again = vec![Player::join(&url)];
    let refused = run_until(&mut again, LIMIT, |ps| {
        ps[0].state() == LobbyState::Offline && !ps[0].log().errors.is_empty()
    });
    assert!(refused, "{:?}", again[0].log().errors);
    assert!(
        again[0].log().errors.iter().any(
            |e| matches!(e, HuddleError::Refused(JoinRefusal::Banned { reason }) if reason.contains("banned"))
        ),
        "its address is banned from the room: {:?}",
        again[0].log().errors
    );
    assert!(again[0].id().is_none());
}

/// A refused join is a typed error and the end of the session, not a string or a wait: without a
/// join token (401), with a capacity beyond the server's (400), in a full room (503), and after a
/// kick from that address (403, see the kick test) the player is `Offline` with
/// `HuddleError::Refused` and the server's reason.
#[test]
fn refused_joins_are_typed_errors() {
    let secret = "backend";
    let (_rt, server) = server_with_on_runtime(huddle_server::ServerConfig {
        auth_secret: Some(secret.into()),
        max_room_peers: 8,
        ..huddle_server::ServerConfig::loopback()
    });
    let token = |room: &str| {
        let expires = std::time::SystemTime::now() + Duration::from_secs(600);
        huddle_server::token::mint(secret.as_bytes(), room, expires)
    };
    let first = server.room_url(&format!("full?capacity=1&token={}", token("full")));
    let mut host = vec![Player::join(&first)];
    assert!(run_until(&mut host, LIMIT, |ps| ps[0].roster().is_host()));
    let cases = [
        (server.room_url("lobby"), "unauthorized"),
        (
            server.room_url(&format!("lobby?capacity=9&token={}", token("lobby"))),
            "bad request",
        ),
        (first.clone(), "full"),
    ];
    for (url, kind) in cases {
        let mut player = vec![Player::join(&url)];
        let refused = run_until(&mut player, LIMIT, |ps| {
            ps[0].state() == LobbyState::Offline
        });
        assert!(
            refused,
            "{kind}: the session ends: {:?} {:?}",
            player[0].state(),
            player[0].log().errors
        );
        let errors = &player[0].log().errors;
        let typed = errors.iter().find_map(|e| match e {
            HuddleError::Refused(refusal) => Some(refusal.clone()),
            _ => None,
        });
        let typed = typed.unwrap_or_else(|| panic!("{kind}: a typed refusal, got {errors:?}"));
        let matches = match kind {
            "unauthorized" => {
                matches!(&typed, JoinRefusal::Unauthorized { reason } if reason.contains("token"))
            }
            "bad request" => {
                matches!(&typed, JoinRefusal::BadRequest { reason } if reason.contains('9'))
            }
            _ => matches!(&typed, JoinRefusal::Full { reason } if reason.contains("full")),
        };
        assert!(matches, "{kind}: {typed:?}");
        assert!(player[0].id().is_none());
    }
}

/// A peer the server introduces that never answers (a websocket client that ignores the offer)
/// is given up after the connect timeout: `HuddleError::ConnectTimeout` names it, nobody waits
/// for it, and a real player still joins.
#[test]
fn a_peer_whose_link_never_opens_is_a_connect_timeout() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("ghost");
    let mut config = HuddleConfig::room(&url);
    config.protocol.connect_timeout = Duration::from_secs(3);
    let mut players = vec![Player::join_with(&url, Types::All, config)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    let ghost = rt.block_on(RawClient::connect(&url)).expect("joins");
    let timed_out = run_until(&mut players, LIMIT, |ps| {
        ps[0]
            .log()
            .errors
            .iter()
            .any(|e| matches!(e, HuddleError::ConnectTimeout { peer, .. } if *peer == ghost.id))
    });
    assert!(timed_out, "{:?}", players[0].log().errors);
    assert_eq!(players[0].state(), LobbyState::InLobby);
    assert!(!players[0].roster().peers.contains(&ghost.id));
    players.push(Player::join(&url));
    assert!(
        run_until(&mut players, LIMIT, |ps| ps.iter().all(|p| p
            .roster()
            .members
            .len()
            == 2)),
        "a real player still joins"
    );
    drop(ghost);
}

/// The room browser: `commands.list_rooms(server)` brings the server's public rooms as a
/// `RoomList` (path, peers, capacity, host), not the private ones; a server that is not there is
/// an error in the list, not a panic or a wait.
#[test]
fn the_room_browser_lists_the_public_rooms() {
    let (_rt, server) = server_on_runtime();
    let mut players = vec![
        Player::join(&server.room_url("arena?capacity=4")),
        Player::join(&server.room_url("secret?private=true")),
    ];
    assert!(run_until(&mut players, LIMIT, |ps| ps
        .iter()
        .all(|p| p.roster().is_host())));
    let browse = |player: &mut Player, server: String| {
        player.app.world_mut().commands().list_rooms(server);
        player.app.world_mut().flush();
    };
    browse(&mut players[0], server.room_url("anything"));
    assert!(run_until(&mut players, LIMIT, |ps| !ps[0]
        .log()
        .room_lists
        .is_empty()));
    let list = players[0].log().room_lists[0].clone();
    assert!(list.url.ends_with("/rooms"), "{list:?}");
    let rooms = list.rooms.expect("a list");
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    assert_eq!(
        (rooms[0].path.as_str(), rooms[0].peers, rooms[0].capacity),
        ("arena", 1, 4)
    );
    assert_eq!(rooms[0].host, players[0].id().map(|id| id.to_string()));
    // Nobody listening there: an error.
    let nowhere = {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        unused.local_addr().expect("its address")
    };
    browse(&mut players[1], format!("ws://{nowhere}/x"));
    assert!(run_until(&mut players, LIMIT, |ps| !ps[1]
        .log()
        .room_lists
        .is_empty()));
    assert!(players[1].log().room_lists[0].rooms.is_err());
}

/// Player metadata: each player's name (any serde type, `HuddleConfig::with_metadata`) rides in its
/// hello and shows in every `Roster` (its own too); a metadata over 1 KiB is a config error.
#[test]
fn players_see_each_others_names() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Profile {
        name: String,
        colour: [u8; 3],
    }
    let (_rt, server) = server_on_runtime();
    let url = server.room_url("names");
    let named = |name: &str, colour: [u8; 3]| {
        let me = Profile {
            name: name.into(),
            colour,
        };
        let config = HuddleConfig::room(&url).with_metadata(&me).expect("fits");
        Player::join_with(&url, Types::All, config)
    };
    let mut players = vec![named("ann", [255, 0, 0])];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.push(named("bob", [0, 0, 255]));
    let both = |ps: &[Player]| ps.iter().all(|p| p.roster().metadata.len() == 2);
    assert!(run_until(&mut players, LIMIT, both), "each knows both");
    let ids: Vec<PeerId> = players.iter().filter_map(|p| p.id()).collect();
    for p in &players {
        let ann: Option<Profile> = p.roster().metadata(ids[0]);
        let bob: Option<Profile> = p.roster().metadata(ids[1]);
        assert_eq!(ann.map(|m| m.name), Some("ann".to_string()));
        assert_eq!(bob.map(|m| m.colour), Some([0, 0, 255]));
    }
    let huge = HuddleConfig::room(&url).with_metadata(&vec![0u8; 2000]);
    assert!(matches!(
        huge,
        Err(bevy_huddle::ConfigError::MetadataTooLarge(_))
    ));
}

/// The signaling server goes away mid-game for good: the players try to resume their places for
/// `HuddleConfig::reconnect` (`SignalingState::Reconnecting`), then give up (`Lost`); the lobby
/// goes on over its peer-to-peer links all along (reliable chat still arrives, both stay
/// `InLobby` with the same host), and each player hears `HuddleError::SignalingLost` once, so the
/// game can tell that nobody new can join.
#[test]
fn the_lobby_outlives_its_signaling_server() {
    let (rt, server) = server_on_runtime();
    let url = server.room_url("outlive");
    let brief = bevy_huddle::ReconnectSettings {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        give_up_after: Duration::from_secs(2),
    };
    let mut players = lobby_joined_by(&url, 2, |url| {
        let mut config = HuddleConfig::room(url);
        config.reconnect = brief;
        Player::join_with(url, Types::All, config)
    });
    let host = players[0].roster().host;
    rt.block_on(server.shutdown()).expect("the server stops");
    let lost = run_until(&mut players, LIMIT, |ps| {
        ps.iter().all(|p| {
            p.log()
                .errors
                .iter()
                .any(|e| matches!(e, HuddleError::SignalingLost))
        })
    });
    assert!(lost, "{:?}", players[0].log().errors);
    let line = Chat("still here".into());
    players[1].send(Outgoing {
        to: Recipients::All,
        message: line.clone(),
    });
    let heard = run_until(&mut players, LIMIT, |ps| {
        ps[0].log().chats.iter().any(|(_, c)| *c == line)
    });
    assert!(heard, "the chat went peer to peer");
    run_for(&mut players, Duration::from_secs(1));
    for p in &players {
        assert_eq!(p.state(), LobbyState::InLobby);
        assert_eq!(p.roster().host, host);
        let lost = p
            .log()
            .errors
            .iter()
            .filter(|e| matches!(e, HuddleError::SignalingLost));
        assert_eq!(lost.count(), 1);
        assert_eq!(
            p.log().signaling,
            [
                SignalingState::Connected,
                SignalingState::Reconnecting,
                SignalingState::Lost
            ]
        );
    }
}

/// The signaling server restarts mid-game (same address, same `--resume-secret`): the players
/// reconnect with their resume tokens while the game goes on over the links, get their places
/// back (same ids, same host, nobody left), and a newcomer that joins the restarted server meets
/// every one of them.
#[test]
fn the_lobby_carries_on_through_a_server_restart() {
    let config = huddle_server::ServerConfig {
        resume_secret: Some("kept across restarts".into()),
        ..huddle_server::ServerConfig::loopback()
    };
    let (rt, server) = server_with_on_runtime(config.clone());
    let url = server.room_url("restart");
    let addr = server.local_addr();
    let mut players = lobby(&url, 3);
    let ids: Vec<Option<PeerId>> = players.iter().map(Player::id).collect();
    let host = players[0].roster().host;
    rt.block_on(server.shutdown()).expect("the server stops");
    let away = run_until(&mut players, LIMIT, |ps| {
        ps.iter()
            .all(|p| p.signaling() == SignalingState::Reconnecting)
    });
    assert!(away, "every player is reconnecting");
    let line = Chat("the server is away".into());
    players[2].send(Outgoing {
        to: Recipients::All,
        message: line.clone(),
    });
    let heard = run_until(&mut players, LIMIT, |ps| {
        ps[0].log().chats.iter().any(|(_, c)| *c == line)
    });
    assert!(heard, "the game goes on peer to peer meanwhile");

    let (_rt2, restarted) = server_with_on_runtime(huddle_server::ServerConfig {
        bind: addr,
        ..config
    });
    let back = run_until(&mut players, LIMIT, |ps| {
        ps.iter()
            .all(|p| p.signaling() == SignalingState::Connected)
    });
    assert!(back, "{:?}", players[0].log().signaling);
    assert_eq!(restarted.metrics().resumes.get(), 3);
    players.push(Player::join(&url));
    let met = run_until(&mut players, LIMIT, lobby_complete);
    let views: Vec<_> = players.iter().map(|p| p.roster().peers.len()).collect();
    assert!(met, "the newcomer meets everyone: {views:?}");
    for (p, id) in players.iter().zip(&ids) {
        assert_eq!(p.id(), *id, "the same id");
        assert_eq!(p.roster().host, host, "the same host");
        assert!(p.log().left.is_empty(), "nobody left: {:?}", p.log().left);
        assert!(p.log().errors.is_empty(), "{:?}", p.log().errors);
    }
    assert_eq!(players[3].roster().host, host);
}

/// `HuddleConfig::ice_from_server`: the players ask the room's server for its ICE servers (with
/// their join token) before joining, and their links use them (STUN on loopback here, where
/// nothing answers: host candidates still meet); a server that refuses the token ends the join.
#[test]
fn players_take_their_ice_servers_from_the_server() {
    let secret = "backend";
    let (_rt, server) = server_with_on_runtime(huddle_server::ServerConfig {
        auth_secret: Some(secret.into()),
        stun_url: vec!["stun:127.0.0.1:3478".into()],
        turn_url: vec!["turn:127.0.0.1:3478".into()],
        turn_secret: Some("turn-secret".into()),
        ..huddle_server::ServerConfig::loopback()
    });
    let expires = std::time::SystemTime::now() + Duration::from_secs(600);
    let token = huddle_server::token::mint(secret.as_bytes(), "ice", expires);
    let url = server.room_url(&format!("ice?token={token}"));
    let join = |url: &str| {
        let mut config = HuddleConfig::room(url);
        config.ice_from_server = true;
        Player::join_with(url, Types::All, config)
    };
    let mut players = vec![join(&url)];
    assert!(run_until(&mut players, LIMIT, |ps| ps[0]
        .roster()
        .is_host()));
    players.push(join(&url));
    assert!(run_until(&mut players, LIMIT, lobby_complete), "they meet");
    for p in &players {
        let session = p.app.world().resource::<bevy_huddle::HuddleSession>();
        let urls: Vec<&str> = session
            .ice_servers()
            .iter()
            .flat_map(|s| s.urls.iter().map(String::as_str))
            .collect();
        assert_eq!(urls, ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478"]);
        assert!(session.ice_servers()[1].username.is_some());
    }
    let mut refused = vec![join(&server.room_url("ice?token=1.00"))];
    let ended = run_until(&mut refused, LIMIT, |ps| {
        ps[0].state() == LobbyState::Offline && !ps[0].log().errors.is_empty()
    });
    assert!(ended, "{:?}", refused[0].log().errors);
    assert!(format!("{:?}", refused[0].log().errors).contains("ICE servers"));
}

/// Each link's statistics say which path ICE chose (for a game or a test to see whether TURN is
/// in use): on loopback, direct host candidates, not relayed.
#[test]
fn links_report_their_path() {
    let (_rt, server) = server_on_runtime();
    let mut players = lobby(&server.room_url("paths"), 2);
    let ids: Vec<PeerId> = players.iter().filter_map(|p| p.id()).collect();
    let known = run_until(&mut players, LIMIT, |ps| {
        ps[0].link_stats(ids[1]).is_some_and(|l| l.path.is_some())
            && ps[1].link_stats(ids[0]).is_some_and(|l| l.path.is_some())
    });
    assert!(known, "{:?}", players[0].link_stats(ids[1]));
    for (p, other) in [(0, 1), (1, 0)] {
        let path = players[p].link_stats(ids[other]).and_then(|l| l.path);
        let path = path.expect("a path");
        assert!(!path.is_relayed(), "{path:?}");
        assert!(
            matches!(
                path.remote,
                bevy_huddle::CandidateKind::Host | bevy_huddle::CandidateKind::PeerReflexive
            ),
            "{path:?}"
        );
    }
}
