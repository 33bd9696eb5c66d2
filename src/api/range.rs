//! Heroku's `Range` header on the Platform API's lists, so that a long list comes in parts
//! as Heroku gives them and its clients (the `heroku` CLI, heroku-client) expect:
//!
//! ```text
//! Range: id ..; max=200                 the first 200 by id (the default without a header)
//! Range: id ]01234..; max=200           those after 01234
//! Range: id 01234..56789[; order=desc,max=10
//! ```
//! The attribute sorts the list; `]` before the start leaves the start out, `[` after the end
//! leaves the end out; `max` is 1 to 1,000 (200 by default), `order` `asc` (the default) or
//! `desc`. An answer that holds all the rest of the range is 200; one cut at `max` is 206
//! with `Next-Range` to ask for the rest. Both carry `Content-Range: ATTR FIRST..LAST` (when
//! not empty) and `Accept-Ranges`. A header that cannot be read is 416.

/// Items per answer when the header does not say.
pub const MAX_DEFAULT: usize = 200;
/// The largest `max`.
pub const MAX_LIMIT: usize = 1000;

/// One end of a range.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Open,
    Inclusive(String),
    Exclusive(String),
}

/// A parsed `Range` header.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub attr: String,
    start: End,
    end: End,
    pub max: usize,
    pub desc: bool,
}

impl Range {
    /// The range of a request without the header: all of it by `attr`, `MAX_DEFAULT` at a
    /// time.
    pub fn all(attr: &str) -> Range {
        Range {
            attr: attr.to_string(),
            start: End::Open,
            end: End::Open,
            max: MAX_DEFAULT,
            desc: false,
        }
    }

    /// Reads a header whose attribute must be one of `attrs`; `Err` says why not, for a 416.
    pub fn parse(header: &str, attrs: &[&str]) -> Result<Range, String> {
        let (spec, params) = header.split_once(';').unwrap_or((header, ""));
        let spec = spec.trim();
        let (attr, bounds) = spec.split_once(' ').unwrap_or((spec, ".."));
        if !attrs.contains(&attr) {
            return Err(format!(
                "Range by {attr:?} is not supported here; use one of: {}.",
                attrs.join(", ")
            ));
        }
        let (lo, hi) = bounds
            .trim()
            .split_once("..")
            .ok_or_else(|| format!("Range {header:?} has no \"..\" between its ends."))?;
        // Ids are lower-case UUIDs; a client may send them in upper case.
        let case = |v: &str| {
            let v = v.trim();
            if attr == "id" {
                v.to_ascii_lowercase()
            } else {
                v.to_string()
            }
        };
        let (lo, hi) = (case(lo), case(hi));
        let (lo, hi) = (lo.as_str(), hi.as_str());
        let start = match lo {
            "" | "]" => End::Open,
            _ => match lo.strip_prefix(']') {
                Some(v) => End::Exclusive(v.trim().to_string()),
                None => End::Inclusive(lo.to_string()),
            },
        };
        let end = match hi {
            "" | "[" => End::Open,
            _ => match hi.strip_suffix('[') {
                Some(v) => End::Exclusive(v.trim().to_string()),
                None => End::Inclusive(hi.to_string()),
            },
        };
        let mut range = Range {
            attr: attr.to_string(),
            start,
            end,
            max: MAX_DEFAULT,
            desc: false,
        };
        // Parameters are separated by `,` (Heroku's own) or `;` (seen from other clients).
        for p in params
            .split([',', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match p.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("max", v)) => {
                    range.max = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            format!("Range max {v:?} must be a number from 1 to {MAX_LIMIT}.")
                        })?;
                }
                Some(("order", "asc")) => range.desc = false,
                Some(("order", "desc")) => range.desc = true,
                _ => return Err(format!("Range parameter {p:?} is not understood.")),
            }
        }
        Ok(range)
    }

    /// Whether `v` lies between the range's ends (in the order of its values: the start
    /// is the smaller end, whichever order the answer comes in).
    fn holds(&self, v: &str) -> bool {
        let after_start = match &self.start {
            End::Open => true,
            End::Inclusive(s) => v >= s.as_str(),
            End::Exclusive(s) => v > s.as_str(),
        };
        let before_end = match &self.end {
            End::Open => true,
            End::Inclusive(s) => v <= s.as_str(),
            End::Exclusive(s) => v < s.as_str(),
        };
        after_start && before_end
    }

    /// The part of `items` (keyed by `key`, the range's attribute) this range asks for, in
    /// its order, and how to answer it.
    pub fn apply<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> &str) -> Part<T> {
        items.retain(|i| self.holds(key(i)));
        items.sort_by(|a, b| {
            let o = key(a).cmp(key(b));
            if self.desc {
                o.reverse()
            } else {
                o
            }
        });
        let more = items.len() > self.max;
        items.truncate(self.max);
        let content = match (items.first(), items.last()) {
            (Some(f), Some(l)) => Some(format!("{} {}..{}", self.attr, key(f), key(l))),
            _ => None,
        };
        let next = match (more, items.last()) {
            (true, Some(l)) => {
                // Descending, the next part starts below the last one given.
                let (from, to) = if self.desc {
                    (self.start_text(), format!("{}[", key(l)))
                } else {
                    (format!("]{}", key(l)), self.end_text())
                };
                let order = if self.desc { "order=desc," } else { "" };
                Some(format!(
                    "{} {from}..{to}; {order}max={}",
                    self.attr, self.max
                ))
            }
            _ => None,
        };
        Part {
            items,
            content,
            next,
        }
    }

    fn start_text(&self) -> String {
        match &self.start {
            End::Open => String::new(),
            End::Inclusive(s) => s.clone(),
            End::Exclusive(s) => format!("]{s}"),
        }
    }

    fn end_text(&self) -> String {
        match &self.end {
            End::Open => String::new(),
            End::Inclusive(s) => s.clone(),
            End::Exclusive(s) => format!("{s}["),
        }
    }
}

