//! A stored log line: the frame `Bytes` as received plus the offsets of the fields a session
//! renders, so history and tails share the ingest buffer without copying per line.

use bytes::{Bytes, BytesMut};
use logplex_proto::{render, Message, ParseError};

/// The longest token name (SOURCE) a line can carry; the API and config refuse longer.
pub const MAX_SOURCE: usize = 48;

/// A token name kept inline in the line: cloning a line then costs one reference count
/// (its frame), and connections on different cores never contend on a shared counter for
/// the name (measured: a shared `Bytes` here cost about 9% of ingest).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Source {
    len: u8,
    bytes: [u8; MAX_SOURCE],
}

impl Source {
    /// No name.
    pub const EMPTY: Source = Source {
        len: 0,
        bytes: [0; MAX_SOURCE],
    };

    /// The name, cut to [`MAX_SOURCE`] bytes.
    pub fn new(name: &[u8]) -> Source {
        let len = name.len().min(MAX_SOURCE);
        let mut bytes = [0u8; MAX_SOURCE];
        bytes[..len].copy_from_slice(&name[..len]);
        Source {
            len: len as u8,
            bytes,
        }
    }
}

impl std::ops::Deref for Source {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl AsRef<[u8]> for Source {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// Where the fields a session renders sit in a frame, taken from a parsed message.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fields {
    pub(crate) pri: u8,
    /// (start, end) of each field in the frame.
    pub(crate) ts: (u32, u32),
    pub(crate) procid: (u32, u32),
    pub(crate) msg: (u32, u32),
}

impl Fields {
    /// The offsets of `m`'s fields in `frame` (which `m` was parsed from).
    pub fn of(frame: &[u8], m: &Message<'_>) -> Fields {
        Fields {
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
}

/// One line of a channel. Cloning it is one reference-count increment.
#[derive(Clone, Debug)]
pub struct Line {
    /// Position in the channel, from 1; SSE `id:` and `Last-Event-ID` use it.
    pub seq: u64,
    /// The whole RFC 5424 frame as received.
    pub frame: Bytes,
    /// The token's name: `app`, `heroku`, ...
    pub source: Source,
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
    pub fn from_parsed(frame: &Bytes, m: &Message<'_>, source: &[u8]) -> Line {
        Line::new(frame.clone(), Fields::of(frame, m), Source::new(source))
    }

    /// A line from a frame and its fields (see [`Fields::of`]), taking the frame over.
    pub fn new(frame: Bytes, f: Fields, source: Source) -> Line {
        Line {
            seq: 0,
            frame,
            source,
            pri: f.pri,
            ts: f.ts,
            procid: f.procid,
            msg: f.msg,
        }
    }

    /// Parses `frame` (lenient RFC 5424) into a line of `source`.
    pub fn parse(frame: Bytes, source: Bytes) -> Result<Line, ParseError> {
        let f = Fields::of(&frame, &logplex_proto::parse_lenient(&frame)?);
        Ok(Line::new(frame, f, Source::new(&source)))
    }

    /// A line made by logplex itself (`heroku[logplex]`, `heroku[alerts]`): `source` and
    /// `procid` as given, stamped now.
    pub fn internal(source: &'static str, procid: &str, msg: &str) -> Line {
        let mut b = BytesMut::with_capacity(64 + msg.len());
        b.extend_from_slice(b"<172>1 ");
        render::rfc3339_micros(&mut b, crate::clock::now_micros());
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
            source: Source::new(b""),
            pri: 172,
            ts: (0, 0),
            procid: (0, 0),
            msg: (0, 0),
        })
    }

    /// Where its fields sit in its frame (what [`Line::new`] takes back).
    pub fn fields(&self) -> Fields {
        Fields {
            pri: self.pri,
            ts: self.ts,
            procid: self.procid,
            msg: self.msg,
        }
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
