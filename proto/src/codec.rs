//! RFC 6587 framing as a tokio-util codec: octet-counted and newline-delimited, told apart
//! per frame (a digit starts an octet count, `<` a newline frame).
//!
//! The codec only cuts frames; it does not parse them (see [`crate::rfc5424`]). Frames are
//! `Bytes` split off the read buffer, so nothing is copied. Oversized frames are skipped as
//! they stream in, without being buffered; after an implausible octet count the codec
//! scans forward to the next frame start, as rsyslog does; every error says whether the
//! stream can go on.

use bytes::{Buf, Bytes, BytesMut};
use std::fmt;
use tokio_util::codec::{Decoder, Encoder};

/// Default maximum frame length, as Logplex.
pub const DEFAULT_MAX_FRAME: usize = 10240;

/// Most digits an octet count may have: 10 digits is already far beyond any frame limit, and
/// more would only be a way to make us parse a huge number.
pub const MAX_COUNT_DIGITS: usize = 10;

/// An octet count over this many times the frame limit is not an over-long frame but a
/// broken count (a sender's bug, a stray number): trusting it would discard that many bytes
/// of good frames after it, so the codec looks for the next frame start instead.
pub const IMPLAUSIBLE_FACTOR: usize = 64;

/// One step of decoding: a frame, or a frame that was skipped (the stream goes on).
#[derive(Debug)]
pub enum Decoded {
    /// One message, without its octet count or line ending.
    Frame(Bytes),
    /// A frame that was dropped; the error says why (always [`FrameError::can_continue`]).
    Skipped(FrameError),
}

/// Why a frame was skipped or the stream must stop. `can_continue` tells which.
#[derive(Debug)]
pub enum FrameError {
    /// Frame longer than the limit; skipped exactly when its length is known.
    TooLong {
        /// The frame's length: its octet count, or the line's length when its LF arrived
        /// together with it; `None` for a line whose end was not seen yet.
        len: Option<usize>,
        /// The codec's `max_frame`.
        limit: usize,
    },
    /// The octet count was not a valid count (leading zero, sign, no space after it).
    BadCount,
    /// The octet count is implausible (over [`IMPLAUSIBLE_FACTOR`] × the frame limit, or
    /// more than [`MAX_COUNT_DIGITS`] digits): the bytes up to the next frame start (a `<`
    /// after a LF, or digits, SP and `<`) are discarded, as rsyslog does.
    ImplausibleCount {
        /// The count, when it had at most [`MAX_COUNT_DIGITS`] digits.
        count: Option<u64>,
        /// The codec's `max_frame`.
        limit: usize,
    },
    /// A byte that starts neither framing.
    BadStart(u8),
    /// The stream ended inside an octet-counted frame (or its count).
    Truncated {
        /// Bytes the frame announced (0 when the stream ended inside the count itself).
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// Reading the socket failed.
    Io(std::io::Error),
}

impl FrameError {
    /// Whether the decoder can find the start of the next frame after this error. When it
    /// cannot (a broken octet count, a truncated frame, I/O), the connection should be closed.
    pub fn can_continue(&self) -> bool {
        match self {
            FrameError::TooLong { .. }
            | FrameError::BadStart(_)
            | FrameError::ImplausibleCount { .. } => true,
            FrameError::BadCount | FrameError::Truncated { .. } | FrameError::Io(_) => false,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { len: Some(len), limit } => {
                write!(f, "frame of {len} bytes is over the limit of {limit} bytes and was skipped")
            }
            FrameError::TooLong { len: None, limit } => write!(
                f,
                "line has no line feed within {limit} bytes and was skipped up to the next one"
            ),
            FrameError::BadCount => f.write_str(
                "octet count is not a valid length (a leading zero, a sign or no space after it), so the stream cannot be resynchronised",
            ),
            FrameError::ImplausibleCount { count: Some(n), limit } => write!(
                f,
                "octet count {n} is implausible (over {IMPLAUSIBLE_FACTOR} times the frame limit of {limit} bytes); skipped to the next frame start"
            ),
            FrameError::ImplausibleCount { count: None, .. } => f.write_str(
                "octet count has more than 10 digits and is implausible; skipped to the next frame start",
            ),
            FrameError::BadStart(b) => write!(
                f,
                "frame starts with byte 0x{b:02x}, neither a digit (octet count) nor '<' (a line), and was skipped up to the next line feed"
            ),
            FrameError::Truncated { expected: 0, got } => {
                write!(f, "stream ended inside an octet count after {got} bytes")
            }
            FrameError::Truncated { expected, got } => write!(
                f,
                "stream ended inside a frame of {expected} bytes after {got} of them"
            ),
            FrameError::Io(e) => write!(f, "reading the stream failed: {e}"),
        }
    }
}
impl std::error::Error for FrameError {}
impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// What an octet count at the start of a buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// `len` bytes of message follow a header of `header` bytes (digits and SP).
    Len { len: usize, header: usize },
    /// The buffer ends inside the count.
    Incomplete,
    /// Not a valid count; why, for the error message.
    Bad(CountProblem),
}

