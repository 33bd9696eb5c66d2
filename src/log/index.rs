//! The per-segment index: where each channel's records are in a segment.
//!
//! The active segment's index lives in memory ([`SegIndex`]). When a segment is sealed its
//! index is written beside it as `<base>.idx`:
//!
//! ```text
//! header, 56 bytes
//!   magic "LPXIDX01", segment base u64, segment len u64, channels u32, reserved u32,
//!   min recv_us i64, max recv_us i64, table crc u32, header crc u32 (of the bytes before)
//! table: channels × 64 bytes, sorted by channel id
//!   channel u64, first seq u64, last seq u64, min recv_us i64, max recv_us i64,
//!   entries offset u64 (in this file), entries u32, entries crc u32, lines u64
//! entries: per channel, contiguous, in record order, 32 bytes each
//!   record offset in the segment u64, record len u32, line count u32, first seq u64,
//!   recv_us i64
//! ```
//!
//! All integers little-endian, CRCs are CRC32C. Opening a log reads only the header and
//! the table of each sealed segment ([`load_table`]); a channel's entries are read on
//! demand with one `pread` ([`load_entries`]) and checked against the table's CRC.

use super::private_file;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"LPXIDX01";
const HEADER: usize = 56;
const ROW: usize = 64;
const ENTRY: usize = 32;

/// One record of a channel in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Offset of the record in its segment file.
    pub off: u64,
    /// Whole record length.
    pub len: u32,
    pub count: u32,
    pub first_seq: u64,
    pub recv_us: i64,
}

impl Entry {
    pub fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count).saturating_sub(1)
    }
}

/// What a segment holds of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub first_seq: u64,
    pub last_seq: u64,
    pub min_us: i64,
    pub max_us: i64,
    pub lines: u64,
}

impl Summary {
    fn of(e: &Entry) -> Summary {
        Summary {
            first_seq: e.first_seq,
            last_seq: e.last_seq(),
            min_us: e.recv_us,
            max_us: e.recv_us,
            lines: u64::from(e.count),
        }
    }

    fn add(&mut self, e: &Entry) {
        self.first_seq = self.first_seq.min(e.first_seq);
        self.last_seq = self.last_seq.max(e.last_seq());
        self.min_us = self.min_us.min(e.recv_us);
        self.max_us = self.max_us.max(e.recv_us);
        self.lines += u64::from(e.count);
    }
}

/// The in-memory index of a segment (the active one, or one being rebuilt by a scan).
#[derive(Debug, Default)]
pub(crate) struct SegIndex {
    pub chans: HashMap<u64, (Summary, Vec<Entry>)>,
}

impl SegIndex {
    pub fn add(&mut self, channel: u64, e: Entry) {
        match self.chans.get_mut(&channel) {
            Some((s, v)) => {
                s.add(&e);
                v.push(e);
            }
            None => {
                self.chans.insert(channel, (Summary::of(&e), vec![e]));
            }
        }
    }

    /// Drops the entries of records at or after `off` (a cut of the segment file); returns
    /// the number of lines dropped.
    pub fn truncate(&mut self, off: u64) -> u64 {
        let mut dropped = 0;
        self.chans.retain(|_, (s, v)| {
            v.retain(|e| {
                if e.off >= off {
                    dropped += u64::from(e.count);
                }
                e.off < off
            });
            let mut it = v.iter();
            match it.next() {
                None => false,
                Some(first) => {
                    *s = Summary::of(first);
                    it.for_each(|e| s.add(e));
                    true
                }
            }
        });
        dropped
    }

    /// (min, max) receive time over the segment; (MAX, MIN) when empty.
    pub fn time_range(&self) -> (i64, i64) {
        self.chans
            .values()
            .fold((i64::MAX, i64::MIN), |(lo, hi), (s, _)| {
                (lo.min(s.min_us), hi.max(s.max_us))
            })
    }
}

/// A sealed segment's row for one channel: its summary and where its entries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    pub summary: Summary,
    pub entries_off: u64,
    pub entries: u32,
    pub entries_crc: u32,
}

/// The table of a sealed segment's index.
#[derive(Debug)]
pub(crate) struct Table {
    /// Newest receive time in the segment (retention by age).
    pub max_us: i64,
    pub rows: HashMap<u64, Row>,
}

