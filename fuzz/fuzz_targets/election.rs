//! The host election fed any sequence of what the network can say: introductions either way,
//! links opening and closing, time passing, and rosters from anyone with any epoch and any
//! order and heirs, upload measurements. Never a panic or an overflow; the succession never names a peer twice, never holds more
//! than the bound, and the refusal counter only grows.
#![no_main]
use arbitrary::Arbitrary;
use huddle_fuzz::peer;
use huddle_protocol::election::{HostElection, Output, Succession, MAX_MEMBERS};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

#[derive(Debug, Arbitrary)]
enum Op {
    Later(u8),
    Earlier(u8),
    Connected(u8),
    Disconnected(u8),
    Tick(u16),
    Roster {
        from: u8,
        epoch: u64,
        order: Vec<u8>,
        heirs: Vec<u8>,
    },
    Upload(u8, u64),
}

fuzz_target!(|ops: Vec<Op>| {
    let me = peer(0);
    let mut now = Duration::from_millis(1);
    let mut e = HostElection::new(me, now, Duration::from_millis(500));
    let mut refused = 0;
    for op in ops {
        let outs = match op {
            Op::Later(p) => {
                e.introduced_later(peer(p));
                Vec::new()
            }
            Op::Earlier(p) => e.introduced_earlier(peer(p)),
            Op::Connected(p) => e.connected(peer(p)),
            Op::Disconnected(p) => e.disconnected(peer(p)),
            Op::Tick(ms) => {
                now += Duration::from_millis(u64::from(ms));
                e.tick(now)
            }
            Op::Roster {
                from,
                epoch,
                order,
                heirs,
            } => {
                let order = order.into_iter().map(peer).collect();
                let heirs = heirs.into_iter().map(peer).collect();
                let roster = Succession {
                    epoch,
                    order,
                    heirs,
                };
                e.roster_received(peer(from), roster, now)
            }
            Op::Upload(p, bits_per_second) => e.upload_measured(peer(p), bits_per_second),
        };
        for out in outs {
            if let Output::Publish(roster) | Output::Vouch { roster, .. } = out {
                assert!(roster.order.len() <= MAX_MEMBERS);
                assert!(roster.heirs.iter().all(|h| roster.order[1..].contains(h)));
            }
        }
        let order = e.succession();
        let mut distinct = order.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), order.len(), "a peer twice in {order:?}");
        assert!(e.refused() >= refused);
        refused = e.refused();
    }
});
