//! A node holding a big durable log: how long a restart keeps the listeners closed, and how
//! fast `logs --since 1h -a APP` answers for an app with 1 % of the lines.
//!
//! ```text
//! cargo bench --bench restart -- [--gib 10] [--apps 1000] [--dir PATH] [--cold 1]
//! ```
//! 1. `--apps` channels (`app-0000`…, token `app`) written to the store, and a log of about
//!    `--gib` GiB written through the log's own append (not through ingest, which would take
//!    minutes more and measures nothing here): 150-byte lines in batches of 100, channel
//!    `app-0000` 1 % of them, the others spread evenly, all received in the last minutes;
//! 2. the router started on that data directory (`logplex::start`, as `serve` does): the time
//!    until its listeners are open, which includes recovering the log and refilling every
//!    channel's ring (1,500 lines each) from it;
//! 3. sessions on `app-0000` over the API, as `logplex logs` makes them (POST `/v2/sessions`,
//!    then the whole GET of its URL): `--since 1h` (every line of the hour, up to
//!    `log.max_lines_per_session`, 100,000), `-n 1500` (the ring) and `-n 100000`;
//! 4. the stop.
//!
//! `--cold 1` drops the page cache (root only) before the start and before each session, so
//! they read the disk. Figures go to stdout as JSON lines; every loop is bounded in count.

/// The `logplex` binary's allocator, so that what the router does in this process costs
/// what it costs in the binary (glibc's malloc gives other figures).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use logplex::config::Config;
use logplex::log::{Fsync, Log, LogError, Options};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const KEY: &str = "bench";
const LINE: usize = 150;
const BATCH: u64 = 100;

fn args() -> HashMap<String, String> {
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut kv = HashMap::new();
    for pair in raw.chunks(2) {
        if let [k, v] = pair {
            if let Some(k) = k.strip_prefix("--") {
                kv.insert(k.to_string(), v.clone());
            }
        }
    }
    kv
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A 150-byte RFC 5424 frame of `app`.
fn frame(i: u64) -> Vec<u8> {
    let mut f = format!(
        "<190>1 2016-03-08T02:43:26.693600+00:00 host app web.1 - - Started GET \"/siso/{i}\" \
         for 1.2.3.4 at=info "
    )
    .into_bytes();
    f.resize(LINE, b'.');
    f
}

/// The log size the router is given: room for the whole bench log, so retention keeps it.
fn max_bytes(gib: f64) -> u64 {
    ((gib + 2.0) * (1u64 << 30) as f64) as u64
}

fn config(dir: &Path, gib: f64) -> Config {
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\nauth_key = \"{KEY}\"\n[ingest.http]\nlisten = \"127.0.0.1:0\"\n\
         [ingest.tcp]\nlisten = \"127.0.0.1:0\"\n[ingest.udp]\nlisten = \"off\"\n[store]\npath = \"{}\"\n\
         [log]\npath = \"{}\"\nmax_bytes = {}\n",
        dir.join("bench.db").display(),
        dir.join("log").display(),
        max_bytes(gib),
    );
    Config::from_toml(&text).expect("bench config")
}

