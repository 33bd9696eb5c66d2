//! Alert rules, compiled once: the line filter (source, dyno), the matcher (a logfmt
//! predicate or a regex on MSG) and the numbers (threshold, window, cooldown), with one
//! sentence per way a rule can be wrong, shared by the API (422) and config validation.

use crate::alert::RuleSpec;
use crate::config::parse_duration;
use crate::line::Line;
use logplex_proto::logfmt::{self, CmpOp};
use std::fmt;
use std::time::Duration;

/// Why a rule cannot be used; `Display` is the sentence shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    Name(String),
    App(String),
    NoMatcher,
    BothMatchers,
    Regex {
        regex: String,
        reason: String,
    },
    Predicate {
        text: String,
        reason: String,
    },
    Threshold,
    Window(String),
    Cooldown(String),
    /// The webhook URL is not usable; the sentence says why.
    Webhook(String),
    /// `metric` is not a metric name; the sentence lists the known ones.
    Metric(String),
    /// `metric` with `where` or `regex`.
    MetricAndMatcher,
    /// `metric` with `source` or `dyno`, which filter lines.
    MetricAndFilter,
    /// A metric rule without `above`, or with one that is not a number (or a duration for
    /// a time).
    Above(Option<String>),
    /// `above` without `metric`.
    AboveWithoutMetric,
    /// A metric rule with a `threshold`.
    MetricThreshold,
    /// A metric rule's window over 24 hours.
    MetricWindow(String),
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::Name(n) => write!(
                f,
                "Alert name {n:?} must be 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit."
            ),
            RuleError::App(a) => write!(f, "App {a:?} is neither a channel name nor \"*\"."),
            RuleError::NoMatcher => write!(
                f,
                "A rule needs \"where\" (a logfmt predicate like status>=500) or \"regex\"."
            ),
            RuleError::BothMatchers => {
                write!(f, "A rule takes either \"where\" or \"regex\", not both.")
            }
            RuleError::Regex { regex, reason } => {
                write!(f, "Regex {regex:?} does not compile: {reason}.")
            }
            RuleError::Predicate { text, reason } => write!(f, "Predicate {text:?} {reason}."),
            RuleError::Threshold => write!(f, "Threshold must be between 1 and {MAX_THRESHOLD}."),
            RuleError::Window(w) => write!(
                f,
                "Window {w:?} must be a duration above 0, like \"30s\", \"1m\" or \"1h\"."
            ),
            RuleError::Cooldown(c) => {
                write!(f, "Cooldown {c:?} must be a duration, like \"0s\" or \"5m\".")
            }
            RuleError::Webhook(why) => write!(f, "Webhook: {why}"),
            RuleError::Metric(why) => write!(f, "Metric: {why}."),
            RuleError::MetricAndMatcher => write!(
                f,
                "A rule watches either lines (\"where\" or \"regex\") or a \"metric\", not both."
            ),
            RuleError::MetricAndFilter => write!(
                f,
                "\"source\" and \"dyno\" filter lines; a metric rule watches the channel's metrics and takes neither."
            ),
            RuleError::Above(None) => write!(
                f,
                "A metric rule needs \"above\": a number like 0.05, or a time like \"500ms\"."
            ),
            RuleError::Above(Some(a)) => write!(
                f,
                "Above {a:?} must be a number like 0.05 or 500, or a duration like \"500ms\" for a time metric (router.p95_service)."
            ),
            RuleError::AboveWithoutMetric => {
                write!(f, "\"above\" goes with \"metric\"; a line rule takes \"threshold\".")
            }
            RuleError::MetricThreshold => write!(
                f,
                "A metric rule fires when its metric is above \"above\"; it takes no \"threshold\"."
            ),
            RuleError::MetricWindow(w) => write!(
                f,
                "Window {w:?} of a metric rule must be at most 24h, as far back as metrics are kept."
            ),
        }
    }
}

impl std::error::Error for RuleError {}

