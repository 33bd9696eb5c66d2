//! A drain's place in the durable log, when the log is on: the seq of the last line it
//! delivered (or skipped), kept in a small file so a restart (graceful or `kill -9`)
//! resumes there, and the choice of where its next batch comes from.
//!
//! A drain that keeps up takes its lines from its memory buffer, which the channel fills as
//! lines arrive (no copy, no I/O). When the buffer does not start right after the cursor
//! (the buffer overflowed while the receiver was slow or down, or the node restarted), the
//! drain reads the missing lines from the log with [`Log::read_after`] on the blocking pool
//! (16 k lines or 4 MiB a read; the next read starts while the second half of one is sent,
//! so disk and network work overlap), and goes back to memory as soon as the cursor
//! reaches the buffer's first line. Memory and log hold the same lines under the same seqs,
//! so nothing is lost or sent twice at either switch. In log mode the buffer's overflow drops its oldest lines silently: the log has
//! them.
//!
//! A drain skips lines (and says how many in its next L10 frame) only when they cannot be
//! read (deleted by retention, or never written because the log could not write) or when it
//! is further behind than `drains.max_lag`: then it skips forward to the newest lines.
//!
//! The cursor file (`<log>/drains/<drain id>`, 36 bytes: seq, channel id, the drain's counts
//! of lines sent and dropped, CRC32C of those; the 20-byte files of earlier versions, without
//! the counts, are read too) is written after every delivered batch, on the blocking pool,
//! before the next batch is sent; without fsync (a `kill -9` keeps the page cache; a power
//! loss may roll it back to an older cursor, so more is sent again, never less). So a crash
//! sends again at most the batch that was in flight, and the drain's counts go on from
//! where they were saved instead of starting again at 0.

use super::Drain;
use crate::config::MaxLag;
use crate::line::Line;
use crate::log::{ChannelId, Log, LogLine};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// No cursor yet: the drain starts at its channel's end once it knows its channel.
const UNKNOWN: u64 = u64::MAX;
/// Size of a cursor file.
const FILE_LEN: usize = 36;
/// Size of a cursor file of the versions that did not keep the counts.
const OLD_FILE_LEN: usize = 20;
/// How long lines the channel numbered may be missing from the log before the drain takes
/// them as never written (refused by a degraded log) and skips them. The log writes within
/// milliseconds when it works.
const NOT_WRITTEN_AFTER: Duration = Duration::from_secs(2);
/// The wait before reading again lines the log has not written yet.
const UNWRITTEN_RETRY: Duration = Duration::from_millis(5);
/// Lines and bytes one read of the log fetches ahead of the cursor (handed out a batch at a
/// time): a read costs a plan over the channel's index and reads whole runs of records, so
/// a read per 1024-line batch would cost several times the lines it returns.
const READ_AHEAD_LINES: usize = 16_384;
const READ_AHEAD_BYTES: usize = 4 << 20;

/// A drain's cursor in the durable log (see the module doc).
pub struct Cursor {
    log: Arc<Log>,
    path: PathBuf,
    file: Option<Arc<File>>,
    /// The last seq delivered or skipped ([`UNKNOWN`] before the first).
    seq: AtomicU64,
    /// The channel the seq belongs to (from the file; [`UNKNOWN`] when none was read).
    channel: AtomicU64,
    max_lag: MaxLag,
    /// Frame bytes the channel handed the drain, and bytes delivered or skipped (since the
    /// drain started): their difference is the byte lag `max_lag` compares.
    tapped_bytes: AtomicU64,
    done_bytes: AtomicU64,
    /// Receive time (µs) of the last line delivered from the log, or when a batch from
    /// memory was delivered, or when lines came to a drain that was caught up; 0 when
    /// caught up. Its age is the lag in seconds.
    behind_us: AtomicI64,
    /// Since when the log has been missing lines the channel numbered.
    unwritten_since: Mutex<Option<Instant>>,
    /// Lines read from the log after the cursor, not sent yet (a contiguous run).
    ahead: Mutex<VecDeque<LogLine>>,
    /// The next read of the log, started while the lines `ahead` are sent (so reading and
    /// sending overlap on two threads), with the seq it reads after.
    prefetch: Mutex<Option<(u64, Read)>>,
}

