//! RFC 5424 syslog messages, parsed with nom over `&[u8]` into a view that borrows the input.
//!
//! Two entry points: [`parse`] is the exact RFC 5424 grammar, [`parse_lenient`] accepts what
//! real senders emit (log-shuttle and Heroku's HTTPS drains leave STRUCTURED-DATA out, most
//! senders end a line with LF). Neither allocates: every field of [`Message`] is a slice of
//! the input, and decoding (UTF-8, escapes) is left to whoever reads a field.

use nom::bytes::complete::{tag, take_while1};
use nom::error::ErrorKind;
use nom::{Err as NomErr, IResult};
use std::fmt;

/// A parsed RFC 5424 message. Every field borrows the frame it was parsed from; fields that
/// were the NILVALUE `-` are the one-byte slice `b"-"` (use [`Message::is_nil`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// PRI value, 0..=191.
    pub pri: u8,
    /// VERSION, 1 for every real sender.
    pub version: u16,
    /// TIMESTAMP as sent (`-` when nil).
    pub timestamp: &'a [u8],
    /// HOSTNAME as sent; logplex drops it but drains may want it.
    pub hostname: &'a [u8],
    /// APP-NAME: the token (`t.…`) on TCP and UDP input.
    pub app_name: &'a [u8],
    /// PROCID: the dyno (`web.1`) or component (`router`) shown as `SOURCE[PROCID]`.
    pub procid: &'a [u8],
    /// MSGID as sent (`-` for every Heroku producer).
    pub msgid: &'a [u8],
    /// STRUCTURED-DATA, validated, kept as one slice (`-` when nil).
    pub structured_data: &'a [u8],
    /// MSG, possibly empty, BOM stripped; bytes, not necessarily UTF-8.
    pub msg: &'a [u8],
}

impl Message<'_> {
    /// Whether a field is the NILVALUE `-`; nil fields are kept as `b"-"` so that a field is
    /// always a slice of the input.
    pub fn is_nil(field: &[u8]) -> bool {
        field == b"-"
    }
    /// Facility (PRI / 8), for drains and filters that care.
    pub fn facility(&self) -> u8 {
        self.pri >> 3
    }
    /// Severity (PRI % 8), for drains and filters that care.
    pub fn severity(&self) -> u8 {
        self.pri & 7
    }
}

/// What was wrong and where (byte offset into the input). Its `Display` is one sentence fit
/// for a user (HTTP 400 bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// Which rule of the grammar failed.
    pub kind: ParseErrorKind,
    /// Byte offset into the parsed input where the failing rule starts or stopped matching.
    pub offset: usize,
}

/// The grammar rule that failed; lets callers count parse failures by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The input was empty.
    Empty,
    /// `<PRI>` missing or malformed (no `<`, not 1-3 digits, leading zero, no `>`).
    Pri,
    /// PRI above 191.
    PriOutOfRange,
    /// VERSION is not 1-3 digits starting with a non-zero digit.
    Version,
    /// TIMESTAMP is neither `-` nor RFC 3339 with a time zone.
    Timestamp,
    /// HOSTNAME is not 1-255 printable US-ASCII characters.
    Hostname,
    /// APP-NAME is not 1-48 printable US-ASCII characters.
    AppName,
    /// PROCID is not 1-128 printable US-ASCII characters.
    ProcId,
    /// MSGID is not 1-32 printable US-ASCII characters.
    MsgId,
    /// STRUCTURED-DATA is neither `-` nor well-formed `[id param="value" ...]` elements.
    StructuredData,
    /// A required SP between header fields is missing.
    Space,
}

