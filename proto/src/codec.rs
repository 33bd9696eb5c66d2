//! RFC 6587 framing as a tokio-util codec: octet-counted and newline-delimited, told apart
//! per frame (a digit starts an octet count, `<` a newline frame).

use bytes::{Bytes, BytesMut};
use std::fmt;
use tokio_util::codec::{Decoder, Encoder};

/// Default maximum frame length, as Logplex.
pub const DEFAULT_MAX_FRAME: usize = 10240;

/// One step of decoding: a frame, or a frame that was skipped (the stream goes on).
#[derive(Debug)]
pub enum Decoded {
    Frame(Bytes),
    Skipped(FrameError),
}

/// Why a frame was skipped or the stream must stop. `can_continue` tells which.
#[derive(Debug)]
pub enum FrameError {
    /// Frame longer than the limit; skipped exactly when its length is known.
    TooLong { len: Option<usize>, limit: usize },
    /// The octet count was not a valid count (leading zero, sign, too many digits...).
    BadCount,
    /// A byte that starts neither framing.
    BadStart(u8),
    Io(std::io::Error),
}

impl FrameError {
    pub fn can_continue(&self) -> bool {
        todo!()
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for FrameError {}
impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// The syslog stream codec. `decode` returns `Ok(None)` for more bytes,
/// `Ok(Some(Decoded::Skipped(e)))` for a recoverable error, `Err(e)` when the stream cannot
/// resynchronise (the connection should be closed).
#[derive(Debug, Clone)]
pub struct SyslogCodec {
    max_frame: usize,
}

impl SyslogCodec {
    pub fn new(max_frame: usize) -> Self {
        SyslogCodec { max_frame }
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
        let _ = (src, self.max_frame);
        todo!()
    }
}

/// Encodes a message as an octet-counted frame.
impl Encoder<&[u8]> for SyslogCodec {
    type Error = FrameError;
    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let _ = (item, dst);
        todo!()
    }
}