/// A read of the log on the blocking pool.
type Read = tokio::task::JoinHandle<Result<crate::log::After, crate::log::LogError>>;

/// Where the next batch comes from.
pub enum Next {
    /// From the memory buffer (counted in its gauge).
    Memory(Vec<Line>),
    /// Read from the log, up to and including seq `through`.
    Log(Vec<Line>, u64, i64),
    /// Caught up: wait for lines.
    Idle,
    /// Nothing to send now; look again after this long.
    Later(Duration),
    /// The cursor moved (lines skipped): look again at once.
    Again,
}

impl Cursor {
    /// The cursor of drain `id`, read from its file in the log's directory (created if
    /// missing), and the drain's counts of lines sent and dropped saved with it (where
    /// its counts go on from). Blocking: called when drains are applied, on the blocking
    /// pool.
    pub fn open(log: Arc<Log>, id: &str, max_lag: MaxLag) -> (Cursor, (u64, u64)) {
        let path = cursor_path(log.dir(), id);
        let saved = read_file(&path).unwrap_or(Saved {
            seq: UNKNOWN,
            channel: UNKNOWN,
            sent: 0,
            dropped: 0,
        });
        let file = open_file(&path)
            .map_err(|e| {
                tracing::warn!(path = %path.display(), "drain cursor file: {e}; a restart will resend or skip");
            })
            .ok()
            .map(Arc::new);
        let cursor = Cursor {
            log,
            path,
            file,
            seq: AtomicU64::new(saved.seq),
            channel: AtomicU64::new(saved.channel),
            max_lag,
            tapped_bytes: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            behind_us: AtomicI64::new(0),
            unwritten_since: Mutex::new(None),
            ahead: Mutex::new(VecDeque::new()),
            prefetch: Mutex::new(None),
        };
        (cursor, (saved.sent, saved.dropped))
    }

    /// The last seq delivered or skipped, if known.
    pub fn seq(&self) -> Option<u64> {
        Some(self.seq.load(Relaxed)).filter(|&s| s != UNKNOWN)
    }

    /// Does the byte lag need counting (on the channel's hot path)?
    pub fn counts_bytes(&self) -> bool {
        matches!(self.max_lag, MaxLag::Bytes(_))
    }

    /// The channel handed the drain lines of `bytes` frame bytes (0 when the byte lag is
    /// not counted).
    pub fn tapped(&self, bytes: u64) {
        if bytes > 0 {
            self.tapped_bytes.fetch_add(bytes, Relaxed);
        }
        // A drain that was caught up is behind from now.
        if self.behind_us.load(Relaxed) == 0 {
            self.behind_us.store(crate::clock::now_micros(), Relaxed);
        }
    }

    /// Lines and seconds the drain is behind its channel's newest line.
    pub fn lag(&self, channel_last: u64) -> (u64, f64) {
        let lines = self.seq().map_or(0, |s| channel_last.saturating_sub(s));
        let at = self.behind_us.load(Relaxed);
        let secs = if lines == 0 || at == 0 {
            0.0
        } else {
            (crate::clock::now_micros() - at).max(0) as f64 / 1e6
        };
        (lines, secs)
    }

    /// Lines through `through` were delivered (the last of them received at `recv_us`, 0:
    /// from memory): moves the cursor and saves it with the drain's `counts` of lines sent
    /// and dropped (on the blocking pool, awaited, so a crash resends at most the next
    /// batch). `caught_up`: nothing is left to send.
    pub async fn delivered(
        &self,
        through: u64,
        recv_us: i64,
        bytes: u64,
        caught_up: bool,
        counts: (u64, u64),
    ) {
        self.seq.store(through, Relaxed);
        self.done_bytes.fetch_add(bytes, Relaxed);
        let at = if caught_up {
            0
        } else if recv_us > 0 {
            recv_us
        } else {
            crate::clock::now_micros()
        };
        self.behind_us.store(at, Relaxed);
        self.save(counts).await;
    }