impl RuleError {
    /// The field of the rule that is wrong (`None` when it is about `where` and `regex`
    /// together).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            RuleError::Name(_) => Some("name"),
            RuleError::App(_) => Some("app"),
            RuleError::NoMatcher | RuleError::BothMatchers => None,
            RuleError::Regex { .. } => Some("regex"),
            RuleError::Predicate { .. } => Some("where"),
            RuleError::Threshold => Some("threshold"),
            RuleError::Window(_) => Some("window"),
            RuleError::Cooldown(_) => Some("cooldown"),
            RuleError::Webhook(_) => Some("webhook"),
            RuleError::Metric(_) | RuleError::MetricAndMatcher => Some("metric"),
            RuleError::MetricAndFilter => Some("metric"),
            RuleError::Above(_) | RuleError::AboveWithoutMetric => Some("above"),
            RuleError::MetricThreshold => Some("threshold"),
            RuleError::MetricWindow(_) => Some("window"),
        }
    }

    /// Problems are reported in the order of the fields in a rule.
    fn order(&self) -> u8 {
        match self {
            RuleError::Name(_) => 0,
            RuleError::App(_) => 1,
            RuleError::NoMatcher
            | RuleError::BothMatchers
            | RuleError::Regex { .. }
            | RuleError::Predicate { .. } => 2,
            RuleError::Threshold => 3,
            RuleError::Window(_) => 4,
            RuleError::Cooldown(_) => 5,
            RuleError::Webhook(_) => 6,
            RuleError::Metric(_) | RuleError::MetricAndMatcher | RuleError::MetricAndFilter => 2,
            RuleError::Above(_) | RuleError::AboveWithoutMetric | RuleError::MetricThreshold => 3,
            RuleError::MetricWindow(_) => 4,
        }
    }
}

/// Largest threshold (it is stored as an SQLite integer and compared with window counts).
pub const MAX_THRESHOLD: u64 = 1_000_000_000;

/// One `key OP value` term of a predicate.
#[derive(Debug, Clone)]
pub struct Term {
    key: Vec<u8>,
    op: CmpOp,
    value: Vec<u8>,
    /// Finds `key=` in MSG: a line without it cannot have the pair, and most lines are
    /// rejected by this one vectorised search before any logfmt parsing.
    finder: memchr::memmem::Finder<'static>,
}

/// What a line's MSG must satisfy.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Every term holds (`and`). The first value of each key counts, as in `logfmt::get`.
    Where(Vec<Term>),
    Regex(RegexMatcher),
}

/// A compiled regex matched with a cache of this thread's own: no shared pool, so ingest
/// threads on different cores do not contend.
#[derive(Debug, Clone)]
pub struct RegexMatcher {
    re: regex_automata::meta::Regex,
    id: usize,
    pattern: String,
}

static NEXT_REGEX: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// Caches by regex id; bounded: cleared when rules churn past 256 regexes.
    static CACHES: std::cell::RefCell<Vec<(usize, regex_automata::meta::Cache)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl RegexMatcher {
    fn new(pattern: &str) -> Result<RegexMatcher, RuleError> {
        // The regex crate's own compile gives the error messages users see.
        compile_regex(pattern)?;
        let re = regex_automata::meta::Builder::new()
            .syntax(regex_automata::util::syntax::Config::new().utf8(false))
            .configure(
                regex_automata::meta::Config::new()
                    .utf8_empty(false)
                    .nfa_size_limit(Some(1 << 20)),
            )
            .build(pattern)
            .map_err(|e| RuleError::Regex {
                regex: pattern.to_string(),
                reason: e.to_string(),
            })?;
        Ok(RegexMatcher {
            re,
            id: NEXT_REGEX.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            pattern: pattern.to_string(),
        })
    }

    pub fn is_match(&self, hay: &[u8]) -> bool {
        let input = regex_automata::Input::new(hay).earliest(true);
        CACHES.with(|c| {
            let mut c = c.borrow_mut();
            // A handful of regexes per process: a linear scan beats hashing.
            let i = match c.iter().position(|(id, _)| *id == self.id) {
                Some(i) => i,
                None => {
                    if c.len() >= 256 {
                        c.clear();
                    }
                    c.push((self.id, self.re.create_cache()));
                    c.len() - 1
                }
            };
            self.re.search_half_with(&mut c[i].1, &input).is_some()
        })
    }
}

