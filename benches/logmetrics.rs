//! Cost of metrics from the logs: `LogMetrics::observe` per line for router lines, l2met
//! lines, plain app lines and app lines with a `#` that is not l2met (ns/line and lines/s),
//! then the memory of one channel after 24 hours of busy minutes, printed at the start.
//!
//! ```text
//! cargo bench --bench logmetrics              # everything
//! cargo bench --bench logmetrics -- memory    # only the memory report
//! cargo bench --bench logmetrics -- observe   # only the per-line costs
//! ```
//! The time advances one second every 2,000 lines, so periods close as they would at
//! 2,000 lines/s and their cost is in the figures. Each cost is measured twice: `observe`
//! on wall-clock time, `cpu_observe` on the on-CPU time of the benchmark thread (from
//! `/proc/thread-self/schedstat`), which holds when other builds share the machine.

/// The `logplex` binary's allocator, so that what the router does in this process costs
/// what it costs in the binary (glibc's malloc gives other figures).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// On-CPU time of the calling thread in nanoseconds (first field of schedstat).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// A criterion measurement of on-CPU time, formatted like wall-clock time.
struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns().unwrap_or(0)
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().unwrap_or(0).saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, ns: &u64) -> f64 {
        *ns as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use logplex::logmetrics::{Limits, LogMetrics};
use std::time::{Duration, Instant};

const T0: i64 = 1_714_564_800;
const LINES: usize = 10_000;
/// Passes over the lines per iteration: plain lines take a few ns each, and the on-CPU
/// clock only moves at scheduler ticks.
const PASSES: usize = 16;

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Log-normal-ish latency in ms: 5 ms to a few seconds, most around 30–100.
    fn latency(&mut self) -> u64 {
        let u = (self.below(1_000_000) as f64 + 0.5) / 1e6;
        let v = (3.6 + 1.0 * (u / (1.0 - u)).ln() * 0.55).exp();
        (v as u64).clamp(1, 30_000)
    }
}

fn router_line(r: &mut Rng) -> String {
    let status = [200, 200, 200, 200, 201, 302, 304, 404, 500, 503][r.below(10) as usize];
    let code = if status == 503 && r.below(2) == 0 {
        "at=error code=H12 desc=\"Request timeout\" "
    } else {
        "at=info "
    };
    format!(
        "{code}method=GET path=\"/api/v1/orders/{}?page=2\" host=myapp.herokuapp.com \
         request_id=8601b555-6a83-4c12-8269-{:012x} fwd=\"204.204.{}.{}\" dyno=web.{} \
         connect={}ms service={}ms status={status} bytes={} protocol=https",
        r.below(100_000),
        r.next() & 0xffff_ffff_ffff,
        r.below(256),
        r.below(256),
        1 + r.below(4),
        r.below(5),
        r.latency(),
        r.below(60_000),
    )
}

fn l2met_line(r: &mut Rng) -> String {
    match r.below(3) {
        0 => format!(
            "method=GET path=/orders format=html controller=OrdersController action=index \
             status=200 duration={0}.12 view={1}.40 db={2}.25 measure#rails.request={0}.12ms \
             measure#rails.db={2}.25ms count#rails.requests",
            r.latency(),
            r.latency() / 2,
            r.latency() / 3
        ),
        1 => format!(
            "source=web.{} dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 \
             sample#memory_total={}.{}MB sample#memory_rss={}.00MB sample#memory_cache=0.00MB \
             sample#memory_swap=0.00MB sample#memory_pgpgin={}pages sample#memory_quota=512.00MB",
            1 + r.below(4),
            150 + r.below(300),
            r.below(100),
            140 + r.below(300),
            r.below(400_000)
        ),
        _ => format!(
            "count#signups sample#queue.depth={} measure#email.send={}ms",
            r.below(40),
            r.latency()
        ),
    }
}

fn plain_line(r: &mut Rng) -> String {
    format!(
        "Completed 200 OK in {}ms (Views: {}.2ms | ActiveRecord: {}.9ms | Allocations: {})",
        r.latency(),
        r.below(80),
        r.below(40),
        r.below(90_000)
    )
}

fn hash_line(r: &mut Rng) -> String {
    format!(
        "Processing by OrdersController#index as HTML; Parameters: {{\"page\"=>\"{}\"}}",
        r.below(100)
    )
}

/// `observe` over `lines` once, the clock advancing one second every 2,000 lines.
fn run(lm: &mut LogMetrics, now: &mut i64, n: &mut u64, lines: &[(&[u8], &[u8], Vec<u8>)]) {
    for (source, procid, msg) in lines {
        *n += 1;
        if *n % 2000 == 0 {
            *now += 1;
        }
        lm.observe(*now, source, procid, black_box(msg));
    }
}

fn observe<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    type Make = fn(&mut Rng) -> String;
    let kinds: [(&str, &[u8], &[u8], Make); 4] = [
        ("router", b"heroku", b"router", router_line),
        ("l2met", b"app", b"web.1", l2met_line),
        ("plain", b"app", b"web.1", plain_line),
        ("hash_not_l2met", b"app", b"web.1", hash_line),
    ];
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements((LINES * PASSES) as u64));
    for (name, source, procid, make) in kinds {
        let lines: Vec<(&[u8], &[u8], Vec<u8>)> = (0..LINES)
            .map(|_| (source, procid, make(&mut r).into_bytes()))
            .collect();
        let mut lm = LogMetrics::new(T0, Limits::default());
        let (mut now, mut n) = (T0, 0);
        // Warm: names known, arrays grown, as in the steady state.
        run(&mut lm, &mut now, &mut n, &lines);
        g.bench_function(BenchmarkId::new(name, LINES * PASSES), |b| {
            b.iter(|| {
                for _ in 0..PASSES {
                    run(&mut lm, &mut now, &mut n, &lines);
                }
            })
        });
    }
    g.finish();
}