/// Why an octet count is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountProblem {
    /// No digit where the count should start.
    NotADigit,
    /// `0` or `012`: RFC 6587's MSG-LEN starts with a non-zero digit.
    LeadingZero,
    /// `+12` or `-12`.
    Sign,
    /// More than [`MAX_COUNT_DIGITS`] digits.
    TooManyDigits,
    /// The digits are not followed by a space.
    NoSpace,
}

impl CountProblem {
    /// A phrase for error messages: "octet count has a leading zero".
    pub fn describe(self) -> &'static str {
        match self {
            CountProblem::NotADigit => "expected an octet count (digits, then a space)",
            CountProblem::LeadingZero => "octet count has a leading zero",
            CountProblem::Sign => "octet count has a sign",
            CountProblem::TooManyDigits => "octet count has more than 10 digits",
            CountProblem::NoSpace => "octet count is not followed by a space",
        }
    }
}

/// Reads `MSG-LEN SP` at the start of `buf` (RFC 6587 §3.4.1).
#[inline]
pub(crate) fn octet_count(buf: &[u8]) -> Count {
    match buf.first() {
        None => return Count::Incomplete,
        Some(b'0') => return Count::Bad(CountProblem::LeadingZero),
        Some(b'+' | b'-') => return Count::Bad(CountProblem::Sign),
        Some(b) if !b.is_ascii_digit() => return Count::Bad(CountProblem::NotADigit),
        Some(_) => {}
    }
    let mut len: u64 = 0;
    for (n, &b) in buf.iter().enumerate() {
        match b {
            b'0'..=b'9' if n < MAX_COUNT_DIGITS => len = len * 10 + u64::from(b - b'0'),
            b'0'..=b'9' => return Count::Bad(CountProblem::TooManyDigits),
            b' ' => {
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                return Count::Len { len, header: n + 1 };
            }
            _ => return Count::Bad(CountProblem::NoSpace),
        }
    }
    Count::Incomplete
}

/// The syslog stream codec. `decode` returns `Ok(None)` for more bytes,
/// `Ok(Some(Decoded::Skipped(e)))` for a recoverable error, `Err(e)` when the stream cannot
/// resynchronise (the connection should be closed).
#[derive(Debug, Clone)]
pub struct SyslogCodec {
    max_frame: usize,
    /// Bytes of an oversized octet-counted frame still to discard as they arrive.
    skip_remaining: usize,
    /// Discarding an oversized or garbage line up to and including the next LF.
    skip_line: bool,
    /// How far the current newline frame was already searched for LF, so that a slow line
    /// is not rescanned from its start on every read.
    line_scanned: usize,
    /// After an implausible count: looking for the next frame start (see [`Self::resync`]).
    resync: bool,
    /// Resynchronising, and still inside a run of more than 10 digits (no count).
    resync_digits: bool,
    /// That run is the implausible count itself: the SP after it ends the count.
    resync_in_count: bool,
    /// Resynchronising right after the implausible count and its SP: a `<` here starts a
    /// line (the count was wrong, the message may not be).
    resync_fresh: bool,
}

impl SyslogCodec {
    /// A codec that skips frames longer than `max_frame` bytes (without count or LF).
    pub fn new(max_frame: usize) -> Self {
        SyslogCodec {
            max_frame,
            skip_remaining: 0,
            skip_line: false,
            line_scanned: 0,
            resync: false,
            resync_digits: false,
            resync_in_count: false,
            resync_fresh: false,
        }
    }

