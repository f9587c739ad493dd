//! Chunk reassembly fed any chunks: never more held than its bound, never a message over its
//! limit, never a panic.
#![no_main]
use arbitrary::Arbitrary;
use huddle_protocol::chunk::Reassembler;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Chunk {
    type_id: u32,
    seq: u32,
    index: u32,
    count: u32,
    len: u16,
}

const MAX_MESSAGE: usize = 256 * 1024;
const MAX_PENDING: usize = 128 * 1024;

fuzz_target!(|chunks: Vec<Chunk>| {
    let mut r = Reassembler::new(MAX_MESSAGE, MAX_PENDING);
    let data = vec![7u8; usize::from(u16::MAX)];
    for c in chunks {
        let part = &data[..usize::from(c.len)];
        if let Ok(Some((_, message))) = r.push(c.type_id, c.seq, c.index, c.count, part) {
            assert!(message.len() <= MAX_MESSAGE);
        }
        assert!(r.pending_bytes() <= MAX_PENDING);
        let _ = r.take_abandoned();
    }
});
