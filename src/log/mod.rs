//! The durable segment log: every line a node receives, on disk, per node, append-only.
//!
//! In the Kafka tradition (and Vector's disk buffer v2): one directory of segment files of
//! bounded size, named by the position of their first byte (`00000000000000000000.log`), so
//! they sort. A position ([`Lsn`]) is a byte offset across all segments, increasing for the
//! life of the directory. A record carries one channel's batch of lines with a CRC32C
//! (format in `record.rs` and `docs/log.md`); each sealed segment has an index beside it
//! (`<base>.idx`) so that reading one channel touches only that channel's part of the index
//! and its own records.
//!
//! * [`Log::append`] puts lines into a pending batch per channel (many small appends of one
//!   channel become one record). It never blocks on I/O: pending memory is bounded and when
//!   it is full `append` fails with [`LogError::Full`] (policy: *reject newest*; the caller
//!   may wait for room with [`Log::writable`] under its own deadline, or count the lines as
//!   not persisted).
//! * One I/O thread (a plain `std::thread`) writes all pending records every
//!   [`Options::flush_delay`] (or sooner past [`Options::flush_bytes`]) with one `write` per
//!   segment touched, and fsyncs by [`Fsync`] mode: at least every `fsync_interval`, or after
//!   every write (group commit: [`Log::durable`] resolves once an fsync covers a position;
//!   concurrent waiters share one fsync).
//! * Reads ([`Log::read`], [`Log::read_after`]) are blocking; callers on the async runtime
//!   run them in `spawn_blocking`. They see lines once written (within `flush_delay`).
//! * [`Log::open`] recovers: sealed segments are trusted through their index (a missing or
//!   bad one is rebuilt by a scan), the last segment is scanned record by record; a torn
//!   tail is cut, a corrupt record followed by valid ones is skipped; both are counted.
//! * Retention deletes whole sealed segments, oldest first, past [`Options::max_bytes`] or
//!   when their newest record is older than [`Options::max_age`].
//! * When a write or fsync fails the log is degraded ([`Log::health`]), appends fail with the
//!   reason, the lines of the failed flush are counted as lost, and the I/O thread retries
//!   every [`Options::retry_interval`] until the disk works again.

#![warn(missing_docs)]

mod direct;
mod index;
mod read;
mod record;
mod recover;
mod writer;

#[cfg(test)]
mod tests;

pub use read::{After, LogLine, Query};
pub use record::{MAX_FRAME, MAX_SOURCE};
pub use recover::Recovery;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// A position in the log: a byte offset across all segments.
pub type Lsn = u64;
/// A channel id of the store (a u64 never reused).
pub type ChannelId = u64;

/// When the log fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// At least every `fsync_interval`: a power loss loses at most that much; `kill -9`
    /// loses nothing written (a direct write is on the disk when it returns, a buffered one
    /// in the page cache, which survives the process).
    Interval,
    /// After every write (group commit): [`Log::durable`] tells a caller when its lines are
    /// on disk.
    Batch,
}

/// How a log is run. [`Options::default`] holds the production defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// A segment is sealed once the next record would take it past this size (a record
    /// bigger than a segment gets a segment of its own).
    pub segment_bytes: u64,
    /// When to fsync (the `[log] fsync` mode).
    pub fsync: Fsync,
    /// The longest time written lines wait for an fsync in [`Fsync::Interval`] mode.
    pub fsync_interval: Duration,
    /// Retention by size: whole oldest sealed segments go while the log is bigger.
    pub max_bytes: u64,
    /// Retention by age: a sealed segment whose newest record is older goes.
    pub max_age: Duration,
    /// Bound of the pending (not yet written) bytes; past it `append` fails with
    /// [`LogError::Full`].
    pub max_pending_bytes: usize,
    /// How long appended lines may wait to be written (coalescing window).
    pub flush_delay: Duration,
    /// Pending bytes that trigger a write before `flush_delay`.
    pub flush_bytes: usize,
    /// How often a degraded log tries the disk again.
    pub retry_interval: Duration,
    /// The longest [`Log::close`] waits for the last flush and fsync.
    pub close_timeout: Duration,
    /// Observes every fsync's latency in seconds (a histogram registered by the caller).
    pub fsync_seconds: Option<prometheus::Histogram>,
    /// Zero-fill the active segment this far ahead of its writes (0: never). An fsync of
    /// a file that grew commits the filesystem's journal (ext4 here: 3.8 ms for a 4 KiB
    /// append against 0.24 ms for the same write over allocated blocks), so in
    /// [`Fsync::Batch`] mode, where every write waits for its fsync, the blocks are
    /// allocated ahead, once per this many bytes, and a segment is cut to its records when
    /// sealed (recovery cuts a zero tail of the last one without counting it as torn).
    /// Only where writes go through the page cache (`direct` off or not possible): after a
    /// direct write the growth costs less than writing the zeros.
    pub preallocate: u64,
    /// Write the active segment around the page cache (`O_DIRECT`) where the OS and the
    /// filesystem allow it (Linux); `false`: always through the page cache.
    pub direct: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            fsync: Fsync::Interval,
            fsync_interval: Duration::from_secs(1),
            max_bytes: 10 << 30,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_pending_bytes: 64 << 20,
            flush_delay: Duration::from_millis(2),
            flush_bytes: 1 << 20,
            retry_interval: Duration::from_secs(1),
            close_timeout: Duration::from_secs(1),
            fsync_seconds: None,
            preallocate: 0,
            direct: true,
        }
    }
}