    /// Discards bytes up to the next plausible frame start, as rsyslog does after a framing
    /// error: a `<` after a LF (a line), or 1 to 10 digits (no leading zero) after a
    /// non-digit, then SP and `<` (an octet-counted frame). Returns whether one was found
    /// (it is then at the start of `src`); otherwise keeps only a tail that may begin one.
    fn resync(&mut self, src: &mut BytesMut) -> bool {
        if self.resync_digits {
            let run = src.iter().take_while(|b| b.is_ascii_digit()).count();
            src.advance(run);
            if src.is_empty() {
                return false;
            }
            self.resync_digits = false;
            if std::mem::take(&mut self.resync_in_count) && src[0] == b' ' {
                src.advance(1);
                self.resync_fresh = true;
            }
        }
        if self.resync_fresh {
            match src.first() {
                None => return false,
                Some(b'<') => {
                    self.resync = false;
                    self.resync_fresh = false;
                    return true;
                }
                Some(_) => self.resync_fresh = false,
            }
        }
        let mut from = 0;
        while let Some(i) = memchr::memchr(b'<', &src[from..]).map(|i| from + i) {
            from = i + 1;
            if i == 0 {
                continue;
            }
            if src[i - 1] == b'\n' {
                src.advance(i);
                self.resync = false;
                return true;
            }
            if src[i - 1] != b' ' {
                continue;
            }
            let digits = src[..i - 1]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let start = i - 1 - digits;
            // Bytes before `src` were never digits of a count (see `resync_digits`).
            if (1..=MAX_COUNT_DIGITS).contains(&digits) && src[start] != b'0' {
                src.advance(start);
                self.resync = false;
                return true;
            }
        }
        // Keep what may still become a frame start: a LF, or up to 10 digits (and their SP)
        // after a non-digit. A longer run of digits is no count: skip the rest of it.
        let len = src.len();
        let sp = usize::from(src.last() == Some(&b' '));
        let digits = src[..len - sp]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let keep = if src.last() == Some(&b'\n') {
            1
        } else if digits > MAX_COUNT_DIGITS {
            self.resync_digits = sp == 0;
            0
        } else if digits > 0 {
            digits + sp
        } else {
            0
        };
        src.advance(len - keep);
        false
    }

    /// The frame limit this codec enforces.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Cuts a line of `len` bytes and drops the LF after it, trimming a CR before the LF.
    fn cut_line(src: &mut BytesMut, len: usize) -> Bytes {
        let mut frame = src.split_to(len);
        src.advance(1);
        if frame.last() == Some(&b'\r') {
            frame.truncate(len - 1);
        }
        frame.freeze()
    }
}

