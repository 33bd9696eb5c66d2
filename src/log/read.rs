//! Reads: one channel's lines by seq and receive time, oldest first or the newest N, and a
//! cursor for drains.
//!
//! A read takes a snapshot under the read lock (the segments holding the channel, and the
//! active segment's entries for it), then reads without any lock: the entries of each
//! sealed segment from its index (one `pread`), then only the records that can match, with
//! neighbouring records read together. Every record is checked (CRC, channel, seq) before
//! its lines are returned; a corrupt one is skipped and counted.

use super::index::{self, Entry, Row};
use super::record::{self, Check};
use super::{lock, ChannelId, Log, LogError, Sealed};
use bytes::Bytes;
use std::fs::File;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// A line read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The line's number in its channel.
    pub seq: u64,
    /// Receive time (µs since the epoch) of the record the line is in.
    pub recv_us: i64,
    /// The source name given to `append` (e.g. `app`, `heroku`).
    pub source: Bytes,
    /// The frame given to `append`, as stored.
    pub frame: Bytes,
}

/// Which lines [`Log::read`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only lines with a greater seq.
    pub after_seq: Option<u64>,
    /// Only lines received at or after this time (µs since the epoch).
    pub since_us: Option<i64>,
    /// Only lines received before this time (µs since the epoch).
    pub until_us: Option<i64>,
    /// At most this many lines.
    pub limit: usize,
    /// The last `limit` lines that match instead of the first (still returned oldest first).
    pub from_end: bool,
}

/// What [`Log::read_after`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct After {
    /// The next lines after the seq asked for, oldest first.
    pub lines: Vec<LogLine>,
    /// The first seq still stored for the channel (None: nothing stored). A cursor below
    /// `first_stored - 1` fell behind retention: the lines between were deleted.
    pub first_stored: Option<u64>,
    /// The last seq written for the channel.
    pub last_stored: Option<u64>,
}

/// Part of a read: a sealed segment's row for the channel, or the active segment's entries.
enum Part {
    Sealed(Arc<Sealed>, Row),
    Active(Arc<File>, Vec<Entry>),
}

struct Plan {
    parts: Vec<Part>,
    /// Lines at or below this seq are not returned (the cursor, or a forgotten channel).
    after: u64,
    first_stored: Option<u64>,
    last_stored: Option<u64>,
}

/// Records read together when the gap between them is at most this.
const GAP: u64 = 64 << 10;
/// Largest single read of neighbouring records.
const SPAN: u64 = 4 << 20;
/// Entries handled per step (bounds the memory of a read that stops early).
const STEP: usize = 256;

#[derive(Clone, Copy)]
struct Window {
    after: u64,
    since: i64,
    until: i64,
}

impl Window {
    fn keeps(&self, e: &Entry) -> bool {
        e.last_seq() > self.after && e.recv_us >= self.since && e.recv_us < self.until
    }
}

impl Log {
    fn plan(&self, channel: ChannelId, w: &mut Window) -> Plan {
        let s = lock(&self.inner.segs);
        let forgotten = s.forgotten.get(&channel).copied().unwrap_or(0);
        w.after = w.after.max(forgotten);
        let mut plan = Plan {
            parts: Vec::new(),
            after: w.after,
            first_stored: None,
            last_stored: None,
        };
        let mut note = |first: u64, last: u64| {
            if last > forgotten {
                let first = first.max(forgotten + 1);
                plan.first_stored = Some(plan.first_stored.map_or(first, |f| f.min(first)));
                plan.last_stored = Some(plan.last_stored.map_or(last, |l| l.max(last)));
            }
        };
        let mut parts = Vec::new();
        for seg in &s.sealed {
            if let Some(row) = seg.table.rows.get(&channel) {
                let m = &row.summary;
                note(m.first_seq, m.last_seq);
                if m.last_seq > w.after && m.max_us >= w.since && m.min_us < w.until {
                    parts.push(Part::Sealed(seg.clone(), *row));
                }
            }
        }
        if let Some((m, entries)) = s.active.index.chans.get(&channel) {
            note(m.first_seq, m.last_seq);
            let from = entries.partition_point(|e| e.last_seq() <= w.after);
            let keep: Vec<Entry> = entries[from..]
                .iter()
                .filter(|e| w.keeps(e))
                .copied()
                .collect();
            if !keep.is_empty() {
                parts.push(Part::Active(s.active.file.clone(), keep));
            }
        }
        plan.parts = parts;
        plan
    }

