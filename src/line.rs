//! A stored log line: the frame `Bytes` as received plus the offsets of the fields a session
//! renders, so history and tails share the ingest buffer without copying per line.

use bytes::{Bytes, BytesMut};
use logplex_proto::{render, Message, ParseError};

/// One line of a channel. Cloning it is two reference-count increments.
#[derive(Clone, Debug)]
pub struct Line {
    /// Position in the channel, from 1; SSE `id:` and `Last-Event-ID` use it.
    pub seq: u64,
    /// The whole RFC 5424 frame as received.
    pub frame: Bytes,
    /// The token's name: `app`, `heroku`, ...
    pub source: Bytes,
    pub pri: u8,
    ts: (u32, u32),
    procid: (u32, u32),
    msg: (u32, u32),
}

fn span(base: &[u8], field: &[u8]) -> (u32, u32) {
    let start = (field.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    if start > base.len() || field.len() > base.len() - start {
        return (0, 0);
    }
    (start as u32, (start + field.len()) as u32)
}

impl Line {
    /// A line from a frame already parsed into `m` (whose slices borrow `frame`).
    pub fn from_parsed(frame: &Bytes, m: &Message<'_>, source: &Bytes) -> Line {
        Line {
            seq: 0,
            frame: frame.clone(),
            source: source.clone(),
            pri: m.pri,
            ts: span(frame, m.timestamp),
            procid: span(frame, m.procid),
            msg: if m.msg.is_empty() {
                (0, 0)
            } else {
                span(frame, m.msg)
            },
        }
    }

    /// Parses `frame` (lenient RFC 5424) into a line of `source`.
    pub fn parse(frame: Bytes, source: Bytes) -> Result<Line, ParseError> {
        let m = logplex_proto::parse_lenient(&frame)?;
        let line = Line::from_parsed(&frame, &m, &source);
        Ok(line)
    }

    /// A line made by logplex itself (`heroku[logplex]`, `heroku[alerts]`): `source` and
    /// `procid` as given, stamped now.
    pub fn internal(source: &'static str, procid: &str, msg: &str) -> Line {
        let mut b = BytesMut::with_capacity(64 + msg.len());
        b.extend_from_slice(b"<172>1 ");
        render::rfc3339_micros(&mut b, now_micros());
        b.extend_from_slice(b" logplex ");
        b.extend_from_slice(source.as_bytes());
        b.extend_from_slice(b" ");
        b.extend_from_slice(procid.as_bytes());
        b.extend_from_slice(b" - - ");
        b.extend_from_slice(msg.as_bytes());
        let frame = b.freeze();
        Line::parse(frame, Bytes::from_static(source.as_bytes())).unwrap_or_else(|_| Line {
            seq: 0,
            frame: Bytes::new(),
            source: Bytes::new(),
            pri: 172,
            ts: (0, 0),
            procid: (0, 0),
            msg: (0, 0),
        })
    }

    pub fn timestamp(&self) -> &[u8] {
        &self.frame[self.ts.0 as usize..self.ts.1 as usize]
    }

    pub fn procid(&self) -> &[u8] {
        &self.frame[self.procid.0 as usize..self.procid.1 as usize]
    }

    pub fn msg(&self) -> &[u8] {
        &self.frame[self.msg.0 as usize..self.msg.1 as usize]
    }

    /// Bytes this line holds on to, for the history byte cap.
    pub fn weight(&self) -> usize {
        self.frame.len() + 64
    }

    /// Appends the session line `TIMESTAMP SOURCE[PROCID]: MSG` (no newline).
    pub fn render(&self, out: &mut BytesMut) {
        render::session_line(
            out,
            self.timestamp(),
            &self.source,
            self.procid(),
            self.msg(),
        );
    }
}

/// Microseconds since the UNIX epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
