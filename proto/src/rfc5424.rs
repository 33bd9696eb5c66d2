//! RFC 5424 syslog messages, parsed with nom over `&[u8]` into a view that borrows the input.

use std::fmt;

/// A parsed RFC 5424 message. Every field borrows the frame it was parsed from; fields that
/// were the NILVALUE `-` are the one-byte slice `b"-"` (use [`Message::is_nil`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// PRI value, 0..=191.
    pub pri: u8,
    /// VERSION, 1 for every real sender.
    pub version: u16,
    /// TIMESTAMP as sent (`-` when nil).
    pub timestamp: &'a [u8],
    pub hostname: &'a [u8],
    pub app_name: &'a [u8],
    pub procid: &'a [u8],
    pub msgid: &'a [u8],
    /// STRUCTURED-DATA, validated, kept as one slice (`-` when nil).
    pub structured_data: &'a [u8],
    /// MSG, possibly empty, BOM stripped; bytes, not necessarily UTF-8.
    pub msg: &'a [u8],
}

impl Message<'_> {
    pub fn is_nil(field: &[u8]) -> bool {
        field == b"-"
    }
    pub fn facility(&self) -> u8 {
        self.pri >> 3
    }
    pub fn severity(&self) -> u8 {
        self.pri & 7
    }
}

/// What was wrong and where (byte offset into the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    Empty,
    Pri,
    PriOutOfRange,
    Version,
    Timestamp,
    Hostname,
    AppName,
    ProcId,
    MsgId,
    StructuredData,
    /// A required SP between header fields is missing.
    Space,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at byte {}", self.kind, self.offset)
    }
}

impl std::error::Error for ParseError {}

/// Strict RFC 5424 grammar.
pub fn parse(input: &[u8]) -> Result<Message<'_>, ParseError> {
    let _ = input;
    todo!()
}

/// What real senders emit: missing SD, trailing LF/CRLF, BOM before MSG.
pub fn parse_lenient(input: &[u8]) -> Result<Message<'_>, ParseError> {
    let _ = input;
    todo!()
}
