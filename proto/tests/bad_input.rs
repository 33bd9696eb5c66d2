//! Malformed input, one case per test: what is refused, what is skipped, what is kept, and
//! that the stream or batch carries on (or stops) as the contract says.

mod common;

use bytes::{Bytes, BytesMut};
use common::{decode_stream, frames, Out};
use logplex_proto::codec::FrameError;
use logplex_proto::logplex1::BatchError;
use logplex_proto::render::session_line;
use logplex_proto::{parse, parse_lenient, split_batch, Decoded, ParseErrorKind, SyslogCodec};
use tokio_util::codec::Decoder;

const GOOD: &[u8] = b"<190>1 2016-03-08T02:43:26.693600+00:00 host t.TOKEN web.1 - - good";

fn octet(msg: &[u8]) -> Vec<u8> {
    let mut v = format!("{} ", msg.len()).into_bytes();
    v.extend_from_slice(msg);
    v
}

#[test]
fn truncated_octet_frame_at_eof_is_fatal() {
    let mut input = octet(GOOD);
    input.extend_from_slice(&octet(GOOD)[..30]);
    let out = decode_stream(&mut SyslogCodec::default(), &input, 16);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], Out::Frame(GOOD.to_vec()));
    assert_eq!(
        out[1],
        Out::Fatal(format!(
            "stream ended inside a frame of {} bytes after 27 of them",
            GOOD.len()
        ))
    );
}

#[test]
fn truncated_inside_the_count_is_fatal() {
    let out = decode_stream(&mut SyslogCodec::default(), b"12", 1);
    assert_eq!(
        out,
        [Out::Fatal(
            "stream ended inside an octet count after 2 bytes".into()
        )]
    );
}

#[test]
fn truncated_batch_is_refused() {
    let mut body = octet(GOOD);
    body.extend_from_slice(&octet(GOOD)[..40]);
    let e = split_batch(&Bytes::from(body), 10240, None).unwrap_err();
    assert_eq!(
        e,
        BatchError::Truncated {
            frame: 1,
            offset: 70
        }
    );
    assert_eq!(
        e.to_string(),
        "frame 1 at byte 70: the body ends inside the frame"
    );
    let e = split_batch(&Bytes::from_static(b"5 hello 17"), 10240, None).unwrap_err();
    assert_eq!(
        e,
        BatchError::Truncated {
            frame: 1,
            offset: 8
        }
    );
}

