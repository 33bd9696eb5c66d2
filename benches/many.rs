//! Many apps on one node: what a channel costs when idle and when changed, how fast a node
//! with a million channels starts, and what full histories cost against their payload.
//!
//! ```text
//! cargo bench --bench many -- [--channels 1000000] [--creates 10000]
//!                             [--histories 10000] [--lines 1500] [--load yes|no]
//!                             [--conns 4] [--count 2000000] [--batch 500] [--rounds 1]
//! cargo bench --bench many -- --phase load --dir DIR [--rounds 3] [--log off|on]
//! cargo bench --bench many -- --phase start --dir DIR [--channels 1000000] [--starts 3]
//!                             [--creates 0]
//! ```
//! 1. `--channels` channels (tokens `app` and `heroku` each) written to the store directly,
//!    in one transaction;
//! 2. a router started on that store: the time to listening, and RSS per idle channel;
//! 3. `--creates` more through the API (`POST /v2/channels`), one after the other: the
//!    median of the last 1,000;
//! 4. the load bench's TCP and HTTP figures against that router, and against a router with
//!    one channel, in the same run (`--load no` skips them);
//! 5. a stop and a restart: the time to listening again;
//! 6. a router with `--histories` channels × `--lines` lines of 150 bytes (the durable log
//!    off, so only the rings hold them): RSS / payload, and what each line costs beyond its
//!    frame (its record and its share of the chunks' slack). `--phase histories` runs this
//!    part alone.
//!
//! `--phase load --dir DIR [--rounds 3] [--log off|on]` only runs step 4 (in turns, with
//! the durable log off unless `--log on`) against a router on the store at `DIR`, kept as
//! for `--phase start`; `--rounds` does the same in the whole run (default 1).
//!
//! `--phase start` only starts and stops a router on the store at `DIR` (filled with
//! `--channels` first if it has no store yet; kept afterwards, so runs can be repeated and
//! compared), `--starts` times: the time to listening, the CPU time it took (on a shared
//! machine the wall time says as much about the neighbours), and where a start spends it
//! (`RUST_LOG=info` shows the router's own phase timings); with `--creates`, that many API
//! creates after each start (the median of the last 1,000), under names of the run.
//!
//! Figures go to stdout as JSON lines. Every loop is bounded in count.

// The router runs on jemalloc, the `logplex` binary's allocator: `load.rs`, a module of this
// bench, sets it.

#[path = "load.rs"]
#[allow(dead_code)]
mod load;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use logplex::config::Config;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const KEY: &str = "bench";
/// The channel the load figures send to (`bench`), as in `benches/load.rs`.
const TOKEN: &str = "t.00000000-0000-4000-8000-000000000001";

fn token(kind: u16, i: u64) -> String {
    format!("t.00000000-0000-4{kind:03x}-8000-{i:012x}")
}

/// CPU time this process has used (user and system, every thread), seconds: a start's
/// work apart from how much of the machine it got.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command's `(name)`: fields 14 and 15 of the line are utime and stime.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Clock ticks of 1/100 s (USER_HZ on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn config(dir: &Path, log: bool) -> Config {
    let log = if log {
        "".to_string()
    } else {
        "[log]\npath = \"off\"\n".to_string()
    };
    let text = format!(
        "{log}[api]\nlisten = \"127.0.0.1:0\"\nauth_key = \"{KEY}\"\n[ingest.http]\nlisten = \"127.0.0.1:0\"\n\
         [ingest.tcp]\nlisten = \"127.0.0.1:0\"\n[ingest.udp]\nlisten = \"off\"\n[store]\npath = \"{}\"\n\
         [[channels]]\nname = \"bench\"\ntokens = {{ app = \"{TOKEN}\" }}\n",
        dir.join("bench.db").display()
    );
    Config::from_toml(&text).expect("bench config")
}

struct Running {
    addrs: logplex::Addrs,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(c: Config) -> (Running, Duration) {
    let shutdown = CancellationToken::new();
    let t = Instant::now();
    let server = logplex::start(c, shutdown.clone()).await.expect("start");
    let took = t.elapsed();
    let addrs = server.addrs;
    let handle = tokio::spawn(server.wait());
    (
        Running {
            addrs,
            shutdown,
            handle,
        },
        took,
    )
}

async fn stop(r: Running) -> Duration {
    let t = Instant::now();
    r.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(120), r.handle).await;
    t.elapsed()
}

