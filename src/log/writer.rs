//! The I/O thread: writes pending records, fsyncs by mode, seals segments, applies
//! retention, and retries the disk while the log is degraded.
//!
//! It is the only writer of segment files. It holds no lock during I/O: it takes the pending
//! batches under the append lock, writes them, then publishes the new index entries under
//! the read lock and the durable position through the watch.

use super::direct::{self, Staging};
use super::index::{self, Entry};
use super::private_file;
use super::record::{self, HEADER_LEN};
use super::recover::{compact_forgotten, create_segment, sync_dir};
use super::{
    lock, now_us, seg_name, ActiveView, ChannelId, Fsync, Health, Inner, Lsn, PendingRecord, Run,
    Sealed, LOST_KEPT,
};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often retention runs besides after every seal.
const TICK: Duration = Duration::from_secs(1);
/// Bytes written and fsynced by a degraded log to tell whether the disk works again.
const PROBE_BYTES: usize = 1 << 20;
/// What preallocation writes, a piece at a time.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
/// `Writer::alloc` of a segment whose preallocation failed: none again in it.
const NO_PREALLOC: u64 = u64::MAX;
/// Where writes go through the page cache: how much of the newest part of the active
/// segment stays there (readers of the last lines, a drain a little behind); what is older
/// is let go of in steps of [`RELEASE_STEP`] (see [`Writer::release`]).
const KEEP_CACHED: u64 = 16 << 20;
const RELEASE_STEP: u64 = 4 << 20;
/// In [`Fsync::Interval`] mode, writes smaller than this go through the page cache even
/// where direct writes are made: at a low rate (a write every `flush_delay`), direct writes
/// of a few KiB, each a device write of whole blocks, would be hundreds a second where the
/// page cache merges them. In [`Fsync::Batch`] mode every write is fsynced at once, so the
/// page cache has nothing to merge and every write goes directly.
const DIRECT_MIN: usize = 64 << 10;

/// Asks the kernel to drop `len` bytes (`None`: to the end) of `file` from `from` out of the
/// page cache, starting the writeback of dirty ones (see [`Writer::release`]); a hint whose
/// errors are ignored, and nothing where `posix_fadvise` does not exist (macOS).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn drop_cached(file: &File, from: u64, len: Option<std::num::NonZeroU64>) {
    let _ = rustix::fs::fadvise(file, from, len, rustix::fs::Advice::DontNeed);
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn drop_cached(_: &File, _: u64, _: Option<std::num::NonZeroU64>) {}

/// Where a failure happened: decides what is kept of the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A write: what was written before it stays.
    Write,
    /// An fsync: only what an earlier fsync covered stays.
    Fsync,
}

struct Failed {
    /// Bytes of the active segment to keep.
    keep: u64,
    /// Base of the segment the log continues in (past every position handed out).
    resume: Lsn,
    retry_at: Instant,
}

struct Job {
    batch: HashMap<ChannelId, Vec<PendingRecord>>,
    start: Lsn,
    lines: u64,
    closing: bool,
}

pub(super) struct Writer {
    inner: Arc<Inner>,
    file: Arc<File>,
    /// The active segment opened for direct writes (see [`direct`]); `None` where there
    /// are none, and writes go through `file`.
    direct: Option<File>,
    staging: Staging,
    base: Lsn,
    /// Bytes written to the active segment (the offset of the next record).
    len: u64,
    /// Bytes of the active segment's file, zero-filled past `len` by preallocation or by
    /// the rounding of direct writes ([`NO_PREALLOC`] after a failed preallocation).
    alloc: u64,
    durable: Lsn,
    last_fsync: Instant,
    buf: Vec<u8>,
    failed: Option<Failed>,
    next_tick: Instant,
    /// Lines of the current job not written yet (lost if it fails).
    unwritten: u64,
    /// The ends of the last two ranges of the active segment let go of from the page cache
    /// (`released.1` the newer): the next release asks again from `released.0`.
    released: (u64, u64),
    /// Where the current job starts. `append` promises only that the end of the job
    /// carrying a line reaches the position it returned (records are laid out by channel,
    /// not in append order), so durability is published at job ends only, and a failed job
    /// fails every waiter from its start.
    job_start: Lsn,
}

