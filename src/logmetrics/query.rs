//! Reading the roll-ups: a [`Snapshot`] taken under the channel's lock answers, without it,
//! the summary of a range ([`Summary`], the JSON of `GET /v2/channels/NAME/metrics`) and
//! the value of a named metric over a window ([`Metric`], for alert rules).

use super::extract::Kind;
use super::names::Slot;
use super::period::{Agg, Parts, Record};
use super::{ceil, floor, Closed, FINE, FINE_KEPT, HOUR, MINUTE, MINUTES_KEPT, RETENTION};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The periods a query reads, taken by [`super::LogMetrics::snapshot`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(super) now: i64,
    pub(super) origin: i64,
    pub(super) sketch_floor: i64,
    pub(super) fine_floor: i64,
    pub(super) names: Vec<Option<Slot>>,
    pub(super) fines: Vec<Closed>,
    pub(super) minutes: Vec<Closed>,
    pub(super) hours: Vec<Closed>,
    pub(super) open_fine: (i64, Record),
    pub(super) open_minute: (i64, Record),
    pub(super) open_hour: (i64, Record),
}

/// Rounds to 4 significant digits (0.05 % at most), so quantiles read well in JSON.
fn round4(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

fn merge_closed(acc: &mut Agg, c: &Closed, parts: Parts) {
    if let Some(r) = Record::decode(&c.data) {
        acc.merge(&r, parts);
    }
}

impl Snapshot {
    fn slot(&self, id: u16) -> Option<&Slot> {
        self.names.get(id as usize).and_then(Option::as_ref)
    }

    fn find(&self, kind: Kind, name: &str) -> Option<u16> {
        self.names
            .iter()
            .position(|s| {
                s.as_ref()
                    .is_some_and(|s| s.kind == kind && *s.name == *name)
            })
            .map(|i| i as u16)
    }

    /// The open minute: the minute aggregate and the open 10-second period in it.
    fn merge_open_minute(&self, acc: &mut Agg, parts: Parts) {
        acc.merge(&self.open_minute.1, parts);
        acc.merge(&self.open_fine.1, parts);
    }

    /// Sketches from `from` to now: from the minutes while they have them, else from whole
    /// hours (an hour counts when more than half of it is in the range), then minutes.
    fn merge_sketches(&self, acc: &mut Agg, from: i64) {
        let minutes_from = if from >= self.sketch_floor {
            from
        } else {
            let h = ceil(self.sketch_floor, HOUR);
            for c in self
                .hours
                .iter()
                .filter(|c| c.start < h && c.start + HOUR / 2 > from)
            {
                merge_closed(acc, c, Parts::SKETCHES);
            }
            if h > self.open_hour.0 {
                // The minutes of this hour lost their sketches: its aggregate has them.
                acc.merge(&self.open_hour.1, Parts::SKETCHES);
                self.merge_open_minute(acc, Parts::SKETCHES);
                return;
            }
            h
        };
        for c in self.minutes.iter().filter(|c| c.start >= minutes_from) {
            merge_closed(acc, c, Parts::SKETCHES);
        }
        self.merge_open_minute(acc, Parts::SKETCHES);
    }

    /// `parts` of the whole minutes from `from` (the open one included).
    fn minute_tier(&self, acc: &mut Agg, from: i64, parts: Parts) {
        if parts.counters {
            for c in self.minutes.iter().filter(|c| c.start >= from) {
                merge_closed(acc, c, Parts::COUNTERS);
            }
            self.merge_open_minute(acc, Parts::COUNTERS);
        }
        if parts.sketches {
            self.merge_sketches(acc, from);
        }
    }

    /// The summary of the last `since` (at most 24 hours): counts and the `minutes` rows
    /// over the whole minutes that start within it, the open one included; quantiles over
    /// the same minutes for the last two hours or so, and over whole hours further back.
    pub fn summary(&self, app: &str, since: Duration) -> Summary {
        self.summary_with(app, since, false)
    }

    /// [`Snapshot::summary`], with each minute's l2met values in its row when `l2met_minutes`
    /// (the web console's charts ask for them; left out by default, as they can be large).
    pub fn summary_with(&self, app: &str, since: Duration, l2met_minutes: bool) -> Summary {
        let from = self.now - since.min(RETENTION).as_secs() as i64;
        let mut acc = Agg::new(from);
        let mut rows = Vec::new();
        let kept = self.open_minute.0 - (MINUTES_KEPT - 1) * MINUTE;
        let first = ceil(from, MINUTE).max(floor(self.origin, MINUTE)).max(kept);
        let mut at = first;
        let mut minute = Agg::new(first);
        for c in self.minutes.iter().filter(|c| c.start >= first) {
            let Some(r) = Record::decode(&c.data) else {
                continue;
            };
            acc.merge(&r, Parts::COUNTERS);
            while at < c.start {
                rows.push(MinuteSummary::empty(at));
                at += MINUTE;
            }
            minute.clear(c.start);
            minute.merge(&r, Parts::ALL);
            rows.push(self.minute_row(&minute, r.service_p95, l2met_minutes));
            at = c.start + MINUTE;
        }
        while at < self.open_minute.0 {
            rows.push(MinuteSummary::empty(at));
            at += MINUTE;
        }
        let mut open = Agg::new(self.open_minute.0);
        self.merge_open_minute(&mut open, Parts::ALL);
        rows.push(self.minute_row(&open, open.service.quantile(0.95), l2met_minutes));
        self.merge_open_minute(&mut acc, Parts::COUNTERS);
        self.merge_sketches(&mut acc, from);
        Summary {
            app: app.to_string(),
            since: Time(from),
            router: RouterSummary::of(&acc),
            l2met: self.l2met(&acc),
            minutes: rows,
        }
    }

    /// The row of one minute; `service_p95` is the one the minute kept (closed minutes keep
    /// it when their sketches are dropped, after two hours; p50 and p99 are `None` then).
    fn minute_row(&self, m: &Agg, service_p95: Option<f64>, l2met: bool) -> MinuteSummary {
        MinuteSummary {
            at: Time(m.start),
            requests: m.total_requests(),
            s2xx: m.requests[1],
            s3xx: m.requests[2],
            s4xx: m.requests[3],
            s5xx: m.requests[4],
            service_p50_ms: m.service.quantile(0.5).map(round4),
            service_p95_ms: service_p95.map(round4),
            service_p99_ms: m.service.quantile(0.99).map(round4),
            l2met: if l2met {
                self.l2met(m)
            } else {
                L2metSummary::default()
            },
        }
    }

    fn l2met(&self, acc: &Agg) -> L2metSummary {
        let mut out = L2metSummary::default();
        for &id in acc.touched() {
            let (Some(slot), Some(a)) = (self.slot(id), acc.name_agg(id)) else {
                continue;
            };
            let name = slot.name.to_string();
            let unit = slot.unit.to_string();
            match slot.kind {
                Kind::Count => {
                    out.count.insert(name, Num(a.sum));
                }
                Kind::Sample if a.n > 0 => {
                    out.sample.insert(
                        name,
                        SampleSummary {
                            last: a.last,
                            min: a.min,
                            max: a.max,
                            unit,
                        },
                    );
                }
                Kind::Measure => {
                    let q = |q: Quantile| {
                        a.sketch
                            .as_ref()
                            .and_then(|s| s.quantile(q.q()))
                            .map(round4)
                    };
                    out.measure.insert(
                        name,
                        MeasureSummary {
                            count: a.n,
                            p50: q(Quantile::P50),
                            p95: q(Quantile::P95),
                            p99: q(Quantile::P99),
                            unit,
                        },
                    );
                }
                Kind::Sample => {}
            }
        }
        out
    }

    /// The value of `metric` over the last `window` (at most 24 hours): over 10-second
    /// periods for a window up to 5 minutes, else over minutes as in [`Snapshot::summary`].
    /// Either way the window is rounded down to whole periods, the open one included (so a
    /// 1-minute window covers 50 to 60 seconds). `None` when there is nothing to compute
    /// from (a quantile or ratio without values, a sample never sent); counts are 0 then.
    pub fn value(&self, metric: &Metric, window: Duration) -> Option<f64> {
        let w = window.min(RETENTION).as_secs().max(1) as i64;
        let from = self.now - w;
        let parts = metric.parts();
        let mut acc = Agg::new(from);
        if w <= FINE_KEPT * FINE && from >= self.fine_floor {
            for c in self.fines.iter().filter(|c| c.start >= from) {
                merge_closed(&mut acc, c, parts);
            }
            acc.merge(&self.open_fine.1, parts);
        } else {
            self.minute_tier(&mut acc, from, parts);
        }
        metric.eval(&acc, self)
    }

    /// The unit of a metric's values: `ms` for router times, the unit l2met values of the
    /// name came with (maybe empty), empty for counts and ratios.
    pub fn unit(&self, metric: &Metric) -> String {
        let l2met = |kind, name: &str| {
            self.find(kind, name)
                .and_then(|id| self.slot(id))
                .map_or(String::new(), |s| s.unit.to_string())
        };
        match metric {
            Metric::Service(_) | Metric::Connect(_) => "ms".into(),
            Metric::Sample(name, _) => l2met(Kind::Sample, name),
            Metric::Measure(name, MeasureStat::Quantile(_)) => l2met(Kind::Measure, name),
            _ => String::new(),
        }
    }
}

/// Unix seconds, written as RFC 3339 UTC (`2024-05-01T12:34:00Z`) in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub i64);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use time::format_description::well_known::Rfc3339;
        let t = time::OffsetDateTime::from_unix_timestamp(self.0).map_err(|_| fmt::Error)?;
        f.write_str(&t.format(&Rfc3339).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        use time::format_description::well_known::Rfc3339;
        let s = String::deserialize(d)?;
        time::OffsetDateTime::parse(&s, &Rfc3339)
            .map(|t| Time(t.unix_timestamp()))
            .map_err(serde::de::Error::custom)
    }
}

