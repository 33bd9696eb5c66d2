//! Metrics from the logs: request counts, errors and latency per channel from the Heroku
//! router's lines, and l2met `count#`, `sample#` and `measure#` values from any line, rolled
//! up by minute for 24 hours.
//!
//! # What is read
//! - Router lines (SOURCE `heroku`, PROCID `router`): `status` (a request, by class),
//!   `code=Hnn`, `service` and `connect` in ms, `bytes`.
//! - Any other line with `count#NAME[=N]`, `sample#NAME=V[unit]` or `measure#NAME=V[unit]`
//!   pairs (Heroku's runtime metrics `sample#memory_total=212.3MB` included). A value keeps
//!   the unit it was sent in; a name keeps the unit of its first value and values in
//!   another unit are left out. At most [`Limits::max_names`] names (all kinds together)
//!   for the last 24 hours; values of further names are counted and left out.
//! - Any other line costs one `memchr` for `#`. Values that do not parse are counted in
//!   [`Counters::malformed`] and left out, never guessed.
//!
//! Time is the caller's clock when the line is stored (Unix seconds), not the line's
//! TIMESTAMP, which a dyno or a replay may set to anything.
//!
//! # Periods and roll-ups
//! Lines go to an open 10-second period; when it ends it is kept (compact,
//! postcard-encoded) and merged into the open minute, a minute into the open hour. Kept:
//! - 10-second periods for 5 minutes: alert windows up to 5 minutes are exact to 10 s;
//! - minutes for 24 hours, with their sketches for the last 2 hours; older minutes keep
//!   their counts (requests, codes, bytes, l2met counts, samples, measure counts) and the
//!   p95 of service time, so counts are exact to the minute over any range of 24 hours;
//! - hours (sketches only) for 24 hours, so quantiles over a longer range merge whole hours
//!   (an hour is in the range when more than half of it is).
//!
//! Quantiles come from DDSketch-style sketches: logarithmic buckets of relative width 2α,
//! α = [`ALPHA`] = 0.9 %, so any quantile of any merge of periods is within 0.9 % of the
//! exact one (plus 0.05 % for rounding to 4 digits in [`Summary`]). We chose it over an HDR
//! histogram because l2met values are any floats in any unit (`load_avg_1m=0.2`, negative
//! measures, bytes up to 10¹⁰), which HDR's integers in a declared range do not fit, and
//! because closed periods must be small: a sketch keeps only its non-empty buckets, 2–4
//! bytes each, where an HDR histogram of 1 % over 1 ms–30 s is a dense array of about 1,150
//! counters.
//!
//! # Memory per channel
//! Closed periods are postcard bytes, at most [`Limits::max_bytes`] (8 MiB by default).
//! When over it, detail goes first (the sketches of the oldest minutes, which their hour
//! still has, then 10-second periods, which their minute still has), then data, oldest
//! first, counted in [`Counters::evicted`]. The open periods are three dense aggregates:
//! 2 router sketches and one per measure name, each a window of at most 2 × 2048 counts
//! of 8 bytes but in practice only the keys in use (≈ 400 for ms latencies); plus the
//! names, under 100 bytes each.
//!
//! So the bound is [`Limits::max_bytes`] + 3 × (2 + measure names) × 2 × 2048 × 8 bytes:
//! 8 MiB + about 19 MiB for 200 measure names whose values span 16 decades of both signs.
//! Measured (`cargo bench --bench logmetrics -- memory`, after 24 hours): 665 KiB for a
//! quiet channel (60 router and 30 l2met lines a minute, 3 measures), 970 KiB for a busy
//! one (600 and 300, 10 measures), 1.4 MiB for a heavy one (6,000 and 3,000, 20
//! measures), 15 MiB for 200 measure names over 12 decades at 20,000 values a minute.
//!
//! # Use
//! The ingest path calls [`LogMetrics::observe`] under the channel's lock; nothing here
//! locks. A query takes a [`Snapshot`] under that lock (the closed periods are shared, the
//! open ones copied) and computes without it: [`Snapshot::summary`] for the API's JSON,
//! [`Snapshot::value`] for a [`Metric`] of an alert rule. [`LogMetrics::counters`] gives the
//! cumulative counters for Prometheus (labels: status class, H-code). [`LogMetrics::encode`]
//! and [`LogMetrics::decode`] carry the roll-ups over a restart.