impl Writer {
    pub fn new(inner: Arc<Inner>, file: Arc<File>, base: Lsn, len: u64) -> Writer {
        let direct = inner
            .opts
            .direct
            .then(|| direct::open(&seg_name(&inner.dir, base, "log")))
            .flatten();
        Writer {
            inner,
            file,
            direct,
            staging: Staging::default(),
            base,
            len,
            alloc: len,
            durable: base + len,
            last_fsync: Instant::now(),
            buf: Vec::new(),
            failed: None,
            next_tick: Instant::now(),
            unwritten: 0,
            released: (0, 0),
            job_start: base + len,
        }
    }

    pub fn run(mut self) {
        loop {
            let job = self.next_job();
            self.inner.room.notify_waiters();
            if !job.batch.is_empty() {
                debug_assert_eq!(job.start, self.base + self.len);
                self.unwritten = job.lines;
                self.job_start = job.start;
                if let Err((stage, e)) = self.write(job.batch) {
                    self.fail(stage, &e);
                }
            }
            if self.failed.is_none() && self.base + self.len > self.durable {
                let due = match self.inner.opts.fsync {
                    Fsync::Batch => true,
                    Fsync::Interval => {
                        job.closing || self.last_fsync.elapsed() >= self.inner.opts.fsync_interval
                    }
                };
                if due {
                    match self.fsync() {
                        Ok(()) => self.publish_durable(self.base + self.len),
                        Err(e) => self.fail(Stage::Fsync, &e),
                    }
                }
            }
            if job.closing {
                if self.failed.is_none() && self.alloc > self.len {
                    // Left as its records, as a sealed segment is (recovery would cut the
                    // zeros past them all the same).
                    let _ = self.file.set_len(self.len);
                }
                self.inner.progress.send_modify(|p| p.closed = true);
                lock(&self.inner.front).run = Run::Closed;
                self.inner.room.notify_waiters();
                return;
            }
            let now = Instant::now();
            if self.failed.as_ref().is_some_and(|f| now >= f.retry_at) {
                self.retry();
            }
            if now >= self.next_tick {
                self.retention();
                self.next_tick = now + TICK;
            }
        }
    }

    /// Waits for something to do, then takes the pending batches.
    fn next_job(&mut self) -> Job {
        let inner = self.inner.clone();
        let opts = &inner.opts;
        let mut f = lock(&inner.front);
        let flush = loop {
            let now = Instant::now();
            let mut until = self.next_tick;
            let closing = f.run != Run::Open;
            let mut flush = closing;
            if let Some(since) = f.since {
                let due = since + opts.flush_delay;
                flush |= now >= due
                    || f.bytes >= opts.flush_bytes
                    || f.bytes >= opts.max_pending_bytes / 2;
                until = until.min(due);
            }
            let mut go = flush || now >= self.next_tick;
            if let Some(fl) = &self.failed {
                go |= now >= fl.retry_at;
                until = until.min(fl.retry_at);
            }
            if opts.fsync == Fsync::Interval
                && self.failed.is_none()
                && self.base + self.len > self.durable
            {
                let due = self.last_fsync + opts.fsync_interval;
                go |= now >= due;
                until = until.min(due);
            }
            if go {
                break flush;
            }
            f = inner
                .wake
                .wait_timeout(f, until.saturating_duration_since(now))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        };
        let start = f.reserved;
        if !flush {
            return Job {
                batch: HashMap::new(),
                start,
                lines: 0,
                closing: false,
            };
        }
        let batch = std::mem::take(&mut f.pending);
        let bytes = std::mem::take(&mut f.bytes) as u64;
        let lines = std::mem::take(&mut f.lines);
        f.since = None;
        f.reserved += bytes;
        Job {
            batch,
            start,
            lines,
            closing: f.run != Run::Open,
        }
    }

