//! A channel's log stream in Redis (`logplex:{ch:NAME}:log`): what every node ingested for
//! the channel, one entry per batch, so a session on any node reads history and tails of
//! lines ingested anywhere, in the stream's order. This module holds the entry's format and
//! the positions in a stream (the SSE event ids of cross-node sessions); `publish.rs`
//! appends, `feed.rs` follows, and [`read_back`] reads history.
//!
//! An entry's fields: `i` the channel's id (a channel made again under the same name is
//! another channel: readers skip the entries of the one before), `n` the node that ingested the lines, `t` when it received them (µs
//! since the epoch), `c` how many lines, `b` the lines (for each: one byte of the source's
//! length, the source, four bytes little-endian of the frame's length, the frame as
//! received), and, when the node could not put some of the channel's lines in the stream
//! before this entry (its queue was full, or Redis was away), `l` how many and `ls` since
//! when (µs): a cross-node tail tells it with L11.

use crate::line::{Line, MAX_SOURCE};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use redis::streams::StreamId;

/// An entry's id (`MS-SEQ`), in the stream's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    /// `MS-SEQ` as Redis writes it.
    pub fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A line's position in a channel's stream: its entry and its index there. Written as the
/// SSE `id:` of a cross-node session (`MS-SEQ-INDEX`), so that `Last-Event-ID` resumes on
/// any node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub entry: EntryId,
    pub index: u32,
}

impl Pos {
    /// `MS-SEQ-INDEX`.
    pub fn parse(s: &str) -> Option<Pos> {
        let (entry, index) = s.rsplit_once('-')?;
        Some(Pos {
            entry: EntryId::parse(entry)?,
            index: index.parse().ok()?,
        })
    }

    /// Whether the line at `index` of `entry` comes after this position.
    pub fn before(&self, entry: EntryId, index: usize) -> bool {
        entry > self.entry || (entry == self.entry && index as u64 > u64::from(self.index))
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.entry, self.index)
    }
}

/// One entry read back: a batch of lines one node ingested.
#[derive(Debug)]
pub struct Entry {
    pub id: EntryId,
    /// The channel's id (0: not given).
    pub channel_id: i64,
    /// When the node received them (µs).
    pub at_us: i64,
    /// Lines of the channel its node could not put in the stream before this entry, and
    /// since when (µs).
    pub lost: u64,
    pub lost_since_us: i64,
    pub lines: Vec<Line>,
    /// Set by a feed: the lines it has read up to and including this entry, so a tail that
    /// lagged knows how many it missed (0 for entries read otherwise).
    pub upto: u64,
}

impl Entry {
    /// Whether the entry is of the channel with id `channel_id` (not of one destroyed
    /// before it under the same name).
    pub fn of(&self, channel_id: i64) -> bool {
        self.channel_id == 0 || self.channel_id == channel_id
    }
}

/// The bytes of `lines` in an entry's `b` field, appended to `out`.
pub fn encode(out: &mut BytesMut, lines: &[Line]) {
    for l in lines {
        let source: &[u8] = &l.source;
        out.put_u8(source.len() as u8);
        out.put_slice(source);
        out.put_u32_le(l.frame.len() as u32);
        out.put_slice(&l.frame);
    }
}

/// What [`encode`] writes for `lines`, to size the buffer once.
pub fn encoded_len(lines: &[Line]) -> usize {
    lines
        .iter()
        .map(|l| 5 + l.source.len() + l.frame.len())
        .sum()
}

/// The lines of an entry's `b` field; a line that does not parse is left out, a cut field
/// ends the list (an entry is written whole, so neither happens unless someone else wrote
/// to the key).
pub fn decode(mut b: Bytes) -> Vec<Line> {
    let mut out = Vec::new();
    while b.has_remaining() {
        let n = usize::from(b[0]);
        if n > MAX_SOURCE || b.len() < 1 + n + 4 {
            break;
        }
        b.advance(1);
        let source = b.split_to(n);
        let len = b.get_u32_le() as usize;
        if b.len() < len {
            break;
        }
        let frame = b.split_to(len);
        if let Ok(line) = Line::parse(frame, source) {
            out.push(line);
        }
    }
    out
}

/// An entry as read from Redis; `None` for one this version cannot read.
pub fn entry(e: &StreamId) -> Option<Entry> {
    let id = EntryId::parse(&e.id)?;
    let b: Vec<u8> = e.get("b").unwrap_or_default();
    Some(Entry {
        id,
        channel_id: e.get("i").unwrap_or(0),
        at_us: e.get("t").unwrap_or(0),
        lost: e.get("l").unwrap_or(0),
        lost_since_us: e.get("ls").unwrap_or(0),
        lines: decode(Bytes::from(b)),
        upto: 0,
    })
}