/// A number written as an integer when it is one (`3`, not `3.0`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Num(pub f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0.abs() < 9.0e15 {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

/// The metrics of a channel over a range: the JSON of `GET /v2/channels/NAME/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub app: String,
    /// Start of the range.
    pub since: Time,
    pub router: RouterSummary,
    pub l2met: L2metSummary,
    /// One row per minute of the range, oldest first, the open minute last; minutes
    /// without lines have zeros.
    pub minutes: Vec<MinuteSummary>,
}

/// The router's lines over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterSummary {
    /// Lines with a status (1xx included, which `by_status` leaves out).
    pub requests: u64,
    pub by_status: ByStatus,
    /// Lines by H-code (`H12`), whatever their status.
    pub h_codes: BTreeMap<String, u64>,
    pub service_ms: Quantiles,
    pub connect_ms: Quantiles,
    pub bytes: u64,
}

impl RouterSummary {
    fn of(a: &Agg) -> RouterSummary {
        let q = |s: &super::sketch::Sketch| Quantiles {
            p50: s.quantile(0.5).map(round4),
            p95: s.quantile(0.95).map(round4),
            p99: s.quantile(0.99).map(round4),
        };
        RouterSummary {
            requests: a.total_requests(),
            by_status: ByStatus {
                s2xx: a.requests[1],
                s3xx: a.requests[2],
                s4xx: a.requests[3],
                s5xx: a.requests[4],
            },
            h_codes: a
                .h_codes
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(c, &n)| (super::h_code_label(c).to_string(), n))
                .collect(),
            service_ms: q(&a.service),
            connect_ms: q(&a.connect),
            bytes: a.bytes,
        }
    }
}

