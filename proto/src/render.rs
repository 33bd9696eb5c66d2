//! Renderers: the session line of `heroku logs` and the frames sent to drains, written into
//! a `BytesMut` without intermediate `String`s.
//!
//! Each renderer appends to `out` and computes octet counts before writing, so a frame is
//! written once, in place. Fields that are empty render as the NILVALUE `-`. Every drain
//! frame (and every notice a drain carries, such as L10) ends with one LF counted in its
//! octet length, unless MSG already ends with one.

use bytes::BytesMut;

/// U+FFFD REPLACEMENT CHARACTER in UTF-8.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Appends `TIMESTAMP SOURCE[PROCID]: MSG` (no newline). Invalid UTF-8 in MSG is rendered
/// lossily (U+FFFD); a nil PROCID renders as `SOURCE: MSG`.
///
/// Sessions are read by people and by the `heroku` CLI, which expect text; other bytes
/// (NUL, control characters) are kept as they are.
pub fn session_line(
    out: &mut BytesMut,
    timestamp: &[u8],
    source: &[u8],
    procid: &[u8],
    msg: &[u8],
) {
    out.reserve(timestamp.len() + source.len() + procid.len() + msg.len() + 5);
    out.extend_from_slice(timestamp);
    out.extend_from_slice(b" ");
    out.extend_from_slice(source);
    if !procid.is_empty() && procid != b"-" {
        out.extend_from_slice(b"[");
        out.extend_from_slice(procid);
        out.extend_from_slice(b"]");
    }
    out.extend_from_slice(b": ");
    extend_lossy(out, msg);
}

/// Appends `bytes` as UTF-8, each invalid sequence replaced by U+FFFD.
pub fn extend_lossy(out: &mut BytesMut, bytes: &[u8]) {
    if std::str::from_utf8(bytes).is_ok() {
        out.extend_from_slice(bytes);
        return;
    }
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(REPLACEMENT);
        }
    }
}

/// A field as written in a syslog header: empty becomes the NILVALUE.
fn field(f: &[u8]) -> &[u8] {
    if f.is_empty() {
        b"-"
    } else {
        f
    }
}

/// Number of decimal digits of `n`.
pub fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Appends `n` in decimal, without allocating.
pub fn write_u64(out: &mut BytesMut, n: u64) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(u64_into(&mut buf, n));
}

