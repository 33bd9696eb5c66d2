//! Real producers, real bytes: each test is named after the program whose output it reads
//! (see `fixtures/README.md` for how each fixture was captured).

mod common;

use bytes::BytesMut;
use common::{decode_stream, fixture, frames, Out};
use logplex_proto::render::{http_drain, session_line, syslog_drain};
use logplex_proto::{logfmt, parse, parse_lenient, split_batch, Message, SyslogCodec};

const TOKEN: &[u8] = b"t.01234567-89ab-4cde-8f01-23456789abcd";

/// Every chunk size from byte-by-byte to all-at-once must give the same frames.
fn decode_all_ways(input: &[u8]) -> Vec<Vec<u8>> {
    let whole = decode_stream(&mut SyslogCodec::default(), input, input.len());
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(
            decode_stream(&mut SyslogCodec::default(), input, chunk),
            whole,
            "chunk {chunk}"
        );
    }
    frames(&whole).into_iter().map(<[u8]>::to_vec).collect()
}

fn check_logger_hello(m: &Message) {
    assert_eq!(m.pri, 13); // user.notice, logger's default
    assert_eq!(m.version, 1);
    assert_eq!(m.timestamp.len(), "2026-11-26T17:45:05.561906+00:00".len());
    assert_eq!(m.app_name, TOKEN);
    assert_eq!(m.procid, b"-");
    assert_eq!(m.msgid, b"-");
    assert_eq!(
        m.structured_data,
        br#"[timeQuality tzKnown="1" isSynced="0"]"#
    );
    assert_eq!(m.msg, b"hello");
}

#[test]
fn logger_rfc5424_octet_count_tcp() {
    let input = fixture("logger_rfc5424_octet_count_tcp.bin");
    assert!(
        input.starts_with(b"129 <13>1 "),
        "{:?}",
        String::from_utf8_lossy(&input)
    );
    let frames = decode_all_ways(&input);
    assert_eq!(frames.len(), 1);
    check_logger_hello(&parse(&frames[0]).unwrap());
    check_logger_hello(&parse_lenient(&frames[0]).unwrap());
}

#[test]
fn logger_rfc5424_newline_tcp() {
    let input = fixture("logger_rfc5424_newline_tcp.bin");
    assert!(
        input.ends_with(b"hello\n"),
        "{:?}",
        String::from_utf8_lossy(&input)
    );
    let frames = decode_all_ways(&input);
    assert_eq!(frames.len(), 1);
    check_logger_hello(&parse(&frames[0]).unwrap());
}

#[test]
fn logger_rfc5424_udp() {
    // One datagram is one message: no framing at all.
    let datagram = fixture("logger_rfc5424_udp.bin");
    check_logger_hello(&parse(&datagram).unwrap());
}

