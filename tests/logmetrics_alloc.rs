//! `LogMetrics::observe` allocates nothing per line once warm: counted with dhat's global
//! allocator (its own test binary, one test, as dhat's heap testing requires).

use logplex::logmetrics::{Limits, LogMetrics};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const T0: i64 = 1_714_564_800;

#[test]
fn observe_allocates_nothing_per_line_once_warm() {
    let router: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "at=info method=GET path=\"/users/{i}\" host=myapp.herokuapp.com \
                 request_id=8601b555-6a83-4c12-8269-97c8e32cdb22 fwd=\"204.204.204.204\" \
                 dyno=web.1 connect={}ms service={}ms status={} bytes={} protocol=https",
                i % 7,
                5 + (i * 37) % 900,
                [200, 302, 404, 503][i % 4],
                i * 13
            )
        })
        .collect();
    let app: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "measure#rails.request={}.5ms count#rails.requests sample#memory_total={}.2MB \
                 Processing by UsersController#index",
                3 + (i * 31) % 700,
                150 + i % 200
            )
        })
        .collect();
    let plain = "Completed 200 OK in 23ms (Views: 12.2ms | ActiveRecord: 3.9ms)";
    let mut lm = LogMetrics::new(T0, Limits::default());
    let feed = |lm: &mut LogMetrics, now: i64| {
        for (r, a) in router.iter().zip(&app) {
            lm.observe(now, b"heroku", b"router", r.as_bytes());
            lm.observe(now, b"app", b"web.1", a.as_bytes());
            lm.observe(now, b"app", b"web.1", plain.as_bytes());
        }
    };
    // Warm: names known, the live arrays grown to the values' range.
    feed(&mut lm, T0);
    feed(&mut lm, T0 + 10);

    let _profiler = dhat::Profiler::builder().testing().build();
    // 3,000 lines within one 10-second period: not one allocation.
    let before = dhat::HeapStats::get().total_blocks;
    feed(&mut lm, T0 + 11);
    let within = dhat::HeapStats::get().total_blocks - before;
    dhat::assert_eq!(within, 0);
    // 3,000 more lines that close the period first: the closing allocates (its record),
    // a bounded number of times however many lines there are.
    let before = dhat::HeapStats::get().total_blocks;
    feed(&mut lm, T0 + 20);
    let closing = dhat::HeapStats::get().total_blocks - before;
    eprintln!("allocations: {within} within a period, {closing} closing one");
    dhat::assert!(closing < 50, "{closing} allocations to close a period");
}
