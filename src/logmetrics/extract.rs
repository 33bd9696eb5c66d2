//! Reading metrics out of one line, borrowing its MSG: the Heroku router's request fields
//! and l2met's `count#`, `sample#` and `measure#` pairs. Nothing here allocates.
//!
//! Both use [`logplex_proto::logfmt::pairs`]. A value that does not parse (`service=abc`,
//! `status=`, `sample#x=fast`) is left out and counted, never guessed.

use logplex_proto::logfmt;
use serde::{Deserialize, Serialize};

/// The longest l2met name kept; longer names are malformed.
pub const MAX_NAME: usize = 64;
/// The longest unit kept (`ms`, `MB`, `pages`, `bytes`).
pub const MAX_UNIT: usize = 16;

/// The fields of one Heroku router line that metrics use.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RouterLine {
    /// `status=NNN`, 100 to 599.
    pub status: Option<u16>,
    /// `code=Hnn`, as nn.
    pub code: Option<u8>,
    /// `service=NNms` (a bare number is taken as ms too).
    pub service_ms: Option<f64>,
    /// `connect=NNms`.
    pub connect_ms: Option<f64>,
    /// `bytes=N`.
    pub bytes: Option<u64>,
    /// Values present but not parseable (empty ones do not count: H10 lines have
    /// `connect= service= bytes=`).
    pub malformed: u32,
}

/// Whether a line is the Heroku router's (`heroku[router]`).
#[inline]
pub fn is_router(source: &[u8], procid: &[u8]) -> bool {
    procid == b"router" && source == b"heroku"
}

/// The metric fields of a router line's MSG.
///
/// Heroku's router writes `at=… [code=Hnn desc="…"] method=… path="…" host=… request_id=…
/// fwd="…" dyno=… connect=… service=… status=… bytes=… [protocol=…]`: the fields read here
/// are the first two and those from the last ` connect=` on. Reading only those (instead of
/// every pair, the quoted path and the request id included) is most of the cost of a
/// router line saved. A line that is not laid out so (no status, service or bytes after the
/// last ` connect=`) is read whole, as any order may come.
pub fn router(msg: &[u8]) -> RouterLine {
    router_fast(msg).map_or_else(|| router_slow(msg), RouterLine::from)
}

/// [`router`] of a line [`router_fast`] did not take.
pub fn router_slow(msg: &[u8]) -> RouterLine {
    router_exact(msg).unwrap_or_else(|| router_general(msg))
}

/// [`router`] for any layout.
fn router_general(msg: &[u8]) -> RouterLine {
    // The forward (SIMD) search, to its last match: the reverse one costs several times
    // more on a ~250-byte line, and lines hold one ` connect=` but for odd paths.
    static CONNECT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b" connect="));
    if let Some(at) = CONNECT.find_iter(msg).last() {
        let mut r = RouterLine::default();
        router_pairs(&mut r, logfmt::pairs(&msg[..at]).take(2));
        router_pairs(&mut r, logfmt::pairs(&msg[at..]));
        if r.status.is_some() && r.service_ms.is_some() && r.bytes.is_some() {
            return r;
        }
    }
    let mut r = RouterLine::default();
    router_pairs(&mut r, logfmt::pairs(msg));
    r
}

/// The router's own layout read without the generic pair parser: `at=info ` or
/// `at=error code=Hnn `, then from the last ` connect=` exactly `connect=Nms service=Nms
/// status=NNN bytes=N` with whole numbers, then pairs as usual. `None` for anything else
/// (a fraction, a missing unit, another order, an empty value), which [`router`] then reads
/// the general way; where this answers, the answer is the same.
fn router_exact(msg: &[u8]) -> Option<RouterLine> {
    static CONNECT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b" connect="));
    let mut r = RouterLine {
        code: head_code(msg)?,
        ..RouterLine::default()
    };
    // ` connect=` is within the last 100 bytes of the router's lines: the last match found
    // there is the last of the line.
    let from = msg.len().saturating_sub(128);
    let at = from + CONNECT.find_iter(&msg[from..]).last()?;
    let mut s = &msg[at + b" connect=".len()..];
    r.connect_ms = Some(whole(&mut s, 15, b"ms service=")? as f64);
    r.service_ms = Some(whole(&mut s, 15, b"ms status=")? as f64);
    let status = whole(&mut s, 3, b" bytes=")?;
    if !(100..600).contains(&status) {
        return None;
    }
    r.status = Some(status as u16);
    r.bytes = Some(whole(&mut s, 19, b"")?);
    if !s.is_empty() && s[0] != b' ' {
        return None;
    }
    router_pairs(&mut r, logfmt::pairs(s));
    Some(r)
}