#[test]
fn logger_rfc5424_octet_count_multi_with_escaped_sd() {
    let input = fixture("logger_rfc5424_octet_count_multi.bin");
    let frames = decode_all_ways(&input);
    assert_eq!(frames.len(), 2);
    let msgs: Vec<_> = frames.iter().map(|f| parse(f).unwrap()).collect();
    assert_eq!(msgs[0].procid, b"4242");
    assert_eq!(msgs[0].msgid, b"ID47");
    assert_eq!(
        msgs[0].structured_data,
        br#"[timeQuality tzKnown="1" isSynced="0"][origin@32473 note="a \"b\" \]"]"#
    );
    assert_eq!(msgs[0].msg, b"first line");
    assert_eq!(msgs[1].msg, br#"second line with "quotes""#);
}

#[test]
fn rsyslog_omfwd_protocol23_newline() {
    let input = fixture("rsyslog_omfwd_protocol23.txt");
    let frames = decode_all_ways(&input);
    assert_eq!(frames.len(), 2);
    let m = parse(&frames[0]).unwrap();
    assert_eq!(
        (m.pri, m.app_name, m.procid, m.msgid),
        (13, TOKEN, &b"2817"[..], &b"-"[..])
    );
    assert_eq!(
        m.structured_data,
        br#"[timeQuality tzKnown="1" isSynced="0"][origin@32473 ip="10.0.0.7"]"#
    );
    assert_eq!(m.msg, br#"Started GET "/" for 127.0.0.1"#);
    assert_eq!(
        parse(&frames[1]).unwrap().msg,
        b"Completed 500 Internal Server Error in 2ms"
    );
}

#[test]
fn rsyslog_omfwd_protocol23_octet_counted() {
    // rsyslog counts the template's trailing LF: strict keeps it in MSG, lenient trims it.
    let input = fixture("rsyslog_omfwd_protocol23_octet.bin");
    let frames = decode_all_ways(&input);
    assert_eq!(frames.len(), 2);
    assert_eq!(
        parse(&frames[0]).unwrap().msg,
        b"Started GET \"/\" for 127.0.0.1\n"
    );
    let m = parse_lenient(&frames[1]).unwrap();
    assert_eq!(m.msg, b"Completed 500 Internal Server Error in 2ms");
    // The same bytes through the HTTP batch splitter.
    let batch = split_batch(&input, 10240, Some(2)).unwrap();
    assert_eq!(batch, frames);
}

#[test]
fn log_shuttle_batch() {
    let body = fixture("log_shuttle.logplex1");
    assert!(
        body.starts_with(b"111 <190>1 2016-03-08T02:43:26.693600+00:00 shuttle t."),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    let frames = split_batch(&body, 10240, Some(2)).unwrap();
    let m = parse(&frames[0]).unwrap();
    assert_eq!(
        (m.pri, m.hostname, m.app_name, m.procid),
        (190, &b"shuttle"[..], TOKEN, &b"shuttle"[..])
    );
    assert_eq!(
        m.msg, b"Hello World\n",
        "strict keeps the LF log-shuttle counts"
    );
    let m = parse_lenient(&frames[1]).unwrap();
    assert_eq!(m.msg, b"The Second Test Line ", "lenient trims only the LF");
    assert_eq!(m.timestamp, b"2016-03-08T02:43:26.693712+00:00");
}

#[test]
fn log_shuttle_web1_rails_lines() {
    let body = fixture("log_shuttle_web1.logplex1");
    let frames = split_batch(&body, 10240, None).unwrap();
    assert_eq!(frames.len(), 2);
    let mut out = BytesMut::new();
    for f in &frames {
        let m = parse_lenient(f).unwrap();
        assert_eq!(m.procid, b"web.1");
        session_line(&mut out, m.timestamp, b"app", m.procid, m.msg);
        out.extend_from_slice(b"\n");
    }
    assert_eq!(
        &out[..],
        &b"2016-03-08T02:43:26.693600+00:00 app[web.1]: Started GET \"/\" for 1.2.3.4 at 2016-03-08 02:43:26 +0000\n\
           2016-03-08T02:43:26.701234+00:00 app[web.1]: Completed 500 Internal Server Error in 2ms\n"[..]
    );
}

#[test]
fn log_shuttle_without_structured_data() {
    // `<190>1 TS host t.TOKEN web.1 - line`: MSGID then MSG, SD left out. Strict refuses,
    // lenient takes SD as nil.
    let line = b"<190>1 2016-03-08T02:43:26.693600+00:00 host t.01234567-89ab-4cde-8f01-23456789abcd web.1 - line";
    assert!(parse(line).is_err(), "{:?}", parse(line));
    let m = parse_lenient(line).unwrap();
    assert_eq!(
        (m.procid, m.msgid, m.structured_data, m.msg),
        (&b"web.1"[..], &b"-"[..], &b"-"[..], &b"line"[..])
    );
}

#[test]
fn heroku_https_drain_docs_example() {
    let body = fixture("heroku_https_drain.logplex1");
    let frames = split_batch(&body, 10240, Some(2)).unwrap();
    let m = parse_lenient(&frames[0]).unwrap();
    assert_eq!(
        (m.pri, m.timestamp),
        (40, &b"2012-11-30T06:45:29+00:00"[..])
    );
    assert_eq!(
        (m.hostname, m.app_name, m.procid),
        (&b"host"[..], &b"app"[..], &b"web.3"[..])
    );
    assert_eq!(m.msg, b"State changed from starting to up");
    let m = parse_lenient(&frames[1]).unwrap();
    assert_eq!(
        m.msg,
        b"Starting process with command `bundle exec rackup config.ru -p 24405`"
    );

    // Our HTTPS drain renders exactly Heroku's bytes: the LF that ends the frame is added
    // and counted, as Heroku counts it.
    let mut out = BytesMut::new();
    http_drain(
        &mut out,
        40,
        b"2012-11-30T06:45:29+00:00",
        b"host",
        b"app",
        b"web.3",
        b"State changed from starting to up",
    );
    assert_eq!(&out[..], &body[..out.len()]);
    assert!(
        out.starts_with(b"83 ") && out.ends_with(b"up\n"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn heroku_router_logfmt() {
    let text = fixture("heroku_router.txt");
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 5);

    let ok = lines[0];
    assert_eq!(logfmt::get(ok, b"status").unwrap().as_f64(), Some(200.0));
    assert_eq!(logfmt::get(ok, b"bytes").unwrap().raw, b"1548");
    assert_eq!(logfmt::get(ok, b"protocol").unwrap().raw, b"https");
    assert_eq!(logfmt::get(ok, b"path").unwrap().unescape().as_ref(), b"/");

    let h12 = lines[1];
    let keys: Vec<&[u8]> = logfmt::pairs(h12).map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 13);
    assert_eq!(
        logfmt::get(h12, b"desc").unwrap().unescape().as_ref(),
        b"Request timeout"
    );
    assert!(
        logfmt::get(h12, b"desc").unwrap().quoted,
        "{:?}",
        logfmt::get(h12, b"desc")
    );
    assert_eq!(
        logfmt::get(h12, b"service").unwrap().as_f64(),
        None,
        "30000ms has a unit"
    );
    let status = logfmt::get(h12, b"status").unwrap();
    let terms = logfmt::parse_predicate(b"status>=500").unwrap();
    let t = &terms[0];
    assert_eq!(t.key, b"status");
    assert!(logfmt::compare(&status, t.op, &t.value), "{status:?} {t:?}");
    assert!(
        logfmt::compare(
            &logfmt::get(h12, b"code").unwrap(),
            logfmt::CmpOp::Eq,
            b"H12"
        ),
        "{:?}",
        logfmt::get(h12, b"code")
    );

    // H10: empty values.
    let h10 = lines[2];
    assert_eq!(logfmt::get(h10, b"dyno").unwrap().raw, b"");
    assert_eq!(logfmt::get(h10, b"bytes").unwrap().raw, b"");
    assert!(
        !logfmt::compare(
            &logfmt::get(h10, b"bytes").unwrap(),
            logfmt::CmpOp::Gt,
            b"0"
        ),
        "{:?}",
        logfmt::get(h10, b"bytes")
    );
    assert_eq!(logfmt::get(h10, b"status").unwrap().as_f64(), Some(503.0));

    // The docs' stray quote after the host does not derail the rest of the line.
    let stray = lines[4];
    assert_eq!(
        logfmt::get(stray, b"host").unwrap().raw,
        b"myapp.herokuapp.com\""
    );
    assert_eq!(logfmt::get(stray, b"fwd").unwrap().raw, b"204.204.204.204");
    assert_eq!(logfmt::get(stray, b"bytes").unwrap().as_f64(), Some(975.0));
}

#[test]
fn rails_lines_are_not_logfmt_but_do_not_break_it() {
    let started = b"Started GET \"/\" for 1.2.3.4 at 2016-03-08 02:43:26 +0000";
    assert!(
        logfmt::get(started, b"status").is_none(),
        "{:?}",
        logfmt::get(started, b"status")
    );
    assert_eq!(logfmt::pairs(started).count(), 9);
    let completed = b"Completed 500 Internal Server Error in 2ms";
    assert!(
        logfmt::pairs(completed).all(|(_, v)| v.raw.is_empty()),
        "{:?}",
        logfmt::pairs(completed).collect::<Vec<_>>()
    );
}

/// Session lines from Heroku's docs survive drain rendering, parsing and session rendering
/// byte for byte.
#[test]
fn heroku_session_lines_round_trip() {
    let text = fixture("heroku_session.txt");
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let sp = line.iter().position(|&b| b == b' ').unwrap();
        let (ts, rest) = (&line[..sp], &line[sp + 1..]);
        let open = rest.iter().position(|&b| b == b'[').unwrap();
        let close = rest.iter().position(|&b| b == b']').unwrap();
        let (source, procid, msg) = (&rest[..open], &rest[open + 1..close], &rest[close + 3..]);

        for framed in [false, true] {
            let mut wire = BytesMut::new();
            syslog_drain(
                &mut wire,
                framed,
                190,
                ts,
                b"d.9f7e3b4c-0e8a-4b5e-9d38-2c1f5a7b6e11",
                source,
                procid,
                msg,
            );
            let frame = if framed {
                let out = decode_stream(&mut SyslogCodec::default(), &wire, 5);
                assert!(matches!(&out[..], [Out::Frame(_)]), "{out:?}");
                let Out::Frame(f) = &out[0] else {
                    unreachable!()
                };
                f.clone()
            } else {
                wire.to_vec()
            };
            let m = parse(&frame).unwrap();
            // HOSTNAME carries the drain token; APP-NAME the source; MSG ends with the LF of
            // every drain frame (which lenient parsing, as intake does, trims).
            assert_eq!(m.hostname, b"d.9f7e3b4c-0e8a-4b5e-9d38-2c1f5a7b6e11");
            assert_eq!((m.app_name, m.procid), (source, procid));
            assert_eq!(m.msg, [msg, b"\n"].concat());
            let m = parse_lenient(&frame).unwrap();
            assert_eq!(m.msg, msg);
            let mut again = BytesMut::new();
            session_line(&mut again, m.timestamp, m.app_name, m.procid, m.msg);
            assert_eq!(&again[..], line);
        }
    }
}
