//! logfmt, as in Heroku router lines: borrowed key/value pairs and numeric comparisons.
//!
//! Used by alert rules (`where = "status>=500"`) and `--grep`-like filters. The parser is
//! forgiving: any byte string yields some pairs and never panics, because MSG is whatever a
//! dyno printed (Rails' `Started GET "/" for …` comes out as a row of flags).

use std::borrow::Cow;
use std::cmp::Ordering;

/// Iterator over `key=value` pairs of a line.
///
/// Pairs are separated by spaces (or tabs). A value is bare (up to the next space) or
/// double-quoted with `\"` and `\\` escapes; an unterminated quote runs to the end of the
/// line. A key without `=` is a flag with an empty value. A pair with an empty key
/// (`=x`) is skipped.
pub fn pairs(input: &[u8]) -> Pairs<'_> {
    Pairs { rest: input }
}

/// The iterator returned by [`pairs`]; borrows the line.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    rest: &'a [u8],
}

#[inline]
fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], Value<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let start = self.rest.iter().position(|&b| !is_space(b))?;
            let s = &self.rest[start..];
            let key_end = s
                .iter()
                .position(|&b| b == b'=' || is_space(b))
                .unwrap_or(s.len());
            let key = &s[..key_end];
            let (value, used) = if s.get(key_end) == Some(&b'=') {
                let v = &s[key_end + 1..];
                let (value, n) = value(v);
                (value, key_end + 1 + n)
            } else {
                (
                    Value {
                        raw: &s[key_end..key_end],
                        quoted: false,
                    },
                    key_end,
                )
            };
            self.rest = &s[used..];
            if !key.is_empty() {
                return Some((key, value));
            }
        }
    }
}

/// Reads a value at the start of `v`; returns it and the bytes it used (quotes included).
fn value(v: &[u8]) -> (Value<'_>, usize) {
    if v.first() == Some(&b'"') {
        let body = &v[1..];
        let mut n = 0;
        while n < body.len() {
            match body[n] {
                b'\\' => n += 2,
                b'"' => {
                    return (
                        Value {
                            raw: &body[..n],
                            quoted: true,
                        },
                        n + 2,
                    )
                }
                _ => n += 1,
            }
        }
        // Unterminated: the rest of the line (a trailing lone backslash may overshoot).
        (
            Value {
                raw: body,
                quoted: true,
            },
            v.len(),
        )
    } else {
        let n = v.iter().position(|&b| is_space(b)).unwrap_or(v.len());
        (
            Value {
                raw: &v[..n],
                quoted: false,
            },
            n,
        )
    }
}

/// A value as it appears in the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a> {
    /// The raw value without quotes; escapes still present when `quoted`.
    pub raw: &'a [u8],
    /// Whether the value was double-quoted (and so may hold escapes).
    pub quoted: bool,
}

