//! A drain's bounded buffer. Full means drop-oldest: the lines that go are counted, and the
//! drain's next delivery starts with the L10 frame saying how many and since when. With the
//! durable log on, the buffer is *backed* by it: the oldest lines still go when it is full,
//! but silently (they are read back from the log, see `cursor.rs`).

use crate::clock::now_micros;
use crate::line::Line;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

struct Inner {
    q: VecDeque<Line>,
    /// Dropped and not yet announced.
    dropped: u64,
    /// When the first of those was dropped.
    since: i64,
    /// The drain's task has ended: nothing is queued any more.
    closed: bool,
    /// The durable log holds every line: overflow is not a loss.
    backed: bool,
}

/// Lines waiting for one drain.
pub struct Buffer {
    inner: Mutex<Inner>,
    cap: usize,
    /// Lines queued, readable without the lock (for intake's `pressure` check).
    len: AtomicUsize,
    pub notify: Notify,
}

/// Lines dropped and not yet announced: how many, since when (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub count: u64,
    pub since: i64,
}

impl Buffer {
    pub fn new(cap: usize) -> Buffer {
        Buffer::with_backing(cap, false)
    }

    /// A buffer whose overflow is silent when `backed` (the durable log holds the lines).
    pub fn with_backing(cap: usize, backed: bool) -> Buffer {
        Buffer {
            inner: Mutex::new(Inner {
                q: VecDeque::with_capacity(cap.min(1024)),
                dropped: 0,
                since: 0,
                closed: false,
                backed,
            }),
            cap: cap.max(1),
            len: AtomicUsize::new(0),
            notify: Notify::new(),
        }
    }

    fn drop_oldest(inner: &mut Inner, cap: usize) -> u64 {
        let mut n = 0;
        while inner.q.len() > cap {
            inner.q.pop_front();
            n += 1;
        }
        if n > 0 && !inner.backed {
            if inner.dropped == 0 {
                inner.since = now_micros();
            }
            inner.dropped += n;
        }
        n
    }

