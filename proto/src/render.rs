//! Renderers: the session line of `heroku logs` and the frames sent to drains, written into
//! a `BytesMut` without intermediate `String`s.

use bytes::BytesMut;

/// Appends `TIMESTAMP SOURCE[PROCID]: MSG` (no newline). Invalid UTF-8 in MSG is rendered
/// lossily (U+FFFD); a nil PROCID renders as `SOURCE: MSG`.
pub fn session_line(out: &mut BytesMut, timestamp: &[u8], source: &[u8], procid: &[u8], msg: &[u8]) {
    let _ = (out, timestamp, source, procid, msg);
    todo!()
}

/// Syslog drain message `<PRI>1 TIME d.TOKEN SOURCE PROCID - - MSG`; octet-counted
/// (`LEN ` prefix) when `framed`, bare for UDP.
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
    let _ = (out, framed, pri, timestamp, drain_token, source, procid, msg);
    todo!()
}

/// HTTPS drain frame (Heroku's format): `LEN <PRI>1 TIME host SOURCE PROCID - MSG`.
pub fn http_drain(out: &mut BytesMut, pri: u8, timestamp: &[u8], host: &[u8], source: &[u8], procid: &[u8], msg: &[u8]) {
    let _ = (out, pri, timestamp, host, source, procid, msg);
    todo!()
}

/// Appends a UNIX time in microseconds as `2016-03-08T02:43:26.693600+00:00`.
pub fn rfc3339_micros(out: &mut BytesMut, unix_micros: i64) {
    let _ = (out, unix_micros);
    todo!()
}

/// The L11 session line.
pub fn l11_line(out: &mut BytesMut, now_micros: i64, dropped: u64, since_micros: i64) {
    let _ = (out, now_micros, dropped, since_micros);
    todo!()
}