/// Errors at the log's boundary.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error at open or in a read.
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Another process (or `Log`) has the directory open.
    #[error("the log directory {0} is in use by another process")]
    Locked(PathBuf),
    /// The log cannot write (disk full, I/O error); it retries by itself.
    #[error("the log cannot write: {0}")]
    Failed(Arc<str>),
    /// The lines at this position were lost by a failed write or fsync.
    #[error("lines not persisted: {0}")]
    NotPersisted(Arc<str>),
    /// Pending memory is full (the disk is slower than intake): retry after
    /// [`Log::writable`].
    #[error("the log's pending memory is full ({0} bytes)")]
    Full(usize),
    #[error("seq {got} of channel {channel} is not above its last seq {last}")]
    /// An append whose first seq is not above the channel's last one.
    SeqNotIncreasing {
        /// The channel appended to.
        channel: u64,
        /// Its last seq (appended or stored).
        last: u64,
        /// The first seq of the refused append.
        got: u64,
    },
    /// A line the log does not store (source over 48 bytes, frame over [`MAX_FRAME`], seq 0).
    #[error("invalid line: {0}")]
    Invalid(&'static str),
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// [`Log::close`] gave up waiting for the last write and fsync.
    #[error("the log did not finish writing within {0:?}")]
    CloseTimeout(Duration),
}

/// Whether the log can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Writes work.
    Ok,
    /// A write or fsync failed; appends fail until a retry succeeds.
    Degraded {
        /// What failed, with the OS error.
        reason: Arc<str>,
        /// When the log became degraded.
        since: SystemTime,
    },
}

/// Counters since open (and the log's size now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lines accepted by `append`.
    pub appended_lines: u64,
    /// Records written to segments.
    pub written_records: u64,
    /// Lines written to segments.
    pub written_lines: u64,
    /// Bytes written to segments.
    pub written_bytes: u64,
    /// Writes of pending records (one per flush and segment touched).
    pub writes: u64,
    /// Fsyncs of segment data.
    pub fsyncs: u64,
    /// Sum of fsync latencies, µs.
    pub fsync_us: u64,
    /// Failed writes and fsyncs (each made the log degraded).
    pub write_failures: u64,
    /// Lines accepted by `append` then lost by a failed write or fsync.
    pub lost_lines: u64,
    /// Lines refused by `append` because pending memory was full.
    pub rejected_full_lines: u64,
    /// Lines refused by `append` because the log was degraded.
    pub rejected_failed_lines: u64,
    /// Records found corrupt by a read (skipped).
    pub read_corrupt_records: u64,
    /// Segments deleted by retention.
    pub deleted_segments: u64,
    /// Segments now (sealed and active).
    pub segments: u64,
    /// Bytes of all segments now.
    pub bytes: u64,
    /// Bytes appended and not written yet.
    pub pending_bytes: u64,
}

#[derive(Default)]
struct Counters {
    appended_lines: AtomicU64,
    written_records: AtomicU64,
    written_lines: AtomicU64,
    written_bytes: AtomicU64,
    writes: AtomicU64,
    fsyncs: AtomicU64,
    fsync_us: AtomicU64,
    write_failures: AtomicU64,
    lost_lines: AtomicU64,
    rejected_full_lines: AtomicU64,
    rejected_failed_lines: AtomicU64,
    read_corrupt_records: AtomicU64,
    deleted_segments: AtomicU64,
}

/// A record being coalesced: the encoded lines of one channel, header added at write.
struct PendingRecord {
    first_seq: u64,
    count: u32,
    recv_us: i64,
    body: Vec<u8>,
}

