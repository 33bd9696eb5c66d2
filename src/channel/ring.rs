//! A channel's history ring, stored compactly: the frames copied one after another into
//! chunks shared by many lines, and per line a 24-byte record (where its frame is, where its
//! fields sit in it, which of the channel's token names it came on). A [`Line`] (one slice of
//! a chunk: one reference count) is made only when someone reads the line. Seqs are not
//! stored: they follow from a line's position, with a mark wherever they jump.

use crate::line::{Fields, Line, Source};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// What a stored line counts against the history's byte cap beyond its frame: its record
/// and its share of the slack of the ring and of the chunks at both ends.
pub const LINE_OVERHEAD: usize = 32;

/// The smallest and largest chunk. A chunk is freed when the last of its lines leaves the
/// ring, so the ring holds up to about two chunks more than its lines: chunks are sized at a
/// 32nd of the bytes held, to keep that slack small (≈ 6 %) on full rings.
const MIN_CHUNK: usize = 2048;
const MAX_CHUNK: usize = 65536;

/// `Rec::src` of a line whose frame is over 64 KiB or whose token name found no room in the
/// table: its length, fields and name are in `Ring::wide`.
const WIDE: u8 = u8::MAX;

/// One stored line.
#[derive(Clone, Copy)]
struct Rec {
    /// The number of the segment holding the frame (see `Ring::segs`), wrapping.
    seg: u32,
    /// Where the frame starts in its segment.
    off: u32,
    len: u16,
    /// (start, end) of the timestamp, PROCID and MSG in the frame.
    ts: (u16, u16),
    procid: (u16, u16),
    msg: (u16, u16),
    pri: u8,
    /// Index of the token name in `Ring::sources`, or [`WIDE`].
    src: u8,
}

/// A line that does not fit a [`Rec`] (rare: frames over 64 KiB, or a channel whose ring
/// holds lines of more than 254 token names).
struct Wide {
    /// Position of the line (see `Ring::popped`).
    pos: u64,
    len: u32,
    fields: Fields,
    source: Source,
}

/// A frozen run of a chunk: the frames written to it between two reads.
struct Seg {
    bytes: Bytes,
    /// The number of the chunk it is part of, wrapping.
    chunk: u32,
}

/// A line as stored, borrowed from the ring.
pub struct View<'a> {
    pub frame: &'a [u8],
    pub source: &'a Source,
    fields: Fields,
}

impl View<'_> {
    pub fn procid(&self) -> &[u8] {
        span(self.frame, self.fields.procid)
    }

    pub fn msg(&self) -> &[u8] {
        span(self.frame, self.fields.msg)
    }
}

fn span(frame: &[u8], (a, b): (u32, u32)) -> &[u8] {
    frame.get(a as usize..b as usize).unwrap_or(&[])
}

#[derive(Default)]
pub struct Ring {
    recs: VecDeque<Rec>,
    /// Lines dropped from the front so far: `recs[i]` is the line at position `popped + i`.
    popped: u64,
    /// (position, seq) where seqs start or jump (a reload, restored lines): the line at
    /// position `p` has seq `s + (p - q)` for the last mark `(q, s)` with `q ≤ p`. One mark
    /// in the usual case.
    seqs: VecDeque<(u64, u64)>,
    /// The frozen parts of the chunks, oldest first; `segs[0]` is number `seg_base`. Frames
    /// written since the last freeze are in `filling`, the segment numbered next.
    segs: VecDeque<Seg>,
    seg_base: u32,
    /// The rest of the newest chunk: its written part is the segment being filled.
    filling: BytesMut,
    /// The capacity of every chunk still held (by a segment or `filling`), oldest first;
    /// `chunks[0]` is number `chunk_base`, the newest is `filling`'s.
    chunks: VecDeque<u32>,
    chunk_base: u32,
    /// The token names of the lines, by index, each with the number of records that use it:
    /// a slot no record uses any more is taken by the next new name, so a channel whose
    /// tokens come and go does not fill the table for good.
    sources: Vec<(Source, u32)>,
    wide: VecDeque<Wide>,
    /// What the lines count against the byte cap: frames plus [`LINE_OVERHEAD`] each.
    bytes: usize,
}

