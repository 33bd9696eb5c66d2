//! The record: one channel's batch of lines, framed with a length and a CRC32C.
//!
//! ```text
//! offset size field
//!  0     4   len        u32 LE, bytes after the crc field (the body); record = 8 + len
//!  4     4   crc        u32 LE, CRC32C (Castagnoli) of the body
//!  8     1   version    1
//!  9     1   flags      0 (reserved)
//! 10     2   reserved   0
//! 12     8   channel    u64 LE, the channel id of the store (never reused)
//! 20     8   first_seq  u64 LE, the seq of the first line; line i has first_seq + i
//! 28     4   count      u32 LE, number of lines (≥ 1)
//! 32     8   recv_us    i64 LE, receive time of the first line, µs since the Unix epoch
//! 40     …   lines      count × { src_len u8 (≤ 48), src, frame_len u32 LE, frame }
//! ```
//!
//! A record is valid when its length is in bounds, its CRC matches, its fixed fields hold
//! the values above and its lines fill the body exactly. Anything else is corrupt: the
//! scanner ([`scan`]) skips it or, at the end of a segment, calls it a torn tail.

use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes before the first line: len, crc and the fixed body fields.
pub(crate) const HEADER_LEN: usize = 40;
/// Fixed part of the body (what `len` covers before the lines).
const BODY_FIXED: usize = HEADER_LEN - 8;
/// The only record version written and read.
pub(crate) const VERSION: u8 = 1;
/// Longest source name (RFC 5424 APP-NAME is at most 48 characters).
pub const MAX_SOURCE: usize = 48;
/// Largest frame one line may carry.
pub const MAX_FRAME: usize = 8 << 20;
/// Largest body a record may have; a length above it is corruption.
pub(crate) const MAX_BODY: usize = 16 << 20;
/// A pending record stops growing at this many body bytes (a larger batch becomes
/// several records), so that one read of a record stays small.
pub(crate) const TARGET_BODY: usize = 1 << 20;
/// Bytes a line adds to a record besides its source and frame.
pub(crate) const LINE_OVERHEAD: usize = 5;

/// The fixed fields of a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub channel: u64,
    pub first_seq: u64,
    pub count: u32,
    pub recv_us: i64,
    /// Whole record length (header + lines).
    pub len: u32,
}

/// Appends one line (source, frame) to a record body under construction.
pub(crate) fn put_line(body: &mut Vec<u8>, source: &[u8], frame: &[u8]) {
    // Lengths are checked by the caller (≤ MAX_SOURCE, ≤ MAX_FRAME).
    body.push(source.len() as u8);
    body.extend_from_slice(source);
    body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    body.extend_from_slice(frame);
}

/// Appends a whole record (header, CRC and the encoded `lines`) to `out`.
pub(crate) fn put_record(
    out: &mut Vec<u8>,
    channel: u64,
    first_seq: u64,
    count: u32,
    recv_us: i64,
    lines: &[u8],
) {
    let start = out.len();
    let len = (BODY_FIXED + lines.len()) as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&channel.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&recv_us.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start + 8..]), lines);
    out.extend_from_slice(lines);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// What is at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// A whole valid record.
    Valid(Header),
    /// A plausible start whose record runs past the end of the slice.
    Incomplete(usize),
    /// Not a record.
    Invalid,
}

/// Cheap test of the first bytes: whether a record can start here, and its total length.
pub(crate) fn plausible(b: &[u8]) -> Option<usize> {
    let len = u32_at(b, 0)? as usize;
    if !(BODY_FIXED..=MAX_BODY).contains(&len) {
        return None;
    }
    if b.get(8..12)? != [VERSION, 0, 0, 0] {
        return None;
    }
    let count = u32_at(b, 28)? as usize;
    if count == 0 || count * LINE_OVERHEAD > len - BODY_FIXED {
        return None;
    }
    Some(8 + len)
}