/// Lines of one record share its receive time when they arrive within this window.
const RECV_WINDOW_US: i64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Open,
    Closing,
    Closed,
}

/// The append side, behind `Inner::front`.
struct Front {
    pending: HashMap<ChannelId, Vec<PendingRecord>>,
    /// Encoded size of `pending`, headers included: exactly what writing it takes.
    bytes: usize,
    lines: u64,
    /// When `pending` became non-empty.
    since: Option<Instant>,
    last_seq: HashMap<ChannelId, u64>,
    /// End of everything handed to the I/O thread.
    reserved: Lsn,
    health: Health,
    run: Run,
}

/// A sealed segment: its file (held open so readers survive its deletion) and the table of
/// its index. Entries are loaded on demand.
struct Sealed {
    len: u64,
    file: Arc<File>,
    idx_path: PathBuf,
    idx: File,
    log_path: PathBuf,
    table: index::Table,
}

/// The active segment as readers see it.
struct ActiveView {
    file: Arc<File>,
    len: u64,
    index: index::SegIndex,
}

/// The read side, behind `Inner::segs`.
struct Segs {
    sealed: VecDeque<Arc<Sealed>>,
    active: ActiveView,
    /// channel → last seq forgotten.
    forgotten: HashMap<ChannelId, u64>,
}

impl Segs {
    fn bytes(&self) -> u64 {
        self.sealed.iter().map(|s| s.len).sum::<u64>() + self.active.len
    }
}

/// What `durable` waiters watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Everything below is fsynced.
    durable: Lsn,
    /// Bumped when positions are lost (see `Inner::lost`).
    losses: u64,
    closed: bool,
}

/// Lost ranges remembered for `durable` waiters (one per failure).
const LOST_KEPT: usize = 1024;

struct Inner {
    dir: PathBuf,
    opts: Options,
    front: Mutex<Front>,
    wake: Condvar,
    segs: Mutex<Segs>,
    progress: tokio::sync::watch::Sender<Progress>,
    /// (start, end, reason): positions in start..=end were lost; never reused, since the
    /// log continues in a new segment after the end.
    lost: Mutex<VecDeque<(Lsn, Lsn, Arc<str>)>>,
    room: tokio::sync::Notify,
    counters: Counters,
    forget_file: Mutex<()>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// The directory's lock, held until the I/O thread has stopped: a closed log is let go
    /// of at once, even while readers (a channel freed later) still hold the `Log`.
    dir_lock: Mutex<Option<File>>,
}

/// Locks a mutex, taking the data of a poisoned one (a panic elsewhere must not stop the
/// log; every critical section leaves its data consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

use crate::clock::now_micros as now_us;

/// Options for a file of the log: readable and writable by its owner only (0600), as every
/// file of the data directory (the lines are the apps' logs).
pub(crate) fn private_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.mode(0o600);
    o
}