impl Ring {
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// What the lines count against the byte cap.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bytes of the chunks the ring holds (with their unused parts).
    #[cfg(test)]
    pub fn chunk_bytes(&self) -> usize {
        self.chunks.iter().map(|&c| c as usize).sum()
    }

    /// Appends `line` under `seq` (its own seq is not read).
    pub fn push(&mut self, line: &Line, seq: u64) {
        let frame = &line.frame[..];
        let (seg, off) = self.copy(frame);
        let pos = self.popped + self.recs.len() as u64;
        if self.seq_at_pos(pos) != Some(seq) {
            self.seqs.push_back((pos, seq));
        }
        let f = line.fields();
        let src = if frame.len() <= u16::MAX as usize {
            self.source_index(&line.source)
        } else {
            WIDE
        };
        let narrow = |(a, b): (u32, u32)| (a as u16, b as u16);
        if src != WIDE {
            self.sources[src as usize].1 += 1;
            self.recs.push_back(Rec {
                seg,
                off,
                len: frame.len() as u16,
                ts: narrow(f.ts),
                procid: narrow(f.procid),
                msg: narrow(f.msg),
                pri: f.pri,
                src,
            });
        } else {
            self.wide.push_back(Wide {
                pos,
                len: frame.len() as u32,
                fields: f,
                source: line.source,
            });
            self.recs.push_back(Rec {
                seg,
                off,
                len: 0,
                ts: (0, 0),
                procid: (0, 0),
                msg: (0, 0),
                pri: f.pri,
                src: WIDE,
            });
        }
        self.bytes += frame.len() + LINE_OVERHEAD;
    }

    /// Copies `frame` to the newest chunk (a new one when it has no room): its segment and
    /// offset.
    fn copy(&mut self, frame: &[u8]) -> (u32, u32) {
        if self.filling.capacity() - self.filling.len() < frame.len() {
            self.freeze();
            let want = (self.bytes / 32)
                .clamp(MIN_CHUNK, MAX_CHUNK)
                .max(frame.len());
            self.filling = BytesMut::with_capacity(want);
            let cap = u32::try_from(self.filling.capacity()).unwrap_or(u32::MAX);
            self.chunks.push_back(cap);
        }
        let seg = self.seg_base.wrapping_add(self.segs.len() as u32);
        let off = self.filling.len() as u32;
        self.filling.extend_from_slice(frame);
        (seg, off)
    }

    /// The number of the chunk `filling` is part of.
    fn filling_chunk(&self) -> u32 {
        self.chunk_base
            .wrapping_add(self.chunks.len().saturating_sub(1) as u32)
    }

    /// Freezes the frames written since the last freeze into a segment, so [`Ring::line`]
    /// can hand out slices of it.
    pub fn freeze(&mut self) {
        if !self.filling.is_empty() {
            let chunk = self.filling_chunk();
            let bytes = self.filling.split().freeze();
            self.segs.push_back(Seg { bytes, chunk });
        }
    }

    fn source_index(&mut self, s: &Source) -> u8 {
        if let Some(i) = self.sources.iter().position(|x| x.0 == *s) {
            return i as u8;
        }
        if let Some(i) = self.sources.iter().position(|x| x.1 == 0) {
            self.sources[i].0 = *s;
            return i as u8;
        }
        if self.sources.len() < WIDE as usize {
            self.sources.push((*s, 0));
            return (self.sources.len() - 1) as u8;
        }
        WIDE
    }

    /// The seq the line at position `pos` has (or would have, just past the end).
    fn seq_at_pos(&self, pos: u64) -> Option<u64> {
        let i = self.seqs.partition_point(|&(p, _)| p <= pos);
        let (p, s) = *self.seqs.get(i.checked_sub(1)?)?;
        Some(s + (pos - p))
    }

    /// The seq of the `i`-th line (0: the oldest).
    pub fn seq(&self, i: usize) -> u64 {
        self.seq_at_pos(self.popped + i as u64).unwrap_or(0)
    }