/// Requests by status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByStatus {
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
}

/// p50, p95 and p99 within 1 % of the exact values; `null` without values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// l2met values over a range, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct L2metSummary {
    /// Sums of `count#` values.
    pub count: BTreeMap<String, Num>,
    pub sample: BTreeMap<String, SampleSummary>,
    pub measure: BTreeMap<String, MeasureSummary>,
}

impl L2metSummary {
    /// Whether no name has a value.
    pub fn is_empty(&self) -> bool {
        self.count.is_empty() && self.sample.is_empty() && self.measure.is_empty()
    }
}

/// A `sample#` name over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleSummary {
    pub last: f64,
    pub min: f64,
    pub max: f64,
    /// The unit the values came with (`MB`); not in the JSON, whose shape is fixed.
    #[serde(skip)]
    pub unit: String,
}

/// A `measure#` name over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureSummary {
    pub count: u64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// The unit the values came with (`ms`); not in the JSON, whose shape is fixed.
    #[serde(skip)]
    pub unit: String,
}

/// One minute of the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteSummary {
    /// Start of the minute.
    pub at: Time,
    pub requests: u64,
    #[serde(rename = "2xx", default)]
    pub s2xx: u64,
    #[serde(rename = "3xx", default)]
    pub s3xx: u64,
    #[serde(rename = "4xx", default)]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
    /// `None` without values, and for minutes older than two hours (whose sketches are
    /// dropped; their p95 is kept).
    #[serde(default)]
    pub service_p50_ms: Option<f64>,
    pub service_p95_ms: Option<f64>,
    #[serde(default)]
    pub service_p99_ms: Option<f64>,
    /// The minute's l2met values, when asked for (`l2met=minutes`); left out of the JSON
    /// when empty.
    #[serde(default, skip_serializing_if = "L2metSummary::is_empty")]
    pub l2met: L2metSummary,
}

