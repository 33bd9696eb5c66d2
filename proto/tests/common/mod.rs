//! Helpers shared by the integration tests: fixtures and feeding a codec in pieces.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use logplex_proto::{Decoded, FrameError, SyslogCodec};
use tokio_util::codec::Decoder;

/// Reads `tests/fixtures/NAME`.
pub fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// What a stream decoded to, flattened for assertions.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    Frame(Vec<u8>),
    Skipped(String),
    Fatal(String),
}

/// Feeds `input` to `codec` in chunks of `chunk` bytes, like reads from a socket, then ends
/// the stream; stops at the first fatal error as FramedRead does.
pub fn decode_stream(codec: &mut SyslogCodec, input: &[u8], chunk: usize) -> Vec<Out> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let push = |r: Result<Option<Decoded>, FrameError>, out: &mut Vec<Out>| -> bool {
        match r {
            Ok(Some(Decoded::Frame(f))) => out.push(Out::Frame(f.to_vec())),
            Ok(Some(Decoded::Skipped(e))) => {
                assert!(e.can_continue());
                out.push(Out::Skipped(e.to_string()))
            }
            Ok(None) => return false,
            Err(e) => {
                assert!(!e.can_continue());
                out.push(Out::Fatal(e.to_string()));
                return true;
            }
        }
        true
    };
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while push(codec.decode(&mut buf), &mut out) {
            if matches!(out.last(), Some(Out::Fatal(_))) {
                return out;
            }
        }
    }
    while push(codec.decode_eof(&mut buf), &mut out) {
        if matches!(out.last(), Some(Out::Fatal(_))) {
            return out;
        }
    }
    assert!(buf.is_empty(), "decode_eof must leave no bytes behind");
    out
}

/// Only the frames of a decoded stream.
pub fn frames(out: &[Out]) -> Vec<&[u8]> {
    out.iter()
        .filter_map(|o| match o {
            Out::Frame(f) => Some(&f[..]),
            _ => None,
        })
        .collect()
}
