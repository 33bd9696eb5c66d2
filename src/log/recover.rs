//! Opening a log: the directory lock, recovery of the segments, the file of forgotten
//! channels, and the start of the I/O thread.
//!
//! Recovery reads only the index header and table of each sealed segment (a missing or bad
//! index is rebuilt by scanning that segment) and scans the last segment record by record:
//! a torn or corrupt tail is cut, a corrupt record followed by valid ones is skipped. Both
//! are counted in [`Recovery`] and logged once.

use super::index::{self, Entry, SegIndex};
use super::record::{self, Scanned};
use super::writer::Writer;
use super::{
    lock, seg_name, ActiveView, ChannelId, Counters, Front, Health, Inner, Log, LogError, Options,
    Progress, Run, Sealed, Segs,
};
use super::{private_file, private_options};
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What [`Log::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Per channel, the last seq stored: channels resume numbering after it.
    pub last_seq: HashMap<ChannelId, u64>,
    /// Segments found (sealed and active).
    pub segments: usize,
    /// Bytes of all segments after recovery.
    pub bytes: u64,
    /// Valid records found by scans (the last segment, and sealed ones rebuilt).
    pub records_scanned: u64,
    /// Corrupt records skipped because valid ones follow them.
    pub records_skipped: u64,
    /// Bytes of the skipped records.
    pub bytes_skipped: u64,
    /// Bytes of torn or corrupt tails cut off.
    pub torn_bytes: u64,
    /// Sealed segments whose index was missing or bad and was rebuilt by a scan.
    pub indexes_rebuilt: usize,
    /// How long the open took.
    pub took: Duration,
}

const FORGOTTEN: &str = "forgotten";
const FORGOTTEN_ROW: usize = 20;

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Scans a whole segment file into an index.
pub(super) fn scan_segment(file: &File, len: u64) -> io::Result<(SegIndex, Scanned)> {
    let mut idx = SegIndex::default();
    let scanned = record::scan(file, len, |off, h| {
        idx.add(
            h.channel,
            Entry {
                off,
                len: h.len,
                count: h.count,
                first_seq: h.first_seq,
                recv_us: h.recv_us,
            },
        )
    })?;
    Ok((idx, scanned))
}

fn count_scan(rec: &mut Recovery, s: &Scanned) {
    rec.records_scanned += s.records;
    rec.records_skipped += s.skipped_records;
    rec.bytes_skipped += s.skipped_bytes;
    rec.torn_bytes += s.torn_bytes;
}

/// Cuts a torn tail found by a scan, durably.
fn cut(file: &File, s: &Scanned) -> io::Result<()> {
    if s.torn_bytes > 0 {
        file.set_len(s.end)?;
        file.sync_all()?;
    }
    Ok(())
}

fn open_sealed(dir: &Path, base: u64, rec: &mut Recovery) -> Result<Sealed, LogError> {
    let log_path = seg_name(dir, base, "log");
    let idx_path = seg_name(dir, base, "idx");
    let file = private_options().read(true).write(true).open(&log_path)?;
    let len = file.metadata()?.len();
    let (idx, table, len) = match index::load_table(&idx_path, base, len) {
        Ok((idx, table)) => (idx, table, len),
        Err(why) => {
            tracing::warn!(segment = %log_path.display(), %why, "rebuilding a segment index");
            let (seg_index, scanned) = scan_segment(&file, len)?;
            cut(&file, &scanned)?;
            count_scan(rec, &scanned);
            let (bytes, table) = index::encode(base, scanned.end, &seg_index);
            index::write_file(&idx_path, &bytes)?;
            rec.indexes_rebuilt += 1;
            (File::open(&idx_path)?, table, scanned.end)
        }
    };
    Ok(Sealed {
        len,
        file: Arc::new(file),
        idx_path,
        idx,
        log_path,
        table,
    })
}

pub(super) fn create_segment(dir: &Path, base: u64) -> io::Result<File> {
    let f = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(seg_name(dir, base, "log"))?;
    sync_dir(dir)?;
    Ok(f)
}

pub(super) fn open(dir: &Path, opts: Options) -> Result<(Log, Recovery), LogError> {
    let t0 = Instant::now();
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let lockf = private_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    rustix::fs::flock(&lockf, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| LogError::Locked(dir.to_path_buf()))?;

    let mut bases = Vec::new();
    let mut idxs = Vec::new();
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            let _ = fs::remove_file(ent.path());
        } else if let Some(b) = seg_base(name, ".log") {
            bases.push(b);
        } else if let Some(b) = seg_base(name, ".idx") {
            idxs.push(b);
        }
    }
    bases.sort_unstable();
    for b in idxs {
        if bases.binary_search(&b).is_err() {
            let _ = fs::remove_file(seg_name(dir, b, "idx"));
        }
    }
    if bases.is_empty() {
        create_segment(dir, 0)?;
        bases.push(0);
    }

    let mut rec = Recovery::default();
    let (&last, sealed_bases) = bases.split_last().ok_or(LogError::Closed)?;
    let mut sealed = VecDeque::with_capacity(sealed_bases.len());
    for &b in sealed_bases {
        sealed.push_back(Arc::new(open_sealed(dir, b, &mut rec)?));
    }
    let file = private_options()
        .read(true)
        .write(true)
        .open(seg_name(dir, last, "log"))?;
    let flen = file.metadata()?.len();
    let (active_index, mut scanned) = scan_segment(&file, flen)?;
    cut(&file, &scanned)?;
    if scanned.zero_tail {
        // Preallocated space (`Options::preallocate`) or a direct write's rounding to its
        // block, not a torn record: cut, not counted.
        scanned.torn_bytes = 0;
    }
    count_scan(&mut rec, &scanned);
    let len = scanned.end;

    for s in &sealed {
        for (ch, row) in &s.table.rows {
            let e = rec.last_seq.entry(*ch).or_insert(0);
            *e = (*e).max(row.summary.last_seq);
        }
    }
    for (ch, (s, _)) in &active_index.chans {
        let e = rec.last_seq.entry(*ch).or_insert(0);
        *e = (*e).max(s.last_seq);
    }
    rec.segments = sealed.len() + 1;
    rec.bytes = sealed.iter().map(|s| s.len).sum::<u64>() + len;
    rec.took = t0.elapsed();
    if rec.records_skipped > 0 || rec.torn_bytes > 0 || rec.indexes_rebuilt > 0 {
        tracing::warn!(
            dir = %dir.display(),
            skipped_records = rec.records_skipped,
            skipped_bytes = rec.bytes_skipped,
            torn_bytes = rec.torn_bytes,
            indexes_rebuilt = rec.indexes_rebuilt,
            "log recovered with damage"
        );
    } else {
        tracing::info!(dir = %dir.display(), segments = rec.segments, bytes = rec.bytes,
            took_ms = rec.took.as_millis() as u64, "log opened");
    }

    let file = Arc::new(file);
    let end = last + len;
    let (progress, _) = tokio::sync::watch::channel(Progress {
        durable: end,
        losses: 0,
        closed: false,
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let inner = Arc::new(Inner {
        dir: dir.to_path_buf(),
        front: Mutex::new(Front {
            pending: HashMap::new(),
            bytes: 0,
            lines: 0,
            since: None,
            last_seq: rec.last_seq.clone(),
            reserved: end,
            health: Health::Ok,
            run: Run::Open,
        }),
        wake: Condvar::new(),
        segs: Mutex::new(Segs {
            sealed,
            active: ActiveView {
                file: file.clone(),
                len,
                index: active_index,
            },
            forgotten: load_forgotten(dir)?,
        }),
        progress,
        lost: Mutex::new(VecDeque::new()),
        room: tokio::sync::Notify::new(),
        counters: Counters::default(),
        forget_file: Mutex::new(()),
        done: Mutex::new(Some(done_rx)),
        opts,
        dir_lock: Mutex::new(Some(lockf)),
    });
    let writer = Writer::new(inner.clone(), file, last, len);
    let thread = std::thread::Builder::new()
        .name("logplex-log".into())
        .spawn(move || {
            writer.run();
            let _ = done_tx.send(());
        })?;
    Ok((
        Log {
            inner,
            thread: Mutex::new(Some(thread)),
        },
        rec,
    ))
}

fn seg_base(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn forgotten_row(channel: ChannelId, through: u64) -> [u8; FORGOTTEN_ROW] {
    let mut r = [0u8; FORGOTTEN_ROW];
    r[..8].copy_from_slice(&channel.to_le_bytes());
    r[8..16].copy_from_slice(&through.to_le_bytes());
    let crc = crc32c::crc32c(&r[..16]);
    r[16..].copy_from_slice(&crc.to_le_bytes());
    r
}

/// Reads the forgotten channels (channel → last seq forgotten); rows failing their CRC (a
/// torn last row) are ignored.
fn load_forgotten(dir: &Path) -> io::Result<HashMap<ChannelId, u64>> {
    let raw = match fs::read(dir.join(FORGOTTEN)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut out = HashMap::new();
    for r in raw.chunks_exact(FORGOTTEN_ROW) {
        let mut ch = [0u8; 8];
        let mut th = [0u8; 8];
        let mut crc = [0u8; 4];
        ch.copy_from_slice(&r[..8]);
        th.copy_from_slice(&r[8..16]);
        crc.copy_from_slice(&r[16..]);
        if u32::from_le_bytes(crc) == crc32c::crc32c(&r[..16]) {
            let e = out.entry(u64::from_le_bytes(ch)).or_insert(0);
            *e = (*e).max(u64::from_le_bytes(th));
        }
    }
    Ok(out)
}

/// Adds a forgotten channel to the file, durably.
pub(super) fn append_forgotten(dir: &Path, channel: ChannelId, through: u64) -> io::Result<()> {
    let path = dir.join(FORGOTTEN);
    let existed = path.exists();
    let mut f = private_options().create(true).append(true).open(&path)?;
    // A torn row from a crash would shift every later row: start at a row boundary.
    let len = f.metadata()?.len();
    if len % FORGOTTEN_ROW as u64 != 0 {
        f.set_len(len - len % FORGOTTEN_ROW as u64)?;
    }
    f.write_all(&forgotten_row(channel, through))?;
    f.sync_data()?;
    if !existed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Rewrites the file of forgotten channels with `keep` (after retention deleted segments).
pub(super) fn rewrite_forgotten(dir: &Path, keep: &HashMap<ChannelId, u64>) -> io::Result<()> {
    let path = dir.join(FORGOTTEN);
    let tmp = dir.join("forgotten.tmp");
    let mut b = Vec::with_capacity(keep.len() * FORGOTTEN_ROW);
    for (ch, th) in keep {
        b.extend_from_slice(&forgotten_row(*ch, *th));
    }
    let mut f = private_file(&tmp)?;
    f.write_all(&b)?;
    f.sync_data()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir)
}

/// Drops forgotten channels that no segment (nor pending batch) holds lines of any more.
pub(super) fn compact_forgotten(inner: &Inner) {
    let _g = lock(&inner.forget_file);
    let pending: Vec<ChannelId> = lock(&inner.front).pending.keys().copied().collect();
    let keep = {
        let mut segs = lock(&inner.segs);
        if segs.forgotten.is_empty() {
            return;
        }
        let before = segs.forgotten.len();
        let held = |ch: &ChannelId, through: u64, s: &Segs| {
            pending.contains(ch)
                || s.sealed.iter().any(|g| {
                    g.table
                        .rows
                        .get(ch)
                        .is_some_and(|r| r.summary.first_seq <= through)
                })
                || s.active
                    .index
                    .chans
                    .get(ch)
                    .is_some_and(|(sm, _)| sm.first_seq <= through)
        };
        let keep: HashMap<ChannelId, u64> = segs
            .forgotten
            .iter()
            .filter(|(ch, th)| held(ch, **th, &segs))
            .map(|(c, t)| (*c, *t))
            .collect();
        if keep.len() == before {
            return;
        }
        segs.forgotten = keep.clone();
        keep
    };
    if let Err(e) = rewrite_forgotten(&inner.dir, &keep) {
        tracing::warn!(error = %e, "cannot rewrite the log's forgotten channels");
    }
}