/// Checks the record at the start of `b`.
pub(crate) fn check(b: &[u8]) -> Check {
    if b.len() < HEADER_LEN {
        // Too short to tell: plausible() needs the whole fixed part.
        return match u32_at(b, 0) {
            Some(len) if (BODY_FIXED..=MAX_BODY).contains(&(len as usize)) => {
                Check::Incomplete(8 + len as usize)
            }
            None => Check::Incomplete(HEADER_LEN),
            Some(_) => Check::Invalid,
        };
    }
    let Some(total) = plausible(b) else {
        return Check::Invalid;
    };
    let Some(rec) = b.get(..total) else {
        return Check::Incomplete(total);
    };
    match u32_at(rec, 4) {
        Some(crc) if crc == crc32c::crc32c(&rec[8..]) => {}
        _ => return Check::Invalid,
    }
    let (Some(channel), Some(first_seq), Some(count), Some(recv)) = (
        u64_at(rec, 12),
        u64_at(rec, 20),
        u32_at(rec, 28),
        u64_at(rec, 32),
    ) else {
        return Check::Invalid;
    };
    // The lines must fill the body exactly.
    let mut at = HEADER_LEN;
    for _ in 0..count {
        match line_at(rec, at) {
            Some((_, _, next)) => at = next,
            None => return Check::Invalid,
        }
    }
    if at != total || first_seq == 0 || first_seq.checked_add(u64::from(count)).is_none() {
        return Check::Invalid;
    }
    Check::Valid(Header {
        channel,
        first_seq,
        count,
        recv_us: recv as i64,
        len: total as u32,
    })
}

/// The line starting at `at`: (source range, frame range, next offset).
fn line_at(
    rec: &[u8],
    at: usize,
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>, usize)> {
    let slen = *rec.get(at)? as usize;
    if slen > MAX_SOURCE {
        return None;
    }
    let src = at + 1..at + 1 + slen;
    let flen = u32_at(rec, src.end)? as usize;
    let frame = src.end + 4..(src.end + 4).checked_add(flen)?;
    if frame.end > rec.len() {
        return None;
    }
    let next = frame.end;
    Some((src, frame, next))
}

/// The lines of a checked record, as slices of it: (seq, source, frame).
pub(crate) fn lines<'a>(
    rec: &'a Bytes,
    h: &Header,
) -> impl Iterator<Item = (u64, Bytes, Bytes)> + 'a {
    let mut at = HEADER_LEN;
    let first = h.first_seq;
    (0..u64::from(h.count)).map_while(move |i| {
        let (src, frame, next) = line_at(rec, at)?;
        at = next;
        Some((first + i, rec.slice(src), rec.slice(frame)))
    })
}

/// What a scan of one segment file found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Where the valid data ends (the file is cut here when `torn_bytes` > 0).
    pub end: u64,
    pub records: u64,
    /// Corrupt records skipped because a valid record follows them.
    pub skipped_records: u64,
    pub skipped_bytes: u64,
    /// Bytes after the last valid record that are not a record (a torn or corrupt tail).
    pub torn_bytes: u64,
    /// The bytes after the last valid record are all zero: space preallocated for records
    /// to come (`torn_bytes` counts them all the same; the caller cuts them).
    pub zero_tail: bool,
}

/// A read window over a file, refilled in large chunks so a sequential scan reads each
/// byte once.
struct Window<'a> {
    file: &'a File,
    len: u64,
    start: u64,
    buf: Vec<u8>,
}

const CHUNK: usize = 4 << 20;

impl Window<'_> {
    /// Up to `want` bytes at `at` (fewer at the end of the file).
    fn get(&mut self, at: u64, want: usize) -> io::Result<&[u8]> {
        let end = (at + want as u64).min(self.len);
        if at < self.start || end > self.start + self.buf.len() as u64 {
            let n = ((end - at) as usize)
                .max(CHUNK)
                .min((self.len - at) as usize);
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, at)?;
            self.start = at;
        }
        let from = (at - self.start) as usize;
        Ok(&self.buf[from..from + (end - at) as usize])
    }
}