/// The H-code of a line that starts as the router's do: `Some(None)` after `at=info ` (not
/// followed by `code=`, which the general way would read), `Some(Some(nn))` after
/// `at=error code=Hnn `, `None` for anything else.
#[inline]
fn head_code(msg: &[u8]) -> Option<Option<u8>> {
    if let Some(rest) = msg.strip_prefix(b"at=info ") {
        (!rest.starts_with(b"code=")).then_some(None)
    } else {
        let rest = msg.strip_prefix(b"at=error code=")?;
        if rest.get(3) != Some(&b' ') {
            return None;
        }
        Some(Some(parse_h_code(&rest[..3])?))
    }
}

/// A router line in the router's own layout, its numbers whole (see [`router_fast`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fast {
    pub code: Option<u8>,
    pub connect: u64,
    pub service: u64,
    pub status: u16,
    pub bytes: u64,
}

impl From<Fast> for RouterLine {
    fn from(f: Fast) -> RouterLine {
        RouterLine {
            status: Some(f.status),
            code: f.code,
            service_ms: Some(f.service as f64),
            connect_ms: Some(f.connect as f64),
            bytes: Some(f.bytes),
            malformed: 0,
        }
    }
}

/// The router's own layout read from the line's two ends only (`at=info ` or `at=error
/// code=Hnn `, then a [`Tail`]), with no `f64` or `Option` per field: what ingest reads of
/// most router lines. `None` for anything else, which [`router`] then reads; where this
/// answers, [`router`] gives the same numbers.
#[inline]
pub fn router_fast(msg: &[u8]) -> Option<Fast> {
    let code = head_code(msg)?;
    let t = tail_from_end(msg)?;
    Some(Fast {
        code,
        connect: t.connect,
        service: t.service,
        status: t.status,
        bytes: t.bytes,
    })
}

/// The fields of a line that ends exactly ` connect=Nms service=Nms status=NNN bytes=N`
/// (then ` protocol=https`, ` protocol=http` or nothing), and where its ` connect=` starts.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tail {
    at: usize,
    connect: u64,
    service: u64,
    status: u16,
    bytes: u64,
}

/// Reads [`Tail`] walking back from the end once, digits to numbers on the way (no
/// substring search, nothing read twice): nothing after that ` connect=` can hold another,
/// so it is the line's last.
#[inline(always)]
fn tail_from_end(msg: &[u8]) -> Option<Tail> {
    let s = if let Some(s) = msg.strip_suffix(b" protocol=https") {
        s
    } else if let Some(s) = msg.strip_suffix(b" protocol=http") {
        s
    } else {
        msg
    };
    let (s, bytes) = number_back::<19>(s)?;
    // 100 to 599: exactly three digits.
    let (s, status) = s.strip_suffix(b" bytes=")?.split_last_chunk::<3>()?;
    let status = parse_status(status)?;
    let (s, service) = number_back::<15>(s.strip_suffix(b"ms status=")?)?;
    let (s, connect) = number_back::<15>(s.strip_suffix(b"ms service=")?)?;
    let s = s.strip_suffix(b" connect=")?;
    Some(Tail {
        at: s.len(),
        connect,
        service,
        status,
        bytes,
    })
}

/// The number that ends `s` (1 to `MAX` digits; `MAX` ≤ 19, so that it fits a u64
/// unchecked) and what comes before it. One pass, each digit taken as it is checked.
#[inline(always)]
fn number_back<const MAX: usize>(s: &[u8]) -> Option<(&[u8], u64)> {
    let (mut v, mut unit, mut n) = (0u64, 1u64, 0usize);
    for &b in s.iter().rev() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if n == MAX {
            return None;
        }
        v += d as u64 * unit;
        unit = unit.wrapping_mul(10);
        n += 1;
    }
    if n == 0 {
        return None;
    }
    Some((&s[..s.len() - n], v))
}