    /// Writes a batch: one write per segment it touches, sealing full segments.
    fn write(
        &mut self,
        batch: HashMap<ChannelId, Vec<PendingRecord>>,
    ) -> Result<(), (Stage, io::Error)> {
        let seg_bytes = self.inner.opts.segment_bytes;
        self.buf.clear();
        let mut entries: Vec<(ChannelId, Entry)> = Vec::new();
        let mut lines = 0u64;
        for (ch, recs) in batch {
            for r in recs {
                let len = (HEADER_LEN + r.body.len()) as u64;
                let at = self.len + self.buf.len() as u64;
                if at > 0 && at + len > seg_bytes {
                    self.write_part(&mut entries, &mut lines)
                        .map_err(|e| (Stage::Write, e))?;
                    self.roll()?;
                }
                let off = self.len + self.buf.len() as u64;
                record::put_record(&mut self.buf, ch, r.first_seq, r.count, r.recv_us, &r.body);
                entries.push((
                    ch,
                    Entry {
                        off,
                        len: len as u32,
                        count: r.count,
                        first_seq: r.first_seq,
                        recv_us: r.recv_us,
                    },
                ));
                lines += u64::from(r.count);
            }
        }
        self.write_part(&mut entries, &mut lines)
            .map_err(|e| (Stage::Write, e))
    }