mod extract;
mod names;
mod period;
mod persist;
mod query;
mod reads;
mod sketch;

pub use extract::{Kind, RouterLine};
pub use persist::{DecodeError, Saving};
pub use query::{
    ByStatus, L2metSummary, MeasureStat, MeasureSummary, Metric, MetricError, MinuteSummary, Num,
    Quantile, Quantiles, RouterSummary, SampleStat, SampleSummary, Snapshot, Summary, Time,
};
pub use reads::Reads;
pub use sketch::ALPHA;

use names::Names;
use period::{Agg, Parts, Record, CLASSES, CODES};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Seconds in a fine period, kept for short alert windows.
pub const FINE: i64 = 10;
/// Seconds in a minute period.
pub const MINUTE: i64 = 60;
/// Seconds in an hour period.
pub const HOUR: i64 = 3600;
/// How far back queries reach: 24 hours.
pub const RETENTION: Duration = Duration::from_secs(86_400);
/// Closed 10-second periods kept: 5 minutes.
const FINE_KEPT: i64 = 30;
/// Closed minutes that keep their sketches: 2 hours (older ones keep counts only).
const FULL_MINUTES: i64 = 120;
/// Minutes kept: 24 hours, the open one included.
const MINUTES_KEPT: i64 = 1440;
/// Closed hours kept (their sketches only).
const HOURS_KEPT: i64 = 24;
/// What a kept record costs beside its bytes: the `Arc` header and the ring entry.
const RECORD_OVERHEAD: usize = 16 + std::mem::size_of::<Closed>();

/// The bounds of one channel's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct l2met names (all kinds together) kept for the last 24 hours; values of
    /// further names are left out and counted in [`Counters::names_over_limit`].
    pub max_names: usize,
    /// Bytes of closed periods kept; past it, detail is dropped oldest first (see the
    /// module doc).
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_names: 200,
            max_bytes: 8 << 20,
        }
    }
}

/// A closed period as kept: its start and its postcard bytes, shared with snapshots.
#[derive(Debug, Clone)]
struct Closed {
    start: i64,
    /// Minute records: whether the sketches are still there.
    full: bool,
    data: Arc<[u8]>,
}

/// The cumulative counters of a channel since it was made (or restored), for Prometheus.
/// Their labels are bounded: status class (5), H-code (100); never a path or a dyno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Router requests by status class, `1xx` to `5xx`.
    pub requests: [u64; CLASSES],
    /// Router lines by H-code, `H00` to `H99`.
    pub h_codes: [u64; CODES],
    /// Bytes of router responses.
    pub bytes: u64,
    /// l2met names kept now (a gauge).
    pub names: u64,
    /// l2met values left out because their name was over [`Limits::max_names`].
    pub names_over_limit: u64,
    /// Values left out because they did not parse (`service=abc`) or came in another unit
    /// than their name's.
    pub malformed: u64,
    /// Closed periods dropped to stay within [`Limits::max_bytes`] (data lost, not only
    /// detail).
    pub evicted: u64,
}

impl Counters {
    /// Requests by status class label: `("1xx", n)` … `("5xx", n)`.
    pub fn by_status(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .into_iter()
            .zip(self.requests)
    }

    /// The H-codes seen, by label: `("H12", n)`; codes never seen are left out.
    pub fn h_codes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.h_codes
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(c, &n)| (h_code_label(c), n))
    }
}

/// `H00` … `H99`.
fn h_code_label(c: usize) -> &'static str {
    const fn labels() -> [[u8; 3]; CODES] {
        let mut out = [[b'H', b'0', b'0']; CODES];
        let mut i = 0;
        while i < CODES {
            out[i][1] = b'0' + (i / 10) as u8;
            out[i][2] = b'0' + (i % 10) as u8;
            i += 1;
        }
        out
    }
    static LABELS: [[u8; 3]; CODES] = labels();
    LABELS
        .get(c)
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or("H??")
}

/// Cumulative counts of the closed 10-second periods.
#[derive(Debug, Clone, Default)]
struct Totals {
    requests: [u64; CLASSES],
    h_codes: Vec<u64>,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, a: &Agg) {
        self.h_codes.resize(CODES, 0);
        for (t, n) in self.requests.iter_mut().zip(a.requests) {
            *t += n;
        }
        for (t, n) in self.h_codes.iter_mut().zip(a.h_codes) {
            *t += n;
        }
        self.bytes += a.bytes;
    }
}

