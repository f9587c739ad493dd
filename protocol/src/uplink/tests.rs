use super::*;
use crate::frame::Frame;

fn id(n: u128) -> PeerId {
    PeerId(uuid::Uuid::from_u128(n))
}

/// Delivers train `train` of `peer` as a link of `bits_per_second` would, polled by a driver
/// every `frame` (what came in between arrives at the next poll), starting at `start`.
fn deliver(
    meter: &mut UploadMeter,
    peer: PeerId,
    train: u32,
    bits_per_second: u64,
    frame: Duration,
    start: Duration,
) -> Duration {
    let mut end = start;
    for bytes in probe_train(train) {
        let (Ok((Frame::Probe { id, index }, _)), len) = (Frame::decode(&bytes), bytes.len())
        else {
            panic!("a probe frame");
        };
        // When it is through the bottleneck, then the next poll after it.
        let at = start
            + Duration::from_micros(
                u64::from(index + 1) * len as u64 * 8 * 1_000_000 / bits_per_second,
            );
        let polled = Duration::from_micros(
            at.as_micros().div_ceil(frame.as_micros()) as u64 * frame.as_micros() as u64,
        );
        meter.frame(peer, id, index, len, polled);
        end = end.max(polled);
    }
    end
}

fn ask(meter: &mut UploadMeter, now: Duration) -> (PeerId, u32) {
    match meter.poll(now) {
        Some(MeterOutput::Ask { peer, id }) => (peer, id),
        other => panic!("expected an ask, got {other:?}"),
    }
}

#[test]
fn clearly_more_is_twice_as_much() {
    assert!(clearly_more(2_000_000, 1_000_000));
    assert!(!clearly_more(1_999_999, 1_000_000));
    assert!(clearly_more(1, 0));
    assert!(!clearly_more(0, 0));
    assert!(!clearly_more(ENOUGH_BPS, ENOUGH_BPS));
    assert!(clearly_more(u64::MAX, u64::MAX / 2));
    assert!(!clearly_more(u64::MAX, u64::MAX));
}

#[test]
fn a_train_through_a_narrow_link_measures_the_link() {
    let frame = Duration::from_micros(16_667);
    for bps in [500_000, 1_000_000, 4_000_000] {
        let mut meter = UploadMeter::default();
        meter.want(id(1), Duration::ZERO);
        let start = Duration::from_secs(5);
        let (peer, train) = ask(&mut meter, start);
        let end = deliver(&mut meter, peer, train, bps, frame, start);
        let Some(MeterOutput::Measured {
            peer,
            bits_per_second,
        }) = meter.poll(end)
        else {
            panic!("a complete train is measured at once");
        };
        assert_eq!(peer, id(1));
        // Within the driver's frame of the truth (the train lasts 0.14 s at 4 Mbit/s).
        let error = bits_per_second.abs_diff(bps) as f64 / bps as f64;
        assert!(error < 0.15, "{bps}: measured {bits_per_second}");
        assert_eq!(meter.headroom(id(1)), Some(bits_per_second));
    }
}

#[test]
fn a_train_that_arrives_at_once_is_enough_and_members_go_one_at_a_time() {
    let mut meter = UploadMeter::default();
    for p in [1, 2, 1, 3] {
        meter.want(id(p), Duration::ZERO);
    }
    let now = Duration::from_secs(1);
    let (first, train) = ask(&mut meter, now);
    assert_eq!(first, id(1));
    assert_eq!(meter.poll(now), None, "one train at a time");
    for bytes in probe_train(train) {
        let Ok((Frame::Probe { id, index }, _)) = Frame::decode(&bytes) else {
            panic!("a probe frame");
        };
        meter.frame(
            first,
            id,
            index,
            bytes.len(),
            now + Duration::from_millis(10),
        );
    }
    assert_eq!(
        meter.poll(now + Duration::from_millis(10)),
        Some(MeterOutput::Measured {
            peer: id(1),
            bits_per_second: ENOUGH_BPS
        })
    );
    assert_eq!(ask(&mut meter, now).0, id(2));
    // id(2) never answers: after the wait it failed, and id(3) is next; id(1) is not measured
    // again yet.
    meter.want(id(1), now + Duration::from_secs(1));
    assert_eq!(
        meter.poll(now + PROBE_WAIT - Duration::from_millis(1)),
        None
    );
    assert_eq!(
        meter.poll(now + PROBE_WAIT),
        Some(MeterOutput::Failed { peer: id(2) })
    );
    assert_eq!(ask(&mut meter, now + PROBE_WAIT).0, id(3));
    assert_eq!(meter.headroom(id(2)), None);
    // After REMEASURE, everyone is measured again (id(3)'s train still runs: not queued twice).
    let later = now + PROBE_WAIT + REMEASURE;
    for p in [1, 2, 3] {
        meter.want(id(p), later);
    }
    assert_eq!(
        meter.queue.iter().copied().collect::<Vec<_>>(),
        [id(1), id(2)]
    );
}