    /// Writes the cursor and the drain's `counts` to its file (on the blocking pool).
    async fn save(&self, counts: (u64, u64)) {
        let (Some(file), Some(seq)) = (self.file.clone(), self.seq()) else {
            return;
        };
        let buf = self.encode(seq, counts);
        let r = tokio::task::spawn_blocking(move || file.write_at(&buf, 0)).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(path = %self.path.display(), "drain cursor not saved: {e}");
        }
    }

    /// Writes the cursor and the drain's `counts` to its file now (blocking: for callers
    /// off the async runtime).
    fn save_blocking(&self, counts: (u64, u64)) {
        let (Some(file), Some(seq)) = (self.file.as_ref(), self.seq()) else {
            return;
        };
        if let Err(e) = file.write_at(&self.encode(seq, counts), 0) {
            tracing::warn!(path = %self.path.display(), "drain cursor not saved: {e}");
        }
    }

    fn encode(&self, seq: u64, (sent, dropped): (u64, u64)) -> [u8; FILE_LEN] {
        encode(&Saved {
            seq,
            channel: self.channel.load(Relaxed),
            sent,
            dropped,
        })
    }

    /// The drain was removed: its cursor file goes (blocking pool).
    pub async fn remove(&self) {
        let path = self.path.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
    }

    /// Moves the cursor forward to `to` over lines that will not be delivered: counted as
    /// dropped and announced by the drain's next L10 frame.
    fn skip(&self, d: &Drain, from: u64, to: u64, why: &str) {
        let n = to - from;
        self.seq.store(to, Relaxed);
        self.done_bytes
            .store(self.tapped_bytes.load(Relaxed), Relaxed);
        *self
            .unwritten_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        tracing::warn!(drain = %String::from_utf8_lossy(&d.token), lines = n, "drain skips lines: {why}");
        d.buffer.lost(n);
        d.count_dropped(n);
    }

    /// Chooses the next batch of at most `max` lines and `max_bytes` (see [`Next`]).
    pub async fn next(&self, d: &Drain, max: usize, max_bytes: usize) -> Next {
        let Some(ch) = d.channel() else {
            return Next::Idle;
        };
        let id = ch.id as ChannelId;
        let cur = match self.seq() {
            Some(s) => s,
            None => {
                if self.start_at_end(&ch) {
                    self.save(d.counts()).await;
                }
                self.seq().unwrap_or(0)
            }
        };
        let (lines, discarded) = d.buffer.take_run(max, max_bytes, cur + 1);
        if discarded > 0 {
            d.counters.buffered.sub(discarded as i64);
        }
        if discarded > 0 || !lines.is_empty() {
            d.took();
        }
        if !lines.is_empty() {
            *self
                .unwritten_since
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            return Next::Memory(lines);
        }
        let end = match d.buffer.front_seq() {
            Some(f) => f - 1,
            None => ch.last_seq(),
        };
        drop(ch);
        if end <= cur {
            return Next::Idle;
        }
        if let MaxLag::Bytes(limit) = self.max_lag {
            let lag = self
                .tapped_bytes
                .load(Relaxed)
                .saturating_sub(self.done_bytes.load(Relaxed));
            if lag > limit {
                self.skip(d, cur, end, "behind drains.max_lag (bytes)");
                return Next::Again;
            }
        }
        if let Some(next) = self.take_ahead(cur, max, max_bytes) {
            self.prefetch(id, end);
            return next;
        }
        let started = self
            .prefetch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let read = match started {
            Some((after, read)) if after == cur => read,
            // None, or one the cursor moved away from (a skip): read afresh.
            _ => self.read(id, cur, end),
        };
        let after = match read.await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                tracing::warn!(drain = %String::from_utf8_lossy(&d.token), "drain cannot read the log: {e}");
                return Next::Later(Duration::from_millis(500));
            }
            Err(_) => return Next::Later(Duration::from_millis(500)),
        };
        let Some(first) = after.lines.first() else {
            // Numbered by the channel, not in the log yet: being written, or never will be.
            let mut since = self
                .unwritten_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let t = *since.get_or_insert_with(Instant::now);
            drop(since);
            if t.elapsed() < NOT_WRITTEN_AFTER {
                return Next::Later(UNWRITTEN_RETRY);
            }
            self.skip(d, cur, end, "lines the log could not write");
            return Next::Again;
        };
        *self
            .unwritten_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        if let MaxLag::Age(age) = self.max_lag {
            let oldest = crate::clock::now_micros() - age.as_micros() as i64;
            if first.recv_us < oldest {
                self.skip(d, cur, end, "behind drains.max_lag (age)");
                return Next::Again;
            }
        }
        if first.seq > cur + 1 {
            let why = if after.first_stored.is_some_and(|f| f > cur + 1) {
                "deleted by the log's retention"
            } else {
                "lines the log could not write"
            };
            self.skip(d, cur, first.seq - 1, why);
            return Next::Again;
        }
        // Only the run that follows the cursor: a gap further on is met (and announced) by
        // the next read.
        {
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            ahead.clear();
            for (want, l) in (cur + 1..).zip(after.lines) {
                if l.seq != want {
                    break;
                }
                ahead.push_back(l);
            }
        }
        self.take_ahead(cur, max, max_bytes)
            .unwrap_or(Next::Later(UNWRITTEN_RETRY))
    }

    /// Starts reading the log after `cur`, up to `end`, at most a read-ahead's worth.
    fn read(&self, id: ChannelId, cur: u64, end: u64) -> Read {
        let want = (end - cur).min(READ_AHEAD_LINES as u64) as usize;
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.read_after(id, cur, want, READ_AHEAD_BYTES))
    }

    /// Once half of the lines read ahead are sent, starts the read that follows them (if
    /// the channel has more, up to `end`), so the next batch does not wait for the disk.
    fn prefetch(&self, id: ChannelId, end: u64) {
        let last = {
            let ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            match ahead.back() {
                Some(l) if ahead.len() <= READ_AHEAD_LINES / 2 && l.seq < end => l.seq,
                _ => return,
            }
        };
        let mut p = self.prefetch.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none() {
            *p = Some((last, self.read(id, last, end)));
        }
    }

    /// The next batch from the lines read ahead, if they start right after `cur`.
    fn take_ahead(&self, cur: u64, max: usize, max_bytes: usize) -> Option<Next> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        while ahead.front().is_some_and(|l| l.seq <= cur) {
            ahead.pop_front();
        }
        if ahead.front().map(|l| l.seq) != Some(cur + 1) {
            ahead.clear();
            return None;
        }
        let (mut through, mut recv_us, mut bytes) = (cur, 0, 0);
        let mut out = Vec::with_capacity(max.min(ahead.len()));
        while through - cur < max as u64 {
            let Some(l) = ahead.front() else { break };
            bytes += l.frame.len() + 64;
            if through > cur && bytes > max_bytes {
                break;
            }
            let Some(l) = ahead.pop_front() else { break };
            through = l.seq;
            recv_us = l.recv_us;
            // Every stored frame was parsed once; one that no longer does is not sent.
            if let Ok(mut line) = Line::parse(l.frame, l.source) {
                line.seq = through;
                out.push(line);
            }
        }
        Some(Next::Log(out, through, recv_us))
    }

    /// The drain is given its channel's lines (called by the registry, on the store's
    /// thread, before the first line reaches its buffer, and after every change): a drain
    /// without a cursor of this channel starts at the channel's end now, and that start is
    /// saved at once. Unsaved, a restart before the first delivery (a receiver down since
    /// the drain was added) would find no cursor and start at the end again, skipping
    /// what arrived meanwhile without a word. `counts`: the drain's lines sent and
    /// dropped, saved with it.
    pub fn attach(&self, ch: &crate::channel::Channel, counts: (u64, u64)) {
        if self.start_at_end(ch) {
            self.save_blocking(counts);
        }
    }

    /// Moves a cursor of no channel or another one to the end of `ch`; true if it moved.
    fn start_at_end(&self, ch: &crate::channel::Channel) -> bool {
        let id = ch.id as ChannelId;
        if self.channel.swap(id, Relaxed) != id || self.seq().is_none() {
            self.seq.store(ch.last_seq(), Relaxed);
            return true;
        }
        false
    }

    /// Is there something between the cursor and the channel's end (for the wait loop)?
    pub fn behind(&self, d: &Drain) -> bool {
        match (self.seq(), d.channel()) {
            (Some(s), Some(ch)) => {
                ch.id as ChannelId == self.channel.load(Relaxed) && s < ch.last_seq()
            }
            _ => false,
        }
    }
}