impl Matcher {
    /// Byte strings one of which every matching MSG contains, or `None` when no such set is
    /// known: a predicate needs its first `key=`; a regex, one of its literal prefixes.
    pub fn required_literals(&self) -> Option<Vec<Vec<u8>>> {
        match self {
            Matcher::Where(terms) => {
                let t = terms.first()?;
                let mut k = t.key.clone();
                k.push(b'=');
                Some(vec![k])
            }
            Matcher::Regex(r) => {
                use regex_syntax::hir::literal::{ExtractKind, Extractor};
                let hir = regex_syntax::ParserBuilder::new()
                    .utf8(false)
                    .build()
                    .parse(&r.pattern)
                    .ok()?;
                let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
                let lits = seq.literals()?;
                if lits.is_empty()
                    || lits.len() > 64
                    || lits.iter().any(|l| l.as_bytes().is_empty())
                {
                    return None;
                }
                Some(lits.iter().map(|l| l.as_bytes().to_vec()).collect())
            }
        }
    }

    /// Compiles `where` or `regex` (exactly one must be given).
    pub fn compile(where_: Option<&str>, regex: Option<&str>) -> Result<Matcher, RuleError> {
        match (where_, regex) {
            (Some(_), Some(_)) => Err(RuleError::BothMatchers),
            (None, None) => Err(RuleError::NoMatcher),
            (Some(w), None) => parse_predicate(w).map(Matcher::Where),
            (None, Some(r)) => RegexMatcher::new(r).map(Matcher::Regex),
        }
    }

    /// Does MSG match? Never allocates for bare values.
    #[inline]
    pub fn matches(&self, msg: &[u8]) -> bool {
        match self {
            Matcher::Regex(re) => re.is_match(msg),
            Matcher::Where(terms) => terms.iter().all(|t| {
                t.finder.find(msg).is_some()
                    && logfmt::get(msg, &t.key).is_some_and(|v| logfmt::compare(&v, t.op, &t.value))
            }),
        }
    }
}

fn compile_regex(r: &str) -> Result<regex::bytes::Regex, RuleError> {
    regex::bytes::RegexBuilder::new(r)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            // The crate's message is several lines (the pattern, a caret, then `error: …`);
            // the last line is the reason.
            let text = e.to_string();
            let last = text.lines().last().unwrap_or("").trim();
            let reason = last.strip_prefix("error: ").unwrap_or(last);
            RuleError::Regex {
                regex: r.to_string(),
                reason: reason.trim_end_matches('.').to_string(),
            }
        })
}

/// Parses `where` with proto's predicate parser and prepares each term's search.
fn parse_predicate(text: &str) -> Result<Vec<Term>, RuleError> {
    let terms = logfmt::parse_predicate(text.as_bytes()).map_err(|e| RuleError::Predicate {
        text: text.to_string(),
        reason: e.to_string(),
    })?;
    Ok(terms
        .into_iter()
        .map(|t| {
            let mut needle = t.key.clone();
            needle.push(b'=');
            Term {
                finder: memchr::memmem::Finder::new(&needle).into_owned(),
                key: t.key,
                op: t.op,
                value: t.value,
            }
        })
        .collect())
}

/// Is `name` usable as an alert name (a URL segment and a metric label)?
pub fn check_name(name: &str) -> Result<(), RuleError> {
    let b = name.as_bytes();
    let ok = (1..=64).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuleError::Name(name.to_string()))
    }
}

/// Checks a webhook URL as drain URLs are checked (http:// or https://, a host, a port from
/// 1 to 65535; userinfo becomes Basic auth).
pub fn check_webhook(url: &str) -> Result<crate::alert::webhook::Target, RuleError> {
    crate::alert::webhook::Target::parse(url).map_err(RuleError::Webhook)
}

/// What a metric rule watches: a metric of the channel's metrics from the logs, over the
/// rule's window, against a limit.
#[derive(Debug, Clone)]
pub struct MetricRule {
    pub metric: crate::logmetrics::Metric,
    /// The limit, in the metric's unit (ms for router times).
    pub above: f64,
}