/// What a save of `lm` costs: the time taking it under the channel's lock takes
/// (`LogMetrics::to_save`), the time making its bytes out of the lock takes, and their size.
fn save(lm: &LogMetrics) -> String {
    let t = Instant::now();
    let taken = lm.to_save();
    let take = t.elapsed();
    let t = Instant::now();
    let bytes = taken.bytes();
    let make = t.elapsed();
    format!(
        "save: {:>5.0} µs under the lock, {:>6.2} ms for its {:>6.1} KiB after",
        take.as_secs_f64() * 1e6,
        make.as_secs_f64() * 1e3,
        bytes.len() as f64 / 1024.0
    )
}

/// One channel fed for 24 hours + 1 minute, `per_minute` router lines and `l2met` l2met
/// lines a minute (names: `measures` measures, 5 counts, 8 runtime samples); returns the
/// bytes it holds, the time a 24-hour summary takes and what a save costs ([`save`]).
fn day(
    per_minute: u64,
    l2met: u64,
    measures: u64,
    limits: Limits,
) -> (usize, Duration, Duration, String) {
    let mut r = Rng(42);
    let mut lm = LogMetrics::new(T0, limits);
    let mut router = String::new();
    let mut app = String::new();
    for m in 0..(24 * 60 + 1) {
        for i in 0..per_minute {
            let now = T0 + m * 60 + (i * 60 / per_minute) as i64;
            router.clear();
            router.push_str(&router_line(&mut r));
            lm.observe(now, b"heroku", b"router", router.as_bytes());
        }
        for i in 0..l2met {
            let now = T0 + m * 60 + (i * 60 / l2met.max(1)) as i64;
            app.clear();
            match i % 3 {
                0 => app.push_str(
                    &l2met_line(&mut r).replace("rails.db", &format!("m{}", i % measures.max(1))),
                ),
                1 => app.push_str(&format!(
                    "count#c{}=2 sample#queue.depth={}",
                    i % 5,
                    r.below(40)
                )),
                _ => app.push_str(&l2met_line(&mut r)),
            }
            lm.observe(now, b"app", b"web.1", app.as_bytes());
        }
    }
    let now = T0 + (24 * 60 + 1) * 60 - 1;
    let t = Instant::now();
    let snap = lm.snapshot(now, Duration::from_secs(86_400));
    let snap_time = t.elapsed();
    let t = Instant::now();
    let s = snap.summary("bench", Duration::from_secs(86_400));
    let query_time = t.elapsed();
    assert!(s.router.requests > 0 || per_minute == 0);
    (lm.memory(), snap_time, query_time, save(&lm))
}

fn memory() {
    println!("memory of one channel after 24 h (LogMetrics::memory), and a since=24h query:");
    for (label, per_minute, l2met, measures, limits) in [
        (
            "quiet: 60 router + 30 l2met lines/min",
            60,
            30,
            3,
            Limits::default(),
        ),
        (
            "busy: 600 router + 300 l2met lines/min",
            600,
            300,
            10,
            Limits::default(),
        ),
        (
            "heavy: 6000 router + 3000 l2met lines/min",
            6000,
            3000,
            20,
            Limits::default(),
        ),
        (
            "heavy, 1 MiB budget",
            6000,
            3000,
            20,
            Limits {
                max_bytes: 1 << 20,
                ..Limits::default()
            },
        ),
    ] {
        let (bytes, snap, query, save) = day(per_minute, l2met, measures, limits);
        println!(
            "  {label:<45} {:>8.1} KiB   snapshot {:>6.0} µs, summary {:>6.1} ms; {save}",
            bytes as f64 / 1024.0,
            snap.as_secs_f64() * 1e6,
            query.as_secs_f64() * 1e3
        );
    }
    worst();
}

/// The worst case: 200 measure names, each with values over 12 decades every minute,
/// plus busy router lines.
fn worst() {
    let mut r = Rng(7);
    let mut lm = LogMetrics::new(T0, Limits::default());
    let mut msg = String::new();
    for m in 0..(24 * 60 + 1) {
        for i in 0..2000u64 {
            let now = T0 + m * 60 + (i * 60 / 2000) as i64;
            msg.clear();
            for k in 0..10 {
                let e = r.below(1200) as i32 - 600;
                msg.push_str(&format!(
                    "measure#w{}={:e} ",
                    (i * 10 + k) % 200,
                    10f64.powi(e / 100) * (1.0 + r.below(1000) as f64 / 1000.0)
                ));
            }
            lm.observe(now, b"app", b"web.1", msg.as_bytes());
            msg.clear();
            msg.push_str(&router_line(&mut r));
            lm.observe(now, b"heroku", b"router", msg.as_bytes());
        }
    }
    let c = lm.counters();
    println!(
        "  {:<45} {:>8.1} KiB   (budget 8 MiB; {} periods evicted); {}",
        "worst: 200 measures over 12 decades, 20k/min",
        lm.memory() as f64 / 1024.0,
        c.evicted,
        save(&lm)
    );
}

fn main() {
    // Criterion's filter is the first argument that is not an option (cargo adds --bench).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if filters.is_empty() || filters.iter().any(|f| f == "memory") {
        memory();
    }
    if filters.iter().any(|f| f == "memory") {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    observe(&mut c, "observe");
    c.final_summary();
    if thread_cpu_ns().is_some() {
        let mut c = Criterion::default()
            .with_measurement(CpuTime)
            .configure_from_args();
        observe(&mut c, "cpu_observe");
        c.final_summary();
    }
}