    fn wide(&self, pos: u64) -> Option<&Wide> {
        let i = self.wide.partition_point(|w| w.pos < pos);
        self.wide.get(i).filter(|w| w.pos == pos)
    }

    /// Where the `i`-th line's frame is, its fields and its token name.
    fn parts(&self, i: usize) -> (u32, u32, usize, Fields, &Source) {
        let r = &self.recs[i];
        let wide = |(a, b): (u16, u16)| (a as u32, b as u32);
        if r.src != WIDE {
            let f = Fields {
                pri: r.pri,
                ts: wide(r.ts),
                procid: wide(r.procid),
                msg: wide(r.msg),
            };
            return (
                r.seg,
                r.off,
                r.len as usize,
                f,
                &self.sources[r.src as usize].0,
            );
        }
        match self.wide(self.popped + i as u64) {
            Some(w) => (r.seg, r.off, w.len as usize, w.fields, &w.source),
            None => (r.seg, r.off, 0, Fields::default(), &EMPTY_SOURCE),
        }
    }

    /// The `i`-th line's frame, fields and token name, without making a [`Line`].
    pub fn view(&self, i: usize) -> View<'_> {
        let (seg, off, len, fields, source) = self.parts(i);
        let k = seg.wrapping_sub(self.seg_base) as usize;
        let whole: &[u8] = match self.segs.get(k) {
            Some(s) => &s.bytes,
            None => &self.filling,
        };
        let off = off as usize;
        View {
            frame: whole.get(off..off + len).unwrap_or(&[]),
            source,
            fields,
        }
    }

    /// The `i`-th line's frame as a slice of its chunk: [`Ring::freeze`] first, or it is
    /// copied.
    pub fn frame(&self, i: usize) -> Bytes {
        let (seg, off, len, _, _) = self.parts(i);
        let k = seg.wrapping_sub(self.seg_base) as usize;
        match self.segs.get(k) {
            Some(s) if off as usize + len <= s.bytes.len() => {
                s.bytes.slice(off as usize..off as usize + len)
            }
            _ => Bytes::copy_from_slice(self.view(i).frame),
        }
    }

    /// The `i`-th line (0: the oldest): [`Ring::freeze`] first, or its frame is copied.
    pub fn line(&self, i: usize) -> Line {
        let (_, _, _, fields, source) = self.parts(i);
        let mut line = Line::new(self.frame(i), fields, *source);
        line.seq = self.seq(i);
        line
    }

    /// Drops the oldest lines while there are more than `lines` or they count more than
    /// `bytes`, and the chunks no line is left in. The seq of the oldest line left.
    pub fn trim(&mut self, lines: usize, bytes: usize) -> Option<u64> {
        while self.recs.len() > lines || self.bytes > bytes {
            let Some(r) = self.recs.pop_front() else {
                break;
            };
            let len = if r.src == WIDE {
                match self.wide.front() {
                    Some(w) if w.pos == self.popped => {
                        let len = w.len as usize;
                        self.wide.pop_front();
                        len
                    }
                    _ => 0,
                }
            } else {
                if let Some(slot) = self.sources.get_mut(r.src as usize) {
                    slot.1 = slot.1.saturating_sub(1);
                }
                r.len as usize
            };
            self.bytes = self.bytes.saturating_sub(len + LINE_OVERHEAD);
            self.popped += 1;
        }
        while self.seqs.len() >= 2 && self.seqs[1].0 <= self.popped {
            self.seqs.pop_front();
        }
        // Segments before the oldest line's are unused, and so are the chunks before the
        // oldest segment's (or `filling`'s).
        let used = match self.recs.front() {
            Some(r) => r.seg.wrapping_sub(self.seg_base) as usize,
            None => self.segs.len(),
        };
        for _ in 0..used.min(self.segs.len()) {
            self.segs.pop_front();
            self.seg_base = self.seg_base.wrapping_add(1);
        }
        let oldest = match self.segs.front() {
            Some(s) => s.chunk,
            None => self.filling_chunk(),
        };
        while self.chunks.len() > 1 && self.chunk_base != oldest {
            self.chunks.pop_front();
            self.chunk_base = self.chunk_base.wrapping_add(1);
        }
        self.recs.front().map(|_| self.seq(0))
    }
}