/// `above` of a metric rule: a number, or a duration (in ms) for a router time.
fn parse_above(text: &str, metric: &crate::logmetrics::Metric) -> Option<f64> {
    use crate::logmetrics::Metric;
    if let Ok(n) = text.trim().parse::<f64>() {
        return n.is_finite().then_some(n);
    }
    match metric {
        Metric::Service(_) | Metric::Connect(_) => {
            parse_duration(text).map(|d| d.as_secs_f64() * 1000.0)
        }
        _ => None,
    }
}

/// A rule ready to run.
#[derive(Debug)]
pub struct Rule {
    /// As configured or posted; also the identity used to keep window state across
    /// refreshes (a rule whose definition changed starts a fresh window).
    pub spec: RuleSpec,
    /// Where it came from: `config` or `api`.
    pub origin: &'static str,
    /// The line matcher; a metric rule has an empty one, never used (it has no tap).
    pub matcher: Matcher,
    /// `Some` for a metric rule: evaluated on the alert ticker, not on lines.
    pub metric: Option<MetricRule>,
    pub source: Option<Box<[u8]>>,
    pub dyno: Option<Box<[u8]>>,
    pub threshold: u64,
    pub window: Duration,
    pub cooldown: Duration,
    pub webhook: Option<crate::alert::webhook::Target>,
}