impl MinuteSummary {
    fn empty(at: i64) -> MinuteSummary {
        MinuteSummary {
            at: Time(at),
            requests: 0,
            s2xx: 0,
            s3xx: 0,
            s4xx: 0,
            s5xx: 0,
            service_p50_ms: None,
            service_p95_ms: None,
            service_p99_ms: None,
            l2met: L2metSummary::default(),
        }
    }
}

/// A quantile a metric may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantile {
    P50,
    P95,
    P99,
}

impl Quantile {
    /// As a fraction: 0.5, 0.95, 0.99.
    pub fn q(self) -> f64 {
        match self {
            Quantile::P50 => 0.5,
            Quantile::P95 => 0.95,
            Quantile::P99 => 0.99,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Quantile::P50 => "p50",
            Quantile::P95 => "p95",
            Quantile::P99 => "p99",
        }
    }

    fn parse(s: &str) -> Option<Quantile> {
        Some(match s {
            "p50" => Quantile::P50,
            "p95" => Quantile::P95,
            "p99" => Quantile::P99,
            _ => return None,
        })
    }
}

/// What a metric reads of a `sample#` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleStat {
    Last,
    Min,
    Max,
}

/// What a metric reads of a `measure#` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeasureStat {
    Count,
    Quantile(Quantile),
}

/// A named metric that an alert rule can watch, parsed once from its name.
///
/// | name | value over the window |
/// |---|---|
/// | `router.requests` | router lines with a status |
/// | `router.1xx` … `router.5xx` | requests of that status class |
/// | `router.4xx_ratio`, `router.5xx_ratio` (any class) | that class / requests (none without requests) |
/// | `router.h_codes` | router lines with an H-code |
/// | `router.H12` (any `Hnn`) | router lines with that code |
/// | `router.p50_service`, `router.p95_service`, `router.p99_service` | service time, ms |
/// | `router.p50_connect`, `router.p95_connect`, `router.p99_connect` | connect time, ms |
/// | `router.bytes` | bytes of responses |
/// | `l2met.count.NAME` | sum of `count#NAME` |
/// | `l2met.sample.NAME.last`, `.min`, `.max` | `sample#NAME`, in its unit |
/// | `l2met.measure.NAME.count` | how many `measure#NAME` values |
/// | `l2met.measure.NAME.p50`, `.p95`, `.p99` | `measure#NAME`, in its unit |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Metric {
    Requests,
    /// Status class 1 to 5.
    Status(u8),
    StatusRatio(u8),
    HCodes,
    /// The code's number (`H12` is 12).
    HCode(u8),
    Service(Quantile),
    Connect(Quantile),
    Bytes,
    Count(String),
    Sample(String, SampleStat),
    Measure(String, MeasureStat),
}

/// A metric name that is not one of [`Metric`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown metric {0:?}: expected router.requests, router.5xx, router.5xx_ratio, \
     router.h_codes, router.H12, router.p95_service, router.p95_connect, router.bytes, \
     l2met.count.NAME, l2met.sample.NAME.last|min|max or l2met.measure.NAME.count|p50|p95|p99"
)]
pub struct MetricError(pub String);

fn class(s: &str) -> Option<u8> {
    match s.as_bytes() {
        [c @ b'1'..=b'5', b'x', b'x'] => Some(c - b'0'),
        _ => None,
    }
}

fn l2met_name(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.len() <= super::extract::MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'));
    ok.then_some(s)
}

impl FromStr for Metric {
    type Err = MetricError;