/// The digits at the start of `s` (1 to `max` of them) as a number, which `then` must
/// follow; advances `s` past both.
#[inline]
fn whole(s: &mut &[u8], max: usize, then: &[u8]) -> Option<u64> {
    let n = s
        .iter()
        .take(max + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if n == 0 || n > max || !s[n..].starts_with(then) {
        return None;
    }
    let v = s[..n].iter().try_fold(0u64, |v, d| {
        v.checked_mul(10)?.checked_add((d - b'0') as u64)
    })?;
    *s = &s[n + then.len()..];
    Some(v)
}

/// Reads the metric fields of `pairs` into `r` (a later value of a key replaces an earlier
/// one).
fn router_pairs<'a>(
    r: &mut RouterLine,
    pairs: impl Iterator<Item = (&'a [u8], logfmt::Value<'a>)>,
) {
    for (k, v) in pairs {
        let raw = v.raw;
        let ok = match k {
            b"status" => {
                r.status = parse_status(raw);
                r.status.is_some()
            }
            b"service" => {
                r.service_ms = parse_ms(raw);
                r.service_ms.is_some()
            }
            b"connect" => {
                r.connect_ms = parse_ms(raw);
                r.connect_ms.is_some()
            }
            b"bytes" => {
                r.bytes = parse_u64(raw);
                r.bytes.is_some()
            }
            b"code" => {
                r.code = parse_h_code(raw);
                true // other codes are not ours to count, not malformed
            }
            _ => true,
        };
        if !ok && !raw.is_empty() {
            r.malformed += 1;
        }
    }
}