fn num(kv: &HashMap<String, String>, k: &str, d: u64) -> u64 {
    kv.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn args() -> HashMap<String, String> {
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut kv = HashMap::new();
    let mut i = 0;
    while i + 1 < raw.len() {
        if let Some(k) = raw[i].strip_prefix("--") {
            kv.insert(k.to_string(), raw[i + 1].clone());
            i += 2;
        } else {
            i += 1;
        }
    }
    kv
}

/// Creates the channels `names`, each with its `tokens` (name, token), in one transaction.
fn bulk_create(store: &logplex::store::Store, names: &[String], tokens: &[Vec<(String, String)>]) {
    store
        .call_blocking(|c| {
            logplex::store::upsert_channels(
                c,
                names
                    .iter()
                    .zip(tokens)
                    .map(|(n, t)| (n.as_str(), t.as_slice())),
            )
        })
        .expect("bulk create");
}

/// Writes `n` channels (`app-0000001`…, tokens `app` and `heroku`) to the store at `dir`,
/// in one transaction.
fn fill_store(dir: &Path, n: u64) -> Duration {
    let t = Instant::now();
    let store = logplex::store::Store::open(&dir.join("bench.db")).expect("store");
    let names: Vec<String> = (0..n).map(|i| format!("app-{i:07}")).collect();
    let tokens: Vec<Vec<(String, String)>> = (0..n)
        .map(|i| {
            vec![
                ("app".to_string(), token(1, i)),
                ("heroku".to_string(), token(2, i)),
            ]
        })
        .collect();
    bulk_create(&store, &names, &tokens);
    t.elapsed()
}

/// `n` channels created through the API one after the other: each create's time.
async fn api_creates(api: std::net::SocketAddr, n: u64) -> Vec<Duration> {
    api_creates_named(api, n, "new").await
}

/// [`api_creates`], the names starting with `prefix`.
async fn api_creates_named(api: std::net::SocketAddr, n: u64, prefix: &str) -> Vec<Duration> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http::<Full<Bytes>>();
    let mut times = Vec::with_capacity(n as usize);
    for i in 0..n {
        let body = format!("{{\"name\":\"{prefix}-{i:07}\",\"tokens\":[\"app\",\"heroku\"]}}");
        let req = hyper::Request::post(format!("http://{api}/v2/channels"))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let t = Instant::now();
        let resp = client.request(req).await.expect("create");
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        times.push(t.elapsed());
        assert_eq!(status, 201, "create {i}");
    }
    times
}