impl Default for SyslogCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for SyslogCodec {
    type Item = Decoded;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        loop {
            if self.resync && !self.resync(src) {
                return Ok(None);
            }
            if self.skip_remaining > 0 {
                let n = self.skip_remaining.min(src.len());
                src.advance(n);
                self.skip_remaining -= n;
                if self.skip_remaining > 0 {
                    return Ok(None);
                }
            }
            if self.skip_line {
                match memchr::memchr(b'\n', src) {
                    Some(i) => {
                        src.advance(i + 1);
                        self.skip_line = false;
                    }
                    None => {
                        src.clear();
                        return Ok(None);
                    }
                }
            }
            match src.first() {
                None => return Ok(None),
                // Empty lines, the LF many senders put after an octet-counted frame, and
                // stray blanks between frames (tolerated as in logplex-1 bodies).
                Some(b'\n' | b' ' | b'\t') => src.advance(1),
                Some(b'\r') => match src.get(1) {
                    None => return Ok(None),
                    Some(b'\n') => src.advance(2),
                    Some(_) => {
                        self.skip_line = true;
                        src.advance(1);
                        return Ok(Some(Decoded::Skipped(FrameError::BadStart(b'\r'))));
                    }
                },
                Some(b'<') => {
                    let from = self.line_scanned.min(src.len());
                    match memchr::memchr(b'\n', &src[from..]) {
                        Some(i) => {
                            let len = from + i;
                            self.line_scanned = 0;
                            let content = len - usize::from(src[..len].last() == Some(&b'\r'));
                            if content > self.max_frame {
                                src.advance(len + 1);
                                let e = FrameError::TooLong {
                                    len: Some(content),
                                    limit: self.max_frame,
                                };
                                return Ok(Some(Decoded::Skipped(e)));
                            }
                            return Ok(Some(Decoded::Frame(Self::cut_line(src, len))));
                        }
                        // Room for the content and a CR before the LF.
                        None if src.len() > self.max_frame + 1 => {
                            self.line_scanned = 0;
                            self.skip_line = true;
                            src.clear();
                            let e = FrameError::TooLong {
                                len: None,
                                limit: self.max_frame,
                            };
                            return Ok(Some(Decoded::Skipped(e)));
                        }
                        None => {
                            self.line_scanned = src.len();
                            return Ok(None);
                        }
                    }
                }
                Some(b'0'..=b'9' | b'+' | b'-') => match octet_count(src) {
                    Count::Incomplete => return Ok(None),
                    Count::Bad(CountProblem::TooManyDigits) => {
                        src.advance(MAX_COUNT_DIGITS);
                        self.resync = true;
                        self.resync_digits = true;
                        self.resync_in_count = true;
                        let e = FrameError::ImplausibleCount {
                            count: None,
                            limit: self.max_frame,
                        };
                        return Ok(Some(Decoded::Skipped(e)));
                    }
                    Count::Bad(_) => return Err(FrameError::BadCount),
                    Count::Len { len, header }
                        if len > self.max_frame.saturating_mul(IMPLAUSIBLE_FACTOR) =>
                    {
                        src.advance(header);
                        self.resync = true;
                        self.resync_fresh = true;
                        let e = FrameError::ImplausibleCount {
                            count: Some(len as u64),
                            limit: self.max_frame,
                        };
                        return Ok(Some(Decoded::Skipped(e)));
                    }
                    Count::Len { len, header } if len > self.max_frame => {
                        src.advance(header);
                        self.skip_remaining = len;
                        let e = FrameError::TooLong {
                            len: Some(len),
                            limit: self.max_frame,
                        };
                        return Ok(Some(Decoded::Skipped(e)));
                    }
                    Count::Len { len, header } => {
                        if src.len() < header + len {
                            src.reserve(header + len - src.len());
                            return Ok(None);
                        }
                        src.advance(header);
                        return Ok(Some(Decoded::Frame(src.split_to(len).freeze())));
                    }
                },
                Some(&b) => {
                    self.skip_line = true;
                    src.advance(1);
                    return Ok(Some(Decoded::Skipped(FrameError::BadStart(b))));
                }
            }
        }
    }

    /// At the end of the stream a last line without LF is still a frame; a partial
    /// octet-counted frame is [`FrameError::Truncated`].
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        if let Some(d) = self.decode(src)? {
            return Ok(Some(d));
        }
        // Whatever is left is dropped now: FramedRead treats leftover bytes as an error.
        let resyncing = std::mem::take(&mut self.resync);
        self.resync_digits = false;
        self.resync_in_count = false;
        self.resync_fresh = false;
        self.skip_remaining = 0;
        self.skip_line = false;
        self.line_scanned = 0;
        if resyncing {
            // No frame start came after the implausible count: nothing more to report.
            src.clear();
            return Ok(None);
        }
        let out = match src.first() {
            None => Ok(None),
            Some(b'<') => {
                let mut frame = src.split().freeze();
                if frame.last() == Some(&b'\r') {
                    frame.truncate(frame.len() - 1);
                }
                if frame.len() > self.max_frame {
                    let e = FrameError::TooLong {
                        len: Some(frame.len()),
                        limit: self.max_frame,
                    };
                    Ok(Some(Decoded::Skipped(e)))
                } else {
                    Ok(Some(Decoded::Frame(frame)))
                }
            }
            Some(b'0'..=b'9') => {
                let got = src.len();
                let e = match octet_count(src) {
                    Count::Len { len, header } => FrameError::Truncated {
                        expected: len,
                        got: got - header,
                    },
                    _ => FrameError::Truncated { expected: 0, got },
                };
                Err(e)
            }
            // A lone CR.
            Some(_) => Ok(None),
        };
        src.clear();
        out
    }
}

/// Encodes a message as an octet-counted frame.
impl Encoder<&[u8]> for SyslogCodec {
    type Error = FrameError;
    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.reserve(item.len() + 11);
        crate::render::write_u64(dst, item.len() as u64);
        dst.extend_from_slice(b" ");
        dst.extend_from_slice(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode() {
        let mut codec = SyslogCodec::default();
        let mut buf = BytesMut::new();
        for m in [&b"<13>1 - h a - - - one"[..], b"x", &[b'y'; 10240]] {
            codec.encode(m, &mut buf).unwrap();
        }
        assert!(buf.starts_with(b"21 <13>1"));
        for m in [&b"<13>1 - h a - - - one"[..], b"x", &[b'y'; 10240]] {
            match codec.decode(&mut buf) {
                Ok(Some(Decoded::Frame(f))) => assert_eq!(&f[..], m),
                other => panic!("{other:?}"),
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn counts() {
        assert_eq!(octet_count(b"12 x"), Count::Len { len: 12, header: 3 });
        assert_eq!(octet_count(b"12"), Count::Incomplete);
        assert_eq!(octet_count(b"012 "), Count::Bad(CountProblem::LeadingZero));
        assert_eq!(octet_count(b"-1 "), Count::Bad(CountProblem::Sign));
        assert_eq!(
            octet_count(b"12345678901 "),
            Count::Bad(CountProblem::TooManyDigits)
        );
        assert_eq!(
            octet_count(b"1234567890 "),
            Count::Len {
                len: 1234567890,
                header: 11
            }
        );
        assert_eq!(octet_count(b"12<"), Count::Bad(CountProblem::NoSpace));
    }
}
