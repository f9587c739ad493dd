//! The host's forwarding of media in a star room (an SFU of one), as a sans-IO core: an RTP
//! packet from one client goes out to each other client on that client's own numbering.
//!
//! Every leg of the host (one media connection per client) negotiated its own payload types and
//! header-extension ids (Chrome and Firefox pick different ones, and webrtc-rs refuses a packet
//! whose numbers were not negotiated on its leg), and each forwarded stream needs an SSRC of its
//! own on its leg. [`OutStream`] rewrites a packet's header in place for one leg: payload type,
//! SSRC, extension ids (an extension the leg did not negotiate becomes padding), and sequence
//! numbers and timestamps that run on without a jump when the source changes under the stream
//! (a publisher restarts its track, or the stream moves to another host).
//!
//! The packet comes from a client: everything in it may be a lie. The header is parsed with
//! bounds checks only (no arithmetic on its lengths can overflow), a header that does not parse
//! is an error and nothing is written, and the per-stream state is a few numbers.

use std::time::Duration;
use thiserror::Error;

/// Why a packet cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ForwardError {
    /// Shorter than its header says, or not RTP version 2.
    #[error("not an RTP packet")]
    Malformed,
}

/// How one leg numbers a forwarded stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegNumbers {
    /// The payload type of the stream's codec on this leg.
    pub payload_type: u8,
    /// Header-extension ids: (the publisher's id, this leg's id) for each extension both
    /// negotiated. Others are blanked.
    pub extensions: Vec<(u8, u8)>,
}

/// Where a packet's header parts are.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// The extension block's elements: start and end (exclusive), and whether two-byte form.
    extensions: Option<(usize, usize, bool)>,
}

/// Finds the header's parts, checking every length against the packet.
fn parse(packet: &[u8]) -> Result<Header, ForwardError> {
    let first = *packet.first().ok_or(ForwardError::Malformed)?;
    if first >> 6 != 2 || packet.len() < 12 {
        return Err(ForwardError::Malformed);
    }
    let csrc = usize::from(first & 0x0f) * 4;
    let at = 12 + csrc;
    if packet.len() < at {
        return Err(ForwardError::Malformed);
    }
    let mut extensions = None;
    if first & 0x10 != 0 {
        let head = packet.get(at..at + 4).ok_or(ForwardError::Malformed)?;
        let profile = u16::from_be_bytes([head[0], head[1]]);
        let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let start = at + 4;
        let end = start + words * 4;
        if packet.len() < end {
            return Err(ForwardError::Malformed);
        }
        extensions = match profile {
            0xBEDE => Some((start, end, false)),
            p if p & 0xFFF0 == 0x1000 => Some((start, end, true)),
            // Another profile's block: passed on untouched, nothing in it is read.
            _ => None,
        };
    }
    Ok(Header { extensions })
}

/// Renumbers (or blanks) the extension elements in `block` (RFC 8285).
fn remap_extensions(block: &mut [u8], two_byte: bool, map: &[(u8, u8)]) {
    let mut i = 0;
    while i < block.len() {
        let (id, len, head) = if two_byte {
            let id = block[i];
            if id == 0 {
                i += 1;
                continue;
            }
            let Some(&len) = block.get(i + 1) else { return };
            (id, usize::from(len), 2)
        } else {
            let byte = block[i];
            if byte == 0 {
                i += 1;
                continue;
            }
            let id = byte >> 4;
            if id == 15 {
                // The rest of the block is not to be read.
                return;
            }
            (id, usize::from(byte & 0x0f) + 1, 1)
        };
        let end = (i + head + len).min(block.len());
        match map.iter().find(|(from, _)| *from == id).map(|(_, to)| *to) {
            Some(to) if two_byte => block[i] = to,
            Some(to) if (1..15).contains(&to) => block[i] = (to << 4) | (block[i] & 0x0f),
            // Not negotiated on this leg: padding bytes in its place.
            _ => block[i..end].fill(0),
        }
        i = end;
    }
}

/// The wall clock rate of a stream's timestamps.
fn ticks(clock_rate: u32, elapsed: Duration) -> u32 {
    let t = elapsed.as_micros().saturating_mul(u128::from(clock_rate)) / 1_000_000;
    t.min(u128::from(u32::MAX / 2)) as u32
}

/// One forwarded stream on one leg: its SSRC there, and the offsets that keep its sequence
/// numbers and timestamps continuous across changes of source.
#[derive(Debug, Clone)]
pub struct OutStream {
    ssrc: u32,
    clock_rate: u32,
    numbers: LegNumbers,
    /// The source it follows now, and the offsets from its numbers to ours.
    source: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    /// The last packet sent: its sequence number and timestamp, and when.
    last: Option<(u16, u32, Duration)>,
}

impl OutStream {
    /// A stream sent as `ssrc` on a leg numbering it `numbers`, with timestamps at `clock_rate`.
    pub fn new(ssrc: u32, clock_rate: u32, numbers: LegNumbers) -> Self {
        Self {
            ssrc,
            clock_rate,
            numbers,
            source: None,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
        }
    }

    /// The SSRC on its leg.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// How the leg numbers the stream now.
    pub fn numbers(&self) -> &LegNumbers {
        &self.numbers
    }

    /// Renumbers the stream (its leg renegotiated, or the publisher's ids changed); sequence
    /// numbers and timestamps run on.
    pub fn set_numbers(&mut self, numbers: LegNumbers) {
        self.numbers = numbers;
    }