/// What a range gives of a list.
pub struct Part<T> {
    pub items: Vec<T>,
    /// `Content-Range`, when anything is given.
    pub content: Option<String>,
    /// `Next-Range`, when more follow (then the answer is 206).
    pub next: Option<String>,
}

impl<T> Part<T> {
    /// 206 when more follow, else 200.
    pub fn partial(&self) -> bool {
        self.next.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i:02}")).collect()
    }

    #[test]
    fn headers_read_as_heroku_writes_them() {
        let r = Range::parse("id ..; max=200", &["id"]).unwrap();
        assert_eq!(r, Range::all("id"));
        let r = Range::parse("id ]d03..; max=2", &["id"]).unwrap();
        assert_eq!(r.start, End::Exclusive("d03".into()));
        assert_eq!((r.max, r.desc), (2, false));
        let r = Range::parse("id d01..d05[; order=desc,max=10", &["id"]).unwrap();
        assert_eq!(r.start, End::Inclusive("d01".into()));
        assert_eq!(r.end, End::Exclusive("d05".into()));
        assert_eq!((r.max, r.desc), (10, true));
        assert_eq!(Range::parse("id", &["id"]).unwrap(), Range::all("id"));
        // `;` between parameters too, spaces around the ends, upper-case ids.
        let r = Range::parse("id D01 .. d05 [; max=10; order=desc;", &["id"]).unwrap();
        assert_eq!(r.start, End::Inclusive("d01".into()));
        assert_eq!(r.end, End::Exclusive("d05".into()));
        assert_eq!((r.max, r.desc), (10, true));
        for bad in [
            "name ..",
            "id ..; max=0",
            "id ..; max=1001",
            "id d1",
            "id ..; size=3",
        ] {
            assert!(Range::parse(bad, &["id"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn parts_follow_one_another_to_the_end_both_ways() {
        for desc in [false, true] {
            let mut header = format!("id ..; {}max=3", if desc { "order=desc," } else { "" });
            let (mut seen, mut answers) = (Vec::new(), 0);
            loop {
                answers += 1;
                assert!(answers <= 10);
                let r = Range::parse(&header, &["id"]).unwrap();
                let part = r.apply(ids(8), |s| s);
                let content = part.content.clone().unwrap();
                assert_eq!(
                    content,
                    format!("id {}..{}", part.items[0], part.items[part.items.len() - 1])
                );
                seen.extend(part.items.clone());
                match part.next {
                    Some(n) => header = n,
                    None => break,
                }
            }
            let mut want = ids(8);
            if desc {
                want.reverse();
            }
            assert_eq!(seen, want, "desc {desc}");
            assert_eq!(answers, 3);
        }
    }

    #[test]
    fn bounds_hold_and_an_empty_part_is_whole() {
        let r = Range::parse("id d02..d04", &["id"]).unwrap();
        let part = r.apply(ids(8), |s| s);
        assert_eq!(part.items, ["d02", "d03", "d04"]);
        assert!(!part.partial());
        let r = Range::parse("id ]d07..", &["id"]).unwrap();
        let part = r.apply(ids(8), |s| s);
        assert!(part.items.is_empty() && part.content.is_none() && !part.partial());
    }
}
