//! The departure agreement fed any sequence: farewells, vanishings, reports from anyone about
//! anyone with any frame, our own frames, time. Never a panic or an overflow; a verdict is only
//! about a player we saw go ourselves, and every verdict names a player that went.
#![no_main]
use arbitrary::Arbitrary;
use huddle_protocol::departure::{Departures, Frames, Verdict};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[derive(Debug, Arbitrary)]
enum Op {
    Farewell(u8, i32),
    Vanished(u8),
    Report {
        gone: u8,
        from: u8,
        frame: i32,
    },
    Due {
        current: i32,
        confirmed: i32,
        max_prediction: u8,
    },
    Verdicts(u8),
    Wait(u16),
}

fuzz_target!(|ops: Vec<Op>| {
    let start = Instant::now();
    let mut now = start;
    let mut d = Departures::default();
    let mut seen_go = BTreeSet::new();
    let me = 0;
    for op in ops {
        match op {
            Op::Farewell(h, frame) => {
                d.farewell(usize::from(h % 8), frame, now);
                seen_go.insert(usize::from(h % 8));
            }
            Op::Vanished(h) => {
                d.vanished(usize::from(h % 8), now);
                seen_go.insert(usize::from(h % 8));
            }
            Op::Report { gone, from, frame } => {
                d.report(usize::from(gone % 8), usize::from(from % 8), frame)
            }
            Op::Due {
                current,
                confirmed,
                max_prediction,
            } => {
                let frames = Frames {
                    current,
                    confirmed,
                    max_prediction: usize::from(max_prediction),
                };
                for (handle, _) in d.due(me, frames, now) {
                    assert!(seen_go.contains(&handle), "we report only who we saw go");
                }
            }
            Op::Verdicts(mask) => {
                let remaining: Vec<usize> = (0..8).filter(|h| mask & (1 << h) != 0).collect();
                for v in d.verdicts(&remaining, now) {
                    let handle = match v {
                        Verdict::Disconnect { handle, .. } | Verdict::Abandon { handle, .. } => {
                            handle
                        }
                    };
                    assert!(
                        seen_go.contains(&handle),
                        "a verdict about {handle}, still here"
                    );
                }
            }
            Op::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
        }
    }
});