    /// Rewrites `packet` (from the publisher, received at `now`) for this leg, in place.
    pub fn rewrite(&mut self, packet: &mut [u8], now: Duration) -> Result<(), ForwardError> {
        let header = parse(packet)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let source = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        if self.source != Some(source) {
            // A new source: go on from where the last one stopped, as much later as it is.
            let (next_seq, next_ts) = match self.last {
                Some((last_seq, last_ts, at)) => (
                    last_seq.wrapping_add(1),
                    last_ts.wrapping_add(ticks(self.clock_rate, now.saturating_sub(at)).max(1)),
                ),
                None => (seq, ts),
            };
            self.seq_offset = next_seq.wrapping_sub(seq);
            self.ts_offset = next_ts.wrapping_sub(ts);
            self.source = Some(source);
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        packet[1] = (packet[1] & 0x80) | (self.numbers.payload_type & 0x7f);
        packet[2..4].copy_from_slice(&out_seq.to_be_bytes());
        packet[4..8].copy_from_slice(&out_ts.to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        if let Some((start, end, two_byte)) = header.extensions {
            remap_extensions(&mut packet[start..end], two_byte, &self.numbers.extensions);
        }
        // Only a packet that moves the stream forward is its new end (reordering stays behind).
        let ahead = self
            .last
            .is_none_or(|(s, _, _)| out_seq.wrapping_sub(s) < 0x8000 && out_seq != s);
        if ahead {
            self.last = Some((out_seq, out_ts, now));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet: payload type 111, one-byte extensions (audio level as id 1, another as
    /// id 3), a 3-byte payload.
    fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x90, 111];
        p.extend(seq.to_be_bytes());
        p.extend(ts.to_be_bytes());
        p.extend(ssrc.to_be_bytes());
        p.extend([0xBE, 0xDE, 0, 2]);
        p.extend([0x10, 0x85, 0x32, 0x01, 0xAA, 0xBB, 0, 0]);
        p.extend([1, 2, 3]);
        p
    }

    fn leg() -> OutStream {
        OutStream::new(
            7,
            48_000,
            LegNumbers {
                payload_type: 109,
                extensions: vec![(1, 4)],
            },
        )
    }

    fn numbers(p: &[u8]) -> (u8, u16, u32, u32) {
        (
            p[1] & 0x7f,
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        )
    }

    #[test]
    fn a_packet_takes_the_legs_numbers() {
        let mut out = leg();
        let mut p = packet(100, 5_000, 42);
        out.rewrite(&mut p, Duration::ZERO).expect("rewritten");
        assert_eq!(numbers(&p), (109, 100, 5_000, 7));
        // The audio level, id 1 there, is id 4 here; the other extension is padding now.
        assert_eq!(&p[16..24], &[0x40, 0x85, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&p[24..], &[1, 2, 3], "the payload is untouched");
    }

    #[test]
    fn a_new_source_goes_on_where_the_last_stopped() {
        let mut out = leg();
        for i in 0..10u16 {
            let mut p = packet(60_000 + i, 1_000 + 960 * u32::from(i), 42);
            out.rewrite(&mut p, Duration::from_millis(20 * u64::from(i)))
                .expect("rewritten");
        }
        // The publisher's track restarts (or another host forwards it) 300 ms later, with
        // numbers of its own.
        let mut p = packet(7, 123_456_789, 43);
        out.rewrite(&mut p, Duration::from_millis(480))
            .expect("rewritten");
        let (_, seq, ts, ssrc) = numbers(&p);
        assert_eq!((seq, ssrc), (60_010, 7));
        assert_eq!(ts, 1_000 + 960 * 9 + 48 * 300);
        let mut q = packet(8, 123_456_789 + 960, 43);
        out.rewrite(&mut q, Duration::from_millis(500))
            .expect("rewritten");
        assert_eq!(numbers(&q).1, 60_011);
    }

    #[test]
    fn malformed_headers_are_refused_untouched() {
        let mut out = leg();
        let good = packet(1, 1, 1);
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x80; 11],
            {
                let mut p = good.clone();
                p[0] = 0x50; // version 1
                p
            },
            {
                let mut p = good.clone();
                p[0] |= 0x0f; // 15 CSRCs that are not there
                p
            },
            {
                let mut p = good.clone();
                p[15] = 200; // an extension block longer than the packet
                p
            },
            good[..14].to_vec(),
        ];
        for case in &mut cases {
            let before = case.clone();
            assert_eq!(
                out.rewrite(case, Duration::ZERO),
                Err(ForwardError::Malformed)
            );
            assert_eq!(*case, before);
        }
    }

    /// Any bytes at all: no panic, and a packet that is rewritten keeps its length.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
        let mut next = || rng.u64(..);
        let mut out = leg();
        for i in 0..20_000u64 {
            let len = (next() % 64) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = p.first_mut() {
                // Mostly version 2, with and without extensions.
                *first = (*first & 0x3f) | 0x80;
            }
            if p.len() > 13 && i % 3 == 0 {
                p[12] = 0xBE;
                p[13] = 0xDE;
            }
            let len = p.len();
            let _ = out.rewrite(&mut p, Duration::from_millis(i));
            assert_eq!(p.len(), len);
        }
    }

    #[test]
    fn two_byte_extensions_are_renumbered_too() {
        let mut out = OutStream::new(
            9,
            90_000,
            LegNumbers {
                payload_type: 96,
                extensions: vec![(200, 12)],
            },
        );
        let mut p = packet(1, 1, 1);
        p[12..16].copy_from_slice(&[0x10, 0x00, 0, 2]);
        p[16..24].copy_from_slice(&[200, 1, 0x55, 77, 2, 0xAA, 0xBB, 0]);
        out.rewrite(&mut p, Duration::ZERO).expect("rewritten");
        assert_eq!(&p[16..24], &[12, 1, 0x55, 0, 0, 0, 0, 0]);
    }
}