impl<'a> Value<'a> {
    /// The value with `\"` and `\\` unescaped; borrows unless there was an escape. Other
    /// backslashes are kept as they are.
    pub fn unescape(&self) -> Cow<'a, [u8]> {
        if !self.quoted || !self.raw.contains(&b'\\') {
            return Cow::Borrowed(self.raw);
        }
        let mut out = Vec::with_capacity(self.raw.len());
        let mut i = 0;
        while i < self.raw.len() {
            match (self.raw[i], self.raw.get(i + 1)) {
                (b'\\', Some(&c @ (b'"' | b'\\'))) => {
                    out.push(c);
                    i += 2;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        Cow::Owned(out)
    }

    /// The value as a number, when it is a plain decimal number (`200`, `-1.5`, `1e3`).
    ///
    /// Values with a unit (`30000ms`, `12kB`) are *not* numbers: a rule comparing
    /// `service>1000` would otherwise silently mix units. `inf` and `NaN` are not numbers.
    pub fn as_f64(&self) -> Option<f64> {
        parse_number(self.raw)
    }
}

/// A plain decimal number: optional sign, digits with an optional fraction and exponent.
fn parse_number(raw: &[u8]) -> Option<f64> {
    let digits = raw
        .strip_prefix(b"-")
        .or_else(|| raw.strip_prefix(b"+"))
        .unwrap_or(raw);
    // Rust's float parser also takes "inf", "NaN" and "infinity"; a number starts with a digit
    // or a dot followed by one.
    let starts_ok = match digits {
        [d, ..] if d.is_ascii_digit() => true,
        [b'.', d, ..] => d.is_ascii_digit(),
        _ => false,
    };
    if !starts_ok
        || !digits
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// The first value of `key` in `line`.
pub fn get<'a>(line: &'a [u8], key: &[u8]) -> Option<Value<'a>> {
    pairs(line).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// A comparison operator of an alert predicate (`status>=500`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `=` or `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// Reads an operator's text: `=`, `==`, `!=`, `<`, `<=`, `>`, `>=`.
    pub fn parse(text: &[u8]) -> Option<CmpOp> {
        Some(match text {
            b"=" | b"==" => CmpOp::Eq,
            b"!=" => CmpOp::Ne,
            b"<" => CmpOp::Lt,
            b"<=" => CmpOp::Le,
            b">" => CmpOp::Gt,
            b">=" => CmpOp::Ge,
            _ => return None,
        })
    }

    /// The operator as written in a predicate.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        }
    }
}

/// One `key OP value` term of a predicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The logfmt key the term reads (its first value in MSG).
    pub key: Vec<u8>,
    /// How the value is compared with [`Term::value`].
    pub op: CmpOp,
    /// Unquoted and unescaped.
    pub value: Vec<u8>,
}

/// Why a predicate cannot be used: a phrase that completes "Predicate "TEXT" …", e.g.
/// `has no operator after "status"; use =, !=, <, <=, > or >=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredicateError(pub String);

impl std::fmt::Display for PredicateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PredicateError {}

const OPERATORS: &str = "use =, !=, <, <=, > or >=";

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b'#' | b'@' | b':')
}

fn is_op_byte(b: u8) -> bool {
    b.is_ascii_punctuation() && !is_key_byte(b) && b != b'"' && b != b'\''
}