/// Formats `n` in decimal into a stack buffer.
fn u64_into(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `<PRI>1 ` and the given header fields, each followed by SP. Returns nothing; the
/// caller computed the length with [`header_len`].
fn write_header(out: &mut BytesMut, pri: u8, fields: &[&[u8]]) {
    out.extend_from_slice(b"<");
    write_u64(out, u64::from(pri));
    out.extend_from_slice(b">1 ");
    for f in fields {
        out.extend_from_slice(field(f));
        out.extend_from_slice(b" ");
    }
}

fn header_len(pri: u8, fields: &[&[u8]]) -> usize {
    // "<" PRI ">1 " then each field and its SP.
    1 + decimal_len(u64::from(pri)) + 3 + fields.iter().map(|f| field(f).len() + 1).sum::<usize>()
}

/// Does a drain frame of `msg` need the LF that ends every drain frame? Not when MSG already
/// ends with one (Logplex's `nl/1`).
fn needs_lf(msg: &[u8]) -> bool {
    msg.last() != Some(&b'\n')
}

/// Writes `<PRI>1 FIELD… MSG`, then LF when `lf`; octet-counted (the LF included in the
/// count) when `framed`.
fn frame(out: &mut BytesMut, framed: bool, pri: u8, fields: &[&[u8]], msg: &[u8], lf: bool) {
    let len = header_len(pri, fields) + msg.len() + usize::from(lf);
    out.reserve(len + 11);
    if framed {
        write_u64(out, len as u64);
        out.extend_from_slice(b" ");
    }
    write_header(out, pri, fields);
    out.extend_from_slice(msg);
    if lf {
        out.extend_from_slice(b"\n");
    }
}

/// An RFC 5424 message with nil MSGID and STRUCTURED-DATA as a sender writes it (log-shuttle
/// and `logplex shuttle`: `<PRI>1 TIME HOSTNAME APP-NAME PROCID - - MSG`), octet-counted when
/// `framed`. Nothing is added after MSG: this is the input side, not a drain frame (see
/// [`syslog_drain`]).
#[allow(clippy::too_many_arguments)]
pub fn syslog_message(
    out: &mut BytesMut,
    framed: bool,
    pri: u8,
    timestamp: &[u8],
    hostname: &[u8],
    app_name: &[u8],
    procid: &[u8],
    msg: &[u8],
) {
    frame(
        out,
        framed,
        pri,
        &[timestamp, hostname, app_name, procid, b"-", b"-"],
        msg,
        false,
    );
}

/// Syslog drain frame `<PRI>1 TIME d.TOKEN SOURCE PROCID - - MSG LF`; octet-counted (`LEN `
/// prefix, the LF counted) when `framed`, bare for UDP.
///
/// The drain token stands in HOSTNAME so that the receiver can tell drains apart, as
/// Logplex does. MSG is sent as stored, bytes and all, followed by one LF unless it already
/// ends with one (as Logplex did), so receivers that split on LF see one line per message.
#[allow(clippy::too_many_arguments)]
pub fn syslog_drain(
    out: &mut BytesMut,
    framed: bool,
    pri: u8,
    timestamp: &[u8],
    drain_token: &[u8],
    source: &[u8],
    procid: &[u8],
    msg: &[u8],
) {
    frame(
        out,
        framed,
        pri,
        &[timestamp, drain_token, source, procid, b"-", b"-"],
        msg,
        needs_lf(msg),
    );
}

/// HTTPS drain frame (Heroku's format): `LEN <PRI>1 TIME host SOURCE PROCID - MSG LF`.
///
/// Heroku's HTTPS drains send no STRUCTURED-DATA field: the `-` is MSGID and MSG follows it.
/// LEN counts the LF that ends the frame (added unless MSG ends with one), as in Heroku's
/// documented frames, so a receiver may split a batch on LF or by octet count alike.
pub fn http_drain(
    out: &mut BytesMut,
    pri: u8,
    timestamp: &[u8],
    host: &[u8],
    source: &[u8],
    procid: &[u8],
    msg: &[u8],
) {
    frame(
        out,
        true,
        pri,
        &[timestamp, host, source, procid, b"-"],
        msg,
        needs_lf(msg),
    );
}

/// Writes the text of the L10 notice, `Error L10 (output buffer overflow): N messages dropped
/// since TIME.`, into `buf`; returns its length.
fn l10_text(buf: &mut [u8; 128], dropped: u64, since_micros: i64) -> usize {
    let mut since = [0u8; 32];
    let since = rfc3339_micros_into(&mut since, since_micros);
    let mut n = [0u8; 20];
    let n = u64_into(&mut n, dropped);
    let parts: [&[u8]; 5] = [
        b"Error L10 (output buffer overflow): ",
        n,
        b" messages dropped since ",
        since,
        b".",
    ];
    let mut at = 0;
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    at
}

/// The L10 notice a syslog drain receives first after its buffer overflowed, in the shape
/// of every syslog drain frame (Logplex's TCP drains sent it so):
/// `<172>1 TIME d.TOKEN heroku logplex - - Error L10 (output buffer overflow): N messages dropped since TIME.`
/// and LF, octet-counted when `framed`.
pub fn l10_syslog(
    out: &mut BytesMut,
    framed: bool,
    now_micros: i64,
    drain_token: &[u8],
    dropped: u64,
    since_micros: i64,
) {
    let mut now = [0u8; 32];
    let now = rfc3339_micros_into(&mut now, now_micros);
    let mut text = [0u8; 128];
    let len = l10_text(&mut text, dropped, since_micros);
    syslog_drain(
        out,
        framed,
        172,
        now,
        drain_token,
        b"heroku",
        b"logplex",
        &text[..len],
    );
}

/// The L10 notice an HTTPS drain receives at the head of its next batch after its buffer
/// overflowed, in Heroku's HTTPS-drain shape (no STRUCTURED-DATA):
/// `LEN <172>1 TIME host heroku logplex - Error L10 (output buffer overflow): N messages dropped since TIME.` and LF.
pub fn l10_http(out: &mut BytesMut, now_micros: i64, dropped: u64, since_micros: i64) {
    let mut now = [0u8; 32];
    let now = rfc3339_micros_into(&mut now, now_micros);
    let mut text = [0u8; 128];
    let len = l10_text(&mut text, dropped, since_micros);
    http_drain(out, 172, now, b"host", b"heroku", b"logplex", &text[..len]);
}

/// The L11 session line a tail receives after it lost lines:
/// `TIME heroku[logplex]: Error L11 (Tail buffer overflow) -> This tail session dropped N messages since TIME.`
pub fn l11_line(out: &mut BytesMut, now_micros: i64, dropped: u64, since_micros: i64) {
    rfc3339_micros(out, now_micros);
    out.extend_from_slice(
        b" heroku[logplex]: Error L11 (Tail buffer overflow) -> This tail session dropped ",
    );
    write_u64(out, dropped);
    out.extend_from_slice(b" messages since ");
    rfc3339_micros(out, since_micros);
    out.extend_from_slice(b".");
}

/// The text of log-shuttle's L12 notice, sent by `logplex shuttle` after its queue was full
/// and it dropped lines: `Error L12: N messages dropped since TIME.`
pub fn l12_text(out: &mut BytesMut, dropped: u64, since_micros: i64) {
    out.extend_from_slice(b"Error L12: ");
    write_u64(out, dropped);
    out.extend_from_slice(b" messages dropped since ");
    rfc3339_micros(out, since_micros);
    out.extend_from_slice(b".");
}

/// The text of log-shuttle's L13 notice, sent by `logplex shuttle` after batches it could
/// not deliver: `Error L13: N messages lost since TIME.`
pub fn l13_text(out: &mut BytesMut, lost: u64, since_micros: i64) {
    out.extend_from_slice(b"Error L13: ");
    write_u64(out, lost);
    out.extend_from_slice(b" messages lost since ");
    rfc3339_micros(out, since_micros);
    out.extend_from_slice(b".");
}

/// The text of the L14 notice put into a channel when a TLS drain's receiver presents a
/// certificate that is refused:
/// `Error L14 (certificate validation): drain d.TOKEN (HOST:PORT): WHY`.
pub fn l14_text(out: &mut BytesMut, drain_token: &[u8], host: &str, port: u16, why: &str) {
    out.extend_from_slice(b"Error L14 (certificate validation): drain ");
    extend_lossy(out, drain_token);
    out.extend_from_slice(b" (");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b":");
    write_u64(out, u64::from(port));
    out.extend_from_slice(b"): ");
    out.extend_from_slice(why.as_bytes());
}