impl ParseErrorKind {
    fn describe(self) -> &'static str {
        use ParseErrorKind::*;
        match self {
            Empty => "the message is empty",
            Pri => "the message must start with <PRI>, a number from 0 to 191 in angle brackets without leading zeros",
            PriOutOfRange => "PRI must be a number from 0 to 191",
            Version => "VERSION must be 1 to 3 digits not starting with 0 (usually 1)",
            Timestamp => "TIMESTAMP must be '-' or like 2016-03-08T02:43:26.693600+00:00, with a time zone",
            Hostname => "HOSTNAME must be 1 to 255 printable ASCII characters",
            AppName => "APP-NAME must be 1 to 48 printable ASCII characters",
            ProcId => "PROCID must be 1 to 128 printable ASCII characters",
            MsgId => "MSGID must be 1 to 32 printable ASCII characters",
            StructuredData => "STRUCTURED-DATA must be '-' or elements like [id key=\"value\"] with \\\", \\\\ and \\] escaped",
            Space => "a single space is expected between the header fields and before MSG",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "syslog message at byte {}: {}",
            self.offset,
            self.kind.describe()
        )
    }
}

impl std::error::Error for ParseError {}

/// Strict RFC 5424 grammar.
///
/// MSG is everything after the SP that follows STRUCTURED-DATA, byte for byte (a trailing LF
/// is part of it); a UTF-8 BOM at its start is stripped.
pub fn parse(input: &[u8]) -> Result<Message<'_>, ParseError> {
    message::<false>(input)
}

/// What real senders emit: missing SD, trailing LF/CRLF, BOM before MSG.
///
/// Differences from [`parse`]:
/// - STRUCTURED-DATA may be left out (`<190>1 TS host app web.1 - hello`, as log-shuttle and
///   Heroku's HTTPS drains send): when what follows MSGID is not `-` + SP and not a
///   well-formed SD followed by SP or the end, SD is taken as nil and the rest is MSG. An SD
///   element only counts as SD when it looks like one (an SD-ID with `@` or registered by
///   IANA, or parameters), so `web.1 - [req-id] Started GET` keeps its tag in MSG. A
///   message may also end right after MSGID. A left-out SD reads as the static `b"-"`.
/// - one trailing LF or CRLF is trimmed from MSG.
/// - PRI may have leading zeros (`<013>`), the fraction of a second may have up to 9 digits
///   (Go's `RFC3339Nano`), and an unescaped `]` inside an SD PARAM-VALUE is accepted.
///
/// Still rejected, as in [`parse`]: PRI above 191 and timestamps without a time zone (their
/// instant is unknowable, and the session line shows the timestamp as sent).
pub fn parse_lenient(input: &[u8]) -> Result<Message<'_>, ParseError> {
    message::<true>(input)
}

/// The nom error: only where it failed; which rule failed is added by [`step`].
#[derive(Debug)]
struct Fail<'a>(&'a [u8]);

impl<'a> nom::error::ParseError<&'a [u8]> for Fail<'a> {
    fn from_error_kind(input: &'a [u8], _: ErrorKind) -> Self {
        Fail(input)
    }
    fn append(_: &'a [u8], _: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, O> = IResult<&'a [u8], O, Fail<'a>>;

fn fail<O>(at: &[u8]) -> PResult<'_, O> {
    Err(NomErr::Error(Fail(at)))
}

/// Runs one rule and names it in the error, with the offset counted from the whole input.
#[inline(always)]
fn step<'a, O>(
    whole: &'a [u8],
    kind: ParseErrorKind,
    r: PResult<'a, O>,
) -> Result<(&'a [u8], O), ParseError> {
    r.map_err(|e| {
        let at = match e {
            NomErr::Error(Fail(at)) | NomErr::Failure(Fail(at)) => at.len(),
            NomErr::Incomplete(_) => 0,
        };
        ParseError {
            kind,
            offset: whole.len() - at,
        }
    })
}

/// PRINTUSASCII = %d33-126
#[inline(always)]
fn is_print(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// SD-NAME characters: PRINTUSASCII except `=`, SP, `]`, `"`.
#[inline(always)]
fn is_sd_name(b: u8) -> bool {
    is_print(b) && b != b'=' && b != b']' && b != b'"'
}

/// One byte, as nom's `tag` of one byte; written out because it runs six times per message.
#[inline(always)]
fn byte(i: &[u8], b: u8) -> PResult<'_, &[u8]> {
    match i {
        [first, rest @ ..] if *first == b => Ok((rest, &i[..1])),
        _ => fail(i),
    }
}

