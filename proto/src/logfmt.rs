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

/// Splits a predicate like `status>=500` or `code = H12` into key, operator and right-hand
/// side (spaces around the operator allowed; the right-hand side may be double-quoted).
/// `None` when there is no operator or no key.
pub fn parse_predicate(text: &[u8]) -> Option<(&[u8], CmpOp, &[u8])> {
    let at = text
        .iter()
        .position(|b| matches!(b, b'=' | b'!' | b'<' | b'>'))?;
    let key = text[..at].trim_ascii();
    let op_len = if text.get(at + 1) == Some(&b'=') {
        2
    } else {
        1
    };
    let op = CmpOp::parse(&text[at..at + op_len])?;
    let rhs = text[at + op_len..].trim_ascii();
    let rhs = match rhs {
        [b'"', inner @ .., b'"'] => inner,
        _ => rhs,
    };
    if key.is_empty() {
        return None;
    }
    Some((key, op, rhs))
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
        assert_eq!(
            parse_predicate(b"status>=500"),
            Some((&b"status"[..], CmpOp::Ge, &b"500"[..]))
        );
        assert_eq!(
            parse_predicate(b"code = \"H12\""),
            Some((&b"code"[..], CmpOp::Eq, &b"H12"[..]))
        );
        assert_eq!(
            parse_predicate(b"x!=1"),
            Some((&b"x"[..], CmpOp::Ne, &b"1"[..]))
        );
        assert_eq!(parse_predicate(b">=1"), None);
        assert_eq!(parse_predicate(b"x!1"), None);
        assert!(parse_number(b"inf").is_none());
        assert!(parse_number(b"30000ms").is_none());
        assert_eq!(parse_number(b"-1.5"), Some(-1.5));
    }
}
