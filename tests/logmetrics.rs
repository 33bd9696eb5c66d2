//! Metrics from the logs, checked against an independent computation over the same lines:
//! Heroku router lines (`at=info`, `at=error code=H10/H12/H13/H27`), Rails lines with l2met
//! measures, runtime metrics and Heroku Postgres samples, in the session-line format Heroku
//! documents (`TIMESTAMP SOURCE[PROCID]: MSG`). The independent side reads the lines with
//! regexes and computes exact counts and sorted-array quantiles; the module must agree on
//! counts exactly and on quantiles within 1 %.

use logplex::logmetrics::{Limits, LogMetrics, Metric, Summary};
use proptest::prelude::*;
use regex::Regex;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const FIXTURE: &str = include_str!("fixtures/logmetrics/heroku.log");

struct Line<'a> {
    at: i64,
    source: &'a str,
    procid: &'a str,
    msg: &'a str,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let re = Regex::new(r"^(\S+) ([^\[\s]+)\[([^\]]*)\]: (.*)$").unwrap();
    text.lines()
        .map(|l| {
            let c = re.captures(l).expect("a session line");
            let ts = time::OffsetDateTime::parse(
                c.get(1).unwrap().as_str(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            Line {
                at: ts.unix_timestamp(),
                source: c.get(2).unwrap().as_str(),
                procid: c.get(3).unwrap().as_str(),
                msg: c.get(4).unwrap().as_str(),
            }
        })
        .collect()
}

fn feed(lm: &mut LogMetrics, lines: &[Line]) {
    for l in lines {
        lm.observe(
            l.at,
            l.source.as_bytes(),
            l.procid.as_bytes(),
            l.msg.as_bytes(),
        );
    }
}

/// The nearest-rank quantile of the values (the ⌈q·n⌉-th smallest).
fn exact(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).max(1) - 1;
    Some(v[i.min(v.len() - 1)])
}

fn assert_near(got: Option<f64>, want: Option<f64>, what: &str) {
    match (got, want) {
        (Some(g), Some(w)) => assert!(
            (g - w).abs() <= 0.01 * w.abs(),
            "{what}: got {g}, exact {w}"
        ),
        _ => assert_eq!(got, want, "{what}"),
    }
}

/// What the lines add up to, computed on its own.
#[derive(Default, Debug)]
struct Expected {
    requests: u64,
    by_class: [u64; 6],
    h_codes: BTreeMap<String, u64>,
    bytes: u64,
    service: Vec<f64>,
    connect: Vec<f64>,
    counts: BTreeMap<String, f64>,
    samples: BTreeMap<String, (f64, f64, f64)>,
    measures: BTreeMap<String, Vec<f64>>,
    /// minute start → (requests, 5xx, service times)
    minutes: BTreeMap<i64, (u64, u64, Vec<f64>)>,
}

struct Independent {
    status: Regex,
    service: Regex,
    connect: Regex,
    bytes: Regex,
    code: Regex,
    l2met: Regex,
    number: Regex,
    quoted: Regex,
}