#[test]
fn an_over_long_frame_up_to_64_times_the_limit_is_skipped_as_it_streams() {
    // 64 × 10240 bytes: still an ordinary over-long frame, skipped byte for byte.
    const LEN: usize = 64 * 10240;
    let mut codec = SyslogCodec::default();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(format!("{LEN} ").as_bytes());
    match codec.decode(&mut buf) {
        Ok(Some(Decoded::Skipped(
            e @ FrameError::TooLong {
                len: Some(LEN),
                limit: 10240,
            },
        ))) => {
            assert!(e.can_continue(), "{e}");
            assert_eq!(
                e.to_string(),
                "frame of 655360 bytes is over the limit of 10240 bytes and was skipped"
            );
        }
        other => panic!("{other:?}"),
    }
    // Its bytes may look like frames: they are its bytes, skipped without being buffered.
    let mut inside = Vec::new();
    while inside.len() < LEN {
        inside.extend_from_slice(&octet(GOOD));
    }
    inside.truncate(LEN);
    for chunk in inside.chunks(1 << 16) {
        buf.extend_from_slice(chunk);
        let r = codec.decode(&mut buf);
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert!(buf.is_empty(), "{} bytes kept", buf.len());
    }
    buf.extend_from_slice(&octet(GOOD));
    match codec.decode(&mut buf) {
        Ok(Some(Decoded::Frame(f))) => assert_eq!(&f[..], GOOD),
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_gib_octet_count_is_implausible_and_nothing_accumulates() {
    const GIB: usize = 1 << 30;
    let mut codec = SyslogCodec::default();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(format!("{GIB} ").as_bytes());
    match codec.decode(&mut buf) {
        Ok(Some(Decoded::Skipped(
            e @ FrameError::ImplausibleCount {
                count: Some(1073741824),
                limit: 10240,
            },
        ))) => {
            assert!(e.can_continue(), "{e}");
            assert_eq!(
                e.to_string(),
                "octet count 1073741824 is implausible (over 64 times the frame limit of 10240 bytes); skipped to the next frame start"
            );
        }
        other => panic!("{other:?}"),
    }
    // Stream a GiB of garbage in 1 MiB reads: nothing comes out and nothing accumulates.
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..1024 {
        buf.extend_from_slice(&chunk);
        let r = codec.decode(&mut buf);
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert!(buf.is_empty(), "{} bytes kept", buf.len());
        assert!(
            buf.capacity() <= 2 << 20,
            "the skipped bytes must not be buffered"
        );
    }
    // The next frame start is found, even glued to the garbage.
    buf.extend_from_slice(&octet(GOOD));
    match codec.decode(&mut buf) {
        Ok(Some(Decoded::Frame(f))) => assert_eq!(&f[..], GOOD),
        other => panic!("{other:?}"),
    }
}

/// One bad octet count does not swallow the stream: `9999999999 ` then good frames, each
/// read size; the count is reported once and every frame after it is kept.
#[test]
fn an_implausible_octet_count_resynchronises_at_the_next_frame() {
    let mut input = b"9999999999 ".to_vec();
    for _ in 0..100 {
        input.extend_from_slice(&octet(GOOD));
    }
    for chunk in [1, 2, 3, 7, 64, input.len()] {
        let out = decode_stream(&mut SyslogCodec::default(), &input, chunk);
        assert_eq!(
            out[0],
            Out::Skipped(
                "octet count 9999999999 is implausible (over 64 times the frame limit of 10240 bytes); skipped to the next frame start".into()
            ),
            "chunk {chunk}"
        );
        assert_eq!(frames(&out), vec![GOOD; 100], "chunk {chunk}");
        assert_eq!(out.len(), 101, "chunk {chunk}");
    }
}

#[test]
fn after_an_implausible_count_a_frame_starts_after_a_lf_or_at_a_count() {
    let line = b"<13>1 - h a - - - a line";
    let cases: Vec<(Vec<u8>, Vec<&[u8]>)> = vec![
        // Too many digits, then a good octet frame.
        (
            [&b"123456789012345 "[..], &octet(GOOD)].concat(),
            vec![GOOD],
        ),
        // Garbage with digits in it, a LF, then a line.
        (
            [
                &b"99999999 junk 12 x <nope 0 <no 12345678901 <no\n"[..],
                line,
                b"\n",
            ]
            .concat(),
            vec![line],
        ),
        // The message right after the broken count is kept (the count was wrong).
        (
            [&b"99999999 "[..], line, b"\n", &octet(GOOD)].concat(),
            vec![line, GOOD],
        ),
        // A long digit run glued to a count is not a count.
        (
            [
                &b"99999999 x1234567890123 <13>1 - - - - - - no\n"[..],
                &octet(GOOD),
            ]
            .concat(),
            vec![GOOD],
        ),
        // Nothing after it: the stream just ends.
        (b"99999999 and nothing".to_vec(), vec![]),
    ];
    for (i, (input, want)) in cases.iter().enumerate() {
        for chunk in [1, 3, 5, 16, input.len()] {
            let out = decode_stream(&mut SyslogCodec::new(1000), input, chunk);
            assert!(
                matches!(&out[0], Out::Skipped(m) if m.contains("implausible")),
                "case {i} chunk {chunk}: {out:?}"
            );
            assert_eq!(&frames(&out), want, "case {i} chunk {chunk}: {out:?}");
        }
    }
}

#[test]
fn one_gib_octet_count_in_a_batch_is_too_long() {
    let body = Bytes::from_static(b"1073741824 <190>1 ...");
    let e = split_batch(&body, 10240, None).unwrap_err();
    assert_eq!(
        e,
        BatchError::TooLong {
            frame: 0,
            len: 1 << 30,
            limit: 10240
        }
    );
    assert_eq!(
        e.to_string(),
        "frame 0 is 1073741824 bytes long, over the limit of 10240 bytes"
    );
}

#[test]
fn octet_count_with_leading_zero_is_fatal() {
    let mut input = b"012 ".to_vec();
    input.extend_from_slice(GOOD);
    let out = decode_stream(&mut SyslogCodec::default(), &input, 64);
    assert!(
        matches!(&out[..], [Out::Fatal(m)] if m.contains("leading zero")),
        "{out:?}"
    );
    let e = split_batch(&Bytes::from(input), 10240, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "frame 0 at byte 0: octet count has a leading zero"
    );
}

#[test]
fn octet_count_with_sign_is_fatal() {
    for sign in ["+", "-"] {
        let mut input = octet(GOOD);
        input.extend_from_slice(format!("{sign}71 ").as_bytes());
        input.extend_from_slice(GOOD);
        let out = decode_stream(&mut SyslogCodec::default(), &input, 64);
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[1], Out::Fatal(_)), "{out:?}");
        let e = split_batch(&Bytes::from(input), 10240, None).unwrap_err();
        assert_eq!(e.to_string(), "frame 1 at byte 70: octet count has a sign");
    }
}