fn floor(t: i64, len: i64) -> i64 {
    t.div_euclid(len) * len
}

fn ceil(t: i64, len: i64) -> i64 {
    floor(t + len - 1, len)
}

/// The fields of a Heroku router line (`heroku[router]`) that metrics count; `None` for
/// any other line. (Ingest reads whole runs before the channel's lock: [`Reads`].)
#[inline]
fn read_router(source: &[u8], procid: &[u8], msg: &[u8]) -> Option<RouterLine> {
    extract::is_router(source, procid).then(|| extract::router(msg))
}

/// The metrics of one channel (see the module doc). Not synchronised: the channel's lock
/// guards it.
#[derive(Debug)]
pub struct LogMetrics {
    limits: Limits,
    /// When the metrics were started (Unix seconds): nothing before.
    origin: i64,
    names: Names,
    /// The open periods: `fine` gets the lines; it is merged into `minute` when it closes,
    /// `minute` into `hour` (sketches only).
    fine: Agg,
    minute: Agg,
    hour: Agg,
    fines: VecDeque<Closed>,
    minutes: VecDeque<Closed>,
    hours: VecDeque<Closed>,
    /// Bytes of the closed periods, with [`RECORD_OVERHEAD`] each.
    closed_bytes: usize,
    /// Minutes from here on keep their sketches; older ones are thin.
    sketch_floor: i64,
    /// 10-second periods from here on are all kept (older ones may have been dropped to
    /// stay within the budget).
    fine_floor: i64,
    totals: Totals,
    names_over_limit: u64,
    malformed: u64,
    evicted: u64,
}

impl LogMetrics {
    /// Empty metrics started at `now` (Unix seconds).
    pub fn new(now: i64, limits: Limits) -> LogMetrics {
        let fs = floor(now, FINE);
        LogMetrics {
            limits,
            origin: now,
            names: Names::default(),
            fine: Agg::new(fs),
            minute: Agg::new(floor(now, MINUTE)),
            hour: Agg::new(floor(now, HOUR)),
            fines: VecDeque::new(),
            minutes: VecDeque::new(),
            hours: VecDeque::new(),
            closed_bytes: 0,
            sketch_floor: i64::MIN,
            fine_floor: i64::MIN,
            totals: Totals::default(),
            names_over_limit: 0,
            malformed: 0,
            evicted: 0,
        }
    }

    /// Takes in one line stored at `now` (Unix seconds, the caller's clock, read once per
    /// batch): its SOURCE (token name), PROCID and MSG. A line that is neither the router's
    /// nor holds a `#` costs one `memchr`. Allocates nothing in the steady state (only for
    /// a new l2met name, or once per 10 seconds to close a period).
    #[inline]
    pub fn observe(&mut self, now: i64, source: &[u8], procid: &[u8], msg: &[u8]) {
        match read_router(source, procid, msg) {
            Some(r) => {
                self.roll(now);
                self.add_router(&r);
            }
            None => self.observe_other(now, msg),
        }
    }

    /// [`LogMetrics::observe`] of a router line read by [`read_router`], already
    /// [`rolled`](LogMetrics::roll) to its time.
    #[inline]
    fn add_router(&mut self, r: &RouterLine) {
        self.malformed += r.malformed as u64;
        self.fine.router(r);
    }

    /// The lines of a run read by ingest ([`Reads`]), for a batch already
    /// [`rolled`](LogMetrics::roll) to its time `now`.
    pub fn add_reads(&mut self, now: i64, r: &Reads) {
        self.malformed += r.malformed;
        self.fine.add_reads(r);
        for msg in &r.l2met {
            self.observe_other(now, msg);
        }
    }

    /// [`LogMetrics::observe`] of a line that is not the router's: its l2met pairs, if any.
    #[inline]
    pub fn observe_other(&mut self, now: i64, msg: &[u8]) {
        if extract::has_l2met(msg) {
            self.roll(now);
            self.l2met(now, msg);
        }
    }