#[inline(always)]
fn sp(i: &[u8]) -> PResult<'_, &[u8]> {
    byte(i, b' ')
}

/// PRI = "<" PRIVAL ">"; returns the digits so that the caller can tell a malformed PRI from
/// one out of range.
fn pri(i: &[u8]) -> PResult<'_, &[u8]> {
    let (i, _) = byte(i, b'<')?;
    let (i, digits) = digits(i, 3)?;
    let (i, _) = byte(i, b'>')?;
    Ok((i, digits))
}

/// VERSION = NONZERO-DIGIT 0*2DIGIT
fn version(i: &[u8]) -> PResult<'_, u16> {
    let (rest, digits) = digits(i, 3)?;
    if digits[0] == b'0' || rest.first().is_some_and(|b| b.is_ascii_digit()) {
        return fail(i);
    }
    Ok((
        rest,
        digits
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0')),
    ))
}

/// Two ASCII digits as a number; `None` when either is not a digit.
#[inline(always)]
fn two_digits(b: &[u8]) -> Option<u8> {
    let (a, c) = (b[0].wrapping_sub(b'0'), b[1].wrapping_sub(b'0'));
    (a < 10 && c < 10).then(|| a * 10 + c)
}

/// Whether `h` (19 bytes) is `DDDD-DD-DDTDD:DD:DD` with month 1-12, day 1-31, hour 0-23,
/// minute and second 0-59.
///
/// The shape is checked as one 16-byte word (the timestamp was a sixth of the parse time
/// in `perf`; this cut instructions per parse by 6% under cachegrind): XOR with `'0'`
/// leaves 0-9 in each digit byte, and a digit byte is bad when its high nibble is set
/// before or after adding 6.
#[inline(always)]
fn fixed_date_time(h: &[u8]) -> bool {
    const TEMPLATE: &[u8; 16] = b"0000-00-00T00:00";
    const DIGIT: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0, 0xff, 0xff, 0, 0xff, 0xff, 0, 0xff, 0xff,
    ];
    let word = |b: &[u8]| u128::from_le_bytes(b.try_into().unwrap_or([0; 16]));
    let x = word(&h[..16]);
    let digit = u128::from_le_bytes(DIGIT);
    let y = x ^ (u128::from_le_bytes([b'0'; 16]) & digit);
    let high = u128::from_le_bytes([0xf0; 16]);
    let bad_digit = ((y & high) | (y.wrapping_add(u128::from_le_bytes([6; 16])) & high)) & digit;
    let bad_punct = (x ^ word(TEMPLATE)) & !digit;
    if bad_digit | bad_punct != 0 || h[16] != b':' {
        return false;
    }
    let two = |a: usize| (h[a] - b'0') * 10 + (h[a + 1] - b'0');
    matches!(two_digits(&h[17..19]), Some(0..=59))
        && (1..=12).contains(&two(5))
        && (1..=31).contains(&two(8))
        && two(11) <= 23
        && two(14) <= 59
}

/// TIMESTAMP = NILVALUE / FULL-DATE "T" FULL-TIME, with TIME-SECFRAC of 1-6 digits (1-9 when
/// lenient) and a mandatory TIME-OFFSET. Field ranges are checked, not calendar validity
/// (February 31st passes, as in RFC 3339's grammar).
#[inline(always)]
fn timestamp(i: &[u8], max_frac: usize) -> PResult<'_, &[u8]> {
    if let [b'-', rest @ ..] = i {
        return Ok((rest, &i[..1]));
    }
    // "2016-03-08T02:43:26" is 19 fixed bytes: check them as words, then the ranges.
    let Some(h) = i.get(..19) else { return fail(i) };
    if !fixed_date_time(h) {
        return fail(i);
    }
    let mut n = 19;
    if i.get(n) == Some(&b'.') {
        let (_, frac) = digits(&i[n + 1..], max_frac)?;
        n += 1 + frac.len();
    }
    match i.get(n) {
        Some(b'Z') => n += 1,
        Some(b'+' | b'-') => {
            let Some(z) = i.get(n + 1..n + 6) else {
                return fail(&i[n..]);
            };
            if !matches!(two_digits(&z[..2]), Some(0..=23))
                || z[2] != b':'
                || !matches!(two_digits(&z[3..5]), Some(0..=59))
            {
                return fail(&i[n..]);
            }
            n += 6;
        }
        _ => return fail(&i[n.min(i.len())..]),
    }
    // The next byte must end the field; anything else (a 7th fraction digit...) is wrong.
    if i.get(n).is_some_and(|&b| b != b' ') {
        return fail(&i[n..]);
    }
    Ok((&i[n..], &i[..n]))
}