#[test]
fn octet_count_with_no_space_is_fatal() {
    for bad in [&b"12<13>1 - - - - - -"[..], b"1x"] {
        let out = decode_stream(&mut SyslogCodec::default(), bad, 64);
        assert!(matches!(&out[..], [Out::Fatal(_)]), "{out:?}");
        assert!(
            matches!(
                split_batch(&Bytes::copy_from_slice(bad), 10240, None),
                Err(BatchError::BadCount {
                    frame: 0,
                    offset: 0,
                    ..
                })
            ),
            "{:?}",
            split_batch(&Bytes::copy_from_slice(bad), 10240, None)
        );
    }
}

#[test]
fn pri_over_191_is_refused_by_both() {
    let m = b"<192>1 2016-03-08T02:43:26Z host app - - - x";
    for r in [parse(m), parse_lenient(m)] {
        let e = r.unwrap_err();
        assert_eq!((e.kind, e.offset), (ParseErrorKind::PriOutOfRange, 1));
        assert_eq!(
            e.to_string(),
            "syslog message at byte 1: PRI must be a number from 0 to 191"
        );
    }
    assert_eq!(parse(b"<191>1 - - - - - -").unwrap().pri, 191);
    assert_eq!(
        parse(b"<999>1 - - - - - -").unwrap_err().kind,
        ParseErrorKind::PriOutOfRange
    );
    assert_eq!(
        parse(b"<1000>1 - - - - - -").unwrap_err().kind,
        ParseErrorKind::Pri
    );
    // Leading zeros: strict no, lenient yes.
    assert_eq!(
        parse(b"<013>1 - - - - - -").unwrap_err().kind,
        ParseErrorKind::Pri
    );
    assert_eq!(parse_lenient(b"<013>1 - - - - - -").unwrap().pri, 13);
}