impl Rule {
    /// Checks every field of `spec` and compiles the rule; every problem found is
    /// returned, each naming its field ([`RuleError::field`]).
    pub fn compile(spec: &RuleSpec, origin: &'static str) -> Result<Rule, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut check = |r: Result<(), RuleError>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        check(check_name(&spec.name));
        if spec.app != "*" && !crate::names::valid_channel_name(&spec.app) {
            check(Err(RuleError::App(spec.app.clone())));
        }
        let mut metric = None;
        let matcher = match spec.metric.as_deref() {
            None => {
                if spec.above.is_some() {
                    check(Err(RuleError::AboveWithoutMetric));
                }
                if spec.threshold == 0 || spec.threshold > MAX_THRESHOLD {
                    check(Err(RuleError::Threshold));
                }
                Matcher::compile(spec.where_.as_deref(), spec.regex.as_deref())
            }
            Some(m) => {
                if spec.where_.is_some() || spec.regex.is_some() {
                    check(Err(RuleError::MetricAndMatcher));
                }
                if spec.source.is_some() || spec.dyno.is_some() {
                    check(Err(RuleError::MetricAndFilter));
                }
                if spec.threshold != 0 {
                    check(Err(RuleError::MetricThreshold));
                }
                match m.parse::<crate::logmetrics::Metric>() {
                    Ok(m) => match spec.above.as_deref().map(|a| parse_above(a, &m)) {
                        Some(Some(above)) => metric = Some(MetricRule { metric: m, above }),
                        _ => check(Err(RuleError::Above(spec.above.clone()))),
                    },
                    Err(e) => {
                        check(Err(RuleError::Metric(e.to_string())));
                        if spec.above.is_none() {
                            check(Err(RuleError::Above(None)));
                        }
                    }
                }
                if parse_duration(&spec.window).is_some_and(|w| w > crate::logmetrics::RETENTION) {
                    check(Err(RuleError::MetricWindow(spec.window.clone())));
                }
                Ok(Matcher::Where(Vec::new()))
            }
        };
        let window = parse_duration(&spec.window)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| RuleError::Window(spec.window.clone()));
        let cooldown = parse_duration(&spec.cooldown)
            .ok_or_else(|| RuleError::Cooldown(spec.cooldown.clone()));
        let webhook = spec.webhook.as_deref().map(check_webhook).transpose();
        let (matcher, window, cooldown, webhook) = match (matcher, window, cooldown, webhook) {
            (Ok(m), Ok(w), Ok(c), Ok(h)) if errors.is_empty() => (m, w, c, h),
            (m, w, c, h) => {
                errors.extend([m.err(), w.err(), c.err(), h.err()].into_iter().flatten());
                errors.sort_by_key(|e| e.order());
                return Err(errors);
            }
        };
        let nonempty = |o: &Option<String>| {
            o.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().into())
        };
        Ok(Rule {
            spec: spec.clone(),
            origin,
            matcher,
            metric,
            source: nonempty(&spec.source),
            dyno: nonempty(&spec.dyno),
            threshold: spec.threshold,
            window,
            cooldown,
            webhook,
        })
    }

    /// Does the rule watch this channel?
    pub fn watches(&self, channel: &str) -> bool {
        self.spec.app == "*" || self.spec.app == channel
    }

    /// Does this line count? Source (exact), dyno (`web` matches `web` and `web.N`), then
    /// the matcher on MSG. The alert lines logplex writes itself never count.
    #[inline]
    pub fn counts(&self, line: &Line) -> bool {
        let procid = line.procid();
        if &line.source[..] == b"heroku" && procid == b"alerts" {
            return false;
        }
        if let Some(s) = &self.source {
            if line.source[..] != s[..] {
                return false;
            }
        }
        if let Some(d) = &self.dyno {
            if !crate::names::dyno_matches(d, procid) {
                return false;
            }
        }
        self.matcher.matches(line.msg())
    }

    /// The window as people write it: `60s`, or `500ms` below a second.
    pub fn window_text(&self) -> String {
        if self.window.subsec_nanos() == 0 {
            format!("{}s", self.window.as_secs())
        } else {
            format!("{}ms", self.window.as_millis())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn spec(where_: Option<&str>, regex: Option<&str>) -> RuleSpec {
        RuleSpec {
            name: "http-5xx".into(),
            app: "*".into(),
            source: None,
            dyno: None,
            where_: where_.map(str::to_string),
            regex: regex.map(str::to_string),
            metric: None,
            above: None,
            threshold: 5,
            window: "1m".into(),
            cooldown: "5m".into(),
            webhook: None,
        }
    }

    fn line(source: &'static str, procid: &str, msg: &str) -> Line {
        let f = format!("<190>1 2016-03-08T02:43:26.693600+00:00 host t.x {procid} - - {msg}");
        Line::parse(Bytes::from(f), Bytes::from_static(source.as_bytes())).unwrap()
    }

    const ROUTER: &str = r#"at=error code=H12 desc="Request timeout" method=GET path="/" host=demo.herokuapp.com fwd="1.2.3.4" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0"#;
    const ROUTER_OK: &str = r#"at=info method=GET path="/" host=demo.herokuapp.com fwd="1.2.3.4" dyno=web.1 connect=0ms service=12ms status=200 bytes=1200"#;

    fn err(where_: Option<&str>, regex: Option<&str>) -> String {
        Matcher::compile(where_, regex).unwrap_err().to_string()
    }

    #[test]
    fn predicates_match_router_lines() {
        for (p, bad, ok) in [
            ("status>=500", true, false),
            ("code=H12", true, false),
            ("at=error and status>=500", true, false),
            ("code = \"H12\"", true, false),
            ("status<500", false, true),
            ("status!=200 and desc=\"Request timeout\"", true, false),
        ] {
            let m = Matcher::compile(Some(p), None).unwrap();
            assert_eq!(m.matches(ROUTER.as_bytes()), bad, "{p} on 503");
            assert_eq!(m.matches(ROUTER_OK.as_bytes()), ok, "{p} on 200");
        }
        let m = Matcher::compile(Some("status>=500"), None).unwrap();
        assert!(!m.matches(b"Completed 500 Internal Server Error in 2ms"));
    }

    #[test]
    fn required_literals_for_the_prefilter() {
        let lits =
            |w: Option<&str>, r: Option<&str>| Matcher::compile(w, r).unwrap().required_literals();
        assert_eq!(
            lits(Some("status>=500 and at=error"), None),
            Some(vec![b"status=".to_vec()])
        );
        let rails = lits(None, Some(r"Completed 5\d\d")).unwrap();
        assert!(
            !rails.is_empty() && rails.iter().all(|l| l.starts_with(b"Completed 5")),
            "{rails:?}"
        );
        assert_eq!(
            lits(None, Some(".*")),
            None,
            "no literal: every line is a candidate"
        );
        assert_eq!(lits(None, Some("a|.*b")), None);
    }

    #[test]
    fn regex_matches_rails_lines() {
        let m = Matcher::compile(None, Some(r"Completed 5\d\d")).unwrap();
        assert!(m.matches(b"Completed 500 Internal Server Error in 2ms"));
        assert!(!m.matches(b"Completed 200 OK in 2ms"));
    }

    #[test]
    fn bad_predicates_say_what_is_wrong() {
        assert_eq!(
            err(Some("status=>500"), None),
            r#"Predicate "status=>500" has an unknown operator "=>"; use =, !=, <, <=, > or >=."#
        );
        assert_eq!(
            err(Some("status~5"), None),
            r#"Predicate "status~5" has an unknown operator "~"; use =, !=, <, <=, > or >=."#
        );
        assert_eq!(
            err(Some("status 500"), None),
            r#"Predicate "status 500" has no operator after "status"; use =, !=, <, <=, > or >=."#
        );
        assert_eq!(
            err(Some("status>=abc"), None),
            r#"Predicate "status>=abc" compares "status" with "abc" by ">=", which needs a number."#
        );
        assert_eq!(
            err(Some("at=error or status>=500"), None),
            r#"Predicate "at=error or status>=500" has "or status>=500" after a term; join terms with "and"."#
        );
        assert_eq!(
            err(Some("at=error and"), None),
            r#"Predicate "at=error and" ends without a term; join terms with "and"."#
        );
        assert_eq!(err(Some(" "), None), r#"Predicate " " is empty."#);
        assert_eq!(
            err(Some(">=5"), None),
            r#"Predicate ">=5" needs a key before ">=5"."#
        );
        assert_eq!(
            err(Some("code="), None),
            r#"Predicate "code=" needs a value after "code="."#
        );
    }

    #[test]
    fn a_regex_that_does_not_compile_says_why() {
        assert_eq!(
            err(None, Some(r"Completed 5\d\d(")),
            r#"Regex "Completed 5\\d\\d(" does not compile: unclosed group."#
        );
        assert_eq!(
            err(Some("a=1"), Some("x")),
            r#"A rule takes either "where" or "regex", not both."#
        );
        assert_eq!(
            err(None, None),
            r#"A rule needs "where" (a logfmt predicate like status>=500) or "regex"."#
        );
    }

    #[test]
    fn bad_numbers_and_webhooks() {
        let bad = |f: &dyn Fn(&mut RuleSpec)| {
            let mut s = spec(Some("status>=500"), None);
            f(&mut s);
            Rule::compile(&s, "api").unwrap_err()[0].to_string()
        };
        assert_eq!(
            bad(&|s| s.threshold = 0),
            "Threshold must be between 1 and 1000000000."
        );
        assert_eq!(
            bad(&|s| s.window = "0s".into()),
            r#"Window "0s" must be a duration above 0, like "30s", "1m" or "1h"."#
        );
        assert_eq!(
            bad(&|s| s.window = "soon".into()),
            r#"Window "soon" must be a duration above 0, like "30s", "1m" or "1h"."#
        );
        assert_eq!(
            bad(&|s| s.cooldown = "5".into()),
            r#"Cooldown "5" must be a duration, like "0s" or "5m"."#
        );
        assert_eq!(
            bad(&|s| s.webhook = Some("ftp://example.com/hook".into())),
            r#"Webhook: Scheme "ftp" is not supported; use http:// or https://."#
        );
        assert_eq!(
            bad(&|s| s.webhook = Some("http://example.com:0/hook".into())),
            r#"Webhook: Port 0 is not a port to send to."#
        );
        assert_eq!(
            bad(&|s| s.webhook = Some("http://".into())),
            r#"Webhook: "http://" is not a URL (empty host)."#
        );
        let mut https = spec(Some("status>=500"), None);
        https.webhook = Some("https://user:p+w@example.com/hook".into());
        let w = Rule::compile(&https, "api").unwrap().webhook.unwrap();
        assert_eq!(w.endpoint, "https://example.com/hook");
        assert_eq!(w.redacted, "https://user:***@example.com/hook");
        assert_eq!(
            bad(&|s| s.name = "5xx alerts".into()),
            r#"Alert name "5xx alerts" must be 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit."#
        );
        assert_eq!(
            bad(&|s| s.app = "Demo".into()),
            r#"App "Demo" is neither a channel name nor "*"."#
        );
    }

    #[test]
    fn source_and_dyno_filter_before_matching() {
        let mut s = spec(Some("status>=500"), None);
        s.source = Some("heroku".into());
        s.dyno = Some("router".into());
        let r = Rule::compile(&s, "config").unwrap();
        assert!(r.counts(&line("heroku", "router", ROUTER)));
        assert!(!r.counts(&line("app", "router", ROUTER)));
        assert!(!r.counts(&line("heroku", "web.1", ROUTER)));
        assert!(!r.counts(&line("heroku", "router", ROUTER_OK)));

        let mut s = spec(None, Some(r"Completed 5\d\d"));
        s.dyno = Some("web".into());
        let r = Rule::compile(&s, "config").unwrap();
        let rails = "Completed 500 Internal Server Error in 2ms";
        assert!(r.counts(&line("app", "web.1", rails)));
        assert!(r.counts(&line("app", "web", rails)));
        assert!(!r.counts(&line("app", "webby.1", rails)));
        assert!(!r.counts(&line("app", "worker.1", rails)));
        // logplex's own alert line never counts, even for a rule that would match it.
        let s = spec(None, Some("Alert"));
        let r = Rule::compile(&s, "config").unwrap();
        assert!(!r.counts(&Line::internal(
            "heroku",
            "alerts",
            "Alert x firing: 5 matching lines in 60s"
        )));
    }

    #[test]
    fn metric_rules_are_checked_field_by_field() {
        let metric = |m: Option<&str>, above: Option<&str>| RuleSpec {
            metric: m.map(str::to_string),
            above: above.map(str::to_string),
            threshold: 0,
            ..spec(None, None)
        };
        let r = Rule::compile(&metric(Some("router.p95_service"), Some("500ms")), "api").unwrap();
        let m = r.metric.unwrap();
        assert_eq!(
            (m.metric.to_string(), m.above),
            ("router.p95_service".into(), 500.0)
        );
        let r = Rule::compile(&metric(Some("router.5xx_ratio"), Some("0.05")), "api").unwrap();
        assert_eq!(r.metric.unwrap().above, 0.05);
        let fields = |s: &RuleSpec| -> Vec<Option<&'static str>> {
            Rule::compile(s, "api")
                .unwrap_err()
                .iter()
                .map(RuleError::field)
                .collect()
        };
        // Every problem, each naming its field.
        let mut bad = metric(Some("router.nope"), None);
        bad.where_ = Some("status>=500".into());
        bad.dyno = Some("web".into());
        bad.threshold = 3;
        bad.window = "2d".into();
        assert_eq!(
            fields(&bad),
            [
                Some("metric"),
                Some("metric"),
                Some("metric"),
                Some("threshold"),
                Some("above"),
                Some("window")
            ]
        );
        // A duration only for a time; `above` only with `metric`.
        assert_eq!(
            fields(&metric(Some("router.5xx_ratio"), Some("5s"))),
            [Some("above")]
        );
        let mut line = spec(Some("status>=500"), None);
        line.above = Some("1".into());
        assert_eq!(fields(&line), [Some("above")]);
    }

    #[test]
    fn above_is_a_number_or_a_duration_in_config() {
        #[derive(serde::Deserialize)]
        struct Doc {
            alerts: Vec<RuleSpec>,
        }
        let doc: Doc = toml::from_str(
            "[[alerts]]\nname = \"a\"\nmetric = \"router.5xx_ratio\"\nabove = 0.05\nwindow = \"1m\"\n\
             [[alerts]]\nname = \"b\"\nmetric = \"router.p95_service\"\nabove = \"500ms\"\nwindow = \"1m\"\n\
             [[alerts]]\nname = \"c\"\nmetric = \"router.requests\"\nabove = 100\nwindow = \"1m\"\n",
        )
        .unwrap();
        let above: Vec<_> = doc
            .alerts
            .iter()
            .map(|a| a.above.clone().unwrap())
            .collect();
        assert_eq!(above, ["0.05", "500ms", "100"]);
        for a in &doc.alerts {
            Rule::compile(a, "config").unwrap();
        }
    }
}