fn parse_status(raw: &[u8]) -> Option<u16> {
    match *raw {
        [a @ b'1'..=b'5', b, c] if b.is_ascii_digit() && c.is_ascii_digit() => {
            Some((a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16)
        }
        _ => None,
    }
}

/// `Hnn` as nn.
fn parse_h_code(raw: &[u8]) -> Option<u8> {
    match *raw {
        [b'H', a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some((a - b'0') * 10 + b - b'0')
        }
        _ => None,
    }
}

/// Milliseconds: `23ms` or `23`, not negative.
fn parse_ms(raw: &[u8]) -> Option<f64> {
    match number_unit(raw)? {
        (v, b"ms" | b"") if v >= 0.0 => Some(v),
        _ => None,
    }
}

fn parse_u64(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 19 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    raw.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

/// A number followed by an optional unit: `23`, `23ms`, `212.3MB`, `-1.5e3`, `348836pages`.
/// The unit is up to [`MAX_UNIT`] letters (and `%`, `/`, `_`); infinities and NaN are not
/// numbers.
pub fn number_unit(raw: &[u8]) -> Option<(f64, &[u8])> {
    let digits = |from: usize| {
        raw[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let sign = usize::from(matches!(raw.first(), Some(b'-' | b'+')));
    let int = digits(sign);
    let mut i = sign + int;
    let mut plain = true;
    let mut frac = 0;
    if raw.get(i) == Some(&b'.') {
        frac = digits(i + 1);
        i += 1 + frac;
        plain = false;
    }
    if int + frac == 0 {
        return None;
    }
    if let Some(b'e' | b'E') = raw.get(i) {
        let exp_sign = usize::from(matches!(raw.get(i + 1), Some(b'-' | b'+')));
        let exp = digits(i + 1 + exp_sign);
        if exp > 0 {
            i += 1 + exp_sign + exp;
            plain = false;
        }
    }
    let (num, unit) = raw.split_at(i);
    if unit.len() > MAX_UNIT
        || !unit
            .iter()
            .all(|b| b.is_ascii_alphabetic() || matches!(b, b'%' | b'/' | b'_'))
    {
        return None;
    }
    // Integers of up to 15 digits are exact in an f64: skip the float parser.
    let v = if plain && int <= 15 {
        let n = num[sign..]
            .iter()
            .fold(0u64, |n, d| n * 10 + (d - b'0') as u64) as f64;
        if num[0] == b'-' {
            -n
        } else {
            n
        }
    } else {
        std::str::from_utf8(num).ok()?.parse::<f64>().ok()?
    };
    v.is_finite().then_some((v, unit))
}

/// The three l2met kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `count#NAME=N`: summed.
    Count,
    /// `sample#NAME=V`: last, min, max.
    Sample,
    /// `measure#NAME=V`: a histogram.
    Measure,
}

impl Kind {
    /// The prefix as written before `#`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::Sample => "sample",
            Kind::Measure => "measure",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Whether `msg` may hold an l2met pair: a `#` right after `count`, `sample` or `measure`
/// at the start of a word. One `memchr` for the many lines without `#`.
#[inline]
pub fn has_l2met(msg: &[u8]) -> bool {
    memchr::memchr(b'#', msg).is_some()
        && memchr::memchr_iter(b'#', msg).any(|p| kind_before(msg, p).is_some())
}

/// The kind whose prefix ends at `hash` (the position of a `#`), if it starts a word.
fn kind_before(msg: &[u8], hash: usize) -> Option<Kind> {
    let head = &msg[..hash];
    let (kind, len) = if head.ends_with(b"count") {
        (Kind::Count, 5)
    } else if head.ends_with(b"sample") {
        (Kind::Sample, 6)
    } else if head.ends_with(b"measure") {
        (Kind::Measure, 7)
    } else {
        return None;
    };
    match head.len().checked_sub(len + 1).map(|i| head[i]) {
        None | Some(b' ' | b'\t') => Some(kind),
        _ => None,
    }
}

/// One l2met pair of a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    /// A pair with a number; a `count#` without a value counts 1. The name is checked with
    /// [`valid_name`] only when it is new: a known name is valid.
    Metric {
        kind: Kind,
        name: &'a [u8],
        value: f64,
        /// ASCII letters, `%`, `/` or `_` (checked by [`number_unit`]).
        unit: &'a [u8],
    },
    /// A pair with an l2met key but no name or no number; left out.
    Malformed,
}

/// The l2met pairs of `msg`, in order.
pub fn l2met(msg: &[u8]) -> impl Iterator<Item = Item<'_>> {
    logfmt::pairs(msg).filter_map(|(k, v)| {
        let hash = memchr::memchr(b'#', k)?;
        let kind = match &k[..hash] {
            b"count" => Kind::Count,
            b"sample" => Kind::Sample,
            b"measure" => Kind::Measure,
            _ => return None,
        };
        Some(item(kind, &k[hash + 1..], v.raw))
    })
}

fn item<'a>(kind: Kind, name: &'a [u8], raw: &'a [u8]) -> Item<'a> {
    let value = match (kind, raw.is_empty()) {
        (Kind::Count, true) => Some((1.0, &b""[..])),
        _ => number_unit(raw),
    };
    match value {
        Some((value, unit)) if !name.is_empty() => Item::Metric {
            kind,
            name,
            value,
            unit,
        },
        _ => Item::Malformed,
    }
}

/// The name as text when it is a name we keep: 1 to [`MAX_NAME`] printable ASCII bytes
/// without `"` or `\`.
pub fn valid_name(name: &[u8]) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'));
    std::str::from_utf8(name).ok().filter(|_| ok)
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Where the exact-layout readings answer, they answer what the general one does.
        #[test]
        fn exact_layout_reads_as_the_general_way(
            head in proptest::sample::select(vec![
                "at=info ", "at=info code=H12 ", "at=error code=H12 ", "at=error code=H1 ",
                "at=error code=R14 ", "at=error code=H99x ", "at=warning ", "",
            ]),
            connect in proptest::sample::select(vec!["0ms", "1ms", "12", "1.5ms", "", "x", "007ms"]),
            service in proptest::sample::select(vec!["23ms", "30001ms", "2.5ms", "", "1e3ms",
                "99999999999999999ms", "5s"]),
            status in proptest::sample::select(vec!["200", "503", "099", "600", "20", "2000", ""]),
            bytes in proptest::sample::select(vec!["0", "1548", "18446744073709551616",
                "9999999999999999999", "", "-1"]),
            tail in proptest::sample::select(vec!["", " protocol=https", " status=404",
                " bytes=12 protocol=http", "x", " connect=3ms", " service=oops"]),
            pad in proptest::sample::select(vec![0usize, 40, 90, 130]),
        ) {
            let pad = "p".repeat(pad);
            let msg = format!(
                "{head}desc=\"Request timeout\" method=GET path=\"/a connect=9ms b{pad}\" \
                 host=x.herokuapp.com dyno=web.1 connect={connect} service={service} \
                 status={status} bytes={bytes}{tail}"
            );
            if let Some(r) = router_exact(msg.as_bytes()) {
                proptest::prop_assert_eq!(r, router_general(msg.as_bytes()), "{}", msg);
            }
            if let Some(f) = router_fast(msg.as_bytes()) {
                proptest::prop_assert_eq!(
                    RouterLine::from(f), router_general(msg.as_bytes()), "{}", msg
                );
            }
        }
    }

    #[test]
    fn the_walk_back_finds_the_last_connect() {
        for (msg, found) in [
            (
                "a connect=1ms x dyno=w connect=2ms service=3ms status=200 bytes=4 protocol=https",
                true,
            ),
            (
                "dyno=w connect=2ms service=3ms status=200 bytes=4 protocol=http",
                true,
            ),
            ("dyno=w connect=2ms service=3ms status=200 bytes=4", true),
            ("dyno=w connect=2ms service=3.5ms status=200 bytes=4", false),
            ("dyno=w connect=2ms service=3ms status=20 bytes=4", false),
            (
                "dyno=w connect=2ms service=3ms status=200 bytes=4 tls=true",
                false,
            ),
            ("connect=2ms service=3ms status=200 bytes=4", false),
        ] {
            let at = tail_from_end(msg.as_bytes()).map(|t| t.at);
            assert_eq!(at.is_some(), found, "{msg}");
            if let Some(at) = at {
                assert_eq!(Some(at), msg.rfind(" connect="), "{msg}");
            }
        }
    }

    #[test]
    fn heroku_lines_take_the_exact_way() {
        for msg in [
            "at=info method=GET path=\"/\" host=myapp.herokuapp.com request_id=c2b0 \
             fwd=\"204.204.204.204\" dyno=web.1 connect=1ms service=23ms status=200 \
             bytes=1548 protocol=https",
            "at=error code=H12 desc=\"Request timeout\" method=GET path=\"/\" \
             host=myapp.herokuapp.com request_id=c2b0 fwd=\"204.204.204.204\" dyno=web.1 \
             connect=0ms service=30001ms status=503 bytes=0 protocol=https",
        ] {
            let r = router_exact(msg.as_bytes()).expect("the router's layout");
            assert_eq!(r, router_general(msg.as_bytes()));
            assert!(r.status.is_some() && r.service_ms.is_some());
        }
    }

    /// Every pair read, the way the fast path must agree with.
    fn router_whole(msg: &[u8]) -> RouterLine {
        let mut r = RouterLine::default();
        router_pairs(&mut r, logfmt::pairs(msg));
        r
    }

    #[test]
    fn router_lines_read_from_their_tail_agree_with_a_whole_read() {
        let lines: [&[u8]; 7] = [
            br#"at=info method=GET path="/" host=a.herokuapp.com request_id=1 fwd="1.2.3.4" dyno=web.1 connect=1ms service=23ms status=200 bytes=1548 protocol=https"#,
            br#"at=error code=H12 desc="Request timeout" method=GET path="/" host=a request_id=2 fwd="1.2.3.4" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https"#,
            br#"at=error code=H10 desc="App crashed" method=GET path="/" host=a request_id=3 fwd="1.2.3.4" dyno= connect= service= status=503 bytes= protocol=https"#,
            br#"at=info code=H81 desc="Blank app" method=GET path="/" host=a request_id=4 fwd="1.2.3.4" dyno= connect=1ms service=2ms status=502 bytes=10"#,
            br#"at=info method=GET path="/a connect=9ms service=9ms" host=a dyno=web.1 connect=1ms service=3ms status=201 bytes=5"#,
            br#"status=404 bytes=7 service=4ms connect=2ms"#,
            br#"at=info connect=1ms service=abc status=200 bytes=1"#,
        ];
        for l in lines {
            assert_eq!(router(l), router_whole(l), "{}", String::from_utf8_lossy(l));
        }
    }

    use super::*;

    const H12: &[u8] = br#"at=error code=H12 desc="Request timeout" method=GET path="/" host=myapp.herokuapp.com request_id=8601b555-6a83-4c12-8269-97c8e32cdb22 fwd="204.204.204.204" dyno=web.1 connect=6ms service=30001ms status=503 bytes=0 protocol=https"#;

    #[test]
    fn heroku_router_info_and_errors() {
        let r = router(br#"at=info method=GET path="/" host=myapp.herokuapp.com request_id=c6b0b0a2 fwd="204.204.204.204" dyno=web.1 connect=1ms service=18ms status=200 bytes=13 protocol=https"#);
        assert_eq!(
            r,
            RouterLine {
                status: Some(200),
                code: None,
                service_ms: Some(18.0),
                connect_ms: Some(1.0),
                bytes: Some(13),
                malformed: 0
            }
        );
        let r = router(H12);
        assert_eq!(
            (r.status, r.code, r.service_ms),
            (Some(503), Some(12), Some(30001.0))
        );
        // H10: empty dyno, connect, service and bytes are absent, not malformed.
        let r = router(br#"at=error code=H10 desc="App crashed" method=GET path="/" host=myapp.herokuapp.com fwd=17.17.17.17 dyno= connect= service= status=503 bytes= protocol=https"#);
        assert_eq!(
            (r.status, r.code, r.service_ms, r.bytes, r.malformed),
            (Some(503), Some(10), None, None, 0)
        );
    }

    #[test]
    fn router_malformed_values_are_left_out() {
        let r =
            router(b"service=abc connect=-1ms status= bytes=12kB code=R14 path=\"/x service=1ms\"");
        assert_eq!(
            r,
            RouterLine {
                malformed: 3,
                ..RouterLine::default()
            }
        );
        assert_eq!(router(b"status=5000").status, None);
        assert_eq!(router(b"status=099").status, None);
        assert_eq!(router(b"status=200 service=2s").service_ms, None);
        assert_eq!(router(b"\xff\xfe status=404").status, Some(404));
    }

    #[test]
    fn numbers_and_units() {
        assert_eq!(number_unit(b"23"), Some((23.0, &b""[..])));
        assert_eq!(number_unit(b"23ms"), Some((23.0, &b"ms"[..])));
        assert_eq!(number_unit(b"212.3MB"), Some((212.3, &b"MB"[..])));
        assert_eq!(number_unit(b"-1.5e3"), Some((-1500.0, &b""[..])));
        assert_eq!(number_unit(b"3em"), Some((3.0, &b"em"[..])));
        assert_eq!(number_unit(b".5"), Some((0.5, &b""[..])));
        assert_eq!(number_unit(b"7."), Some((7.0, &b""[..])));
        assert_eq!(number_unit(b"348836pages"), Some((348836.0, &b"pages"[..])));
        assert_eq!(number_unit(b"99%"), Some((99.0, &b"%"[..])));
        assert_eq!(
            number_unit(b"12345678901234567890"),
            Some((1.2345678901234567e19, &b""[..]))
        );
        for bad in [
            &b""[..],
            b"ms",
            b"-",
            b".",
            b"abc",
            b"1.2.3",
            b"1e999",
            b"inf",
            b"NaN",
            b"5 ms",
            b"5m-s",
            b"1averyveryverylongunit",
        ] {
            assert_eq!(number_unit(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn l2met_pairs_from_app_and_runtime_lines() {
        let line =
            b"measure#db.query=23ms count#signups count#bytes.out=1548 sample#db.pool=7 at=info";
        let items: Vec<_> = l2met(line).collect();
        assert_eq!(
            items,
            vec![
                Item::Metric {
                    kind: Kind::Measure,
                    name: b"db.query",
                    value: 23.0,
                    unit: b"ms"
                },
                Item::Metric {
                    kind: Kind::Count,
                    name: b"signups",
                    value: 1.0,
                    unit: b""
                },
                Item::Metric {
                    kind: Kind::Count,
                    name: b"bytes.out",
                    value: 1548.0,
                    unit: b""
                },
                Item::Metric {
                    kind: Kind::Sample,
                    name: b"db.pool",
                    value: 7.0,
                    unit: b""
                },
            ]
        );
        let runtime = b"source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 sample#memory_total=212.3MB sample#load_avg_1m=0.2";
        assert!(has_l2met(runtime));
        let items: Vec<_> = l2met(runtime).collect();
        assert_eq!(
            items[0],
            Item::Metric {
                kind: Kind::Sample,
                name: b"memory_total",
                value: 212.3,
                unit: b"MB"
            }
        );
        assert_eq!(
            items[1],
            Item::Metric {
                kind: Kind::Sample,
                name: b"load_avg_1m",
                value: 0.2,
                unit: b""
            }
        );
    }

    #[test]
    fn l2met_malformed_and_lookalikes() {
        let items: Vec<_> =
            l2met(b"sample#x=fast measure#y= measure#=3 count#z=1e999 sample#=1").collect();
        assert_eq!(items, vec![Item::Malformed; 5]);
        // Names are checked when they are new.
        assert_eq!(valid_name(b"db.pool"), Some("db.pool"));
        for bad in [&b""[..], b"q\"", b"a\\b", b"\xff", &[b'x'; MAX_NAME + 1]] {
            assert_eq!(valid_name(bad), None);
        }
        // Not l2met: a prefix inside a word, a `#` elsewhere, a quoted value.
        for line in [
            &b"recount#x=1"[..],
            b"Processing by UsersController#show",
            b"msg=\"count#x=1\"",
            b"measures#x=1",
        ] {
            assert_eq!(
                l2met(line).count(),
                0,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(!has_l2met(b"Processing by UsersController#show as HTML"));
        assert!(!has_l2met(b"no hash at all"));
        assert!(has_l2met(b"count#x"));
        assert!(has_l2met(b"a=1\tmeasure#x=1"));
    }
}