/// Encodes the index of a segment about to be sealed: the file's bytes and its table.
pub(crate) fn encode(base: u64, seg_len: u64, idx: &SegIndex) -> (Vec<u8>, Table) {
    let mut ids: Vec<u64> = idx.chans.keys().copied().collect();
    ids.sort_unstable();
    let (min_us, max_us) = idx.time_range();
    let mut table = Vec::with_capacity(ids.len() * ROW);
    let mut entries = Vec::new();
    let mut rows = HashMap::with_capacity(ids.len());
    let mut off = (HEADER + ids.len() * ROW) as u64;
    for id in ids {
        let Some((s, v)) = idx.chans.get(&id) else {
            continue;
        };
        let start = entries.len();
        for e in v {
            entries.extend_from_slice(&e.off.to_le_bytes());
            entries.extend_from_slice(&e.len.to_le_bytes());
            entries.extend_from_slice(&e.count.to_le_bytes());
            entries.extend_from_slice(&e.first_seq.to_le_bytes());
            entries.extend_from_slice(&e.recv_us.to_le_bytes());
        }
        let row = Row {
            summary: *s,
            entries_off: off,
            entries: v.len() as u32,
            entries_crc: crc32c::crc32c(&entries[start..]),
        };
        off += (entries.len() - start) as u64;
        table.extend_from_slice(&id.to_le_bytes());
        table.extend_from_slice(&s.first_seq.to_le_bytes());
        table.extend_from_slice(&s.last_seq.to_le_bytes());
        table.extend_from_slice(&s.min_us.to_le_bytes());
        table.extend_from_slice(&s.max_us.to_le_bytes());
        table.extend_from_slice(&row.entries_off.to_le_bytes());
        table.extend_from_slice(&row.entries.to_le_bytes());
        table.extend_from_slice(&row.entries_crc.to_le_bytes());
        table.extend_from_slice(&s.lines.to_le_bytes());
        rows.insert(id, row);
    }
    let mut head = Vec::with_capacity(HEADER);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&base.to_le_bytes());
    head.extend_from_slice(&seg_len.to_le_bytes());
    head.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(&min_us.to_le_bytes());
    head.extend_from_slice(&max_us.to_le_bytes());
    head.extend_from_slice(&crc32c::crc32c(&table).to_le_bytes());
    let hcrc = crc32c::crc32c(&head);
    head.extend_from_slice(&hcrc.to_le_bytes());
    head.extend_from_slice(&table);
    head.extend_from_slice(&entries);
    (head, Table { max_us, rows })
}

/// Writes an encoded index to `path` through a temporary file, synced, then renamed (the
/// caller syncs the directory).
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("idx.tmp");
    let mut f = private_file(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Reads the header and table of `path`; an error (the file missing, short, of another
/// segment or length, or failing a CRC) says why the index cannot be trusted.
pub(crate) fn load_table(path: &Path, base: u64, seg_len: u64) -> Result<(File, Table), String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let flen = f.metadata().map_err(|e| e.to_string())?.len();
    let mut head = [0u8; HEADER];
    f.read_exact_at(&mut head, 0)
        .map_err(|e| format!("header: {e}"))?;
    if &head[..8] != MAGIC {
        return Err("bad magic".into());
    }
    if le32(&head, 52) != crc32c::crc32c(&head[..52]) {
        return Err("header crc mismatch".into());
    }
    if le64(&head, 8) != base {
        return Err("index of another segment".into());
    }
    if le64(&head, 16) != seg_len {
        return Err(format!(
            "index covers {} bytes, the segment has {seg_len}",
            le64(&head, 16)
        ));
    }
    let n = le32(&head, 24) as usize;
    let table_len = n
        .checked_mul(ROW)
        .filter(|l| (HEADER + l) as u64 <= flen)
        .ok_or("table longer than the file")?;
    let mut table = vec![0u8; table_len];
    f.read_exact_at(&mut table, HEADER as u64)
        .map_err(|e| format!("table: {e}"))?;
    if le32(&head, 48) != crc32c::crc32c(&table) {
        return Err("table crc mismatch".into());
    }
    let mut rows = HashMap::with_capacity(n);
    for r in table.chunks_exact(ROW) {
        let row = Row {
            summary: Summary {
                first_seq: le64(r, 8),
                last_seq: le64(r, 16),
                min_us: le64(r, 24) as i64,
                max_us: le64(r, 32) as i64,
                lines: le64(r, 56),
            },
            entries_off: le64(r, 40),
            entries: le32(r, 48),
            entries_crc: le32(r, 52),
        };
        let end = row.entries_off + u64::from(row.entries) * ENTRY as u64;
        if end > flen {
            return Err("entries past the end of the file".into());
        }
        rows.insert(le64(r, 0), row);
    }
    let table = Table {
        max_us: le64(&head, 40) as i64,
        rows,
    };
    Ok((f, table))
}

/// Reads one channel's entries of a sealed segment (one `pread`), checked by CRC.
pub(crate) fn load_entries(f: &File, row: &Row) -> io::Result<Vec<Entry>> {
    let mut b = vec![0u8; row.entries as usize * ENTRY];
    f.read_exact_at(&mut b, row.entries_off)?;
    if crc32c::crc32c(&b) != row.entries_crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "index entries crc mismatch",
        ));
    }
    Ok(b.chunks_exact(ENTRY)
        .map(|c| Entry {
            off: le64(c, 0),
            len: le32(c, 8),
            count: le32(c, 12),
            first_seq: le64(c, 16),
            recv_us: le64(c, 24) as i64,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00000000000000000100.idx");
        let mut idx = SegIndex::default();
        for i in 0..10u64 {
            let e = Entry {
                off: i * 100,
                len: 100,
                count: 3,
                first_seq: 1 + i * 3,
                recv_us: 1000 + i as i64,
            };
            idx.add(i % 3, e);
        }
        let (bytes, t) = encode(100, 1000, &idx);
        write_file(&p, &bytes).unwrap();
        let (_, l) = load_table(&p, 100, 1000).unwrap();
        assert_eq!(l.rows, t.rows);
        assert_eq!(l.max_us, 1009);
        let e = load_entries(&File::open(&p).unwrap(), &l.rows[&1]).unwrap();
        assert_eq!(e, idx.chans[&1].1);
        assert!(load_table(&p, 100, 999).is_err());
        assert!(load_table(&p, 0, 1000).is_err());
        let mut raw = std::fs::read(&p).unwrap();
        raw[HEADER + 3] ^= 1;
        std::fs::write(&p, &raw).unwrap();
        assert!(load_table(&p, 100, 1000).is_err());
    }
}