/// A member that speaks the protocol and wants to look faster than it is: it sends frames
/// before it is asked, for a train it guesses, twice each, past the train's end, and on behalf of
/// another member. None of it counts: what is measured is what its link carried of the one train.
#[test]
fn a_member_cannot_make_its_upload_look_larger() {
    let frame = Duration::from_micros(16_667);
    let mut meter = UploadMeter::default();
    let (liar, honest) = (id(6), id(7));
    meter.want(liar, Duration::ZERO);
    let start = Duration::from_secs(2);
    // Before the ask: a whole train for every id it might get, all at once.
    for guess in 0..4 {
        for bytes in probe_train(guess) {
            let Ok((Frame::Probe { id, index }, _)) = Frame::decode(&bytes) else {
                panic!("a probe frame");
            };
            meter.frame(liar, id, index, bytes.len(), start);
        }
    }
    let early = meter.dropped();
    assert_eq!(early, 4 * u64::from(PROBE_FRAMES));
    let (_, train) = ask(&mut meter, start);
    // Out-of-range indices, another train's id, frames for another member: dropped.
    meter.frame(liar, train, PROBE_FRAMES, 1100, start);
    meter.frame(liar, train, u32::MAX, 1100, start);
    meter.frame(liar, train.wrapping_add(1), 0, 1100, start);
    meter.frame(honest, train, 0, 1100, start);
    // Its real link: 1 Mbit/s; every frame also sent twice.
    let end = deliver(&mut meter, liar, train, 1_000_000, frame, start);
    deliver(&mut meter, liar, train, 1_000_000, frame, start);
    assert_eq!(meter.dropped() - early, 4 + u64::from(PROBE_FRAMES));
    let Some(MeterOutput::Measured {
        bits_per_second, ..
    }) = meter.poll(end)
    else {
        panic!("measured");
    };
    assert!(
        (850_000..1_150_000).contains(&bits_per_second),
        "{bits_per_second}"
    );
    // A few frames in one instant and nothing after says nothing.
    meter.want(honest, Duration::ZERO);
    let (_, train) = ask(&mut meter, end);
    for index in 0..8 {
        meter.frame(honest, train, index, 1100, end + frame);
    }
    assert_eq!(
        meter.poll(end + PROBE_WAIT),
        Some(MeterOutput::Failed { peer: honest })
    );
}

/// A host that asks again and again gets one train per interval.
#[test]
fn a_member_answers_one_request_per_interval() {
    let mut answerer = ProbeAnswerer::default();
    let mut answered = 0;
    let mut now = Duration::from_secs(1);
    // Asked every 100 ms for a minute.
    for _ in 0..600 {
        answered += u32::from(answerer.may_answer(id(1), now));
        now += Duration::from_millis(100);
    }
    assert_eq!(answered, 6);
    assert_eq!(answerer.refused(), 594);
    // A new host (the election chose it) is answered at once.
    assert!(answerer.may_answer(id(2), now));
    assert!(!answerer.may_answer(id(2), now));
}

#[test]
fn the_meter_forgets_who_left_and_starts_over_when_cleared() {
    let mut meter = UploadMeter::default();
    for p in 0..(MAX_QUEUED as u128 + 10) {
        meter.want(id(p), Duration::ZERO);
    }
    assert_eq!(meter.queue.len(), MAX_QUEUED);
    let (peer, _) = ask(&mut meter, Duration::ZERO);
    meter.forget(peer);
    assert_eq!(meter.poll_timeout(), Some(Duration::ZERO));
    assert_eq!(ask(&mut meter, Duration::ZERO).0, id(1));
    meter.clear();
    assert_eq!(meter.poll(Duration::from_secs(9)), None);
    assert_eq!(meter.poll_timeout(), None);
}