/// A header field: NILVALUE / 1*max PRINTUSASCII, followed by SP or the end.
///
/// Same result as `take_while1(is_print)`, measured faster (see [`print_len`]).
#[inline(always)]
fn header_field(i: &[u8], max: usize) -> PResult<'_, &[u8]> {
    let n = print_len(i);
    if n == 0 {
        return fail(i);
    }
    if n > max {
        return fail(&i[max..]);
    }
    Ok((&i[n..], &i[..n]))
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Length of the leading run of PRINTUSASCII bytes, 8 bytes at a time.
///
/// Header fields are short (4-48 bytes), too short for memchr's setup and too long for a
/// byte loop to be cheap; this word-at-a-time scan was the fastest in `benches/parse.rs`.
/// In each little-endian word, a byte is flagged when it is below 33 (the subtraction
/// borrows) or above 126 (the addition carries, or its top bit is set); borrows and carries
/// only move towards higher bytes, so the lowest flag is exact.
#[inline(always)]
fn print_len(i: &[u8]) -> usize {
    let mut n = 0;
    while let Some(w) = i.get(n..n + 8) {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        let below = x.wrapping_sub(ONES * 33) & !x;
        let above = x.wrapping_add(ONES) | x; // +1 carries 127 into the top bit
        let bad = (below | above) & HIGHS;
        if bad != 0 {
            return n + (bad.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + i[n..]
        .iter()
        .position(|&b| !is_print(b))
        .unwrap_or(i.len() - n)
}

/// 1 to `max` ASCII digits.
#[inline(always)]
fn digits(i: &[u8], max: usize) -> PResult<'_, &[u8]> {
    let n = i
        .iter()
        .take(max)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if n == 0 {
        return fail(i);
    }
    Ok((&i[n..], &i[..n]))
}

/// SD-NAME = 1*32 SD-NAME characters.
fn sd_name(i: &[u8]) -> PResult<'_, &[u8]> {
    let (rest, n) = take_while1(is_sd_name)(i)?;
    if n.len() > 32 {
        return fail(&i[32..]);
    }
    Ok((rest, n))
}

/// PARAM-VALUE up to its closing quote, escapes left in place. Strict: UTF-8 and every `]`
/// escaped, as RFC 5424 says.
fn param_value(i: &[u8], lenient: bool) -> PResult<'_, &[u8]> {
    let mut n = 0;
    while n < i.len() {
        match i[n] {
            b'\\' => n += 2,
            b'"' => {
                let v = &i[..n];
                if !lenient && std::str::from_utf8(v).is_err() {
                    return fail(i);
                }
                return Ok((&i[n..], v));
            }
            b']' if !lenient => return fail(&i[n..]),
            _ => n += 1,
        }
    }
    fail(&i[i.len()..])
}

/// SD-ELEMENT = "[" SD-ID *(SP SD-PARAM) "]", SD-PARAM = PARAM-NAME "=" %d34 PARAM-VALUE %d34
fn sd_element(i: &[u8], lenient: bool) -> PResult<'_, ()> {
    let (mut i, _) = tag(&b"["[..])(i)?;
    (i, _) = sd_name(i)?;
    loop {
        if let [b']', rest @ ..] = i {
            return Ok((rest, ()));
        }
        (i, _) = sp(i)?;
        (i, _) = sd_name(i)?;
        (i, _) = tag(&b"=\""[..])(i)?;
        (i, _) = param_value(i, lenient)?;
        (i, _) = tag(&b"\""[..])(i)?;
    }
}

