//! Joining: hello races, early frames, host election, pings.

use crate::net::{Sim, FRAME};
use crate::{conditions, SEEDS};
use huddle_protocol::endpoint::{Channel, EndpointError, Event, Recipients, Role};
use huddle_protocol::Topology;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn lobbies_of_two_to_eight_agree_on_host_and_succession() {
    for seed in SEEDS {
        let n = 2 + (seed as usize % 7);
        let mut sim = Sim::new(Topology::Mesh, conditions(20, 10, 0.05), seed);
        sim.join();
        for _ in 1..n {
            sim.run_for(FRAME * 3);
            sim.join();
        }
        assert!(
            sim.run_until(LIMIT, Sim::settled),
            "seed {seed}: {n} peers settle"
        );
        let order = sim.nodes[0].ep.succession();
        assert_eq!(order, (0..n).map(Sim::id).collect::<Vec<_>>(), "join order");
        for node in &sim.nodes {
            assert_eq!(node.ep.succession(), order, "seed {seed}");
            let joins = node
                .events
                .iter()
                .filter(|e| matches!(e, Event::Joined { .. }))
                .count();
            assert_eq!(joins, n - 1, "seed {seed}: each peer announced once");
        }
    }
}

/// The first hellos on a fresh link are lost, and the two ends see the link open up to 150 ms
/// apart, sending game frames before the other's hello: hellos repeat until both have seen each
/// other's, and the early frames are delivered once the hello is in.
#[test]
fn hello_races_end_with_both_joined_and_early_frames_delivered() {
    for seed in SEEDS {
        let mut sim = Sim::new(Topology::Mesh, conditions(5, 5, 0.0), seed);
        sim.lossy_opening = Duration::from_millis(40);
        sim.skew = Duration::from_millis(150);
        sim.join();
        sim.run_for(Duration::from_millis(400));
        sim.join();
        let mut sent = 0;
        let joined = sim.run_until(LIMIT, |s| s.settled());
        assert!(joined, "seed {seed}: both joined despite lost hellos");
        for _ in 0..5 {
            sim.send(1, 3, Channel::Reliable, b"early", Recipients::All);
            sent += 1;
            sim.step();
        }
        sim.run_for(Duration::from_millis(300));
        assert_eq!(sim.messages(0).len(), sent, "seed {seed}");
        assert!(
            sim.nodes.iter().all(|n| n.ep.peers().len() == 1),
            "seed {seed}"
        );
    }
    // Across all seeds the opening really lost packets (or the test proves nothing).
    let mut sim = Sim::new(Topology::Mesh, conditions(5, 5, 0.0), 1);
    sim.lossy_opening = Duration::from_millis(40);
    sim.join();
    sim.run_for(Duration::from_millis(400));
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    assert!(sim.lost_at_opening > 0, "hellos were lost at the opening");
}

/// The hellos of a new link are lost at its opening and a game frame gets through before the
/// repeated hello: it waits for the hello, then arrives.
#[test]
fn frames_before_the_hello_wait_for_it() {
    for seed in SEEDS {
        let mut sim = Sim::new(Topology::Mesh, conditions(1, 0, 0.0), seed);
        sim.lossy_opening = Duration::from_millis(60);
        sim.join();
        sim.run_for(Duration::from_millis(400));
        let late = sim.join();
        assert!(sim.run_until(LIMIT, |s| s.sees_link(0, late).is_some()));
        sim.run_for(Duration::from_millis(70));
        sim.inject(late, 0, huddle_protocol::Lane::Reliable, vec![0x02, 1, 2]);
        sim.run_for(FRAME * 2);
        assert!(
            sim.messages(0).is_empty() && sim.nodes[0].ep.peers().is_empty(),
            "seed {seed}: nothing delivered before the hello"
        );
        assert!(sim.run_until(LIMIT, Sim::settled), "seed {seed}");
        let got = sim.messages(0);
        assert_eq!(
            got.len(),
            1,
            "seed {seed}: the early frame, after the hello"
        );
        assert_eq!((got[0].0, got[0].1), (Sim::id(late), 2));
    }
}

#[test]
fn a_peer_of_another_topology_is_a_clear_error_and_is_ignored() {
    let mut sim = Sim::new(Topology::Mesh, conditions(5, 0, 0.0), 7);
    sim.join();
    sim.run_for(Duration::from_millis(400));
    sim.config.topology = Topology::Star;
    let star = sim.join();
    sim.run_for(Duration::from_secs(2));
    let mismatch = |i: usize| {
        sim.nodes[i]
            .events
            .iter()
            .any(|e| matches!(e, Event::Error(EndpointError::TopologyMismatch { .. })))
    };
    assert!(mismatch(0) && mismatch(star), "both ends are told");
    let sent = sim.nodes[star]
        .ep
        .send(1, Channel::Reliable, b"hi", &Recipients::Peer(Sim::id(0)));
    assert!(
        matches!(
            sent,
            Err(huddle_protocol::endpoint::SendError::NotInLobby { .. })
        ),
        "{sent:?}"
    );
    sim.run_for(Duration::from_millis(200));
    assert!(sim.messages(0).is_empty());
    assert!(sim.nodes[0].ep.peers().is_empty(), "never joined");
}