impl Independent {
    fn new() -> Independent {
        let field = |k: &str, v: &str| Regex::new(&format!(r"(?:^|\s){k}=({v})(?:\s|$)")).unwrap();
        Independent {
            status: field("status", r"[1-5]\d\d"),
            service: field("service", r"\d+(?:\.\d+)?")
                .as_str()
                .replace(r")(?:\s|$)", r")ms(?:\s|$)")
                .parse()
                .unwrap(),
            connect: field("connect", r"\d+(?:\.\d+)?")
                .as_str()
                .replace(r")(?:\s|$)", r")ms(?:\s|$)")
                .parse()
                .unwrap(),
            bytes: field("bytes", r"\d+"),
            code: field("code", r"H\d\d"),
            l2met: Regex::new(r"^(count|sample|measure)#([!-~]+?)(?:=(\S*))?$").unwrap(),
            number: Regex::new(r"^(-?\d+(?:\.\d+)?)([A-Za-z%]*)$").unwrap(),
            quoted: Regex::new(r#""[^"]*""#).unwrap(),
        }
    }

    /// Everything in `lines` whose time is in `[from, to]`, l2met units fixed by the first
    /// value of each name over all of `lines`.
    fn compute(&self, lines: &[Line], from: i64, to: i64) -> Expected {
        let mut e = Expected::default();
        let mut units: HashMap<(String, String), String> = HashMap::new();
        let num = |re: &Regex, msg: &str| -> Option<f64> {
            re.captures(msg)?.get(1)?.as_str().parse().ok()
        };
        for l in lines {
            let inside = (from..=to).contains(&l.at);
            if l.source == "heroku" && l.procid == "router" {
                if !inside {
                    continue;
                }
                if let Some(c) = self.code.captures(l.msg) {
                    *e.h_codes.entry(c[1].to_string()).or_default() += 1;
                }
                let Some(status) = num(&self.status, l.msg) else {
                    continue;
                };
                let class = (status as usize) / 100;
                e.requests += 1;
                e.by_class[class] += 1;
                e.bytes += num(&self.bytes, l.msg).unwrap_or(0.0) as u64;
                let minute = e.minutes.entry(l.at.div_euclid(60) * 60).or_default();
                minute.0 += 1;
                minute.1 += u64::from(class == 5);
                if let Some(s) = num(&self.service, l.msg) {
                    e.service.push(s);
                    minute.2.push(s);
                }
                if let Some(c) = num(&self.connect, l.msg) {
                    e.connect.push(c);
                }
                continue;
            }
            // Quoted values are not pairs: blank them out first.
            let msg = self.quoted.replace_all(l.msg, "\"\"");
            for c in msg
                .split_whitespace()
                .filter_map(|w| self.l2met.captures(w))
            {
                let (kind, name) = (c[1].to_string(), c[2].to_string());
                let raw = c.get(3).map_or("", |m| m.as_str());
                let (value, unit) = if kind == "count" && raw.is_empty() {
                    (1.0, String::new())
                } else {
                    match self.number.captures(raw) {
                        Some(n) => (n[1].parse::<f64>().unwrap(), n[2].to_string()),
                        None => continue,
                    }
                };
                let first = units
                    .entry((kind.clone(), name.clone()))
                    .or_insert(unit.clone());
                if *first != unit || !inside {
                    continue;
                }
                match kind.as_str() {
                    "count" => *e.counts.entry(name).or_default() += value,
                    "sample" => {
                        let s = e.samples.entry(name).or_insert((value, value, value));
                        *s = (value, s.1.min(value), s.2.max(value));
                    }
                    _ => e.measures.entry(name).or_default().push(value),
                }
            }
        }
        e
    }
}

fn check(s: &Summary, e: &Expected) {
    let r = &s.router;
    assert_eq!(r.requests, e.requests, "requests");
    let b = &r.by_status;
    assert_eq!(
        [b.s2xx, b.s3xx, b.s4xx, b.s5xx],
        [e.by_class[2], e.by_class[3], e.by_class[4], e.by_class[5]],
        "by_status"
    );
    assert_eq!(r.h_codes, e.h_codes, "h_codes");
    assert_eq!(r.bytes, e.bytes, "bytes");
    for (q, got_s, got_c) in [
        (0.5, r.service_ms.p50, r.connect_ms.p50),
        (0.95, r.service_ms.p95, r.connect_ms.p95),
        (0.99, r.service_ms.p99, r.connect_ms.p99),
    ] {
        assert_near(
            got_s,
            exact(&e.service, q),
            &format!("service p{}", q * 100.0),
        );
        assert_near(
            got_c,
            exact(&e.connect, q),
            &format!("connect p{}", q * 100.0),
        );
    }
    let counts: BTreeMap<_, _> = s
        .l2met
        .count
        .iter()
        .map(|(k, v)| (k.clone(), v.0))
        .collect();
    assert_eq!(counts, e.counts, "l2met counts");
    let samples: BTreeMap<_, _> = s
        .l2met
        .sample
        .iter()
        .map(|(k, v)| (k.clone(), (v.last, v.min, v.max)))
        .collect();
    assert_eq!(samples, e.samples, "l2met samples");
    assert_eq!(
        s.l2met.measure.keys().collect::<Vec<_>>(),
        e.measures.keys().collect::<Vec<_>>()
    );
    for (name, values) in &e.measures {
        let m = &s.l2met.measure[name];
        assert_eq!(m.count, values.len() as u64, "{name} count");
        assert_near(m.p50, exact(values, 0.5), &format!("{name} p50"));
        assert_near(m.p95, exact(values, 0.95), &format!("{name} p95"));
        assert_near(m.p99, exact(values, 0.99), &format!("{name} p99"));
    }
    let with_lines: Vec<_> = s.minutes.iter().filter(|m| m.requests > 0).collect();
    assert_eq!(with_lines.len(), e.minutes.len(), "minutes with requests");
    for (m, (at, (n, n5xx, service))) in with_lines.iter().zip(&e.minutes) {
        assert_eq!(
            (m.at.0, m.requests, m.s5xx),
            (*at, *n, *n5xx),
            "minute {at}"
        );
        assert_near(
            m.service_p95_ms,
            exact(service, 0.95),
            &format!("minute {at} p95"),
        );
    }
    let total: u64 = s.minutes.iter().map(|m| m.requests).sum();
    assert_eq!(total, r.requests, "the minutes add up to the total");
}

#[test]
fn heroku_fixture_matches_an_independent_computation() {
    let lines = lines(FIXTURE);
    let (first, last) = (lines[0].at, lines[lines.len() - 1].at);
    let mut lm = LogMetrics::new(first, Limits::default());
    feed(&mut lm, &lines);
    let expected = Independent::new().compute(&lines, first, last);
    // The fixture has every kind of line the module reads.
    assert!(expected.h_codes.len() >= 4, "{:?}", expected.h_codes);
    assert!(
        expected.samples.contains_key("memory_total"),
        "{:?}",
        expected.samples.keys()
    );
    assert!(
        expected.samples.contains_key("db_size"),
        "{:?}",
        expected.samples.keys()
    );
    assert!(
        expected.measures.contains_key("rails.request"),
        "{:?}",
        expected.measures.keys()
    );
    assert!(
        expected.counts.contains_key("signups"),
        "{:?}",
        expected.counts.keys()
    );

    let now = last + 1;
    let s = lm
        .snapshot(now, Duration::from_secs(3600))
        .summary("myapp", Duration::from_secs(3600));
    check(&s, &expected);
    assert_eq!(s.app, "myapp");
    assert_eq!(s.l2met.sample["memory_total"].unit, "MB");
    assert_eq!(s.l2met.measure["email.send"].unit, "s");
    let c = lm.counters();
    // service=abc connect=abc bytes=12kB status=20x; lots, empty, 1e999; 2s against ms.
    assert_eq!(c.malformed, 8);
    assert_eq!(c.requests.iter().sum::<u64>(), expected.requests);

    // A range of the last two minutes: the minutes that start within it.
    let since = 150;
    let from = (now - since).div_euclid(60) * 60 + if (now - since) % 60 == 0 { 0 } else { 60 };
    let s = lm
        .snapshot(now, Duration::from_secs(3600))
        .summary("myapp", Duration::from_secs(since as u64));
    let units_from_all = Independent::new().compute(&lines, from, last);
    check(&s, &units_from_all);
}

#[test]
fn alert_values_over_windows_match() {
    let lines = lines(FIXTURE);
    let first = lines[0].at;
    let ind = Independent::new();
    // Stop at several points, crossing minute boundaries, and read windows back.
    for stop in [
        first + 59,
        first + 61,
        first + 125,
        first + 200,
        first + 239,
    ] {
        let upto: Vec<_> = lines.iter().filter(|l| l.at <= stop).collect();
        let mut lm2 = LogMetrics::new(first, Limits::default());
        for l in &upto {
            lm2.observe(
                l.at,
                l.source.as_bytes(),
                l.procid.as_bytes(),
                l.msg.as_bytes(),
            );
        }
        let snap = lm2.snapshot(stop, Duration::from_secs(3600));
        for (window, period) in [(30i64, 10i64), (60, 10), (300, 10), (600, 60)] {
            // The periods that start within the window, the open one included.
            let from = (stop - window + period - 1).div_euclid(period) * period;
            let from = from.min(stop.div_euclid(period) * period);
            let owned: Vec<Line> = upto
                .iter()
                .map(|l| Line {
                    at: l.at,
                    source: l.source,
                    procid: l.procid,
                    msg: l.msg,
                })
                .collect();
            let e = ind.compute(&owned, from, stop);
            let w = Duration::from_secs(window as u64);
            let v = |m: &str| snap.value(&m.parse::<Metric>().unwrap(), w);
            assert_eq!(
                v("router.requests"),
                Some(e.requests as f64),
                "requests at {stop} over {window}"
            );
            assert_eq!(v("router.5xx"), Some(e.by_class[5] as f64));
            let ratio = (e.requests > 0).then(|| e.by_class[5] as f64 / e.requests as f64);
            assert_eq!(v("router.5xx_ratio"), ratio);
            assert_eq!(
                v("router.H12"),
                Some(*e.h_codes.get("H12").unwrap_or(&0) as f64)
            );
            assert_eq!(
                v("router.h_codes"),
                Some(e.h_codes.values().sum::<u64>() as f64)
            );
            assert_near(
                v("router.p95_service"),
                exact(&e.service, 0.95),
                "p95 service",
            );
            assert_near(
                v("router.p99_connect"),
                exact(&e.connect, 0.99),
                "p99 connect",
            );
            assert_eq!(
                v("l2met.count.signups"),
                Some(*e.counts.get("signups").unwrap_or(&0.0))
            );
            let rails = e.measures.get("rails.request").cloned().unwrap_or_default();
            assert_eq!(
                v("l2met.measure.rails.request.count"),
                Some(rails.len() as f64)
            );
            assert_near(
                v("l2met.measure.rails.request.p95"),
                exact(&rails, 0.95),
                "rails p95",
            );
            assert_eq!(
                v("l2met.sample.memory_total.max"),
                e.samples.get("memory_total").map(|s| s.2)
            );
        }
    }
}

#[test]
fn roll_ups_survive_encode_and_decode() {
    let lines = lines(FIXTURE);
    let (first, last) = (lines[0].at, lines[lines.len() - 1].at);
    let mut lm = LogMetrics::new(first, Limits::default());
    let half = lines.len() / 2;
    feed(&mut lm, &lines[..half]);
    let bytes = lm.encode();
    let mut back = LogMetrics::decode(&bytes, Limits::default()).unwrap();
    feed(&mut lm, &lines[half..]);
    feed(&mut back, &lines[half..]);
    let d = Duration::from_secs(3600);
    let a = lm.snapshot(last + 1, d).summary("myapp", d);
    let b = back.snapshot(last + 1, d).summary("myapp", d);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert_eq!(lm.encode(), back.encode());
}

/// Router lines in Heroku's format with service and connect times drawn from a
/// distribution, spread over up to 110 minutes.
fn router_lines() -> impl Strategy<Value = Vec<(i64, u16, f64, u32, u64)>> {
    let service = prop_oneof![
        (1u32..5_000).prop_map(f64::from),
        (0.0f64..10.0).prop_map(|e| e.exp().floor()),
        (0.0f64..1.0).prop_map(|u| (-(1.0 - u).ln() * 80.0).floor()),
        prop::sample::select(vec![0.0, 1.0, 2.0, 30_000.0]),
    ];
    let status = prop::sample::select(vec![101u16, 200, 200, 200, 204, 302, 404, 499, 500, 503]);
    prop::collection::vec(
        (0i64..110 * 60, status, service, 0u32..50, 0u64..100_000),
        1..600,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_router_lines_match(mut reqs in router_lines(), measures in prop::collection::vec(0.0f64..1e5, 0..300)) {
        let t0 = 1_714_564_800;
        reqs.sort_by_key(|r| r.0);
        let text: String = reqs
            .iter()
            .map(|(t, status, service, connect, bytes)| {
                let ts = time::OffsetDateTime::from_unix_timestamp(t0 + t).unwrap()
                    .format(&time::format_description::well_known::Rfc3339).unwrap();
                format!("{ts} heroku[router]: at=info method=GET path=\"/\" host=a.herokuapp.com request_id=x fwd=\"1.2.3.4\" dyno=web.1 connect={connect}ms service={service}ms status={status} bytes={bytes} protocol=https\n")
            })
            .chain(measures.iter().enumerate().map(|(i, v)| {
                let ts = time::OffsetDateTime::from_unix_timestamp(t0 + (i as i64 * 13) % (110 * 60)).unwrap()
                    .format(&time::format_description::well_known::Rfc3339).unwrap();
                format!("{ts} app[web.1]: measure#work={v:.3}ms\n")
            }))
            .collect();
        let mut lines = lines(&text);
        lines.sort_by_key(|l| l.at);
        let mut lm = LogMetrics::new(t0, Limits::default());
        feed(&mut lm, &lines);
        let now = t0 + 110 * 60;
        let d = Duration::from_secs(2 * 3600);
        let s = lm.snapshot(now, d).summary("app", d);
        let e = Independent::new().compute(&lines, t0, now);
        check(&s, &e);
    }

    #[test]
    fn any_bytes_are_read_without_panic(msg in prop::collection::vec(any::<u8>(), 0..300), router in any::<bool>()) {
        let mut lm = LogMetrics::new(0, Limits::default());
        let (source, procid): (&[u8], &[u8]) = if router { (b"heroku", b"router") } else { (b"app", b"web.1") };
        let mut with_pairs = b"count#a=".to_vec();
        with_pairs.extend_from_slice(&msg);
        lm.observe(1, source, procid, &msg);
        lm.observe(2, source, procid, &with_pairs);
        let d = Duration::from_secs(60);
        let s = lm.snapshot(3, d).summary("app", d);
        prop_assert!(s.router.requests <= 2, "{} requests", s.router.requests);
        let bytes = lm.encode();
        prop_assert!(LogMetrics::decode(&bytes, Limits::default()).is_ok(), "{:?}", LogMetrics::decode(&bytes, Limits::default()).err());
    }
}
