//! `logplex-proto`: the wire formats of logplex and nothing else.
//!
//! RFC 5424 messages (parsed with nom over bytes, borrowing the input), RFC 6587 framing
//! (octet-counted and newline-delimited, as a tokio-util codec), the `application/logplex-1`
//! HTTP batch, the renderers of the `heroku logs` session line and of drain frames, and
//! logfmt for Heroku router lines. No sockets, no runtime, no allocation per message.

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod codec;
pub mod logfmt;
pub mod logplex1;
pub mod render;
pub mod rfc5424;

pub use codec::{Decoded, FrameError, SyslogCodec, DEFAULT_MAX_FRAME};
pub use logplex1::{split_batch, BatchError};
pub use rfc5424::{parse, parse_lenient, Message, ParseError, ParseErrorKind};