/// `File::create`, mode 0600.
pub(crate) fn private_file(path: &Path) -> std::io::Result<File> {
    private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

fn seg_name(dir: &Path, base: Lsn, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// A durable segment log (see the module doc). Cheap to share behind an `Arc`.
pub struct Log {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovers it and starts its I/O thread.
    /// Blocking: it reads the index tables of sealed segments and scans the last segment.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<(Log, Recovery), LogError> {
        recover::open(dir.as_ref(), opts)
    }

    /// Appends one channel's lines (source name, frame), numbered `first_seq`,
    /// `first_seq + 1`, …: seqs start at 1 and must increase strictly per channel (gaps are
    /// allowed). `recv_us` is the receive time (µs since the epoch); lines coalesced into one
    /// record share the time of its first line (they arrive within 100 ms of it).
    ///
    /// Returns a position that the write carrying these lines reaches: once
    /// [`Log::durable`] of it resolves, they are on disk. Never waits for I/O: fails with
    /// [`LogError::Full`] when pending memory is full, [`LogError::Failed`] when the log is
    /// degraded, [`LogError::Invalid`] for a source over 48 bytes or a frame over
    /// [`MAX_FRAME`] (then nothing of the call is kept).
    pub fn append<I, S, F>(
        &self,
        channel: ChannelId,
        first_seq: u64,
        recv_us: i64,
        lines: I,
    ) -> Result<Lsn, LogError>
    where
        I: IntoIterator<Item = (S, F)>,
        S: AsRef<[u8]>,
        F: AsRef<[u8]>,
    {
        let inner = &*self.inner;
        let mut guard = lock(&inner.front);
        let f = &mut *guard;
        match (&f.health, f.run) {
            (_, Run::Closing | Run::Closed) => return Err(LogError::Closed),
            (Health::Degraded { reason, .. }, _) => {
                let reason = reason.clone();
                drop(guard);
                let n = lines.into_iter().count() as u64;
                inner.counters.rejected_failed_lines.fetch_add(n, Relaxed);
                return Err(LogError::Failed(reason));
            }
            (Health::Ok, Run::Open) => {}
        }
        if first_seq == 0 {
            return Err(LogError::Invalid("seqs start at 1"));
        }
        if let Some(&last) = f.last_seq.get(&channel) {
            if first_seq <= last {
                return Err(LogError::SeqNotIncreasing {
                    channel,
                    last,
                    got: first_seq,
                });
            }
        }
        let recs = f.pending.entry(channel).or_default();
        let mark = (
            recs.len(),
            recs.last()
                .map(|r| (r.body.len(), r.count))
                .unwrap_or((0, 0)),
        );
        let mut seq = first_seq;
        let mut added = 0usize;
        let mut fail = None;
        let mut it = lines.into_iter();
        for (s, fr) in it.by_ref() {
            let (s, fr) = (s.as_ref(), fr.as_ref());
            if s.len() > MAX_SOURCE {
                fail = Some(LogError::Invalid("source name longer than 48 bytes"));
                break;
            }
            if fr.len() > MAX_FRAME {
                fail = Some(LogError::Invalid("frame larger than the log's MAX_FRAME"));
                break;
            }
            let line = record::LINE_OVERHEAD + s.len() + fr.len();
            let new = match recs.last() {
                None => true,
                Some(r) => {
                    r.first_seq + u64::from(r.count) != seq
                        || r.body.len() + line > record::TARGET_BODY
                        || recv_us < r.recv_us
                        || recv_us - r.recv_us > RECV_WINDOW_US
                        || r.count == u32::MAX
                }
            };
            let cost = line + if new { record::HEADER_LEN } else { 0 };
            if f.bytes + added + cost > inner.opts.max_pending_bytes {
                fail = Some(LogError::Full(inner.opts.max_pending_bytes));
                break;
            }
            if new {
                recs.push(PendingRecord {
                    first_seq: seq,
                    count: 0,
                    recv_us,
                    body: Vec::with_capacity(line.clamp(1024, record::TARGET_BODY)),
                });
            }
            if let Some(r) = recs.last_mut() {
                record::put_line(&mut r.body, s, fr);
                r.count += 1;
            }
            added += cost;
            seq = match seq.checked_add(1) {
                Some(s) => s,
                None => {
                    fail = Some(LogError::Invalid("seq overflows"));
                    break;
                }
            };
        }
        if let Some(e) = fail {
            // Undo this call: drop the records it started, cut the one it extended.
            recs.truncate(mark.0);
            if let Some(r) = recs.last_mut() {
                r.body.truncate(mark.1 .0);
                r.count = mark.1 .1;
            }
            if recs.is_empty() {
                f.pending.remove(&channel);
            }
            if let LogError::Full(_) = e {
                let n = seq - first_seq + 1 + it.count() as u64;
                inner.counters.rejected_full_lines.fetch_add(n, Relaxed);
                inner.wake.notify_one();
            }
            return Err(e);
        }
        let n = seq - first_seq;
        if n == 0 {
            if recs.is_empty() {
                f.pending.remove(&channel);
            }
            return Ok(f.reserved + f.bytes as u64);
        }
        let was = f.bytes;
        f.bytes += added;
        f.lines += n;
        f.last_seq.insert(channel, seq - 1);
        if was == 0 {
            f.since = Some(Instant::now());
        }
        let end = f.reserved + f.bytes as u64;
        drop(guard);
        inner.counters.appended_lines.fetch_add(n, Relaxed);
        let t = inner.opts.flush_bytes;
        if was == 0 || (was < t && was + added >= t) {
            inner.wake.notify_one();
        }
        Ok(end)
    }

    /// Resolves once an fsync covers `lsn` (a value returned by [`Log::append`]). Fails with
    /// [`LogError::NotPersisted`] if those lines were lost by a failed write or fsync, and
    /// [`LogError::Closed`] if the log closed first.
    pub async fn durable(&self, lsn: Lsn) -> Result<(), LogError> {
        let mut rx = self.inner.progress.subscribe();
        loop {
            let p = *rx.borrow_and_update();
            if p.losses > 0 {
                if let Some(reason) = self.lost_reason(lsn) {
                    return Err(LogError::NotPersisted(reason));
                }
            }
            if p.durable >= lsn {
                return Ok(());
            }
            if p.closed || rx.changed().await.is_err() {
                return Err(LogError::Closed);
            }
        }
    }

    fn lost_reason(&self, lsn: Lsn) -> Option<Arc<str>> {
        lock(&self.inner.lost)
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&lsn))
            .map(|(_, _, r)| r.clone())
    }

    /// Whether pending memory is below half full (or the log no longer takes appends, so
    /// waiting for room is pointless): a producer that can hold its sender back (a TCP
    /// connection, an HTTP request) waits on [`Log::writable`] while this is false, rather
    /// than having its lines refused once the other half is gone too.
    pub fn has_room(&self) -> bool {
        let f = lock(&self.inner.front);
        f.bytes < self.inner.opts.max_pending_bytes / 2
            || f.run != Run::Open
            || matches!(f.health, Health::Degraded { .. })
    }

    /// Resolves when pending memory has room again (after a [`LogError::Full`], or while
    /// [`Log::has_room`] is false); callers bound the wait with their own timeout.
    pub async fn writable(&self) {
        loop {
            let n = self.inner.room.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.has_room() {
                return;
            }
            n.await;
        }
    }

    /// Forgets a channel: its lines stored so far are no longer returned (the space comes
    /// back as retention deletes their segments). Blocking: it writes and fsyncs a small
    /// file in the log directory.
    pub fn forget(&self, channel: ChannelId) -> Result<(), LogError> {
        let inner = &*self.inner;
        let Some(through) = lock(&inner.front).last_seq.get(&channel).copied() else {
            return Ok(());
        };
        let _g = lock(&inner.forget_file);
        recover::append_forgotten(&inner.dir, channel, through)?;
        lock(&inner.segs).forgotten.insert(channel, through);
        Ok(())
    }

    /// The log's directory (others may keep small files in a subdirectory of it: the log
    /// reads only its own segment files).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether the log can write now.
    pub fn health(&self) -> Health {
        lock(&self.inner.front).health.clone()
    }

    /// Counters since open, and the size of the log.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let (segments, bytes) = {
            let s = lock(&self.inner.segs);
            (s.sealed.len() as u64 + 1, s.bytes())
        };
        Stats {
            appended_lines: c.appended_lines.load(Relaxed),
            written_records: c.written_records.load(Relaxed),
            written_lines: c.written_lines.load(Relaxed),
            written_bytes: c.written_bytes.load(Relaxed),
            writes: c.writes.load(Relaxed),
            fsyncs: c.fsyncs.load(Relaxed),
            fsync_us: c.fsync_us.load(Relaxed),
            write_failures: c.write_failures.load(Relaxed),
            lost_lines: c.lost_lines.load(Relaxed),
            rejected_full_lines: c.rejected_full_lines.load(Relaxed),
            rejected_failed_lines: c.rejected_failed_lines.load(Relaxed),
            read_corrupt_records: c.read_corrupt_records.load(Relaxed),
            deleted_segments: c.deleted_segments.load(Relaxed),
            segments,
            bytes,
            pending_bytes: lock(&self.inner.front).bytes as u64,
        }
    }

    /// The position everything below which is fsynced.
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.progress.borrow().durable
    }

    /// Writes the pending records, fsyncs and stops the I/O thread, waiting at most
    /// [`Options::close_timeout`]. Appends fail with [`LogError::Closed`] from the call on.
    /// Blocking. Once closed, the directory is free for another `Log`, even while this one
    /// is still held. Dropping a `Log` closes it too.
    pub fn close(&self) -> Result<(), LogError> {
        self.begin_close();
        let Some(rx) = lock(&self.inner.done).take() else {
            return Ok(());
        };
        let limit = self.inner.opts.close_timeout;
        match rx.recv_timeout(limit) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = lock(&self.thread).take() {
                    let _ = t.join();
                }
                // Nothing writes to the directory any more: another `Log` may open it.
                drop(lock(&self.inner.dir_lock).take());
                match self.health() {
                    Health::Ok => Ok(()),
                    Health::Degraded { reason, .. } => Err(LogError::Failed(reason)),
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(LogError::CloseTimeout(limit)),
        }
    }

    fn begin_close(&self) {
        let mut f = lock(&self.inner.front);
        if f.run == Run::Open {
            f.run = Run::Closing;
        }
        drop(f);
        self.inner.wake.notify_one();
        self.inner.room.notify_waiters();
    }
}

impl Drop for Log {
    /// Closes the log like [`Log::close`] (waiting at most `close_timeout`), so that the
    /// directory can be opened again once the `Log` is gone.
    fn drop(&mut self) {
        let _ = self.close();
    }
}