/// How many entries the first round trip of a history read asks for; each next one asks
/// for twice as many, up to [`PAGE_MAX`] (a short history of a busy channel reads little).
const PAGE: usize = 4;
const PAGE_MAX: usize = 128;

/// The most entries one session's history reads back from a stream.
const MAX_ENTRIES: usize = 100_000;

/// What a history read found.
pub struct History {
    /// The lines, oldest first, with their positions.
    pub lines: Vec<(Pos, Line)>,
    /// The stream's last entry when it was read (where a tail goes on from), the default
    /// (`0-0`) for an empty stream.
    pub last: EntryId,
    /// The oldest entry's receive time when the read reached the stream's start (so older
    /// lines, if any are wanted, are only in the nodes' local logs).
    pub start_us: Option<i64>,
}

/// The last `num` lines of `key` (of the channel `channel_id`) that pass `keep` and were received in `[since, until)`,
/// after `after` when given (a resume: every line after it, `num` aside), read back newest
/// first a page at a time.
#[allow(clippy::too_many_arguments)]
pub async fn read_back(
    conn: &mut super::Conn,
    key: &str,
    channel_id: i64,
    num: usize,
    after: Option<Pos>,
    since_us: Option<i64>,
    until_us: Option<i64>,
    keep: impl Fn(&Line) -> bool,
) -> redis::RedisResult<History> {
    let mut lines: Vec<(Pos, Line)> = Vec::new();
    let mut last = EntryId::default();
    let mut end = "+".to_string();
    let mut read = 0;
    let want = if after.is_some() { usize::MAX } else { num };
    let mut start_us = None;
    let mut count = PAGE;
    'pages: loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(key)
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await?;
        let n = page.ids.len();
        for raw in &page.ids {
            end = format!("({}", raw.id);
            let Some(e) = entry(raw) else { continue };
            read += 1;
            if last == EntryId::default() {
                last = e.id;
            }
            if after.is_some_and(|a| e.id < a.entry) {
                break 'pages;
            }
            if since_us.is_some_and(|s| e.at_us < s) {
                break 'pages;
            }
            if until_us.is_some_and(|u| e.at_us >= u) || !e.of(channel_id) {
                continue;
            }
            for (i, line) in e.lines.into_iter().enumerate().rev() {
                if after.is_some_and(|a| !a.before(e.id, i)) {
                    continue;
                }
                if lines.len() >= want {
                    break 'pages;
                }
                if keep(&line) {
                    lines.push((
                        Pos {
                            entry: e.id,
                            index: i as u32,
                        },
                        line,
                    ));
                }
            }
            start_us = Some(e.at_us);
        }
        if n < count {
            // The stream's start: every entry read.
            return Ok(History {
                lines: {
                    lines.reverse();
                    lines
                },
                last,
                start_us: start_us.or(Some(i64::MAX)),
            });
        }
        if read >= MAX_ENTRIES {
            break;
        }
        count = (count * 2).min(PAGE_MAX);
    }
    lines.reverse();
    Ok(History {
        lines,
        last,
        start_us: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_back_as_encoded() {
        let f = |i: u32| {
            Line::parse(
                Bytes::from(format!(
                    "<190>1 2016-03-08T02:43:26.693600+00:00 h t.x web.{i} - - line {i}"
                )),
                Bytes::from_static(b"app"),
            )
            .unwrap()
        };
        let lines = vec![f(1), f(2)];
        let mut b = BytesMut::new();
        encode(&mut b, &lines);
        assert_eq!(b.len(), encoded_len(&lines));
        let back = decode(b.freeze());
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].msg(), b"line 2");
        assert_eq!(back[1].procid(), b"web.2");
        assert_eq!(&*back[0].source, b"app");
    }

    #[test]
    fn positions_read_back_and_order() {
        let p = Pos::parse("1732745000123-4-17").unwrap();
        assert_eq!(p.to_string(), "1732745000123-4-17");
        assert!(p.before(EntryId::parse("1732745000123-4").unwrap(), 18));
        assert!(!p.before(EntryId::parse("1732745000123-4").unwrap(), 17));
        assert!(p.before(EntryId::parse("1732745000123-5").unwrap(), 0));
        assert!(Pos::parse("17").is_none());
    }
}
