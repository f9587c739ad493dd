//! The input log: every frame's inputs as the players simulated them, so that a spectator can
//! replay the match from its first frame. A plain state machine, driven by unit tests.
//!
//! Frames are numbered as bevy_ggrs numbers them inside `GgrsSchedule`: frame `f` is the step
//! from `f - 1` to `f`, the first one is 1. A frame's inputs are *final* once GGRS has confirmed
//! them and the frame was simulated with them; before that a rollback may still replace them.

use bevy::prelude::*;

/// Frames kept at most: an hour at 60 Hz. Past it the log stops growing (spectators can no
/// longer join), so a long match cannot eat memory.
pub(crate) const MAX_FRAMES: usize = 60 * 60 * 60;

/// Input bytes kept at most, all frames together: a feeder that sends frames of huge inputs cannot
/// make a spectator hold more (an hour at 60 Hz of 64 players with 16-byte inputs, 220 MB, fits).
pub(crate) const MAX_BYTES: usize = 256 * 1024 * 1024;

/// Frames sent to a spectator in one message at most.
pub(crate) const BATCH: usize = 240;

/// Every frame's encoded inputs (all players, in handle order).
#[derive(Resource, Debug)]
pub struct InputLog {
    /// The frame before the first one held: 0, or the frame of the snapshot a spectator
    /// started from.
    base: i32,
    /// `frames[i]` holds frame `base + i + 1`.
    frames: Vec<Vec<u8>>,
    /// Frames up to this one are final.
    last_final: i32,
    /// Bytes in `frames`.
    bytes: usize,
    /// At most this many ([`MAX_BYTES`]).
    max_bytes: usize,
    /// Frames not recorded: out of order, or past [`MAX_FRAMES`].
    pub(crate) refused: u64,
}

impl Default for InputLog {
    fn default() -> Self {
        Self {
            base: 0,
            frames: Vec::new(),
            last_final: 0,
            refused: 0,
            bytes: 0,
            max_bytes: MAX_BYTES,
        }
    }
}

impl InputLog {
    /// The players simulated `frame` with `inputs`, while GGRS had confirmed frames up to
    /// `confirmed`. A resimulated frame replaces what was recorded for it.
    pub(crate) fn record(&mut self, frame: i32, inputs: Vec<u8>, confirmed: i32) {
        let Some(index) = self.index(frame) else {
            self.refused += 1;
            return;
        };
        if index < self.frames.len() {
            self.bytes = self.bytes - self.frames[index].len() + inputs.len();
            self.frames[index] = inputs;
        } else if index == self.frames.len() && self.has_room(&inputs) {
            self.bytes += inputs.len();
            self.frames.push(inputs);
        } else {
            self.refused += 1;
            return;
        }
        // Rollbacks resimulate in frame order, so once `frame` ran, every frame up to it that
        // GGRS had confirmed ran with its confirmed inputs.
        self.last_final = self.last_final.max(confirmed.min(frame));
    }

    /// A spectator's side: `frames` from the feed, starting at frame `first`. Frames we have are
    /// skipped, a gap is refused (the feed is reliable and ordered, so a gap is a bug or a lie).
    /// Returns whether they were taken.
    pub(crate) fn receive(&mut self, first: i32, frames: Vec<Vec<u8>>) -> bool {
        let next = i64::from(self.base) + self.frames.len() as i64 + 1;
        let first = i64::from(first);
        if first > next || first <= i64::from(self.base) {
            self.refused += frames.len() as u64;
            return false;
        }
        let skip = (next - first) as usize;
        for inputs in frames.into_iter().skip(skip) {
            if !self.has_room(&inputs) {
                self.refused += 1;
                break;
            }
            self.bytes += inputs.len();
            self.frames.push(inputs);
        }
        self.last_final = self.last_held();
        true
    }