async fn get(api: std::net::SocketAddr, path: &str) -> (u16, usize, Duration) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::get(format!("http://{api}{path}"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let t = Instant::now();
    let resp = client.request(req).await.expect("get");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
    (status, body.map(|b| b.len()).unwrap_or(0), t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A 150-byte octet-counted frame for channel `i`.
fn line150(i: u64, k: u64) -> Vec<u8> {
    let head = format!(
        "<190>1 2016-03-08T02:43:26.693600+00:00 host {} web.1 - - Started GET \"/\" k={k:06} ",
        token(3, i)
    );
    let mut msg = head.into_bytes();
    msg.resize(150, b'.');
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(&msg);
    out
}

/// Full histories: `channels` × `lines` lines of 150 bytes, the durable log off.
async fn histories(channels: u64, lines: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = logplex::store::Store::open(&dir.path().join("bench.db")).expect("store");
    let names: Vec<String> = (0..channels).map(|i| format!("full-{i:06}")).collect();
    let tokens: Vec<Vec<(String, String)>> = (0..channels)
        .map(|i| vec![("app".to_string(), token(3, i))])
        .collect();
    bulk_create(&store, &names, &tokens);
    drop(store);
    let mut c = config(dir.path(), false);
    c.buffers.history_lines = lines as usize;
    let (r, _) = start(c).await;
    let before = rss();
    // Two connections, each sending whole channels in turn (a channel's lines in a row).
    let tcp = r.addrs.tcp.expect("tcp");
    let t = Instant::now();
    let mut tasks = Vec::new();
    for part in 0..2u64 {
        tasks.push(tokio::spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(tcp).await.expect("connect");
            let mut buf = Vec::with_capacity(1 << 20);
            for i in (part..channels).step_by(2) {
                for k in 0..lines {
                    buf.extend_from_slice(&line150(i, k));
                    if buf.len() >= 1 << 20 {
                        conn.write_all(&buf).await.expect("write");
                        buf.clear();
                    }
                }
            }
            conn.write_all(&buf).await.expect("write");
            conn.shutdown().await.expect("shutdown");
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    // Wait until every line is in (bounded).
    let goal = channels * lines;
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut held, mut same) = (0, 0);
    while Instant::now() < deadline && held < goal && same < 6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = history_lines(r.addrs.api).await;
        same = if now == held { same + 1 } else { 0 };
        held = now;
    }
    let after = rss();
    let payload = goal * 150;
    println!(
        "{{\"what\":\"full_histories\",\"channels\":{channels},\"lines\":{lines},\"held\":{held},\"secs\":{:.1},\
         \"payload_mb\":{:.1},\"rss_delta_mb\":{:.1},\"rss_per_payload\":{:.3},\"overhead_per_line_bytes\":{:.0}}}",
        t.elapsed().as_secs_f64(),
        payload as f64 / 1e6,
        after.saturating_sub(before) as f64 / 1e6,
        after.saturating_sub(before) as f64 / payload as f64,
        after.saturating_sub(before).saturating_sub(payload) as f64 / goal.max(1) as f64
    );
    stop(r).await;
}

/// `logplex_history_lines` from `/metrics`.
async fn history_lines(api: std::net::SocketAddr) -> u64 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::get(format!("http://{api}/metrics"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let Ok(resp) = client.request(req).await else {
        return 0;
    };
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("logplex_history_lines "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Runs this bench again with `args` (one phase of it) and waits for it.
fn child(args: &[&str]) {
    let exe = std::env::current_exe().expect("current exe");
    let status = std::process::Command::new(exe)
        .args(args)
        .status()
        .expect("run a phase");
    assert!(status.success(), "phase {args:?}: {status}");
}

/// Fills the store at `dir` with `n` channels (in a process of its own) unless it has one.
fn fill_if_new(dir: &Path, n: u64) {
    if !dir.join("bench.db").exists() {
        let path = dir.display().to_string();
        child(&[
            "--phase",
            "fill",
            "--dir",
            &path,
            "--channels",
            &n.to_string(),
        ]);
    }
}

/// Starts and stops a router on the store at `dir` `starts` times (filling it with `n`
/// channels first if it has none).
async fn starts(dir: &Path, n: u64, starts: u64, creates: u64) {
    fill_if_new(dir, n);
    for run in 0..starts {
        let base = rss();
        let cpu = cpu_secs();
        let (r, took) = start(config(dir, true)).await;
        let cpu = cpu_secs() - cpu;
        let rss_mb = rss().saturating_sub(base) as f64 / 1e6;
        if creates > 0 {
            // Names of this run only, so the kept store can be used again.
            let prefix = format!("run{}-{run}", std::process::id());
            let times = api_creates_named(r.addrs.api, creates, &prefix).await;
            let last: Vec<Duration> = times.iter().rev().take(1000).copied().collect();
            println!(
                "{{\"what\":\"api_creates\",\"creates\":{creates},\"median_last_1000_ms\":{:.2}}}",
                ms(median(last))
            );
        }
        let stopped = stop(r).await;
        println!(
            "{{\"what\":\"start\",\"to_listening_ms\":{:.0},\"cpu_secs\":{cpu:.2},\"rss_mb\":{rss_mb:.1},\"stop_ms\":{:.0}}}",
            ms(took),
            ms(stopped)
        );
    }
    start_parts(dir);
}

/// The load bench's TCP and HTTP figures against the router `many` (labelled so) and the
/// router `one` with one channel, in turns, `rounds` times: what a run's first load pays
/// (the log's first segments, the runtime's first buffers) is not all on one side.
async fn loads(
    many: &logplex::Addrs,
    label: &'static str,
    one: &logplex::Addrs,
    rounds: u64,
    kv: &HashMap<String, String>,
) {
    let addrs = |a: &logplex::Addrs| (a.api, a.tcp.expect("tcp"), a.http.expect("http"));
    for round in 0..rounds {
        for mode in ["tcp", "http"] {
            // Each round starts with the other router, so neither always goes first.
            let (a, b) = if round % 2 == 0 {
                ((many, label), (one, "1 channel"))
            } else {
                ((one, "1 channel"), (many, label))
            };
            load::against(addrs(a.0), KEY, TOKEN, mode, a.1, kv).await;
            load::against(addrs(b.0), KEY, TOKEN, mode, b.1, kv).await;
        }
    }
}

/// `--phase load`: [`loads`] against a router on the kept store at `dir` (filled with `n`
/// channels first if it has no store yet), the durable log `off` (as the README's ingest
/// figures) unless `--log on`.
async fn load_phase(dir: &Path, n: u64, kv: &HashMap<String, String>) {
    fill_if_new(dir, n);
    let log = kv.get("log").is_some_and(|v| v == "on");
    let one_dir = tempfile::tempdir().expect("tempdir");
    let (one, _) = start(config(one_dir.path(), log)).await;
    let (many, took) = start(config(dir, log)).await;
    println!("{{\"what\":\"start\",\"to_listening_ms\":{:.0}}}", ms(took));
    loads(
        &many.addrs,
        "kept store",
        &one.addrs,
        num(kv, "rounds", 3),
        kv,
    )
    .await;
    stop(many).await;
    stop(one).await;
}

/// Where a start spends its time: reading the store and making the channels and routes
/// (`Registry::load`, what a start does), then dropping them.
fn start_parts(dir: &Path) {
    let store = logplex::store::Store::open(&dir.join("bench.db")).expect("store");
    let limits = logplex::channel::Limits {
        history_lines: 1500,
        history_bytes: 1 << 20,
        tail_lines: 1024,
    };
    let t = Instant::now();
    let reg = logplex::registry::Registry::load(store, limits, None).expect("load");
    let loaded = t.elapsed();
    let t = Instant::now();
    drop(reg);
    println!(
        "{{\"what\":\"start_parts\",\"registry_load_ms\":{:.0},\"registry_drop_ms\":{:.0}}}",
        ms(loaded),
        ms(t.elapsed())
    );
}

fn main() {
    let kv = args();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match kv.get("phase").map(String::as_str) {
        Some("fill") => {
            let dir = std::path::PathBuf::from(kv.get("dir").expect("--dir"));
            let n = num(&kv, "channels", 1_000_000);
            let took = fill_store(&dir, n);
            println!(
                "{{\"what\":\"store_fill\",\"channels\":{n},\"secs\":{:.2}}}",
                took.as_secs_f64()
            );
            return;
        }
        Some("start") => {
            let dir = std::path::PathBuf::from(kv.get("dir").expect("--dir"));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(starts(
                &dir,
                num(&kv, "channels", 1_000_000),
                num(&kv, "starts", 3),
                num(&kv, "creates", 0),
            ));
            return;
        }
        Some("load") => {
            let dir = std::path::PathBuf::from(kv.get("dir").expect("--dir"));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(load_phase(&dir, num(&kv, "channels", 1_000_000), &kv));
            return;
        }
        Some("histories") => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(histories(
                num(&kv, "histories", 10_000),
                num(&kv, "lines", 1500),
            ));
            return;
        }
        _ => {}
    }
    let n = num(&kv, "channels", 1_000_000);
    let creates = num(&kv, "creates", 10_000);
    let full = num(&kv, "histories", 10_000);
    let lines = num(&kv, "lines", 1500);
    let load = kv.get("load").map_or(true, |v| v != "no");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        // In a process of its own, so the memory it frees is not reused by the router
        // measured next.
        let path = dir.path().display().to_string();
        child(&["--phase", "fill", "--dir", &path, "--channels", &n.to_string()]);
        // A router with one channel first: its RSS is the fixed cost of a router, taken
        // off the big one's to get what its channels cost. It stays up for the load
        // figures, so neither frees memory the other could reuse.
        let one_dir = tempfile::tempdir().expect("tempdir");
        let base = rss();
        let (one, _) = start(config(one_dir.path(), true)).await;
        let fixed = rss().saturating_sub(base);
        let base = rss();
        let (r, took) = start(config(dir.path(), true)).await;
        let idle = rss().saturating_sub(base);
        println!(
            "{{\"what\":\"start\",\"channels\":{},\"to_listening_ms\":{:.0},\"rss_mb\":{:.1},\"rss_one_channel_mb\":{:.1},\"rss_per_idle_channel_bytes\":{:.0}}}",
            n + 1,
            ms(took),
            idle as f64 / 1e6,
            fixed as f64 / 1e6,
            idle.saturating_sub(fixed) as f64 / n.max(1) as f64
        );
        let times = api_creates(r.addrs.api, creates).await;
        let last: Vec<Duration> = times.iter().rev().take(1000).copied().collect();
        println!(
            "{{\"what\":\"api_creates\",\"before\":{},\"creates\":{creates},\"first_ms\":{:.2},\"median_last_1000_ms\":{:.2},\"total_secs\":{:.1}}}",
            n + 1,
            ms(times.first().copied().unwrap_or_default()),
            ms(median(last)),
            times.iter().sum::<Duration>().as_secs_f64()
        );
        let (status, bytes, took) = get(r.addrs.api, "/v2/channels").await;
        println!(
            "{{\"what\":\"list_page\",\"status\":{status},\"bytes\":{bytes},\"ms\":{:.1}}}",
            ms(took)
        );
        if load {
            let total = n + 1 + creates;
            let many: &'static str = Box::leak(format!("{total} channels").into_boxed_str());
            loads(&r.addrs, many, &one.addrs, num(&kv, "rounds", 1), &kv).await;
        }
        stop(one).await;
        let stopped = stop(r).await;
        let (r, took) = start(config(dir.path(), true)).await;
        println!(
            "{{\"what\":\"restart\",\"channels\":{},\"stop_ms\":{:.0},\"to_listening_ms\":{:.0}}}",
            n + 1 + creates,
            ms(stopped),
            ms(took)
        );
        stop(r).await;
        start_parts(dir.path());
        drop(dir);
        if full > 0 {
            // In a process of its own, so memory freed by the phases above is not reused.
            child(&["--phase", "histories", "--histories", &full.to_string(), "--lines", &lines.to_string()]);
        }
    });
}