    fn l2met(&mut self, now: i64, msg: &[u8]) {
        for item in extract::l2met(msg) {
            let extract::Item::Metric {
                kind,
                name,
                value,
                unit,
            } = item
            else {
                self.malformed += 1;
                continue;
            };
            let id = match self.names.get(kind, name) {
                Some(id) => id,
                None => {
                    let (Some(name), Ok(unit)) =
                        (extract::valid_name(name), std::str::from_utf8(unit))
                    else {
                        self.malformed += 1;
                        continue;
                    };
                    match self
                        .names
                        .insert(kind, name, unit, now, self.limits.max_names)
                    {
                        Some(id) => id,
                        None => {
                            self.names_over_limit += 1;
                            continue;
                        }
                    }
                }
            };
            if self
                .names
                .slot(id)
                .is_some_and(|s| s.unit.as_bytes() != unit)
            {
                self.malformed += 1;
                continue;
            }
            self.fine.name(id, kind, value);
        }
    }

    /// Closes the periods that ended before `now`. Lines call it; a query calls it through
    /// [`LogMetrics::snapshot`]. A clock going back leaves the periods as they are.
    #[inline]
    pub fn roll(&mut self, now: i64) {
        let fs = floor(now, FINE);
        if fs > self.fine.start {
            self.roll_to(fs);
        }
    }

    #[cold]
    fn roll_to(&mut self, fs: i64) {
        if !self.fine.is_empty() {
            let rec = self
                .fine
                .to_record(|id| self.names.slot(id).map(|s| s.kind), Parts::ALL);
            self.minute.merge(&rec, Parts::ALL);
            for &id in self.fine.touched() {
                self.names.seen(id, self.fine.start);
            }
            self.totals.add(&self.fine);
            Self::push(
                &mut self.fines,
                &mut self.closed_bytes,
                self.fine.start,
                &rec,
            );
        }
        self.fine.clear(fs);
        let ms = floor(fs, MINUTE);
        let new_minute = ms > self.minute.start;
        if new_minute {
            if !self.minute.is_empty() {
                let mut rec = self
                    .minute
                    .to_record(|id| self.names.slot(id).map(|s| s.kind), Parts::ALL);
                rec.service_p95 = self.minute.service.quantile(0.95);
                self.hour.merge(&rec, Parts::SKETCHES);
                Self::push(
                    &mut self.minutes,
                    &mut self.closed_bytes,
                    self.minute.start,
                    &rec,
                );
            }
            self.minute.clear(ms);
            let hs = floor(fs, HOUR);
            if hs > self.hour.start {
                if !self.hour.is_empty() {
                    let rec = self
                        .hour
                        .to_record(|id| self.names.slot(id).map(|s| s.kind), Parts::SKETCHES);
                    Self::push(
                        &mut self.hours,
                        &mut self.closed_bytes,
                        self.hour.start,
                        &rec,
                    );
                }
                self.hour.clear(hs);
            }
            self.expire(ms, hs);
        }
        while self
            .fines
            .front()
            .is_some_and(|f| f.start < fs - FINE_KEPT * FINE)
        {
            self.pop_fine();
        }
        if new_minute {
            self.names.collect(self.oldest());
        }
        self.enforce_budget();
    }

    fn push(ring: &mut VecDeque<Closed>, bytes: &mut usize, start: i64, rec: &Record) {
        let data: Arc<[u8]> = rec.encode().into();
        *bytes += data.len() + RECORD_OVERHEAD;
        ring.push_back(Closed {
            start,
            full: true,
            data,
        });
    }

    fn pop_fine(&mut self) {
        if let Some(f) = self.fines.pop_front() {
            self.closed_bytes -= f.data.len() + RECORD_OVERHEAD;
        }
    }

    /// Drops minutes and hours older than 24 hours and thins minutes older than two hours.
    fn expire(&mut self, ms: i64, hs: i64) {
        while let Some(m) = self.minutes.front() {
            if m.start > ms - MINUTES_KEPT * MINUTE {
                break;
            }
            self.closed_bytes -= m.data.len() + RECORD_OVERHEAD;
            self.minutes.pop_front();
        }
        while let Some(h) = self.hours.front() {
            if h.start >= hs - HOURS_KEPT * HOUR {
                break;
            }
            self.closed_bytes -= h.data.len() + RECORD_OVERHEAD;
            self.hours.pop_front();
        }
        let floor = ms - FULL_MINUTES * MINUTE;
        if floor > self.sketch_floor {
            // Full minutes are the newest ones: thin from `end` back to the first thin one.
            let end = self.minutes.partition_point(|m| m.start < floor);
            for i in (0..end).rev() {
                if !self.minutes[i].full {
                    break;
                }
                self.thin(i);
            }
            self.sketch_floor = floor;
        }
    }