#[test]
fn pings_measure_the_round_trip() {
    let mut sim = Sim::new(Topology::Mesh, conditions(30, 0, 0.0), 3);
    sim.join();
    sim.run_for(Duration::from_millis(400));
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    sim.run_for(Duration::from_secs(2));
    let stats = sim.nodes[0].ep.link_stats(Sim::id(1)).expect("a link");
    let rtt = stats.rtt.expect("measured");
    // 2 x 30 ms on the wire, plus up to a frame of waiting at each end.
    assert!(
        rtt >= Duration::from_millis(60) && rtt <= Duration::from_millis(60) + FRAME * 2,
        "{rtt:?}"
    );
    assert_eq!(stats.loss, 0.0);
}

/// In a quiet lobby the endpoint's next timeout is its next ping: nothing goes out before it,
/// the ping goes out at it.
#[test]
fn the_next_timeout_is_the_next_thing_to_do() {
    let mut sim = Sim::new(Topology::Mesh, conditions(5, 0, 0.0), 9);
    sim.join();
    sim.run_for(Duration::from_millis(400));
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    sim.run_for(Duration::from_secs(1));
    let now = sim.now;
    let ep = &mut sim.nodes[0].ep;
    while ep.poll_transmit().is_some() {}
    let next = ep.poll_timeout().expect("a ping is due some time");
    assert!(
        next > now && next <= now + ep.config().settings.ping_interval,
        "{next:?}"
    );
    ep.handle_timeout(next - Duration::from_millis(1));
    assert_eq!(ep.poll_transmit(), None, "nothing before the timeout");
    ep.handle_timeout(next);
    let ping = ep.poll_transmit().expect("the ping");
    assert_eq!(
        (ping.lane, ping.peer),
        (huddle_protocol::Lane::Unreliable, Sim::id(1))
    );
    assert!(ep.poll_timeout().is_some_and(|t| t > next));
}

/// A message for a peer that is not in our lobby (not joined yet, or gone), or for the host while
/// there is none we are joined with, is reported with whom it missed, never dropped silently; the
/// recipients that are in the lobby still get it.
#[test]
fn a_message_for_a_peer_not_in_the_lobby_is_reported() {
    use huddle_protocol::endpoint::SendError;
    let mut sim = Sim::new(Topology::Mesh, conditions(5, 0, 0.0), 3);
    sim.join();
    sim.run_for(Duration::from_millis(200));
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    let stranger = Sim::id(7);
    let (one, me) = (Sim::id(1), Sim::id(0));
    let ep = &mut sim.nodes[0].ep;
    let missed =
        |r| matches!(r, Err(SendError::NotInLobby { missing }) if missing == vec![stranger]);
    assert!(missed(ep.send(
        3,
        Channel::Reliable,
        b"a",
        &Recipients::Peer(stranger)
    )));
    let both = Recipients::Peers(vec![one, stranger, me]);
    assert!(missed(ep.send(3, Channel::Reliable, b"b", &both)));
    assert!(missed(ep.send(
        3,
        Channel::Unreliable,
        b"c",
        &Recipients::Peer(stranger)
    )));
    // We are the host: a message to the host is nobody's (as documented), not an error.
    assert_eq!(
        ep.send(3, Channel::Reliable, b"d", &Recipients::Host),
        Ok(())
    );
    sim.run_for(Duration::from_millis(200));
    let got: Vec<_> = sim.messages(1).into_iter().map(|m| m.2).collect();
    assert_eq!(
        got,
        vec![bytes::Bytes::from_static(b"b")],
        "the peer in the lobby got its copy"
    );
    // Peer 0 goes: until peer 1 takes over there is no host to reach, then there is.
    sim.leave(0, true);
    let ep = &mut sim.nodes[1].ep;
    let r = ep.send(3, Channel::Reliable, b"e", &Recipients::Peer(me));
    assert!(matches!(r, Err(SendError::NotInLobby { missing }) if missing == vec![me]));
    assert!(sim.run_until(LIMIT, |s| s.nodes[1].ep.host() == Some(one)));
}

/// A peer the server introduces whose link never opens (no path, or a peer that never answers)
/// is given up after the connect timeout: reported once, forgotten, and the lobby goes on.
#[test]
fn a_link_that_never_opens_is_given_up_after_the_connect_timeout() {
    let mut sim = Sim::new(Topology::Mesh, conditions(5, 2, 0.0), 7);
    sim.join();
    sim.join();
    assert!(sim.run_until(LIMIT, Sim::settled));
    let ghost = Sim::id(99);
    sim.nodes[0].ep.introduced(ghost, Role::Caller);
    let timeouts = |sim: &Sim| {
        sim.nodes[0]
            .events
            .iter()
            .filter(|e| {
                matches!(e, Event::Error(EndpointError::ConnectTimeout { peer, waited })
                    if *peer == ghost && *waited == Duration::from_secs(20))
            })
            .count()
    };
    sim.run_for(Duration::from_secs(19));
    assert_eq!(timeouts(&sim), 0, "not before the timeout");
    assert!(sim.nodes[0].ep.poll_timeout().is_some());
    sim.run_for(Duration::from_secs(2));
    assert_eq!(timeouts(&sim), 1, "given up at the timeout");
    sim.run_for(Duration::from_secs(20));
    assert_eq!(timeouts(&sim), 1, "once");
    assert!(!sim.nodes[0].ep.peers().contains(&ghost));
    assert_eq!(sim.nodes[0].ep.peers(), &[Sim::id(1)], "the lobby goes on");
    assert!(sim.settled());
}