    fn from_str(text: &str) -> Result<Metric, MetricError> {
        let parsed = if let Some(r) = text.strip_prefix("router.") {
            match r {
                "requests" => Some(Metric::Requests),
                "h_codes" => Some(Metric::HCodes),
                "bytes" => Some(Metric::Bytes),
                _ => {
                    if let Some(c) = class(r) {
                        Some(Metric::Status(c))
                    } else if let Some(c) = r.strip_suffix("_ratio").and_then(class) {
                        Some(Metric::StatusRatio(c))
                    } else if let [b'H', a @ b'0'..=b'9', b @ b'0'..=b'9'] = r.as_bytes() {
                        Some(Metric::HCode((a - b'0') * 10 + b - b'0'))
                    } else if let Some((q, what)) = r.split_once('_') {
                        match (Quantile::parse(q), what) {
                            (Some(q), "service") => Some(Metric::Service(q)),
                            (Some(q), "connect") => Some(Metric::Connect(q)),
                            _ => None,
                        }
                    } else {
                        None
                    }
                }
            }
        } else if let Some(name) = text.strip_prefix("l2met.count.") {
            l2met_name(name).map(|n| Metric::Count(n.to_string()))
        } else if let Some(rest) = text.strip_prefix("l2met.sample.") {
            rest.rsplit_once('.').and_then(|(name, stat)| {
                let stat = match stat {
                    "last" => SampleStat::Last,
                    "min" => SampleStat::Min,
                    "max" => SampleStat::Max,
                    _ => return None,
                };
                Some(Metric::Sample(l2met_name(name)?.to_string(), stat))
            })
        } else if let Some(rest) = text.strip_prefix("l2met.measure.") {
            rest.rsplit_once('.').and_then(|(name, stat)| {
                let stat = match stat {
                    "count" => MeasureStat::Count,
                    q => MeasureStat::Quantile(Quantile::parse(q)?),
                };
                Some(Metric::Measure(l2met_name(name)?.to_string(), stat))
            })
        } else {
            None
        };
        parsed.ok_or_else(|| MetricError(text.to_string()))
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Requests => f.write_str("router.requests"),
            Metric::Status(c) => write!(f, "router.{c}xx"),
            Metric::StatusRatio(c) => write!(f, "router.{c}xx_ratio"),
            Metric::HCodes => f.write_str("router.h_codes"),
            Metric::HCode(c) => write!(f, "router.H{c:02}"),
            Metric::Service(q) => write!(f, "router.{}_service", q.as_str()),
            Metric::Connect(q) => write!(f, "router.{}_connect", q.as_str()),
            Metric::Bytes => f.write_str("router.bytes"),
            Metric::Count(n) => write!(f, "l2met.count.{n}"),
            Metric::Sample(n, s) => {
                let s = match s {
                    SampleStat::Last => "last",
                    SampleStat::Min => "min",
                    SampleStat::Max => "max",
                };
                write!(f, "l2met.sample.{n}.{s}")
            }
            Metric::Measure(n, MeasureStat::Count) => write!(f, "l2met.measure.{n}.count"),
            Metric::Measure(n, MeasureStat::Quantile(q)) => {
                write!(f, "l2met.measure.{n}.{}", q.as_str())
            }
        }
    }
}

impl Metric {
    /// What the metric reads: counts, sketches or both.
    fn parts(&self) -> Parts {
        match self {
            Metric::Service(_)
            | Metric::Connect(_)
            | Metric::Measure(_, MeasureStat::Quantile(_)) => Parts::SKETCHES,
            _ => Parts::COUNTERS,
        }
    }

