//! When a channel's lines were received, kept beside its ring for `logs --since/--until`:
//! one mark per batch (the first line's seq and the batch's receive time), not one per
//! line, and batches received within a millisecond of the last mark share it.

use std::collections::VecDeque;

/// Marks closer than this share the first one's time.
const GRAIN_US: i64 = 1_000;

/// The receive times of the lines a ring holds, by batch.
#[derive(Debug, Default)]
pub struct Received {
    /// (first seq, receive time µs): both ascending. Line `s` was received at the time of
    /// the last mark whose seq is at most `s`.
    marks: VecDeque<(u64, i64)>,
}

/// Which of a ring's lines were received in a window of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seqs {
    /// The first seq received at or after the window's start (`u64::MAX`: none yet).
    pub from: u64,
    /// The first seq received at or after the window's end: lines before it are in.
    pub to: u64,
    /// Whether the ring reaches back to the window's start: no older line can be in the
    /// window, so nothing needs to be read from the durable log.
    pub covers_start: bool,
}

impl Received {
    /// Lines from `seq` on were received at `us` (a clock going back keeps the last time).
    pub fn mark(&mut self, seq: u64, us: i64) {
        match self.marks.back() {
            Some(&(last_seq, _)) if seq <= last_seq => {}
            Some(&(_, t)) if us < t + GRAIN_US => {}
            _ => self.marks.push_back((seq, us)),
        }
    }

    /// The ring no longer holds lines before `seq`.
    pub fn forget_before(&mut self, seq: u64) {
        while self.marks.len() >= 2 && self.marks[1].0 <= seq {
            self.marks.pop_front();
        }
    }

    /// The ring's lines received at or after `since` and before `until` (µs), given the
    /// seq the next line will get and the time now.
    pub fn seqs(&self, since: i64, until: i64, next_seq: u64, now: i64) -> Seqs {
        let first_at = |t: i64| {
            let i = self.marks.partition_point(|&(_, at)| at < t);
            self.marks.get(i).map(|&(seq, _)| seq)
        };
        let from = first_at(since).unwrap_or(if since <= now { next_seq } else { u64::MAX });
        let to = first_at(until).unwrap_or(if until <= now { next_seq } else { u64::MAX });
        Seqs {
            from,
            to,
            covers_start: self.marks.front().is_some_and(|&(_, at)| at < since),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_of_time_become_seqs() {
        let mut r = Received::default();
        r.mark(1, 10_000); // lines 1..=3
        r.mark(4, 10_500); // within the grain: still 10_000
        r.mark(6, 20_000); // lines 6..=9
        r.mark(10, 30_000);
        let next = 12;
        assert_eq!(r.seqs(0, i64::MAX, next, 40_000).from, 1);
        assert_eq!(
            r.seqs(15_000, 25_000, next, 40_000),
            Seqs {
                from: 6,
                to: 10,
                covers_start: true
            }
        );
        assert_eq!(r.seqs(10_000, 20_000, next, 40_000).to, 6);
        // Nothing received since: the next line would be the first.
        assert_eq!(r.seqs(35_000, i64::MAX, next, 40_000).from, next);
        // A window in the future holds nothing yet.
        assert_eq!(r.seqs(50_000, 60_000, next, 40_000).from, u64::MAX);
        assert!(!r.seqs(5_000, i64::MAX, next, 40_000).covers_start);
        r.forget_before(7);
        assert_eq!(r.seqs(0, i64::MAX, next, 40_000).from, 6);
        // A clock going back: the line keeps the last time.
        r.mark(12, 1_000);
        assert_eq!(r.seqs(25_000, i64::MAX, 13, 40_000).from, 10);
    }
}