    /// Drops the sketches of minute `i` (they live on in its hour).
    fn thin(&mut self, i: usize) {
        let Some(m) = self.minutes.get_mut(i) else {
            return;
        };
        if !m.full {
            return;
        }
        let old = m.data.len();
        if let Some(mut rec) = Record::decode(&m.data) {
            rec.thin();
            m.data = rec.encode().into();
        }
        m.full = false;
        self.closed_bytes = self.closed_bytes - old + m.data.len();
    }

    /// The start of the oldest period kept, open or closed.
    fn oldest(&self) -> i64 {
        [&self.fines, &self.minutes, &self.hours]
            .into_iter()
            .filter_map(|r| r.front().map(|c| c.start))
            .fold(self.hour.start, i64::min)
    }

    /// Keeps the closed periods within [`Limits::max_bytes`], giving up first what matters
    /// least: detail older than an hour (minute sketches, which their hour still has), then
    /// data older than an hour (whichever of the oldest hour and minute ends first), then
    /// 10-second periods, then the last hour's detail and data. Lost data is counted as
    /// evicted.
    fn enforce_budget(&mut self) {
        let recent = self.minute.start - HOUR;
        while self.closed_bytes > self.limits.max_bytes {
            let full = self.minutes.iter().position(|m| m.full);
            let oldest_end = [
                self.minutes.front().map(|m| m.start + MINUTE),
                self.hours.front().map(|h| h.start + HOUR),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(i) = full.filter(|&i| self.minutes[i].start < recent) {
                self.thin_for_budget(i);
            } else if oldest_end.is_some_and(|end| end <= recent) {
                self.evict_oldest();
            } else if let Some(f) = self.fines.front() {
                self.fine_floor = f.start + FINE;
                self.pop_fine();
            } else if let Some(i) = full {
                self.thin_for_budget(i);
            } else if oldest_end.is_some() {
                self.evict_oldest();
            } else {
                break;
            }
        }
    }

    fn thin_for_budget(&mut self, i: usize) {
        let start = self.minutes[i].start;
        self.thin(i);
        self.sketch_floor = self.sketch_floor.max(start + MINUTE);
    }

    /// Drops the oldest hour or minute, whichever ends first.
    fn evict_oldest(&mut self) {
        let minute_end = self.minutes.front().map_or(i64::MAX, |m| m.start + MINUTE);
        let hour_end = self.hours.front().map_or(i64::MAX, |h| h.start + HOUR);
        let gone = if minute_end <= hour_end {
            self.minutes.pop_front()
        } else {
            self.hours.pop_front()
        };
        if let Some(c) = gone {
            self.closed_bytes -= c.data.len() + RECORD_OVERHEAD;
            self.evicted += 1;
        }
    }

    /// The cumulative counters (see [`Counters`]).
    pub fn counters(&self) -> Counters {
        let mut c = Counters {
            requests: self.totals.requests,
            h_codes: [0; CODES],
            bytes: self.totals.bytes + self.fine.bytes,
            names: self.names.len() as u64,
            names_over_limit: self.names_over_limit,
            malformed: self.malformed,
            evicted: self.evicted,
        };
        for (i, t) in c.requests.iter_mut().enumerate() {
            *t += self.fine.requests[i];
        }
        for (i, t) in c.h_codes.iter_mut().enumerate() {
            *t = self.totals.h_codes.get(i).copied().unwrap_or(0) + self.fine.h_codes[i];
        }
        c
    }

    /// What a query needs, taken quickly under the channel's lock and read without it: the
    /// closed periods that may fall within `span` before `now` (shared, not copied) and the
    /// open ones (copied). Closes the periods that ended before `now` first.
    pub fn snapshot(&mut self, now: i64, span: Duration) -> Snapshot {
        self.roll(now);
        let now = now.max(self.fine.start);
        let span = span.min(RETENTION).as_secs() as i64;
        let from = now - span;
        let kind = |id| self.names.slot(id).map(|s| s.kind);
        let pick = |ring: &VecDeque<Closed>, from: i64| -> Vec<Closed> {
            let i = ring.partition_point(|c| c.start < from);
            ring.range(i..).cloned().collect()
        };
        Snapshot {
            now,
            origin: self.origin,
            sketch_floor: self.sketch_floor,
            fine_floor: self.fine_floor,
            names: self.names.table(),
            fines: pick(&self.fines, from),
            minutes: pick(&self.minutes, from - MINUTE),
            hours: pick(&self.hours, from - HOUR),
            open_fine: (self.fine.start, self.fine.to_record(kind, Parts::ALL)),
            open_minute: (self.minute.start, self.minute.to_record(kind, Parts::ALL)),
            open_hour: (self.hour.start, self.hour.to_record(kind, Parts::SKETCHES)),
        }
    }

    /// Bytes this channel's metrics hold, all included (closed periods, the open ones'
    /// arrays, the names).
    pub fn memory(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.closed_bytes
            + (self.fines.capacity() + self.minutes.capacity() + self.hours.capacity()
                - self.fines.len()
                - self.minutes.len()
                - self.hours.len())
                * std::mem::size_of::<Closed>()
            + self.fine.heap_bytes()
            + self.minute.heap_bytes()
            + self.hour.heap_bytes()
            + self.names.heap_bytes()
            + self.totals.h_codes.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An hour boundary (2024-05-01T12:00:00Z), so minutes and hours line up with it.
    const T0: i64 = 1_714_564_800;

    fn router(lm: &mut LogMetrics, now: i64, status: u16, service: u32) {
        let msg = format!(
            "at=info method=GET path=\"/\" host=a.herokuapp.com fwd=\"1.2.3.4\" dyno=web.1 \
             connect=1ms service={service}ms status={status} bytes=100 protocol=https"
        );
        lm.observe(now, b"heroku", b"router", msg.as_bytes());
    }

    fn summary(lm: &mut LogMetrics, now: i64, since: u64) -> Summary {
        lm.snapshot(now, Duration::from_secs(since))
            .summary("app", Duration::from_secs(since))
    }

    #[test]
    fn minutes_roll_at_their_boundaries() {
        let mut lm = LogMetrics::new(T0, Limits::default());
        router(&mut lm, T0 + 5, 200, 10);
        router(&mut lm, T0 + 59, 503, 20);
        router(&mut lm, T0 + 60, 200, 30);
        router(&mut lm, T0 + 125, 404, 40);
        let s = summary(&mut lm, T0 + 130, 3600);
        let rows: Vec<_> = s
            .minutes
            .iter()
            .map(|m| (m.at.0 - T0, m.requests, m.s5xx, m.service_p95_ms))
            .collect();
        assert_eq!(
            rows,
            vec![
                (0, 2, 1, Some(20.0)),
                (60, 1, 0, Some(30.0)),
                (120, 1, 0, Some(40.0))
            ]
        );
        assert_eq!(s.router.requests, 4);
        assert_eq!(
            (
                s.router.by_status.s2xx,
                s.router.by_status.s4xx,
                s.router.by_status.s5xx
            ),
            (2, 1, 1)
        );
        assert_eq!(s.router.bytes, 400);
        // A range starting mid-minute counts the minutes that start within it.
        let s = summary(&mut lm, T0 + 130, 100);
        assert_eq!(
            (s.since, s.router.requests, s.minutes.len()),
            (Time(T0 + 30), 2, 2)
        );
        // Minutes without lines are rows of zeros.
        let s = summary(&mut lm, T0 + 250, 3600);
        assert_eq!(s.minutes.len(), 5);
        assert_eq!(
            (s.minutes[3].requests, s.minutes[3].service_p95_ms),
            (0, None)
        );
    }

    #[test]
    fn short_windows_use_ten_second_periods() {
        let mut lm = LogMetrics::new(T0, Limits::default());
        for t in 0..=100 {
            router(
                &mut lm,
                T0 + t,
                if t % 10 == 0 { 500 } else { 200 },
                t as u32,
            );
        }
        let snap = lm.snapshot(T0 + 100, Duration::from_secs(3600));
        let v = |m: &str, w: u64| snap.value(&m.parse().unwrap(), Duration::from_secs(w));
        // 30 s before T0+100 is T0+70: the periods starting at 70, 80, 90 and the open one.
        assert_eq!(v("router.requests", 30), Some(31.0));
        assert_eq!(v("router.5xx", 30), Some(4.0));
        assert_eq!(v("router.5xx_ratio", 30), Some(4.0 / 31.0));
        assert_eq!(v("router.p50_service", 30).map(f64::round), Some(85.0));
        // A longer window reads minutes: all of them here.
        assert_eq!(v("router.requests", 600), Some(101.0));
        assert_eq!(v("router.5xx", 600), Some(11.0));
        assert_eq!(v("router.H12", 600), Some(0.0));
        assert_eq!(v("l2met.measure.none.p95", 600), None);
        assert_eq!(v("l2met.count.none", 600), Some(0.0));
        assert_eq!(snap.unit(&"router.p95_service".parse().unwrap()), "ms");
    }

    #[test]
    fn quantiles_beyond_two_hours_come_from_hours() {
        let mut lm = LogMetrics::new(T0, Limits::default());
        // Hour 0: service 100 ms; hour 1: 200 ms; hour 2 and the first minutes of hour 3:
        // 300 ms; one request a minute.
        for m in 0..190 {
            let service = [100, 200, 300, 300][(m / 60) as usize];
            router(&mut lm, T0 + m * 60 + 1, 200, service);
        }
        let now = T0 + 190 * 60 - 30;
        let s = summary(&mut lm, now, 4 * 3600);
        assert_eq!(s.router.requests, 190);
        assert_eq!(s.minutes.len(), 190);
        assert_eq!(s.minutes[0].service_p95_ms, Some(100.0));
        // Minutes older than 2 hours lost their sketches; hours 0 and 1 have them.
        assert!(lm.minutes.iter().filter(|m| !m.full).count() >= 60);
        let s = summary(&mut lm, now, 3 * 3600);
        // The range starts at 00:09:30: hour 0 is mostly in it, so it counts whole.
        let near = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() <= want * 0.01;
        assert!(
            near(s.router.service_ms.p50, 200.0),
            "{:?}",
            s.router.service_ms
        );
        assert!(
            near(s.router.service_ms.p99, 300.0),
            "{:?}",
            s.router.service_ms
        );
        assert_eq!(s.router.requests, 180);
        let s = summary(&mut lm, now, 3600);
        assert!(
            near(s.router.service_ms.p50, 300.0),
            "{:?}",
            s.router.service_ms
        );
        assert_eq!(s.router.requests, 60);
    }

    #[test]
    fn names_are_bounded_and_age_out() {
        let limits = Limits {
            max_names: 5,
            ..Limits::default()
        };
        let mut lm = LogMetrics::new(T0, limits);
        for i in 0..8 {
            lm.observe(T0, b"app", b"web.1", format!("count#n{i}=2").as_bytes());
        }
        lm.observe(T0, b"app", b"web.1", b"count#n0 count#n7");
        let c = lm.counters();
        assert_eq!((c.names, c.names_over_limit), (5, 4));
        let s = summary(&mut lm, T0 + 1, 60);
        assert_eq!(s.l2met.count.len(), 5);
        assert_eq!(s.l2met.count["n0"], Num(3.0));
        // A day later the old names are gone and new ones fit.
        lm.observe(T0 + 86_400 + 3_700, b"app", b"web.1", b"count#fresh");
        assert_eq!(lm.counters().names, 1);
    }

    #[test]
    fn a_name_keeps_its_first_unit() {
        let mut lm = LogMetrics::new(T0, Limits::default());
        lm.observe(
            T0,
            b"app",
            b"web.1",
            b"measure#render=20ms measure#render=2s measure#render=30ms",
        );
        let s = summary(&mut lm, T0 + 1, 60);
        assert_eq!(s.l2met.measure["render"].count, 2);
        assert_eq!(s.l2met.measure["render"].unit, "ms");
        assert_eq!(lm.counters().malformed, 1);
    }

    #[test]
    fn the_byte_budget_drops_detail_first_then_data() {
        let limits = Limits {
            max_bytes: 64 << 10,
            ..Limits::default()
        };
        let mut lm = LogMetrics::new(T0, limits);
        for m in 0..(26 * 60) {
            for i in 0..20 {
                router(
                    &mut lm,
                    T0 + m * 60 + i,
                    200,
                    (m * 7 + i * 13) as u32 % 3000,
                );
            }
        }
        assert!(lm.closed_bytes <= limits.max_bytes, "{}", lm.closed_bytes);
        assert!(lm.counters().evicted > 0);
        let now = T0 + 26 * 3600;
        let s = summary(&mut lm, now, 600);
        assert_eq!(s.router.requests, 200);
        assert!(s.router.service_ms.p50.is_some());
    }

    #[test]
    fn the_clock_going_back_or_jumping_is_harmless() {
        let mut lm = LogMetrics::new(T0, Limits::default());
        router(&mut lm, T0 + 100, 200, 5);
        router(&mut lm, T0 + 50, 200, 5); // counted in the open period
        let s = summary(&mut lm, T0 + 40, 3600);
        assert_eq!(s.router.requests, 2);
        router(&mut lm, T0 + 3 * 86_400, 200, 5);
        let s = summary(&mut lm, T0 + 3 * 86_400, 86_400);
        assert_eq!(s.router.requests, 1);
        assert_eq!(s.minutes.len(), 1440);
        assert_eq!(lm.minutes.len() + lm.hours.len(), 0);
    }

    #[test]
    fn counters_for_prometheus() {
        let mut lm = LogMetrics::new(T0, Limits::default());
        router(&mut lm, T0, 200, 5);
        router(&mut lm, T0 + 30, 503, 5);
        lm.observe(
            T0 + 31,
            b"heroku",
            b"router",
            b"at=error code=H12 status=503 service=30000ms",
        );
        lm.observe(T0 + 31, b"heroku", b"router", b"status=abc service=abc");
        let c = lm.counters();
        let status: Vec<_> = c.by_status().collect();
        assert_eq!(
            status,
            vec![("1xx", 0), ("2xx", 1), ("3xx", 0), ("4xx", 0), ("5xx", 2)]
        );
        assert_eq!(c.h_codes().collect::<Vec<_>>(), vec![("H12", 1)]);
        assert_eq!((c.bytes, c.malformed), (200, 2));
        assert_eq!(h_code_label(7), "H07");
    }

    #[test]
    fn the_summary_has_the_contract_shape() {
        let mut lm = LogMetrics::new(T0, Limits::default());
        router(&mut lm, T0 + 1, 200, 23);
        lm.observe(T0 + 2, b"heroku", b"router", b"at=error code=H12 desc=\"Request timeout\" connect=1ms service=30001ms status=503 bytes=0");
        lm.observe(
            T0 + 3,
            b"app",
            b"web.1",
            b"count#signups measure#render=23ms sample#db.pool=7",
        );
        let s = summary(&mut lm, T0 + 4, 3600);
        let json = serde_json::to_value(&s).unwrap();
        let want = serde_json::json!({
            "app": "app",
            "since": "2024-05-01T11:00:04Z",
            "router": {
                "requests": 2,
                "by_status": {"2xx": 1, "3xx": 0, "4xx": 0, "5xx": 1},
                "h_codes": {"H12": 1},
                "service_ms": {"p50": 23.0, "p95": 30001.0, "p99": 30001.0},
                "connect_ms": {"p50": 1.0, "p95": 1.0, "p99": 1.0},
                "bytes": 100
            },
            "l2met": {
                "count": {"signups": 1},
                "sample": {"db.pool": {"last": 7.0, "min": 7.0, "max": 7.0}},
                "measure": {"render": {"count": 1, "p50": 23.0, "p95": 23.0, "p99": 23.0}}
            },
            "minutes": [{"at": "2024-05-01T12:00:00Z", "requests": 2, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 1,
                         "service_p50_ms": 23.0, "service_p95_ms": 30001.0, "service_p99_ms": 30001.0}]
        });
        assert!(same_within_1pct(&json, &want), "{json}");
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back.router, s.router);
    }

    /// Equal JSON, numbers within 1 % (quantiles are estimates); same keys everywhere.
    fn same_within_1pct(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= 0.01 * y.abs()
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| same_within_1pct(v, w)))
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_within_1pct(v, w))
            }
            _ => a == b,
        }
    }
}