    fn eval(&self, a: &Agg, s: &Snapshot) -> Option<f64> {
        let class = |c: &u8| a.requests[(*c as usize).clamp(1, 5) - 1] as f64;
        let name = |kind, n: &str| s.find(kind, n).and_then(|id| a.name_agg(id));
        match self {
            Metric::Requests => Some(a.total_requests() as f64),
            Metric::Status(c) => Some(class(c)),
            Metric::StatusRatio(c) => {
                let total = a.total_requests();
                (total > 0).then(|| class(c) / total as f64)
            }
            Metric::HCodes => Some(a.h_codes.iter().sum::<u64>() as f64),
            Metric::HCode(c) => Some(a.h_codes.get(*c as usize).copied().unwrap_or(0) as f64),
            Metric::Service(q) => a.service.quantile(q.q()),
            Metric::Connect(q) => a.connect.quantile(q.q()),
            Metric::Bytes => Some(a.bytes as f64),
            Metric::Count(n) => Some(name(Kind::Count, n).map_or(0.0, |a| a.sum)),
            Metric::Sample(n, stat) => {
                name(Kind::Sample, n)
                    .filter(|a| a.n > 0)
                    .map(|a| match stat {
                        SampleStat::Last => a.last,
                        SampleStat::Min => a.min,
                        SampleStat::Max => a.max,
                    })
            }
            Metric::Measure(n, MeasureStat::Count) => {
                Some(name(Kind::Measure, n).map_or(0, |a| a.n) as f64)
            }
            Metric::Measure(n, MeasureStat::Quantile(q)) => name(Kind::Measure, n)
                .and_then(|a| a.sketch.as_ref())
                .and_then(|sk| sk.quantile(q.q())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip() {
        for name in [
            "router.requests",
            "router.2xx",
            "router.5xx",
            "router.5xx_ratio",
            "router.4xx_ratio",
            "router.h_codes",
            "router.H12",
            "router.H00",
            "router.p95_service",
            "router.p50_connect",
            "router.bytes",
            "l2met.count.signups",
            "l2met.sample.memory_total.last",
            "l2met.sample.db.pool.min",
            "l2met.measure.db.query.p99",
            "l2met.measure.rails.request.count",
        ] {
            let m: Metric = name.parse().unwrap();
            assert_eq!(m.to_string(), name);
        }
        assert_eq!(
            "l2met.measure.db.query.p95".parse(),
            Ok(Metric::Measure(
                "db.query".into(),
                MeasureStat::Quantile(Quantile::P95)
            ))
        );
        for bad in [
            "",
            "router",
            "router.p90_service",
            "router.6xx",
            "router.H1",
            "router.H123",
            "router.p95_latency",
            "l2met.count.",
            "l2met.sample.x",
            "l2met.sample.x.avg",
            "l2met.measure.x.p42",
            "l2met.measure..p50",
            "cpu",
        ] {
            let e = bad.parse::<Metric>().unwrap_err();
            assert!(e.to_string().contains("router.p95_service"), "{e}");
        }
    }

    #[test]
    fn minute_rows_carry_classes_quantiles_and_l2met_when_asked() {
        use super::super::{Limits, LogMetrics};
        const T0: i64 = 1_714_564_800;
        let mut lm = LogMetrics::new(T0, Limits::default());
        lm.observe(
            T0 + 4,
            b"app",
            b"web.1",
            b"count#signups=2 sample#db.pool=7 measure#render=23ms",
        );
        for (t, status, service) in [(5, 200, 10), (6, 302, 20), (7, 404, 30), (61, 503, 40)] {
            let msg = format!(
                "at=info method=GET path=\"/\" host=a.herokuapp.com dyno=web.1 \
                 connect=1ms service={service}ms status={status} bytes=100"
            );
            lm.observe(T0 + t, b"heroku", b"router", msg.as_bytes());
        }

        lm.observe(T0 + 62, b"app", b"web.1", b"sample#db.pool=5");
        let d = Duration::from_secs(3600);
        let snap = lm.snapshot(T0 + 70, d);
        let plain = snap.summary("app", d);
        let rows = &plain.minutes;
        let first = &rows[rows.len() - 2];
        assert_eq!(
            (
                first.requests,
                first.s2xx,
                first.s3xx,
                first.s4xx,
                first.s5xx
            ),
            (3, 1, 1, 1, 0)
        );
        let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() <= 0.01 * want);
        assert!(
            near(first.service_p50_ms, 20.0)
                && near(first.service_p95_ms, 30.0)
                && near(first.service_p99_ms, 30.0),
            "{first:?}"
        );
        assert!(first.l2met.is_empty(), "not asked for");
        let open = &rows[rows.len() - 1];
        assert_eq!((open.requests, open.s5xx), (1, 1));
        assert!(near(open.service_p50_ms, 40.0), "{open:?}");
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json["minutes"][0].get("l2met").is_none(), "{json}");

        let full = snap.summary_with("app", d, true);
        let rows = &full.minutes;
        let first = &rows[rows.len() - 2].l2met;
        assert_eq!(first.count["signups"], Num(2.0));
        assert_eq!(first.sample["db.pool"].last, 7.0);
        assert!(near(first.measure["render"].p50, 23.0));
        let open = &rows[rows.len() - 1].l2met;
        assert!(open.count.is_empty() && open.measure.is_empty());
        assert_eq!(open.sample["db.pool"].max, 5.0);
        assert_eq!(full.router, plain.router);
        let back: Summary = serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(
            back.minutes[rows.len() - 2].l2met.count["signups"],
            Num(2.0)
        );
    }

    #[test]
    fn rounding_and_numbers() {
        assert_eq!(round4(23.0456), 23.05);
        assert_eq!(round4(30001.0), 30000.0);
        assert_eq!(round4(0.012346), 0.01235);
        assert_eq!(round4(0.0), 0.0);
        assert_eq!(serde_json::to_string(&Num(3.0)).unwrap(), "3");
        assert_eq!(serde_json::to_string(&Num(2.5)).unwrap(), "2.5");
        assert_eq!(Time(1_714_566_840).to_string(), "2024-05-01T12:34:00Z");
        let t: Time = serde_json::from_str("\"2024-05-01T12:34:00Z\"").unwrap();
        assert_eq!(t, Time(1_714_566_840));
    }
}
