//! The `application/logplex-1` HTTP batch: a body of octet-counted frames.
//!
//! A batch is all or nothing (the contract answers 400 and stores no frame of a malformed
//! batch), so [`split_batch`] validates the whole body before the caller stores anything.
//! Frames are `Bytes` slices of the body: no copy, one `Vec` per batch.

pub use crate::codec::CountProblem;
use crate::codec::{octet_count, Count};
use bytes::Bytes;
use std::fmt;

/// Why a batch was refused. `Display` is one sentence for the HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Frame N (0-based) at byte offset is malformed.
    Malformed {
        /// 0-based index of the frame.
        frame: usize,
        /// Byte offset of the frame's start in the body.
        offset: usize,
    },
    /// Frame N announces more bytes than the frame limit.
    TooLong {
        /// 0-based index of the frame.
        frame: usize,
        /// The frame's octet count.
        len: usize,
        /// The limit it exceeds (`ingest.max_frame`).
        limit: usize,
    },
    /// The body ends inside frame N (its count or its message).
    Truncated {
        /// 0-based index of the frame.
        frame: usize,
        /// Byte offset of the frame's start in the body.
        offset: usize,
    },
    /// `Logplex-Msg-Count` does not match the frames in the body.
    CountMismatch {
        /// The header's value.
        expected: usize,
        /// Frames in the body.
        found: usize,
    },
    /// Frame N's octet count at byte offset is not a valid count; says why.
    BadCount {
        /// 0-based index of the frame.
        frame: usize,
        /// Byte offset of the frame's start in the body.
        offset: usize,
        /// What is wrong with the count.
        problem: CountProblem,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BatchError::Malformed { frame, offset } => write!(
                f,
                "frame {frame} at byte {offset}: expected an octet count (digits, then a space)"
            ),
            BatchError::BadCount {
                frame,
                offset,
                problem,
            } => {
                write!(f, "frame {frame} at byte {offset}: {}", problem.describe())
            }
            BatchError::TooLong { frame, len, limit } => write!(
                f,
                "frame {frame} is {len} bytes long, over the limit of {limit} bytes"
            ),
            BatchError::Truncated { frame, offset } => {
                write!(
                    f,
                    "frame {frame} at byte {offset}: the body ends inside the frame"
                )
            }
            BatchError::CountMismatch { expected, found } => write!(
                f,
                "Logplex-Msg-Count is {expected} but the body holds {found} frames"
            ),
        }
    }
}
impl std::error::Error for BatchError {}

/// Splits a whole body into frames (each a `Bytes` sharing the body), checking the frame
/// limit and, when given, `Logplex-Msg-Count`. All or nothing.
///
/// Frame numbers in errors are 0-based. Whitespace (SP, TAB, CR, LF) between frames is
/// skipped, because real clients put a LF after each frame. A frame of length 0 is refused
/// (RFC 6587's count starts with a non-zero digit).
pub fn split_batch(
    body: &Bytes,
    max_frame: usize,
    expected_count: Option<usize>,
) -> Result<Vec<Bytes>, BatchError> {
    let buf: &[u8] = body;
    // Enough for frames of ~100 bytes, and never more than the body could hold (a frame is at
    // least 3 bytes), whatever a client claims in Logplex-Msg-Count.
    let guess = expected_count
        .unwrap_or(buf.len() / 100 + 1)
        .min(buf.len() / 3 + 1);
    let mut frames = Vec::with_capacity(guess);
    let mut pos = 0;
    loop {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = buf.get(pos) {
            pos += 1;
        }
        if pos == buf.len() {
            break;
        }
        let frame = frames.len();
        match octet_count(&buf[pos..]) {
            Count::Len { len, header } => {
                if len > max_frame {
                    return Err(BatchError::TooLong {
                        frame,
                        len,
                        limit: max_frame,
                    });
                }
                let start = pos + header;
                if buf.len() - start < len {
                    return Err(BatchError::Truncated { frame, offset: pos });
                }
                frames.push(body.slice(start..start + len));
                pos = start + len;
            }
            Count::Incomplete => return Err(BatchError::Truncated { frame, offset: pos }),
            Count::Bad(CountProblem::NotADigit) => {
                return Err(BatchError::Malformed { frame, offset: pos })
            }
            Count::Bad(problem) => {
                return Err(BatchError::BadCount {
                    frame,
                    offset: pos,
                    problem,
                })
            }
        }
    }
    if let Some(expected) = expected_count {
        if expected != frames.len() {
            return Err(BatchError::CountMismatch {
                expected,
                found: frames.len(),
            });
        }
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_frame_and_offset() {
        let body = Bytes::from_static(b"5 hello\n3 abc\n012 x");
        let e = split_batch(&body, 100, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "frame 2 at byte 14: octet count has a leading zero"
        );
    }
}
