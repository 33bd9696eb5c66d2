//! Fuzz target: the RFC 6587 codec never panics, never yields a frame over its limit,
//! agrees with `can_continue`, and leaves no bytes behind at the end of the stream. The
//! first byte picks the read size and the second the frame limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use logplex_proto::{Decoded, SyslogCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let [chunk, max, input @ ..] = data else { return };
    let chunk = usize::from(*chunk).max(1);
    let max = usize::from(*max);
    let mut codec = SyslogCodec::new(max);
    let mut buf = BytesMut::new();
    let check = |r| match r {
        Ok(Some(Decoded::Frame(f))) => {
            let f: bytes::Bytes = f;
            assert!(f.len() <= max);
            Some(true)
        }
        Ok(Some(Decoded::Skipped(e))) => {
            assert!(e.can_continue());
            Some(true)
        }
        Ok(None) => Some(false),
        Err(e) => {
            let e: logplex_proto::FrameError = e;
            assert!(!e.can_continue());
            None
        }
    };
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match check(codec.decode(&mut buf)) {
                Some(true) => continue,
                Some(false) => break,
                None => return,
            }
        }
    }
    loop {
        match check(codec.decode_eof(&mut buf)) {
            Some(true) => continue,
            Some(false) => break,
            None => return,
        }
    }
    assert!(buf.is_empty());
});