/// Parses a predicate on logfmt pairs: `key OP value [and key OP value ...]`, e.g.
/// `status>=500 and at=error` or `code = "H12"`. Values are bare words or double-quoted
/// (`\"` and `\\` escaped); `<`, `<=`, `>`, `>=` need a number. Not on the hot path:
/// rules are parsed once.
pub fn parse_predicate(text: &[u8]) -> Result<Vec<Term>, PredicateError> {
    let err = |reason: String| PredicateError(reason);
    let mut terms = Vec::new();
    let mut rest = text.trim_ascii_start();
    if rest.is_empty() {
        return Err(err("is empty".into()));
    }
    loop {
        let k = rest
            .iter()
            .position(|&b| !is_key_byte(b))
            .unwrap_or(rest.len());
        let key = &rest[..k];
        rest = rest[k..].trim_ascii_start();
        if key.is_empty() {
            let at = String::from_utf8_lossy(rest);
            return Err(err(if at.is_empty() {
                "ends without a term; join terms with \"and\"".into()
            } else {
                format!("needs a key before {at:?}")
            }));
        }
        let key_s = String::from_utf8_lossy(key).into_owned();
        let o = rest
            .iter()
            .position(|&b| !is_op_byte(b))
            .unwrap_or(rest.len());
        let op_text = &rest[..o];
        if op_text.is_empty() {
            return Err(err(format!("has no operator after {key_s:?}; {OPERATORS}")));
        }
        let op = CmpOp::parse(op_text).ok_or_else(|| {
            err(format!(
                "has an unknown operator {:?}; {OPERATORS}",
                String::from_utf8_lossy(op_text)
            ))
        })?;
        rest = rest[o..].trim_ascii_start();
        let (value, used) = match rest.first() {
            Some(b'"') => {
                let body = &rest[1..];
                let mut n = 0;
                let mut out = Vec::new();
                loop {
                    match body.get(n) {
                        None => {
                            return Err(err(format!("has an unterminated quote after {key_s:?}")))
                        }
                        Some(b'\\') if matches!(body.get(n + 1), Some(b'"' | b'\\')) => {
                            out.push(body[n + 1]);
                            n += 2;
                        }
                        Some(b'"') => break,
                        Some(&b) => {
                            out.push(b);
                            n += 1;
                        }
                    }
                }
                (out, n + 2)
            }
            _ => {
                let n = rest
                    .iter()
                    .position(|b| b.is_ascii_whitespace())
                    .unwrap_or(rest.len());
                (rest[..n].to_vec(), n)
            }
        };
        if value.is_empty() && used == 0 {
            return Err(err(format!(
                "needs a value after {:?}",
                format!("{key_s}{}", op.as_str())
            )));
        }
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) && parse_number(&value).is_none() {
            return Err(err(format!(
                "compares {key_s:?} with {:?} by {:?}, which needs a number",
                String::from_utf8_lossy(&value),
                op.as_str()
            )));
        }
        terms.push(Term {
            key: key.to_vec(),
            op,
            value,
        });
        rest = rest[used..].trim_ascii_start();
        if rest.is_empty() {
            return Ok(terms);
        }
        match rest.strip_prefix(b"and") {
            Some(r) if r.first().is_some_and(|b| b.is_ascii_whitespace()) || r.is_empty() => {
                rest = r.trim_ascii_start();
            }
            _ => {
                return Err(err(format!(
                    "has {:?} after a term; join terms with \"and\"",
                    String::from_utf8_lossy(rest)
                )))
            }
        }
    }
}

/// Compares a value with a right-hand side: as numbers when both sides are plain numbers
/// (see [`Value::as_f64`]), else as bytes for `=`/`!=` (the value unescaped); ordering a
/// non-number is false.
pub fn compare(value: &Value, op: CmpOp, rhs: &[u8]) -> bool {
    if let (Some(l), Some(r)) = (value.as_f64(), parse_number(rhs)) {
        return l.partial_cmp(&r).is_some_and(|o| op.holds(o));
    }
    match op {
        CmpOp::Eq => *value.unescape() == *rhs,
        CmpOp::Ne => *value.unescape() != *rhs,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_flags() {
        let v: Vec<_> = pairs(br#"a=1 b="x \"y\" z" flag c="#).collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[1].1.unescape().as_ref(), br#"x "y" z"#);
        assert_eq!(
            v[2],
            (
                &b"flag"[..],
                Value {
                    raw: b"",
                    quoted: false
                }
            )
        );
        assert_eq!(v[3].1.raw, b"");
    }

    #[test]
    fn predicates() {
        let t = |k: &str, op, v: &str| Term {
            key: k.into(),
            op,
            value: v.into(),
        };
        assert_eq!(
            parse_predicate(b"status>=500"),
            Ok(vec![t("status", CmpOp::Ge, "500")])
        );
        assert_eq!(
            parse_predicate(br#"code = "H\"12" and x!=1"#),
            Ok(vec![t("code", CmpOp::Eq, "H\"12"), t("x", CmpOp::Ne, "1")])
        );
        assert!(parse_predicate(b">=1").is_err());
        assert!(parse_predicate(b"x!1").is_err());
        assert_eq!(
            parse_predicate(b"status>=abc").unwrap_err().to_string(),
            r#"compares "status" with "abc" by ">=", which needs a number"#
        );
        assert!(parse_predicate(b"a=1 or b=2").is_err());
        assert!(parse_number(b"inf").is_none());
        assert!(parse_number(b"30000ms").is_none());
        assert_eq!(parse_number(b"-1.5"), Some(-1.5));
    }
}