#[test]
fn timestamp_without_zone_is_refused_by_both() {
    let m = b"<13>1 2016-03-08T02:43:26.693600 host app - - - x";
    for r in [parse(m), parse_lenient(m)] {
        let e = r.unwrap_err();
        assert_eq!((e.kind, e.offset), (ParseErrorKind::Timestamp, 32));
    }
    for bad in [
        &b"<13>1 2016-13-08T02:43:26Z h a - - -"[..],
        b"<13>1 2016-03-08 02:43:26Z h a - - -",
        b"<13>1 2016-03-08T24:00:00Z h a - - -",
        b"<13>1 2016-03-08T02:43:26.1234567Z h a - - -",
        b"<13>1 2016-03-08T02:43:26.Z h a - - -",
        b"<13>1 2016-03-08T02:43:26+0100 h a - - -",
    ] {
        assert_eq!(
            parse(bad).unwrap_err().kind,
            ParseErrorKind::Timestamp,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // Lenient takes nanoseconds (Go's RFC3339Nano); strict stops at microseconds.
    let nano = b"<13>1 2016-03-08T02:43:26.123456789-07:00 h a - - - x";
    assert!(parse(nano).is_err(), "{:?}", parse(nano));
    assert_eq!(
        parse_lenient(nano).unwrap().timestamp,
        b"2016-03-08T02:43:26.123456789-07:00"
    );
    // No fraction is fine in both.
    assert!(
        parse(b"<13>1 2016-03-08T02:43:26+01:00 h a - - - x").is_ok(),
        "{:?}",
        parse(b"<13>1 2016-03-08T02:43:26+01:00 h a - - - x")
    );
}

#[test]
fn nul_and_invalid_utf8_in_msg_are_kept_and_rendered_lossily() {
    let m = b"<13>1 - h a - - - nul\0here bad\xff\xfe utf8 \xe2\x82 end";
    for parsed in [parse(m).unwrap(), parse_lenient(m).unwrap()] {
        assert_eq!(parsed.msg, b"nul\0here bad\xff\xfe utf8 \xe2\x82 end");
    }
    let mut out = BytesMut::new();
    session_line(
        &mut out,
        b"2016-03-08T02:43:26.693600+00:00",
        b"app",
        b"web.1",
        parse(m).unwrap().msg,
    );
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "2016-03-08T02:43:26.693600+00:00 app[web.1]: nul\0here bad\u{FFFD}\u{FFFD} utf8 \u{FFFD} end"
    );
}

#[test]
fn sd_with_escaped_bracket_and_quote() {
    let m = br#"<13>1 - h a - - [x@1 a="q\"uote" b="br\]acket" c="back\\slash"][y@2] msg"#;
    let p = parse(m).unwrap();
    assert_eq!(
        p.structured_data,
        br#"[x@1 a="q\"uote" b="br\]acket" c="back\\slash"][y@2]"#
    );
    assert_eq!(p.msg, b"msg");
    // An unescaped ] inside a value: strict refuses, lenient keeps it.
    let loose = br#"<13>1 - h a - - [x@1 a="a]b"] msg"#;
    let e = parse(loose).unwrap_err();
    assert_eq!((e.kind, e.offset), (ParseErrorKind::StructuredData, 25));
    assert_eq!(
        parse_lenient(loose).unwrap().structured_data,
        br#"[x@1 a="a]b"]"#
    );
    // Unterminated value, bad names, missing space before MSG.
    for bad in [
        &br#"<13>1 - h a - - [x@1 a="abc] msg"#[..],
        br#"<13>1 - h a - - [x@1 a=abc] msg"#,
        br#"<13>1 - h a - - [] msg"#,
        br#"<13>1 - h a - - [x@1  a="b"] msg"#,
    ] {
        assert_eq!(parse(bad).unwrap_err().kind, ParseErrorKind::StructuredData);
    }
    assert_eq!(
        parse(br#"<13>1 - h a - - [x@1]msg"#).unwrap_err().kind,
        ParseErrorKind::Space
    );
    // Lenient: a bracket that is not SD is MSG.
    assert_eq!(
        parse_lenient(b"<13>1 - h a - - [INFO starting")
            .unwrap()
            .msg,
        b"[INFO starting"
    );
}

#[test]
fn empty_msg() {
    for m in [
        &b"<13>1 - h a - - -"[..],
        b"<13>1 - h a - - - ",
        b"<13>1 - h a - - - \xEF\xBB\xBF",
    ] {
        assert_eq!(parse(m).unwrap().msg, b"");
    }
    assert_eq!(parse_lenient(b"<13>1 - h a - - - \n").unwrap().msg, b"");
    assert_eq!(parse_lenient(b"<13>1 - h a - -").unwrap().msg, b"");
    assert_eq!(
        parse(b"<13>1 - h a - -").unwrap_err().kind,
        ParseErrorKind::Space
    );
    assert_eq!(parse(b"").unwrap_err().kind, ParseErrorKind::Empty);
}

#[test]
fn header_field_limits() {
    let long_app = format!("<13>1 - h {} - - -", "a".repeat(49));
    let e = parse(long_app.as_bytes()).unwrap_err();
    assert_eq!((e.kind, e.offset), (ParseErrorKind::AppName, 10 + 48));
    assert!(
        parse(format!("<13>1 - {} a - - -", "h".repeat(255)).as_bytes()).is_ok(),
        "{:?}",
        parse(format!("<13>1 - {} a - - -", "h".repeat(255)).as_bytes()).err()
    );
    assert_eq!(
        parse(format!("<13>1 - {} a - - -", "h".repeat(256)).as_bytes())
            .unwrap_err()
            .kind,
        ParseErrorKind::Hostname
    );
    assert_eq!(
        parse(b"<13>0 - h a - - -").unwrap_err().kind,
        ParseErrorKind::Version
    );
    assert_eq!(
        parse(b"<13>1234 - h a - - -").unwrap_err().kind,
        ParseErrorKind::Version
    );
    assert_eq!(
        parse(b"<13>1  - h a - - -").unwrap_err().kind,
        ParseErrorKind::Timestamp
    );
    assert_eq!(
        parse(b"<13>1 - h\ta - - -").unwrap_err().kind,
        ParseErrorKind::Space
    );
}

#[test]
fn mixed_good_and_bad_frames_in_one_stream() {
    let mut codec = SyslogCodec::new(100);
    let mut input = Vec::new();
    input.extend_from_slice(&octet(GOOD)); // 1: good, octet
    input.extend_from_slice(b"\n"); //          a LF after it, as many senders do
    input.extend_from_slice(b"garbage line\n"); // skipped: BadStart
    input.extend_from_slice(GOOD); //            2: good, newline
    input.extend_from_slice(b"\r\n\n \n\t"); // CRLF, then empty lines and blanks (silent)
    input.extend_from_slice(&octet(&[b'z'; 150])); // skipped: TooLong, exact length
    input.extend_from_slice(b"<13>1 "); //      skipped: an over-long line
    input.extend_from_slice(&[b'y'; 300]);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(&octet(GOOD)); // 3: good, octet
    input.extend_from_slice(b"<13>1 - h a - - - last line without LF"); // 4: at EOF
    for chunk in [1, 5, 64, input.len()] {
        let out = decode_stream(&mut codec, &input, chunk);
        assert_eq!(
            frames(&out),
            [GOOD, GOOD, GOOD, b"<13>1 - h a - - - last line without LF"],
            "chunk {chunk}"
        );
        let skipped: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Out::Skipped(m) => Some(m.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            skipped,
            [
                "frame starts with byte 0x67, neither a digit (octet count) nor '<' (a line), and was skipped up to the next line feed",
                "frame of 150 bytes is over the limit of 100 bytes and was skipped",
                if chunk > 306 {
                    "frame of 306 bytes is over the limit of 100 bytes and was skipped"
                } else {
                    "line has no line feed within 100 bytes and was skipped up to the next one"
                },
            ],
            "chunk {chunk}"
        );
    }
}

#[test]
fn batch_count_mismatch_and_empty_bodies() {
    let body = Bytes::from([octet(GOOD), b"\r\n".to_vec(), octet(GOOD), b"\n".to_vec()].concat());
    assert_eq!(split_batch(&body, 10240, Some(2)).unwrap().len(), 2);
    let e = split_batch(&body, 10240, Some(3)).unwrap_err();
    assert_eq!(
        e,
        BatchError::CountMismatch {
            expected: 3,
            found: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "Logplex-Msg-Count is 3 but the body holds 2 frames"
    );
    assert!(
        split_batch(&Bytes::new(), 10240, None).unwrap().is_empty(),
        "{:?}",
        split_batch(&Bytes::new(), 10240, None)
    );
    assert!(
        split_batch(&Bytes::new(), 10240, Some(0))
            .unwrap()
            .is_empty(),
        "{:?}",
        split_batch(&Bytes::new(), 10240, Some(0))
    );
    assert!(
        split_batch(&Bytes::from_static(b"\n"), 10240, Some(0))
            .unwrap()
            .is_empty(),
        "{:?}",
        split_batch(&Bytes::from_static(b"\n"), 10240, Some(0))
    );
    assert!(
        split_batch(&Bytes::new(), 10240, Some(1)).is_err(),
        "{:?}",
        split_batch(&Bytes::new(), 10240, Some(1))
    );
    // A huge claimed count does not reserve a huge Vec.
    assert!(
        split_batch(&body, 10240, Some(usize::MAX)).is_err(),
        "{:?}",
        split_batch(&body, 10240, Some(usize::MAX)).map(|f| f.len())
    );
    // Not a count at all.
    let e = split_batch(&Bytes::from_static(b"<13>1 - h a - - - x"), 10240, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "frame 0 at byte 0: expected an octet count (digits, then a space)"
    );
}

#[test]
fn frames_share_the_body() {
    let body = Bytes::from([octet(GOOD), octet(GOOD)].concat());
    let frames = split_batch(&body, 10240, None).unwrap();
    assert_eq!(frames[1].as_ptr(), body[73..].as_ptr());
}