    /// Appends lines; returns how many were dropped to make room (all of them once the
    /// buffer is closed).
    pub fn push(&self, lines: &[Line]) -> u64 {
        let n = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if g.closed {
                return lines.len() as u64;
            }
            g.q.extend(lines.iter().cloned());
            let n = Self::drop_oldest(&mut g, self.cap);
            self.len.store(g.q.len(), Ordering::Relaxed);
            n
        };
        self.notify.notify_one();
        n
    }

    /// Takes up to `max` lines (at least one if any) whose frames total at most `max_bytes`,
    /// and the drop count to announce first.
    pub fn take(&self, max: usize, max_bytes: usize) -> (Vec<Line>, Option<Dropped>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(max.min(g.q.len()));
        let mut bytes = 0;
        while out.len() < max {
            let Some(front) = g.q.front() else { break };
            bytes += front.frame.len() + 64;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            if let Some(l) = g.q.pop_front() {
                out.push(l);
            }
        }
        let dropped = (g.dropped > 0).then(|| Dropped {
            count: g.dropped,
            since: g.since,
        });
        g.dropped = 0;
        self.len.store(g.q.len(), Ordering::Relaxed);
        (out, dropped)
    }

    /// Backed buffers: drops the lines before seq `next` (delivered from the log meanwhile),
    /// then takes the run of lines that follows on from `next` (no gap), like [`Buffer::take`]
    /// without the drop count. Returns the lines and how many were dropped before them.
    pub fn take_run(&self, max: usize, max_bytes: usize, next: u64) -> (Vec<Line>, usize) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut discarded = 0;
        while g.q.front().is_some_and(|l| l.seq < next) {
            g.q.pop_front();
            discarded += 1;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut want = next;
        while out.len() < max {
            let Some(front) = g.q.front() else { break };
            bytes += front.frame.len() + 64;
            if front.seq != want || (!out.is_empty() && bytes > max_bytes) {
                break;
            }
            want += 1;
            if let Some(l) = g.q.pop_front() {
                out.push(l);
            }
        }
        self.len.store(g.q.len(), Ordering::Relaxed);
        (out, discarded)
    }

    /// The seq of the first line queued.
    pub fn front_seq(&self) -> Option<u64> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.q.front().map(|l| l.seq)
    }

    /// The drop count to announce (and forgets it).
    pub fn take_dropped(&self) -> Option<Dropped> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let d = (g.dropped > 0).then(|| Dropped {
            count: g.dropped,
            since: g.since,
        });
        g.dropped = 0;
        d
    }

    /// Has a drop count to announce?
    pub fn has_dropped(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).dropped > 0
    }

    /// Puts a batch that could not be delivered back in front (dropping the oldest if the
    /// buffer filled meanwhile); returns how many were dropped.
    pub fn unshift(&self, lines: Vec<Line>, dropped: Option<Dropped>) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for l in lines.into_iter().rev() {
            g.q.push_front(l);
        }
        if let Some(d) = dropped {
            g.since = if g.dropped == 0 {
                d.since
            } else {
                g.since.min(d.since)
            };
            g.dropped += d.count;
        }
        let n = Self::drop_oldest(&mut g, self.cap);
        self.len.store(g.q.len(), Ordering::Relaxed);
        n
    }

    /// Counts lines that were taken and then lost (a rejected HTTP batch), to announce.
    pub fn lost(&self, n: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if n > 0 {
            if g.dropped == 0 {
                g.since = now_micros();
            }
            g.dropped += n;
        }
    }

    /// Ends the buffer when its drain's task ends: empties it and refuses lines from then on.
    /// Returns how many lines it still held.
    pub fn close(&self) -> usize {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.closed = true;
        let n = g.q.len();
        g.q.clear();
        self.len.store(0, Ordering::Relaxed);
        n
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Has something to deliver (lines or a drop to announce)?
    pub fn pending(&self) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        !g.q.is_empty() || g.dropped > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn line(i: usize) -> Line {
        Line::parse(
            Bytes::from(format!("<190>1 2016-03-08T02:43:26Z h t.x web.1 - - {i}")),
            Bytes::from_static(b"app"),
        )
        .unwrap()
    }

    #[test]
    fn full_drops_oldest_and_counts() {
        let b = Buffer::new(3);
        let lines: Vec<Line> = (0..5).map(line).collect();
        assert_eq!(b.push(&lines), 2);
        let (got, d) = b.take(10, 1 << 20);
        assert_eq!(
            got.iter().map(|l| l.msg().to_vec()).collect::<Vec<_>>(),
            [b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
        );
        assert_eq!(d.map(|d| d.count), Some(2));
        assert_eq!(b.take(10, 1 << 20).1, None, "announced once");
    }

    fn seqd(i: usize) -> Line {
        let mut l = line(i);
        l.seq = i as u64;
        l
    }

    #[test]
    fn a_backed_buffer_overflows_silently_and_takes_only_the_run_after_the_cursor() {
        let b = Buffer::with_backing(3, true);
        assert_eq!(b.push(&(1..=5).map(seqd).collect::<Vec<_>>()), 2);
        assert_eq!(
            b.take_dropped(),
            None,
            "overflow of a backed buffer is no loss"
        );
        assert_eq!(b.front_seq(), Some(3));
        let (got, gone) = b.take_run(10, 1 << 20, 2);
        assert!(got.is_empty() && gone == 0, "seq 2 is not in memory");
        let (got, gone) = b.take_run(10, 1 << 20, 4);
        assert_eq!((got.len(), gone), (2, 1));
        assert_eq!(got[0].seq, 4);
        b.push(&[seqd(7)]);
        assert!(
            b.take_run(10, 1 << 20, 6).0.is_empty(),
            "a gap is not bridged"
        );
    }

    #[test]
    fn unshift_keeps_order_and_the_drop_count() {
        let b = Buffer::new(4);
        b.push(&(0..6).map(line).collect::<Vec<_>>());
        let (got, d) = b.take(2, 1 << 20);
        b.push(&[line(6)]);
        assert_eq!(b.unshift(got, d), 1);
        let (got, d) = b.take(10, 1 << 20);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].msg(), b"3");
        assert_eq!(d.unwrap().count, 3);
    }
}