/// The apps in the store, and their ids (the log's channel numbers).
fn fill_store(dir: &Path, apps: u64) -> Vec<i64> {
    let store = logplex::store::Store::open(&dir.join("bench.db")).expect("store");
    let names: Vec<String> = (0..apps).map(|i| format!("app-{i:04}")).collect();
    let tokens: Vec<Vec<(String, String)>> = (0..apps)
        .map(|i| {
            vec![(
                "app".to_string(),
                format!("t.00000000-0000-4000-8000-{i:012x}"),
            )]
        })
        .collect();
    store
        .call_blocking(move |c| {
            logplex::store::upsert_channels(
                c,
                names
                    .iter()
                    .zip(&tokens)
                    .map(|(n, t)| (n.as_str(), t.as_slice())),
            )?;
            logplex::store::state(c)
        })
        .expect("store")
        .channels
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Writes about `gib` GiB with the options the router opens its log with; the lines of
/// `ids[0]`, and all of them.
fn fill_log(dir: &Path, ids: &[i64], gib: f64) -> (u64, u64) {
    let target = (gib * (1u64 << 30) as f64) as u64;
    let opts = Options {
        fsync: Fsync::Interval,
        max_bytes: max_bytes(gib),
        segment_bytes: (max_bytes(gib) / 16).clamp(1 << 20, 64 << 20),
        ..Options::default()
    };
    let (log, _) = Log::open(dir.join("log"), opts).expect("open log");
    let frames: Vec<Vec<u8>> = (0..BATCH).map(frame).collect();
    let mut seqs = vec![0u64; ids.len()];
    let mut rng = fastrand::Rng::with_seed(1);
    let mut lines = 0u64;
    // Bounded: each round writes 100 lines of at least 150 bytes.
    let rounds = target / (BATCH * LINE as u64) + 1;
    for _ in 0..rounds {
        let st = log.stats();
        if st.written_bytes + st.pending_bytes >= target {
            break;
        }
        let k = if rng.u32(0..100) == 0 {
            0
        } else {
            rng.usize(1..ids.len().max(2)).min(ids.len() - 1)
        };
        let first = seqs[k] + 1;
        for _ in 0..10_000 {
            let batch = frames.iter().map(|f| (&b"app"[..], &f[..]));
            match log.append(ids[k] as u64, first, now_us(), batch) {
                Ok(_) => break,
                Err(LogError::Full(_)) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("append: {e}"),
            }
        }
        seqs[k] += BATCH;
        lines += BATCH;
    }
    log.close().expect("close log");
    (seqs[0], lines)
}

/// Drops the page cache (root only) so a measurement reads the disk; false if it cannot.
fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// A session as `logplex logs` makes it: its lines and the time from the POST to the end
/// of the GET.
async fn session(api: std::net::SocketAddr, body: &str) -> (usize, Duration) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let t = Instant::now();
    let req = hyper::Request::post(format!("http://{api}/v2/sessions"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = client.request(req).await.expect("POST /v2/sessions");
    assert_eq!(resp.status(), 201, "{body}");
    let made = resp.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&made).expect("session JSON");
    let url = v["url"].as_str().expect("url").to_string();
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("GET session");
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.expect("lines").to_bytes();
    let lines = text.iter().filter(|&&b| b == b'\n').count();
    (lines, t.elapsed())
}

fn main() {
    // The router's own log (its recovery and "channels loaded" lines with their times) to
    // stderr, at `RUST_LOG` (default: warnings only).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let kv = args();
    let gib: f64 = kv.get("gib").and_then(|v| v.parse().ok()).unwrap_or(10.0);
    let apps: u64 = kv
        .get("apps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(2);
    let cold = kv.get("cold").is_some_and(|v| v == "1");
    let base = kv
        .get("dir")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("tempdir");

    let t = Instant::now();
    let ids = fill_store(dir.path(), apps);
    let (small, lines) = fill_log(dir.path(), &ids, gib);
    let bytes: u64 = std::fs::read_dir(dir.path().join("log"))
        .expect("log dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "{{\"step\":\"fill\",\"apps\":{apps},\"log_gib\":{:.2},\"lines\":{lines},\"app_0000_lines\":{small},\"secs\":{:.1}}}",
        bytes as f64 / (1u64 << 30) as f64,
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cache = |c: bool| if c { "cold" } else { "warm" };
        let c = cold && drop_caches();
        let shutdown = CancellationToken::new();
        let t = Instant::now();
        let server = logplex::start(config(dir.path(), gib), shutdown.clone())
            .await
            .expect("start");
        println!(
            "{{\"step\":\"start\",\"cache\":\"{}\",\"to_listening_ms\":{:.0}}}",
            cache(c),
            t.elapsed().as_secs_f64() * 1e3
        );
        let api = server.addrs.api;
        let handle = tokio::spawn(server.wait());
        for (name, body) in [
            ("--since 1h", r#"{"channel":"app-0000","since":"1h"}"#),
            ("-n 1500", r#"{"channel":"app-0000","num":1500}"#),
            ("-n 100000", r#"{"channel":"app-0000","num":100000}"#),
        ] {
            let c = cold && drop_caches();
            let (n, took) = session(api, body).await;
            println!(
                "{{\"step\":\"session\",\"logs\":\"{name}\",\"cache\":\"{}\",\"lines\":{n},\"ms\":{:.1}}}",
                cache(c),
                took.as_secs_f64() * 1e3
            );
        }
        let t = Instant::now();
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(60), handle).await;
        println!(
            "{{\"step\":\"stop\",\"ms\":{:.0}}}",
            t.elapsed().as_secs_f64() * 1e3
        );
    });
}