fn cursor_path(log_dir: &Path, id: &str) -> PathBuf {
    // Store ids are UUIDs; anything else is kept to a safe file name.
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    log_dir.join("drains").join(name)
}

/// What a cursor file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Saved {
    seq: u64,
    channel: u64,
    sent: u64,
    dropped: u64,
}

fn encode(v: &Saved) -> [u8; FILE_LEN] {
    let mut b = [0u8; FILE_LEN];
    for (i, n) in [v.seq, v.channel, v.sent, v.dropped]
        .into_iter()
        .enumerate()
    {
        b[i * 8..i * 8 + 8].copy_from_slice(&n.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b[..FILE_LEN - 4]);
    b[FILE_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A cursor file's contents, of this version or of the ones before the counts (then 0).
fn decode(b: &[u8]) -> Option<Saved> {
    if b.len() != FILE_LEN && b.len() != OLD_FILE_LEN {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if u32::from_le_bytes(crc.try_into().ok()?) != crc32c::crc32c(body) {
        return None;
    }
    let n = |i: usize| -> Option<u64> {
        body.get(i * 8..i * 8 + 8)
            .and_then(|w| w.try_into().ok())
            .map(u64::from_le_bytes)
    };
    Some(Saved {
        seq: n(0)?,
        channel: n(1)?,
        sent: n(2).unwrap_or(0),
        dropped: n(3).unwrap_or(0),
    })
}

fn read_file(path: &Path) -> Option<Saved> {
    let b = std::fs::read(path).ok()?;
    let r = decode(&b);
    if r.is_none() {
        tracing::warn!(path = %path.display(), "drain cursor file unreadable: the drain starts at its channel's end");
    }
    r
}

fn open_file(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    crate::log::private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_file_round_trips_and_a_torn_one_is_refused() {
        let v = Saved {
            seq: 12345,
            channel: 7,
            sent: 1 << 40,
            dropped: 3,
        };
        let b = encode(&v);
        assert_eq!(decode(&b), Some(v));
        let mut bad = b;
        bad[3] ^= 1;
        assert_eq!(decode(&bad), None);
        let mut bad = b;
        bad[27] ^= 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&b[..10]), None);
        assert_eq!(decode(&b[..FILE_LEN - 1]), None);
    }

    #[test]
    fn a_cursor_file_without_counts_is_read_with_zeros() {
        // The 20-byte file of the versions before the counts: seq, channel, CRC32C.
        let mut b = [0u8; OLD_FILE_LEN];
        b[..8].copy_from_slice(&99u64.to_le_bytes());
        b[8..16].copy_from_slice(&4u64.to_le_bytes());
        let crc = crc32c::crc32c(&b[..16]);
        b[16..].copy_from_slice(&crc.to_le_bytes());
        let v = decode(&b).expect("an old file is read");
        assert_eq!((v.seq, v.channel, v.sent, v.dropped), (99, 4, 0, 0));
    }
}