    /// Before any frame: the frames will start after `frame` (the frame of the snapshot a
    /// spectator starts from, a resync's, or [`RollbackSettings::first_frame`]). Returns whether
    /// it was taken (not once frames are held).
    ///
    /// [`RollbackSettings::first_frame`]: super::RollbackSettings::first_frame
    pub(crate) fn start_after(&mut self, frame: i32) -> bool {
        if !self.frames.is_empty() || frame < 0 {
            return false;
        }
        self.base = frame;
        self.last_final = frame;
        true
    }

    /// Whether no frame is held yet (a spectator that has not been fed).
    pub(crate) fn holds_none(&self) -> bool {
        self.frames.is_empty()
    }

    /// The newest frame held.
    fn last_held(&self) -> i32 {
        i32::try_from(i64::from(self.base) + self.frames.len() as i64).unwrap_or(i32::MAX)
    }

    /// Where `frame` is (or goes) in `frames`.
    fn index(&self, frame: i32) -> Option<usize> {
        usize::try_from(i64::from(frame) - i64::from(self.base) - 1).ok()
    }

    /// Whether one more frame of `inputs` fits the bounds ([`MAX_FRAMES`], [`MAX_BYTES`], the
    /// last frame number).
    fn has_room(&self, inputs: &[u8]) -> bool {
        self.frames.len() < MAX_FRAMES
            && self.last_held() < i32::MAX
            && self.bytes.saturating_add(inputs.len()) <= self.max_bytes
    }

    /// The newest final frame (0: none yet).
    pub fn last_final(&self) -> i32 {
        self.last_final
    }

    /// The inputs of `frame`, if recorded.
    pub fn get(&self, frame: i32) -> Option<&[u8]> {
        self.frames.get(self.index(frame)?).map(Vec::as_slice)
    }

    /// Final frames from `from` on, up to `upto` and at most [`BATCH`]: `(first, frames)`, or
    /// `None` if there are none yet.
    pub(crate) fn batch_from(&self, from: i32, upto: i32) -> Option<(i32, Vec<Vec<u8>>)> {
        let from = from.max(self.base.saturating_add(1));
        let last = self.last_final.min(upto);
        if from > last {
            return None;
        }
        let start = self.index(from)?;
        let end = self.index(last)?.saturating_add(1).min(start + BATCH);
        Some((from, self.frames.get(start..end)?.to_vec()))
    }

    /// Forgets everything (a new match).
    pub(crate) fn clear(&mut self) {
        self.base = 0;
        self.frames.clear();
        self.last_final = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: u8) -> Vec<u8> {
        vec![v]
    }

    #[test]
    fn predicted_frames_are_not_final_until_resimulated_or_confirmed() {
        let mut log = InputLog::default();
        // Frames 1-3 run on predictions; nothing confirmed yet.
        for f in 1..=3 {
            log.record(f, bytes(0), 0);
        }
        assert_eq!(log.last_final(), 0);
        assert!(log.batch_from(1, i32::MAX).is_none());
        // Inputs for 1-2 arrive and differ: GGRS rolls back and resimulates 1..=3 (4 is new).
        log.record(1, bytes(7), 2);
        assert_eq!(log.last_final(), 1);
        log.record(2, bytes(8), 2);
        log.record(3, bytes(9), 2);
        log.record(4, bytes(9), 2);
        assert_eq!(log.last_final(), 2);
        assert_eq!(
            log.batch_from(1, i32::MAX),
            Some((1, vec![bytes(7), bytes(8)]))
        );
        assert_eq!(log.batch_from(1, 1), Some((1, vec![bytes(7)])), "capped");
        assert!(log.batch_from(1, 0).is_none());
        assert_eq!(log.get(3), Some(&[9u8][..]));
    }

    #[test]
    fn a_correct_prediction_becomes_final_without_a_rollback() {
        let mut log = InputLog::default();
        log.record(1, bytes(1), -1);
        log.record(2, bytes(1), 1);
        // Frame 3 runs after frames up to 2 were confirmed (no rollback was needed).
        log.record(3, bytes(1), 2);
        assert_eq!(log.last_final(), 2);
    }