    /// The entries of a part that can hold matching lines, in record order.
    fn entries(&self, channel: ChannelId, part: &Part, w: &Window) -> io::Result<Vec<Entry>> {
        let (seg, row) = match part {
            Part::Active(_, e) => return Ok(e.clone()),
            Part::Sealed(seg, row) => (seg, row),
        };
        let all = match index::load_entries(&seg.idx, row) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(segment = %seg.log_path.display(), "bad index entries: scanning the segment");
                let (idx, _) = super::recover::scan_segment(&seg.file, seg.len)?;
                idx.chans
                    .get(&channel)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            }
            Err(e) => return Err(e),
        };
        let from = all.partition_point(|e| e.last_seq() <= w.after);
        Ok(all[from..].iter().filter(|e| w.keeps(e)).copied().collect())
    }

    /// Reads the records of `entries` (in offset order) from `file`, merging neighbours
    /// into one read; a record that fails its checks is None (and counted).
    fn records(
        &self,
        channel: ChannelId,
        file: &File,
        entries: &[Entry],
    ) -> io::Result<Vec<Option<(Bytes, record::Header)>>> {
        let mut out = Vec::with_capacity(entries.len());
        let mut i = 0;
        while i < entries.len() {
            let start = entries[i].off;
            let mut end = start + u64::from(entries[i].len);
            let mut j = i + 1;
            while j < entries.len() {
                let e = &entries[j];
                let e_end = e.off + u64::from(e.len);
                if e.off < end || e.off - end > GAP || e_end - start > SPAN {
                    break;
                }
                end = e_end;
                j += 1;
            }
            let buf = Bytes::from(read_span(file, start, (end - start) as usize)?);
            for e in &entries[i..j] {
                let from = (e.off - start) as usize;
                let to = from + e.len as usize;
                let rec = match buf.get(from..to).map(record::check) {
                    Some(Check::Valid(h))
                        if h.channel == channel
                            && h.first_seq == e.first_seq
                            && h.count == e.count =>
                    {
                        Some((buf.slice(from..to), h))
                    }
                    _ => {
                        self.inner
                            .counters
                            .read_corrupt_records
                            .fetch_add(1, Relaxed);
                        tracing::warn!(channel, offset = e.off, "corrupt log record skipped");
                        None
                    }
                };
                out.push(rec);
            }
            i = j;
        }
        Ok(out)
    }

    /// A channel's lines matching `q`, oldest first (see [`Query`]). Blocking: call it from
    /// `spawn_blocking`. Lines are visible once written (within `flush_delay` of `append`).
    pub fn read(&self, channel: ChannelId, q: &Query) -> Result<Vec<LogLine>, LogError> {
        let mut out = Vec::new();
        if q.limit == 0 {
            return Ok(out);
        }
        let mut w = Window {
            after: q.after_seq.unwrap_or(0),
            since: q.since_us.unwrap_or(i64::MIN),
            until: q.until_us.unwrap_or(i64::MAX),
        };
        let plan = self.plan(channel, &mut w);
        if q.from_end {
            for part in plan.parts.iter().rev() {
                let entries = self.entries(channel, part, &w)?;
                for step in entries.rchunks(STEP) {
                    let recs = self.records(channel, file_of(part), step)?;
                    for (bytes, h) in recs.iter().rev().flatten() {
                        let lines: Vec<_> = record::lines(bytes, h).collect();
                        for (seq, source, frame) in lines.into_iter().rev() {
                            if seq > w.after {
                                out.push(line(seq, h, source, frame));
                                if out.len() == q.limit {
                                    out.reverse();
                                    return Ok(out);
                                }
                            }
                        }
                    }
                }
            }
            out.reverse();
        } else {
            for part in &plan.parts {
                let entries = self.entries(channel, part, &w)?;
                for step in entries.chunks(STEP) {
                    for (bytes, h) in self.records(channel, file_of(part), step)?.iter().flatten() {
                        for (seq, source, frame) in record::lines(bytes, h) {
                            if seq > w.after {
                                out.push(line(seq, h, source, frame));
                                if out.len() == q.limit {
                                    return Ok(out);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The cursor read of drains: up to `max_lines` lines after `after_seq` (0: from the
    /// first stored), stopping once their frames and sources reach `max_bytes` (at least one
    /// line is returned), with the first and last seq still stored for the channel.
    /// Blocking: call it from `spawn_blocking`.
    pub fn read_after(
        &self,
        channel: ChannelId,
        after_seq: u64,
        max_lines: usize,
        max_bytes: usize,
    ) -> Result<After, LogError> {
        let mut w = Window {
            after: after_seq,
            since: i64::MIN,
            until: i64::MAX,
        };
        let plan = self.plan(channel, &mut w);
        let mut out = After {
            lines: Vec::new(),
            first_stored: plan.first_stored,
            last_stored: plan.last_stored,
        };
        if max_lines == 0 {
            return Ok(out);
        }
        let mut bytes = 0usize;
        for part in &plan.parts {
            let entries = self.entries(channel, part, &w)?;
            for step in entries.chunks(STEP.min(max_lines)) {
                for (rec, h) in self.records(channel, file_of(part), step)?.iter().flatten() {
                    for (seq, source, frame) in record::lines(rec, h) {
                        if seq <= plan.after {
                            continue;
                        }
                        bytes += source.len() + frame.len();
                        out.lines.push(line(seq, h, source, frame));
                        if out.lines.len() >= max_lines || bytes >= max_bytes {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn file_of(part: &Part) -> &File {
    match part {
        Part::Sealed(seg, _) => &seg.file,
        Part::Active(f, _) => f,
    }
}

fn line(seq: u64, h: &record::Header, source: Bytes, frame: Bytes) -> LogLine {
    LogLine {
        seq,
        recv_us: h.recv_us,
        source,
        frame,
    }
}

/// Reads up to `len` bytes of the file at `at`, as much as it has (a record cut by a
/// failure reads short and then fails its check).
///
/// Into the vector's spare capacity, not a zeroed buffer: the catch-up of a drain reads
/// megabytes at a time, and zeroing them first cost about a tenth of its CPU (perf).
fn read_span(file: &File, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let had = buf.len();
        match rustix::io::pread(
            file,
            rustix::buffer::spare_capacity(&mut buf),
            at + had as u64,
        ) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(len);
    Ok(buf)
}