/// Appends a UNIX time in microseconds as `2016-03-08T02:43:26.693600+00:00`.
pub fn rfc3339_micros(out: &mut BytesMut, unix_micros: i64) {
    let mut buf = [0u8; 32];
    out.extend_from_slice(rfc3339_micros_into(&mut buf, unix_micros));
}

/// Formats into a stack buffer; years outside 0..=9999 are clamped to them (a UNIX time that
/// far away is a bug elsewhere, and the format has four digits of year).
fn rfc3339_micros_into(buf: &mut [u8; 32], unix_micros: i64) -> &[u8] {
    let secs = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (mut y, mut m, mut d) = civil_from_days(days);
    let (mut hh, mut mm, mut ss, mut us) = (sod / 3600, sod / 60 % 60, sod % 60, micros);
    if !(0..=9999).contains(&y) {
        (m, d, hh, mm, ss) = if y < 0 {
            (1, 1, 0, 0, 0)
        } else {
            (12, 31, 23, 59, 59)
        };
        us = if y < 0 { 0 } else { 999_999 };
        y = y.clamp(0, 9999);
    }
    let mut put = |at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y as u32, 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, hh, 2);
    put(14, mm, 2);
    put(17, ss, 2);
    put(20, us, 6);
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b'T';
    buf[13] = b':';
    buf[16] = b':';
    buf[19] = b'.';
    buf[26..32].copy_from_slice(b"+00:00");
    &buf[..]
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day) in the
/// proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(us: i64) -> String {
        let mut b = BytesMut::new();
        rfc3339_micros(&mut b, us);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn timestamps() {
        assert_eq!(ts(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            ts(1_457_404_999_693_600),
            "2016-03-08T02:43:19.693600+00:00"
        );
        assert_eq!(ts(951_782_400_000_000), "2000-02-29T00:00:00.000000+00:00");
        assert_eq!(ts(-1), "1969-12-31T23:59:59.999999+00:00");
        assert_eq!(
            ts(253_402_300_799_999_999),
            "9999-12-31T23:59:59.999999+00:00"
        );
        assert_eq!(ts(i64::MAX), "9999-12-31T23:59:59.999999+00:00");
        assert_eq!(ts(i64::MIN), "0000-01-01T00:00:00.000000+00:00");
    }

    fn text(f: impl FnOnce(&mut BytesMut)) -> String {
        let mut b = BytesMut::new();
        f(&mut b);
        String::from_utf8(b.to_vec()).unwrap()
    }

    const T0: i64 = 1_457_404_999_693_600;
    const T1: i64 = 1_457_405_059_000_000;

    #[test]
    fn shuttle_and_certificate_notices() {
        assert_eq!(
            text(|b| l12_text(b, 5, T0)),
            "Error L12: 5 messages dropped since 2016-03-08T02:43:19.693600+00:00."
        );
        assert_eq!(
            text(|b| l13_text(b, 1, T1)),
            "Error L13: 1 messages lost since 2016-03-08T02:44:19.000000+00:00."
        );
        assert_eq!(
            text(|b| l14_text(
                b,
                b"d.01234567-89ab-4cde-8f01-23456789abcd",
                "logs.example.com",
                6514,
                "invalid peer certificate: UnknownIssuer"
            )),
            "Error L14 (certificate validation): drain d.01234567-89ab-4cde-8f01-23456789abcd \
             (logs.example.com:6514): invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn overflow_notices() {
        // Syslog drains: MSGID and SD are both nil, so strict RFC 5424 parsers take it.
        let syslog = "<172>1 2016-03-08T02:44:19.000000+00:00 d.TOKEN heroku logplex - - Error L10 (output buffer overflow): 500 messages dropped since 2016-03-08T02:43:19.693600+00:00.\n";
        assert_eq!(
            text(|b| l10_syslog(b, false, T1, b"d.TOKEN", 500, T0)),
            syslog
        );
        assert_eq!(
            text(|b| l10_syslog(b, true, T1, b"d.TOKEN", 500, T0)),
            format!("{} {syslog}", syslog.len())
        );
        let m = crate::parse(syslog.as_bytes()).unwrap();
        assert_eq!(
            (m.pri, m.hostname, m.app_name, m.procid),
            (172, &b"d.TOKEN"[..], &b"heroku"[..], &b"logplex"[..])
        );
        assert_eq!((m.msgid, m.structured_data), (&b"-"[..], &b"-"[..]));
        assert!(m
            .msg
            .starts_with(b"Error L10 (output buffer overflow): 500 messages"));
        // HTTPS drains: Heroku's shape, no SD.
        let http = "<172>1 2016-03-08T02:44:19.000000+00:00 host heroku logplex - Error L10 (output buffer overflow): 500 messages dropped since 2016-03-08T02:43:19.693600+00:00.\n";
        assert_eq!(
            text(|b| l10_http(b, T1, 500, T0)),
            format!("{} {http}", http.len())
        );
        assert_eq!(
            text(|b| l10_http(b, T1, u64::MAX, T0)),
            format!(
                "{} <172>1 2016-03-08T02:44:19.000000+00:00 host heroku logplex - Error L10 (output buffer overflow): 18446744073709551615 messages dropped since 2016-03-08T02:43:19.693600+00:00.\n",
                http.len() + 17
            )
        );
        assert_eq!(
            text(|b| l11_line(b, T1, 3, T0)),
            "2016-03-08T02:44:19.000000+00:00 heroku[logplex]: Error L11 (Tail buffer overflow) -> This tail session dropped 3 messages since 2016-03-08T02:43:19.693600+00:00."
        );
    }

    #[test]
    fn drain_frames() {
        assert_eq!(
            text(|b| syslog_drain(
                b,
                true,
                190,
                b"2016-03-08T02:43:26.693600+00:00",
                b"d.TOKEN",
                b"app",
                b"web.1",
                b"hi"
            )),
            "65 <190>1 2016-03-08T02:43:26.693600+00:00 d.TOKEN app web.1 - - hi\n"
        );
        assert_eq!(
            text(|b| syslog_drain(b, false, 0, b"", b"d.T", b"app", b"", b"")),
            "<0>1 - d.T app - - - \n"
        );
        // A MSG that already ends with LF gets no second one.
        assert_eq!(
            text(|b| syslog_drain(b, true, 13, b"-", b"d.T", b"a", b"-", b"x\n")),
            "22 <13>1 - d.T a - - - x\n"
        );
        // Heroku's documented HTTPS-drain frame: 82 bytes of text and the LF, counted.
        assert_eq!(
            text(|b| http_drain(
                b,
                40,
                b"2012-11-30T06:45:29+00:00",
                b"host",
                b"app",
                b"web.3",
                b"State changed from starting to up"
            )),
            "83 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n"
        );
        assert_eq!(
            text(|b| http_drain(b, 40, b"-", b"host", b"app", b"web.3", b"up\n")),
            "28 <40>1 - host app web.3 - up\n"
        );
        // The input side (log-shuttle's frames) is not a drain frame: no LF.
        assert_eq!(
            text(|b| syslog_message(b, true, 190, b"-", b"host", b"t.x", b"web.1", b"hi")),
            "30 <190>1 - host t.x web.1 - - hi"
        );
        assert_eq!(
            text(|b| session_line(b, b"TS", b"heroku", b"-", b"x")),
            "TS heroku: x"
        );
    }

    #[test]
    fn integers() {
        for n in [0u64, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut b = BytesMut::new();
            write_u64(&mut b, n);
            assert_eq!(&b[..], n.to_string().as_bytes());
            assert_eq!(decimal_len(n), n.to_string().len());
        }
    }
}
