//! Property tests: rendered messages parse back to what was rendered, and no input of any
//! shape makes a parser, the codec, the batch splitter or logfmt panic.

mod common;

use bytes::{Bytes, BytesMut};
use common::decode_stream;
use logplex_proto::render::{http_drain, rfc3339_micros, session_line, syslog_drain};
use logplex_proto::{logfmt, parse, parse_lenient, split_batch, SyslogCodec};
use proptest::prelude::*;

/// A header field as logplex stores it: 1-32 printable US-ASCII characters.
fn field(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(33u8..=126, 1..=max)
}

fn timestamp() -> impl Strategy<Value = Vec<u8>> {
    (0i64..=253_402_300_799_999_999).prop_map(|us| {
        let mut b = BytesMut::new();
        rfc3339_micros(&mut b, us);
        b.to_vec()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn syslog_drain_round_trips(
        pri in 0u8..=191,
        ts in timestamp(),
        token in field(48),
        source in field(48),
        procid in field(128),
        msg in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut out = BytesMut::new();
        syslog_drain(&mut out, false, pri, &ts, &token, &source, &procid, &msg);
        let m = parse(&out).unwrap();
        prop_assert_eq!(m.pri, pri);
        prop_assert_eq!(m.version, 1);
        prop_assert_eq!(m.timestamp, &ts[..]);
        prop_assert_eq!(m.hostname, &token[..]);
        prop_assert_eq!(m.app_name, &source[..]);
        prop_assert_eq!(m.procid, &procid[..]);
        prop_assert_eq!(m.msgid, b"-");
        prop_assert_eq!(m.structured_data, b"-");
        // MSG as stored, and the LF that ends every drain frame (unless MSG ends with one).
        let mut expect: Vec<u8> = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&msg).to_vec();
        if !msg.ends_with(b"\n") {
            expect.push(b'\n');
        }
        prop_assert_eq!(m.msg, &expect[..]);
        prop_assert_eq!(out.last(), Some(&b'\n'));
        prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), msg.iter().filter(|&&b| b == b'\n').count() + usize::from(!msg.ends_with(b"\n")));

        // Framed, through the codec in odd-sized reads, gives the same message.
        let mut framed = BytesMut::new();
        syslog_drain(&mut framed, true, pri, &ts, &token, &source, &procid, &msg);
        let frames = decode_stream(&mut SyslogCodec::new(1 << 20), &framed, 7);
        prop_assert_eq!(frames, vec![common::Out::Frame(out.to_vec())]);
    }

    #[test]
    fn http_drain_batches_round_trip(
        lines in proptest::collection::vec(("[a-z]{1,10}", "[a-z]{1,5}\\.[0-9]{1,2}", "[ -~]{0,80}"), 0..20),
    ) {
        let mut body = BytesMut::new();
        for (source, procid, msg) in &lines {
            http_drain(&mut body, 190, b"2016-03-08T02:43:26.693600+00:00", b"host", source.as_bytes(), procid.as_bytes(), msg.as_bytes());
        }
        let frames = split_batch(&body.freeze(), 10240, Some(lines.len())).unwrap();
        for (f, (source, procid, msg)) in frames.iter().zip(&lines) {
            let m = parse_lenient(f).unwrap();
            prop_assert_eq!(m.app_name, source.as_bytes());
            prop_assert_eq!(m.procid, procid.as_bytes());
            let mut line = BytesMut::new();
            session_line(&mut line, m.timestamp, m.app_name, m.procid, m.msg);
            let expect = format!("2016-03-08T02:43:26.693600+00:00 {source}[{procid}]: {msg}");
            // Lenient parsing may read a leading "- " or "[x]" of MSG as SD; Heroku's format
            // has the same ambiguity. Only check lines that do not start that way.
            if !msg.starts_with("- ") && !msg.starts_with('[') && msg != "-" {
                prop_assert_eq!(&line[..], expect.as_bytes());
            }
        }
    }

    #[test]
    fn session_line_is_always_utf8(msg in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut out = BytesMut::new();
        session_line(&mut out, b"TS", b"app", b"web.1", &msg);
        prop_assert!(std::str::from_utf8(&out).is_ok(), "{out:?}");
        if let Ok(s) = std::str::from_utf8(&msg) {
            prop_assert!(out.ends_with(s.as_bytes()), "{out:?} does not end with {s:?}");
        }
    }

    #[test]
    fn parsers_never_panic(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        let frame = Bytes::from(input);
        for m in [parse(&frame), parse_lenient(&frame)].into_iter().flatten() {
            // Fields are slices of the frame, so the server can keep them without copying.
            for f in [m.timestamp, m.hostname, m.app_name, m.procid, m.msgid, m.msg] {
                let _ = frame.slice_ref(f);
            }
        }
    }

    #[test]
    fn parsers_never_panic_near_valid(
        prefix in prop::sample::select(vec![
            &b"<13>1 "[..], b"<13>1 2016-03-08T02:43:26.693600+00:00 h a p m ",
            b"<13>1 - h a p m [", b"<13>1 - h a p m [x@1 a=\"", b"<191>1 2016-03-08T02:43:26",
        ]),
        tail in "[ -~\\\\\\]\\[\"=]{0,60}",
    ) {
        let input = Bytes::from([prefix, tail.as_bytes()].concat());
        if let Ok(m) = parse_lenient(&input) {
            let _ = input.slice_ref(m.msg);
        }
        if let Ok(m) = parse(&input) {
            // Whatever strict accepts, lenient accepts too, with the same header.
            let l = parse_lenient(&input).unwrap();
            prop_assert_eq!((m.pri, m.timestamp, m.hostname, m.app_name, m.procid, m.msgid),
                            (l.pri, l.timestamp, l.hostname, l.app_name, l.procid, l.msgid));
        }
    }

    #[test]
    fn codec_never_panics(input in proptest::collection::vec(
        prop_oneof![any::<u8>(), Just(b'\n'), Just(b' '), Just(b'<'), 48u8..58], 0..400),
        chunk in 1usize..50, max in 1usize..64,
    ) {
        // decode_stream itself checks can_continue agrees with Skipped/Err and that EOF
        // leaves nothing behind.
        let out = decode_stream(&mut SyslogCodec::new(max), &input, chunk);
        for o in &out {
            if let common::Out::Frame(f) = o {
                prop_assert!(f.len() <= max, "a frame of {} bytes over {max}", f.len());
            }
        }
    }

    #[test]
    fn every_frame_after_an_implausible_count_is_recovered(
        count in 64u64 * 100 + 1..=9_999_999_999,
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..20),
        chunk in 1usize..64,
    ) {
        // Syslog messages start with `<` (PRI): what the resynchronisation looks for.
        let msgs: Vec<Vec<u8>> = msgs.into_iter().map(|m| [&b"<"[..], &m].concat()).collect();
        let mut input = format!("{count} ").into_bytes();
        for m in &msgs {
            input.extend_from_slice(format!("{} ", m.len()).as_bytes());
            input.extend_from_slice(m);
        }
        let out = decode_stream(&mut SyslogCodec::new(100), &input, chunk);
        prop_assert!(matches!(&out[0], common::Out::Skipped(m) if m.contains("implausible")), "{:?}", out[0]);
        let want: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        prop_assert_eq!(common::frames(&out), want);
    }

    #[test]
    fn split_batch_never_panics(
        input in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b' '), 48u8..58], 0..400),
        max in 0usize..64, count in proptest::option::of(0usize..10),
    ) {
        if let Ok(frames) = split_batch(&Bytes::from(input), max, count) {
            prop_assert!(frames.iter().all(|f| f.len() <= max && !f.is_empty()), "{frames:?} (max {max})");
        }
    }

    #[test]
    fn logfmt_never_panics(input in proptest::collection::vec(
        prop_oneof![any::<u8>(), Just(b'='), Just(b'"'), Just(b'\\'), Just(b' ')], 0..200),
        op in prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]),
    ) {
        let op = logfmt::CmpOp::parse(op.as_bytes()).unwrap();
        for (k, v) in logfmt::pairs(&input) {
            prop_assert!(!k.is_empty(), "an empty key in {input:?}");
            let _ = v.unescape();
            let _ = logfmt::compare(&v, op, b"500");
        }
        let _ = logfmt::get(&input, b"status");
        let _ = logfmt::parse_predicate(&input);
    }
}