    #[test]
    fn final_never_moves_back_and_gaps_are_refused() {
        let mut log = InputLog::default();
        for f in 1..=10 {
            log.record(f, bytes(f as u8), 8);
        }
        assert_eq!(log.last_final(), 8);
        // A rollback to frame 9 (confirmed is still 8) does not make 8 unfinal.
        log.record(9, bytes(0), 8);
        assert_eq!(log.last_final(), 8);
        log.record(12, bytes(0), 12);
        log.record(0, bytes(0), 12);
        assert_eq!(log.refused, 2);
        assert_eq!(log.get(11), None);
    }

    #[test]
    fn the_feed_is_taken_in_order_and_in_batches() {
        let mut host = InputLog::default();
        for f in 1..=(BATCH as i32 + 10) {
            host.record(f, bytes(f as u8), f);
        }
        let mut spectator = InputLog::default();
        let (first, frames) = host.batch_from(1, i32::MAX).expect("frames");
        assert_eq!(frames.len(), BATCH);
        assert!(spectator.receive(first, frames));
        // A resend overlapping what we have is skipped, not appended twice.
        let (first, frames) = host.batch_from(BATCH as i32 - 5, i32::MAX).expect("frames");
        assert!(spectator.receive(first, frames));
        assert_eq!(spectator.last_final(), BATCH as i32 + 10);
        assert_eq!(
            spectator.get(BATCH as i32 + 10),
            host.get(BATCH as i32 + 10)
        );
        // A gap is refused.
        assert!(!spectator.receive(BATCH as i32 + 20, vec![bytes(1)]));
        assert!(!spectator.receive(-3, vec![bytes(1)]));
        assert_eq!(spectator.last_final(), BATCH as i32 + 10);
    }

    /// A spectator that starts from a snapshot of frame 500 takes the feed from frame 501 on, and
    /// nothing older.
    #[test]
    fn a_log_can_start_after_a_snapshot() {
        let mut host = InputLog::default();
        for f in 1..=600 {
            host.record(f, bytes(f as u8), f);
        }
        let mut spectator = InputLog::default();
        assert!(spectator.start_after(500));
        assert_eq!(spectator.last_final(), 500);
        assert!(spectator.get(500).is_none());
        assert!(!spectator.receive(1, vec![bytes(1)]), "before the snapshot");
        assert!(!spectator.receive(502, vec![bytes(1)]), "a gap");
        let (first, frames) = host.batch_from(501, i32::MAX).expect("frames");
        assert_eq!((first, frames.len()), (501, 100));
        assert!(spectator.receive(first, frames));
        assert_eq!(spectator.last_final(), 600);
        assert_eq!(spectator.get(501), host.get(501));
        assert_eq!(spectator.get(600), host.get(600));
        assert_eq!(spectator.batch_from(1, i32::MAX).map(|(f, _)| f), Some(501));
        assert!(!spectator.start_after(700), "frames are held already");
        spectator.clear();
        assert!(spectator.start_after(i32::MAX - 1));
        assert!(spectator.receive(i32::MAX, vec![bytes(1)]));
        assert_eq!(spectator.last_final(), i32::MAX);
        // Nothing past the last frame a frame count can name.
        let refused = spectator.refused;
        assert!(spectator.receive(i32::MAX, vec![bytes(1), bytes(2)]));
        assert_eq!(spectator.last_final(), i32::MAX);
        assert_eq!(spectator.refused, refused + 1);
    }

    /// A feeder that sends frames of huge inputs fills the log only up to its byte bound.
    #[test]
    fn a_feed_of_huge_frames_stops_at_the_byte_bound() {
        let mut spectator = InputLog {
            max_bytes: 1 << 20,
            ..InputLog::default()
        };
        let huge = vec![0u8; 64 * 1024];
        for first in 1..=20 {
            // Past the bound a frame is refused, and the ones after it are a gap.
            spectator.receive(first, vec![huge.clone()]);
        }
        assert_eq!(spectator.last_final(), 16, "1 MiB of 64 KiB frames");
        assert_eq!(spectator.refused, 4);
    }
}