/// STRUCTURED-DATA = NILVALUE / 1*SD-ELEMENT, returned as one slice.
fn structured_data(i: &[u8], lenient: bool) -> PResult<'_, &[u8]> {
    if let [b'-', rest @ ..] = i {
        return Ok((rest, &i[..1]));
    }
    let (mut rest, ()) = sd_element(i, lenient)?;
    while rest.first() == Some(&b'[') {
        (rest, ()) = sd_element(rest, lenient)?;
    }
    Ok((rest, &i[..i.len() - rest.len()]))
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The NILVALUE; also what a left-out STRUCTURED-DATA reads as (the one field that is then
/// not a slice of the input).
const NIL: &[u8] = b"-";

/// SD-IDs without `@` that IANA registered (RFC 5424 §7, RFC 5674, RFC 5675).
const IANA_SD_IDS: [&[u8]; 5] = [b"timeQuality", b"origin", b"meta", b"alarm", b"snmp"];

/// Whether a well-formed SD at the start of what may be MSG is really SD. Used only when SD
/// may have been left out: a message like `[8601b555-6a83] Started GET` (Rails' tagged
/// logging) is also a well-formed SD element. Real SD has an `enterprise@number` or
/// registered SD-ID, or parameters.
fn plausible_sd(sd: &[u8]) -> bool {
    let id_end = sd
        .iter()
        .position(|&b| b == b' ' || b == b']')
        .unwrap_or(sd.len());
    let id = &sd[1.min(id_end)..id_end];
    sd.get(id_end) == Some(&b' ') || id.contains(&b'@') || IANA_SD_IDS.contains(&id)
}

/// Both grammars; `LENIENT` is a const so that each entry point gets its own straight code.
fn message<const LENIENT: bool>(input: &[u8]) -> Result<Message<'_>, ParseError> {
    let lenient = LENIENT;
    use ParseErrorKind as K;
    if input.is_empty() {
        return Err(ParseError {
            kind: K::Empty,
            offset: 0,
        });
    }
    let w = input;
    let (i, digits) = step(w, K::Pri, pri(input))?;
    let digits_at = w.len() - i.len() - 1 - digits.len();
    if digits.len() > 1 && digits[0] == b'0' && !lenient {
        return Err(ParseError {
            kind: K::Pri,
            offset: digits_at,
        });
    }
    let prival = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if prival > 191 {
        return Err(ParseError {
            kind: K::PriOutOfRange,
            offset: digits_at,
        });
    }
    let (i, version) = step(w, K::Version, version(i))?;
    let (i, _) = step(w, K::Space, sp(i))?;
    let (i, timestamp) = step(w, K::Timestamp, timestamp(i, if lenient { 9 } else { 6 }))?;
    let (i, _) = step(w, K::Space, sp(i))?;
    let (i, hostname) = step(w, K::Hostname, header_field(i, 255))?;
    let (i, _) = step(w, K::Space, sp(i))?;
    let (i, app_name) = step(w, K::AppName, header_field(i, 48))?;
    let (i, _) = step(w, K::Space, sp(i))?;
    let (i, procid) = step(w, K::ProcId, header_field(i, 128))?;
    let (i, _) = step(w, K::Space, sp(i))?;
    let (i, msgid) = step(w, K::MsgId, header_field(i, 32))?;

    // MSG is always a slice of the input, even when empty, so that callers can cut it out of
    // the frame with `Bytes::slice_ref`.
    let end = &w[w.len()..];
    let (structured_data, msg): (&[u8], &[u8]) = if lenient {
        match i {
            [] | [b' '] => (NIL, end),
            [b' ', rest @ ..] => match structured_data(rest, true) {
                Ok(([], sd)) if sd == NIL || plausible_sd(sd) => (sd, end),
                Ok(([b' ', msg @ ..], sd)) if sd == NIL || plausible_sd(sd) => (sd, msg),
                _ => (NIL, rest),
            },
            _ => {
                return Err(ParseError {
                    kind: K::Space,
                    offset: w.len() - i.len(),
                })
            }
        }
    } else {
        let (i, _) = step(w, K::Space, sp(i))?;
        let (i, sd) = step(w, K::StructuredData, structured_data(i, false))?;
        match i {
            [] => (sd, end),
            [b' ', msg @ ..] => (sd, msg),
            _ => {
                return Err(ParseError {
                    kind: K::Space,
                    offset: w.len() - i.len(),
                })
            }
        }
    };
    let mut msg = msg.strip_prefix(BOM).unwrap_or(msg);
    if lenient {
        if let Some(m) = msg.strip_suffix(b"\n") {
            msg = m.strip_suffix(b"\r").unwrap_or(m);
        }
    }
    Ok(Message {
        pri: prival as u8,
        version,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples() {
        // RFC 5424 §6.5, example 1 (with the BOM) and example 3.
        let m = parse(b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8").unwrap();
        assert_eq!(m.pri, 34);
        assert_eq!(m.msgid, b"ID47");
        assert_eq!(m.msg, b"'su root' failed for lonvick on /dev/pts/8");
        let m = parse(br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry..."#).unwrap();
        assert_eq!(
            m.structured_data,
            br#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]"#
        );
        assert_eq!(m.msg, b"An application event log entry...");
        // Example 4: two SD elements and no MSG.
        let m = parse(br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"][examplePriority@32473 class="high"]"#).unwrap();
        assert_eq!(m.msg, b"");
        assert!(m.structured_data.ends_with(br#"class="high"]"#));
    }

    #[test]
    fn print_len_matches_a_byte_loop() {
        let naive = |i: &[u8]| i.iter().position(|&b| !is_print(b)).unwrap_or(i.len());
        let mut input = Vec::new();
        for b in 0..=255u8 {
            for at in 0..20 {
                input.clear();
                input.extend(std::iter::repeat_n(b'a', at));
                input.push(b);
                input.extend(std::iter::repeat_n(b'z', 7));
                assert_eq!(print_len(&input), naive(&input), "byte {b} at {at}");
                for end in 0..input.len() {
                    assert_eq!(print_len(&input[..end]), naive(&input[..end]));
                }
            }
        }
    }

    #[test]
    fn fixed_date_time_matches_a_byte_check() {
        let naive = |h: &[u8]| {
            h[..4].iter().all(u8::is_ascii_digit)
                && h[4] == b'-'
                && matches!(two_digits(&h[5..7]), Some(1..=12))
                && h[7] == b'-'
                && matches!(two_digits(&h[8..10]), Some(1..=31))
                && h[10] == b'T'
                && matches!(two_digits(&h[11..13]), Some(0..=23))
                && h[13] == b':'
                && matches!(two_digits(&h[14..16]), Some(0..=59))
                && h[16] == b':'
                && matches!(two_digits(&h[17..19]), Some(0..=59))
        };
        let good = *b"2016-03-08T02:43:26";
        assert!(fixed_date_time(&good));
        for at in 0..19 {
            for b in 0..=255u8 {
                let mut h = good;
                h[at] = b;
                assert_eq!(fixed_date_time(&h), naive(&h), "byte {b} at {at}");
            }
        }
        for (m, d, hh, mm) in [
            (0, 1, 0, 0),
            (12, 31, 23, 59),
            (13, 1, 0, 0),
            (1, 0, 0, 0),
            (1, 32, 0, 0),
            (1, 1, 24, 0),
            (1, 1, 0, 60),
        ] {
            let h = format!("2016-{m:02}-{d:02}T{hh:02}:{mm:02}:00");
            assert_eq!(fixed_date_time(h.as_bytes()), naive(h.as_bytes()), "{h}");
        }
    }

    #[test]
    fn offsets_point_at_the_fault() {
        let e = parse(b"<34>1 2003-10-11T22:14:15.003 host su - - - x").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Timestamp);
        assert_eq!(e.offset, 29);
        let e = parse(b"<192>1 - - - - - -").unwrap_err();
        assert_eq!((e.kind, e.offset), (ParseErrorKind::PriOutOfRange, 1));
    }
}