    /// Writes the buffer at the end of the active segment and publishes its entries.
    fn write_part(
        &mut self,
        entries: &mut Vec<(ChannelId, Entry)>,
        lines: &mut u64,
    ) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let end = self.len + self.buf.len() as u64;
        if self.inner.opts.preallocate > 0 && self.direct.is_none() && end > self.alloc {
            self.preallocate(end);
        }
        self.write_at_end()?;
        self.len += self.buf.len() as u64;
        let c = &self.inner.counters;
        c.writes.fetch_add(1, Relaxed);
        c.written_bytes.fetch_add(self.buf.len() as u64, Relaxed);
        c.written_records.fetch_add(entries.len() as u64, Relaxed);
        c.written_lines.fetch_add(*lines, Relaxed);
        self.unwritten = self.unwritten.saturating_sub(*lines);
        {
            let mut s = lock(&self.inner.segs);
            for (ch, e) in entries.drain(..) {
                s.active.index.add(ch, e);
            }
            s.active.len = self.len;
        }
        self.buf.clear();
        *lines = 0;
        Ok(())
    }

    /// Writes the buffer at the active segment's length: directly where it can (see
    /// [`direct`] and [`DIRECT_MIN`]), else through the page cache, of which it keeps the
    /// newest part only.
    fn write_at_end(&mut self) -> io::Result<()> {
        let batch = self.inner.opts.fsync == Fsync::Batch;
        if let Some(d) = self
            .direct
            .as_ref()
            .filter(|_| batch || self.buf.len() >= DIRECT_MIN)
        {
            // The zeros to the block are the file's too (even of a write that fails part
            // way): cut at the seal.
            let end = self.len + self.buf.len() as u64;
            self.alloc = self.alloc.max(direct::round_up(end));
            match self.staging.append(d, &self.file, self.len, &self.buf) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    tracing::info!(error = %e, "the log writes through the page cache");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        // The next direct write reads its carry back from the file.
        self.staging.reset();
        self.file.write_all_at(&self.buf, self.len)?;
        self.release((self.len + self.buf.len() as u64).saturating_sub(KEEP_CACHED));
        Ok(())
    }

    /// Lets the kernel drop the active segment's pages below `to` from the page cache (and
    /// start writing back the dirty ones), once `to` is [`RELEASE_STEP`] past the last
    /// release. The log is written once and read rarely (the memory rings hold the last
    /// lines): keeping every written page cached only makes the page cache take ever more
    /// fresh memory, whose first touch is the costliest part of a write (on a VM, 10 times
    /// the copy itself), and crowds out other files. A dropped page is reused by the next
    /// writes. A page still dirty or under writeback is not dropped; each range is asked
    /// again once, a release later, when it has had time to be written. Only a hint: errors
    /// are ignored.
    fn release(&mut self, to: u64) {
        let (older, newer) = self.released;
        if to < newer + RELEASE_STEP {
            return;
        }
        let from = older.min(to);
        let len = std::num::NonZeroU64::new(to - from);
        drop_cached(&self.file, from, len);
        self.released = (newer, to);
    }

    /// Zero-fills the active segment from `end` (where the write about to be made ends)
    /// to `Options::preallocate` past what was allocated, within the segment's size; the
    /// write's fsync then commits the file's growth once for all the writes that follow.
    /// Only where writes go through the page cache: an fsync after a buffered write that
    /// grew the file costs 10 times one over written blocks, where after a direct write it
    /// costs 1.5 times (`dd oflag=dsync`, 4 KiB: 3.8 ms against 0.24 ms; `oflag=direct,dsync`,
    /// 64 KiB: 0.37 ms against 0.23 ms), less than writing the zeros. A failure (a disk too
    /// full for it) is not the log's: the file is cut back and this segment goes on without.
    fn preallocate(&mut self, end: u64) {
        let opts = &self.inner.opts;
        let target = (self.alloc.max(self.len) + opts.preallocate)
            .min(opts.segment_bytes)
            .max(end);
        let mut at = end;
        let r = (|| {
            while at < target {
                let n = ((target - at) as usize).min(ZEROS.len());
                self.file.write_all_at(&ZEROS[..n], at)?;
                at += n as u64;
            }
            Ok::<_, io::Error>(())
        })();
        match r {
            Ok(()) => self.alloc = target,
            Err(e) => {
                tracing::debug!(error = %e, "log segment not preallocated");
                let _ = self.file.set_len(self.len);
                self.alloc = NO_PREALLOC;
            }
        }
    }

    fn fsync(&mut self) -> io::Result<()> {
        let t = Instant::now();
        self.file.sync_data()?;
        let took = t.elapsed();
        let c = &self.inner.counters;
        c.fsyncs.fetch_add(1, Relaxed);
        c.fsync_us.fetch_add(took.as_micros() as u64, Relaxed);
        if let Some(h) = &self.inner.opts.fsync_seconds {
            h.observe(took.as_secs_f64());
        }
        self.last_fsync = Instant::now();
        Ok(())
    }

    fn publish_durable(&mut self, end: Lsn) {
        if end > self.durable {
            self.durable = end;
            self.inner.progress.send_modify(|p| p.durable = end);
        }
    }

    /// Seals the active segment (fsync, index beside it) and continues in a new one that
    /// starts where it ends.
    fn roll(&mut self) -> Result<(), (Stage, io::Error)> {
        self.fsync().map_err(|e| (Stage::Fsync, e))?;
        self.seal_and_continue(self.base + self.len)
            .map_err(|e| (Stage::Write, e))
    }

    /// Writes the index of the active segment (as long as `self.len`), then opens the
    /// segment at `next` and makes it active. An empty active segment is not sealed but
    /// removed (after the new one exists, so a base is never handed out twice).
    fn seal_and_continue(&mut self, next: Lsn) -> io::Result<()> {
        let (base, len) = (self.base, self.len);
        if len > 0 && self.alloc > len {
            // A sealed segment is exactly its records: cut the preallocated zeros.
            self.file.set_len(len)?;
            self.file.sync_all()?;
        }
        // Fsynced (by `roll`, or by the recovery of a failed disk): every page of the
        // segment is clean and goes now, whatever the releases while it was active left.
        drop_cached(&self.file, 0, None);
        let dir = &self.inner.dir;
        let sealed = if len > 0 {
            let (bytes, table) = {
                let s = lock(&self.inner.segs);
                index::encode(base, len, &s.active.index)
            };
            let idx_path = seg_name(dir, base, "idx");
            index::write_file(&idx_path, &bytes)?;
            Some((table, File::open(&idx_path)?, idx_path))
        } else {
            None
        };
        let file = Arc::new(create_segment(dir, next)?);
        let old = std::mem::replace(&mut self.file, file.clone());
        if self.direct.is_some() {
            self.direct = direct::open(&seg_name(dir, next, "log"));
        }
        self.staging.reset();
        {
            let mut s = lock(&self.inner.segs);
            if let Some((table, idx, idx_path)) = sealed {
                s.sealed.push_back(Arc::new(Sealed {
                    len,
                    file: old,
                    idx_path,
                    idx,
                    log_path: seg_name(dir, base, "log"),
                    table,
                }));
            }
            s.active = ActiveView {
                file,
                len: 0,
                index: Default::default(),
            };
        }
        if len == 0 {
            let _ = std::fs::remove_file(seg_name(dir, base, "log"));
        }
        self.base = next;
        self.len = 0;
        self.alloc = 0;
        self.released = (0, 0);
        self.retention();
        Ok(())
    }

    /// Enters the degraded state after a failed write or fsync: what was not durably kept is
    /// lost (counted, and its positions told to `durable` waiters), appends fail until a
    /// retry succeeds.
    fn fail(&mut self, stage: Stage, e: &io::Error) {
        let inner = &*self.inner;
        let what = match stage {
            Stage::Write => "write",
            Stage::Fsync => "fsync",
        };
        let reason: Arc<str> = format!("log {what} failed: {e}").into();
        inner.counters.write_failures.fetch_add(1, Relaxed);
        let (keep, lost_from) = match stage {
            // What was written stays (earlier jobs become durable at recovery); waiters of
            // this job are failed even for its records written before the failure (a retry
            // by the caller may duplicate those, never lose them).
            Stage::Write => (self.len, self.job_start),
            // Nothing after the last published fsync can be trusted.
            Stage::Fsync => (
                self.durable.saturating_sub(self.base).min(self.len),
                self.durable,
            ),
        };
        self.staging.reset();
        let mut lost = std::mem::take(&mut self.unwritten);
        if keep < self.len {
            let mut s = lock(&inner.segs);
            lost += s.active.index.truncate(keep);
            s.active.len = keep;
        }
        self.len = keep;
        let resume = {
            let mut f = lock(&inner.front);
            lost += f.lines;
            f.pending.clear();
            f.reserved += std::mem::take(&mut f.bytes) as u64;
            f.lines = 0;
            f.since = None;
            f.health = Health::Degraded {
                reason: reason.clone(),
                since: SystemTime::now(),
            };
            f.reserved
        };
        inner.counters.lost_lines.fetch_add(lost, Relaxed);
        {
            let mut l = lock(&inner.lost);
            if l.len() == LOST_KEPT {
                l.pop_front();
            }
            l.push_back((lost_from + 1, resume, reason.clone()));
        }
        inner.progress.send_modify(|p| p.losses += 1);
        inner.room.notify_waiters();
        tracing::warn!(%reason, lost_lines = lost, "the log cannot write: appends fail until the disk works again");
        self.failed = Some(Failed {
            keep,
            resume,
            retry_at: Instant::now() + inner.opts.retry_interval,
        });
    }

    /// Tries the disk again: cuts what the failure left after the kept bytes, writes and
    /// fsyncs a probe, then continues in a new segment past the lost positions.
    fn retry(&mut self) {
        let Some(fl) = self.failed.take() else {
            return;
        };
        match self.try_recover(&fl) {
            Ok(()) => {
                lock(&self.inner.front).health = Health::Ok;
                tracing::info!("the log writes again");
            }
            Err(e) => {
                tracing::debug!(error = %e, "the log still cannot write");
                self.failed = Some(Failed {
                    retry_at: Instant::now() + self.inner.opts.retry_interval,
                    ..fl
                });
            }
        }
    }

    fn try_recover(&mut self, fl: &Failed) -> io::Result<()> {
        self.file.set_len(fl.keep)?;
        self.file.sync_all()?;
        let probe = self.inner.dir.join("probe.tmp");
        let r = (|| {
            let f = private_file(&probe)?;
            f.write_all_at(&vec![0u8; PROBE_BYTES], 0)?;
            f.sync_data()
        })();
        let _ = std::fs::remove_file(&probe);
        r?;
        sync_dir(&self.inner.dir)?;
        self.seal_and_continue(fl.resume)?;
        // Everything kept is synced; the positions up to `resume` are lost (told to
        // waiters through `Inner::lost`), none are handed out again.
        self.publish_durable(fl.resume);
        Ok(())
    }

    /// Deletes whole sealed segments, oldest first, while the log is over `max_bytes` or
    /// their newest record is older than `max_age`.
    fn retention(&mut self) {
        let inner = &*self.inner;
        let cutoff = now_us().saturating_sub(inner.opts.max_age.as_micros() as i64);
        let mut gone = Vec::new();
        {
            let mut s = lock(&inner.segs);
            let mut total = s.bytes();
            while let Some(first) = s.sealed.front() {
                if total <= inner.opts.max_bytes && first.table.max_us >= cutoff {
                    break;
                }
                total -= first.len;
                if let Some(g) = s.sealed.pop_front() {
                    gone.push(g);
                }
            }
        }
        if gone.is_empty() {
            return;
        }
        for g in &gone {
            for p in [&g.log_path, &g.idx_path] {
                if let Err(e) = std::fs::remove_file(p) {
                    tracing::warn!(path = %p.display(), error = %e, "cannot delete a log segment");
                }
            }
            inner.counters.deleted_segments.fetch_add(1, Relaxed);
        }
        compact_forgotten(inner);
    }
}