/// Are the window's bytes from `at` to its end all zero?
fn zeros_to_end(w: &mut Window<'_>, mut at: u64) -> io::Result<bool> {
    while at < w.len {
        let b = w.get(at, CHUNK)?;
        if b.is_empty() {
            break;
        }
        if b.iter().any(|&x| x != 0) {
            return Ok(false);
        }
        at += b.len() as u64;
    }
    Ok(true)
}

/// Scans a segment file record by record, calling `found(offset, header)` for each valid
/// record. A corrupt record followed by a valid one is skipped (the scan looks for the next
/// offset where a valid record starts); corrupt bytes with no valid record after them are a
/// torn tail, reported in `torn_bytes` (the caller truncates). Never reads past `len`.
pub(crate) fn scan(
    file: &File,
    len: u64,
    mut found: impl FnMut(u64, &Header),
) -> io::Result<Scanned> {
    let mut w = Window {
        file,
        len,
        start: 0,
        buf: Vec::new(),
    };
    let mut out = Scanned::default();
    let mut at = 0u64;
    while at < len {
        match check_at(&mut w, at)? {
            Some(h) => {
                found(at, &h);
                out.records += 1;
                at += u64::from(h.len);
            }
            None => {
                // Zeros to the end: preallocated, nothing to look for in them.
                if zeros_to_end(&mut w, at)? {
                    out.torn_bytes = len - at;
                    out.zero_tail = true;
                    break;
                }
                // Look for the next valid record after the bad bytes.
                let mut next = at + 1;
                let mut resync = None;
                while next + HEADER_LEN as u64 <= len {
                    if plausible(w.get(next, HEADER_LEN)?).is_some() {
                        if let Some(h) = check_at(&mut w, next)? {
                            resync = Some(h);
                            break;
                        }
                    }
                    next += 1;
                }
                match resync {
                    Some(_) => {
                        out.skipped_records += 1;
                        out.skipped_bytes += next - at;
                        at = next;
                    }
                    None => {
                        out.torn_bytes = len - at;
                        break;
                    }
                }
            }
        }
    }
    out.end = at.min(len);
    Ok(out)
}

fn check_at(w: &mut Window<'_>, at: u64) -> io::Result<Option<Header>> {
    let head = w.get(at, HEADER_LEN)?;
    let want = match check(head) {
        Check::Valid(h) => return Ok(Some(h)),
        Check::Invalid => return Ok(None),
        Check::Incomplete(n) => n,
    };
    if at + want as u64 > w.len {
        return Ok(None);
    }
    Ok(match check(w.get(at, want)?) {
        Check::Valid(h) => Some(h),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(channel: u64, first: u64, lines: &[(&str, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (s, f) in lines {
            put_line(&mut body, s.as_bytes(), f.as_bytes());
        }
        let mut out = Vec::new();
        put_record(&mut out, channel, first, lines.len() as u32, 7, &body);
        out
    }

    #[test]
    fn round_trip_and_corruption() {
        let r = record(3, 10, &[("app", "hello"), ("router", "at=info")]);
        let Check::Valid(h) = check(&r) else {
            panic!("not valid")
        };
        assert_eq!((h.channel, h.first_seq, h.count, h.recv_us), (3, 10, 2, 7));
        assert_eq!(h.len as usize, r.len());
        let b = Bytes::from(r.clone());
        let got: Vec<_> = lines(&b, &h).collect();
        assert_eq!(got[1].0, 11);
        assert_eq!(&got[1].1[..], b"router");
        assert_eq!(&got[1].2[..], b"at=info");
        assert_eq!(check(&r[..r.len() - 1]), Check::Incomplete(r.len()));
        for i in 0..r.len() {
            let mut bad = r.clone();
            bad[i] ^= 0x40;
            assert!(!matches!(check(&bad), Check::Valid(_)), "flip at {i}");
        }
    }
}
