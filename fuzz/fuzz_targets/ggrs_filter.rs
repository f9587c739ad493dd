//! The GGRS packet filter fed any packets from a few senders: never a panic; what it passes on
//! or rewrites says nothing about anyone's connection, asks no disconnect, and starts at most
//! `AHEAD` frames past what the sender sent before.
#![no_main]
use huddle_fuzz::peer;
use huddle_protocol::ggrs_filter::{codec, Body, InputFilter, Packet, Verdict, AHEAD, NULL_FRAME};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fn input(bytes: &[u8]) -> Option<huddle_protocol::ggrs_filter::Input> {
    let (packet, n) = bincode::serde::decode_from_slice::<Packet, _>(bytes, codec()).ok()?;
    match packet.body {
        Body::Input(input) if n == bytes.len() => Some(input),
        _ => None,
    }
}

fuzz_target!(|packets: Vec<(u8, Vec<u8>)>| {
    let mut filter = InputFilter::default();
    let mut first: HashMap<u8, i32> = HashMap::new();
    for (sender, bytes) in packets {
        let sender = sender % 4;
        let passed = match filter.judge(peer(sender), &bytes) {
            Verdict::Pass => bytes,
            Verdict::Rewrite(rewritten) => rewritten,
            Verdict::Drop => continue,
        };
        let Some(input) = input(&passed) else {
            continue;
        };
        assert!(!input.disconnect_requested);
        assert!(input
            .statuses
            .iter()
            .all(|s| !s.disconnected && s.last_frame == NULL_FRAME));
        let known = first.get(&sender).copied();
        assert!(input.start_frame <= known.unwrap_or(0).saturating_add(AHEAD));
        first.insert(
            sender,
            known.map_or(input.start_frame, |k| k.max(input.start_frame)),
        );
    }
});