static EMPTY_SOURCE: Source = Source::EMPTY;

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize, pad: usize, source: &[u8]) -> Line {
        let f = format!(
            "<190>1 2016-03-08T02:43:26.693600+00:00 h t.x web.{i} - - line {i} {}",
            ".".repeat(pad)
        );
        Line::parse(Bytes::from(f), Bytes::copy_from_slice(source)).unwrap()
    }

    fn same(a: &Line, b: &Line) {
        assert_eq!(a.frame, b.frame);
        assert_eq!(a.timestamp(), b.timestamp());
        assert_eq!(a.procid(), b.procid());
        assert_eq!(a.msg(), b.msg());
        assert_eq!(a.pri, b.pri);
        assert_eq!(&a.source[..], &b.source[..]);
    }

    #[test]
    fn a_record_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Rec>(), 24);
    }

    #[test]
    fn lines_come_back_as_they_went_in() {
        let mut r = Ring::default();
        let lines: Vec<Line> = (0..100)
            .map(|i| line(i, i * 7, if i % 3 == 0 { b"heroku" } else { b"app" }))
            .collect();
        for (i, l) in lines.iter().enumerate() {
            r.push(l, i as u64 + 1);
        }
        // Read half before the freeze (copied) and all after it (slices of the chunks).
        for (i, l) in lines.iter().enumerate().take(50) {
            same(&r.line(i), l);
        }
        r.freeze();
        for (i, l) in lines.iter().enumerate() {
            let got = r.line(i);
            same(&got, l);
            assert_eq!(got.seq, i as u64 + 1);
            assert_eq!(r.view(i).frame, &l.frame[..]);
        }
    }

    #[test]
    fn frames_over_64k_and_names_past_the_table_are_kept_whole() {
        let mut r = Ring::default();
        let big = line(1, 70_000, b"app");
        r.push(&big, 1);
        let names: Vec<Vec<u8>> = (0..300).map(|i| format!("n{i}").into_bytes()).collect();
        let many: Vec<Line> = names.iter().map(|n| line(2, 10, n)).collect();
        for (i, l) in many.iter().enumerate() {
            r.push(l, i as u64 + 2);
        }
        r.freeze();
        same(&r.line(0), &big);
        assert!(r.line(0).msg().len() > 70_000);
        for (i, l) in many.iter().enumerate() {
            same(&r.line(i + 1), l);
        }
        assert_eq!(r.sources.len(), 255);
        // The big line, wide by its length, takes no slot: the first 255 names fit.
        assert_eq!(r.wide.len(), 1 + 300 - 255);
        // Trimming drops the wide lines with their records.
        let first = r.trim(10, usize::MAX);
        assert_eq!(first, Some(292));
        assert_eq!(r.wide.len(), 10);
        for i in 0..10 {
            same(&r.line(i), &many[290 + i]);
        }
    }

    #[test]
    fn seqs_follow_positions_and_jumps() {
        let mut r = Ring::default();
        for (i, seq) in [5u64, 6, 7, 20, 21, 30].into_iter().enumerate() {
            r.push(&line(i, 0, b"app"), seq);
        }
        let seqs: Vec<u64> = (0..r.len()).map(|i| r.seq(i)).collect();
        assert_eq!(seqs, [5, 6, 7, 20, 21, 30]);
        assert_eq!(r.trim(2, usize::MAX), Some(21));
        assert_eq!(r.seqs.len(), 2, "marks before the oldest line are gone");
        assert_eq!((r.seq(0), r.seq(1)), (21, 30));
    }

    /// Names whose lines have all left free their slots: a channel whose tokens come and go
    /// does not fill the table for good (every later new name stored wide).
    #[test]
    fn names_whose_lines_left_free_their_slots() {
        let mut r = Ring::default();
        let mut seq = 0;
        for k in 0..255 {
            seq += 1;
            r.push(&line(k, 0, format!("old{k}").as_bytes()), seq);
        }
        r.trim(0, 0);
        let fresh = line(1, 0, b"new");
        for _ in 0..10 {
            seq += 1;
            r.push(&fresh, seq);
        }
        assert!(r.wide.is_empty(), "{} wide", r.wide.len());
        r.freeze();
        for i in 0..10 {
            same(&r.line(i), &fresh);
        }
    }

    /// Random pushes (seq jumps, frames about 64 KiB, more names than the table), freezes
    /// and trims, checked line by line against a plain queue of the lines.
    #[test]
    fn the_ring_matches_a_queue_of_lines() {
        for seed in 1..12u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut below = |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut r = Ring::default();
            let mut q: VecDeque<Line> = VecDeque::new();
            let mut seq = 1u64;
            let names = 1 + below(400);
            for step in 0..1500usize {
                match below(100) {
                    0..=69 => {
                        let pad = match below(50) {
                            0 => 65_460 + below(12) as usize,
                            1 => 70_000,
                            _ => below(400) as usize,
                        };
                        match below(60) {
                            0 | 1 => seq += below(100),
                            2 => seq = seq.saturating_sub(below(50)).max(1),
                            _ => {}
                        }
                        let mut l = line(step, pad, format!("s{}", below(names)).as_bytes());
                        l.seq = seq;
                        r.push(&l, seq);
                        q.push_back(l);
                        seq += 1;
                    }
                    70..=79 => r.freeze(),
                    _ => {
                        let (lines, bytes) = (below(300) as usize, below(400_000) as usize);
                        let first = r.trim(lines, bytes);
                        let mut b: usize = q.iter().map(|l| l.frame.len() + LINE_OVERHEAD).sum();
                        while q.len() > lines || b > bytes {
                            let Some(l) = q.pop_front() else { break };
                            b -= l.frame.len() + LINE_OVERHEAD;
                        }
                        assert_eq!(first, q.front().map(|l| l.seq));
                    }
                }
                if step % 50 == 0 || step == 1499 {
                    assert_eq!(r.len(), q.len());
                    let b: usize = q.iter().map(|l| l.frame.len() + LINE_OVERHEAD).sum();
                    assert_eq!(r.bytes(), b);
                    for (i, l) in q.iter().enumerate() {
                        let got = r.line(i);
                        same(&got, l);
                        assert_eq!(got.seq, l.seq, "seed {seed} step {step} line {i}");
                        assert_eq!(r.view(i).msg(), l.msg());
                    }
                }
            }
        }
    }

    /// A chunk is freed once its last line leaves the ring, and a full ring holds at most its
    /// byte cap plus a little slack in chunks.
    #[test]
    fn eviction_frees_chunks_and_the_byte_cap_holds() {
        let cap = 256 * 1024;
        let mut r = Ring::default();
        let l = line(1, 80, b"app");
        let mut seq = 0;
        for _ in 0..200 {
            for _ in 0..100 {
                seq += 1;
                r.push(&l, seq);
            }
            // Reads freeze segments now and then, as sessions do.
            r.freeze();
            r.trim(usize::MAX, cap);
            assert!(r.bytes() <= cap);
            let held = r.chunk_bytes() + r.recs.capacity() * std::mem::size_of::<Rec>();
            assert!(
                held <= cap + cap / 8,
                "ring holds {held} bytes for a cap of {cap}"
            );
        }
        // 20,000 lines went through; the chunks left are those of the last ones.
        let frames = r.len() * l.frame.len();
        assert!(
            r.chunk_bytes() < frames + 2 * (cap / 32),
            "{}",
            r.chunk_bytes()
        );
        // A segment per chunk, and one more per read (freeze) within the ring's span.
        assert!(r.segs.len() <= r.chunks.len() + r.len() / 100 + 1);
        r.trim(0, 0);
        assert_eq!(r.len(), 0);
        assert!(r.segs.is_empty());
        assert_eq!(r.chunks.len(), 1, "only the chunk being filled is left");
    }
}
