//! The load generator of logplex: drives a router over real sockets and reports messages/s
//! and bytes/s. By default it starts a router in this process (port 0, temporary store, one
//! channel `bench`); `--api`/`--tcp`/`--http` point it at a running one instead.
//!
//! ```text
//! cargo bench --bench load -- tcp     [--conns 4] [--count 2000000]
//! cargo bench --bench load -- http    [--conns 4] [--count 2000000] [--batch 500]
//! cargo bench --bench load -- latency [--rate 100000] [--secs 3]
//! options for an external router: --api 127.0.0.1:8001 --key KEY --tcp 127.0.0.1:6001
//!                                 --http 127.0.0.1:8601 --token t.<uuid>
//! alert rules added through the API before the run (none by default):
//!   --rules-here N       N rules on `bench` (status>=500, a `Completed 5\d\d` regex,
//!                        code=H12 and at=error, in turn), no source/dyno filter
//!   --rules-here-source S  give those rules `source = S` (e.g. heroku: filtered out early)
//!   --rules-elsewhere N  N rules on another channel, `other`
//!   --rules-star N       N rules on every app like the shipped default (heroku, router)
//! metrics from the logs (in-process router only):
//!   --metrics off|on|both  send to `bench` (metrics off, the default), to `benchm`
//!                        (metrics on), or to both one after the other in the same run
//!   --rounds N           tcp|http: the runs N times (with `both`, off and on swap
//!                        places every round), then with `both` a summary line of the
//!                        rounds' on/off ratios (median, min, max) of msg/s and of the
//!                        router's CPU per message
//!   --lines app|router   what is sent: app lines (`Started GET …`, the default) or Heroku
//!                        router lines (`at=info … service=Nms status=N bytes=N`, token
//!                        `heroku`, PROCID `router`), which metrics parse in full
//! ```
//!   --log off|interval|batch  the durable log of the started router (default interval,
//!                        the config's default; its folder is in the temporary data dir)
//!   --redis URL          cluster mode on that Redis (every line also goes into its
//!                        channel's log stream there); use an empty Redis of its own
//!   --publishers N       with --redis: cluster.publishers (default 2)
//!   --channels N         tcp: N channels (`bench-0`..), connection i sends to channel
//!                        i mod N (default 1: every connection to `bench`)
//! Every loop is bounded in count and time (`--max-secs`, default 60).

/// The `logplex` binary's allocator, so that what the router does in this process costs
/// what it costs in the binary (glibc's malloc gives other figures).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shared::{args, frame, num};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "t.00000000-0000-4000-8000-000000000001";
/// `bench`'s `heroku` token, and `benchm`'s (metrics on) `app` and `heroku` tokens.
const TOKEN_HEROKU: &str = "t.00000000-0000-4000-8000-000000000002";
const TOKEN_M: &str = "t.00000000-0000-4000-8000-000000000003";
const TOKEN_M_HEROKU: &str = "t.00000000-0000-4000-8000-000000000004";

/// What one run sends: which token (so which channel and source), which lines, and the
/// label of its report.
#[derive(Clone)]
struct Run {
    token: String,
    router: bool,
    label: &'static str,
}

/// The runs `--metrics` and `--lines` ask for (one with the target's token for an
/// external router).
fn runs(t: &Target, kv: &HashMap<String, String>) -> Vec<Run> {
    let router = kv.get("lines").is_some_and(|l| l == "router");
    if t._server.is_none() {
        return vec![Run {
            token: t.token.clone(),
            router,
            label: "external",
        }];
    }
    let run = |on: bool| Run {
        token: match (on, router) {
            (false, false) => TOKEN,
            (false, true) => TOKEN_HEROKU,
            (true, false) => TOKEN_M,
            (true, true) => TOKEN_M_HEROKU,
        }
        .to_string(),
        router,
        label: if on { "on" } else { "off" },
    };
    match kv.get("metrics").map(String::as_str) {
        None | Some("off") => vec![run(false)],
        Some("on") => vec![run(true)],
        Some("both") => vec![run(false), run(true)],
        Some(other) => panic!("--metrics {other}: off, on or both"),
    }
}

/// A frame of the run: an app line ([`frame`]) or a router line.
fn run_frame(r: &Run, i: u64) -> Vec<u8> {
    if !r.router {
        return frame(&r.token, i);
    }
    let msg = format!(
        "<158>1 2016-03-08T02:43:26.693600+00:00 host {} router - - at=info method=GET \
         path=\"/siso/{i}\" host=bench.herokuapp.com request_id=0b8f2b54-3c5d-4d7c-9b1e-{i:012} \
         fwd=\"10.0.0.1\" dyno=web.{} connect={}ms service={}ms status={} bytes={} protocol=https",
        r.token,
        i % 4 + 1,
        i % 5,
        i % 997 + 3,
        if i % 50 == 0 { 503 } else { 200 },
        1000 + i % 4000
    );
    format!("{} {}", msg.len(), msg).into_bytes()
}

struct Target {
    api: SocketAddr,
    key: String,
    tcp: SocketAddr,
    http: SocketAddr,
    token: String,
    _server: Option<(
        tokio_util::sync::CancellationToken,
        tempfile::TempDir,
        tokio::runtime::Runtime,
    )>,
}

/// `--channels N` (at most 1000): the channels `bench-0`.. made for it; 0 without it.
fn channels(kv: &HashMap<String, String>) -> u64 {
    if kv.contains_key("channels") {
        num(kv, "channels", 1).clamp(1, 1000)
    } else {
        0
    }
}

/// The `app` token of channel `bench-C`.
fn channel_token(c: u64) -> String {
    format!("t.00000000-0000-4000-8001-{c:012}")
}

fn start_target(kv: &HashMap<String, String>) -> Target {
    if let Some(api) = kv.get("api") {
        return Target {
            api: api.parse().expect("--api ADDR"),
            key: kv.get("key").cloned().unwrap_or_default(),
            tcp: kv
                .get("tcp")
                .map(|a| a.parse().expect("--tcp ADDR"))
                .unwrap_or(([127, 0, 0, 1], 6001).into()),
            http: kv
                .get("http")
                .map(|a| a.parse().expect("--http ADDR"))
                .unwrap_or(([127, 0, 0, 1], 8601).into()),
            token: kv.get("token").cloned().unwrap_or_else(|| TOKEN.into()),
            _server: None,
        };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(ROUTER_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = match kv.get("log").map(String::as_str) {
        None | Some("interval") => "[log]\nfsync = \"interval\"\n",
        Some("batch") => "[log]\nfsync = \"batch\"\n",
        Some("off") => "[log]\npath = \"off\"\n",
        Some(other) => panic!("--log {other}: off, interval or batch"),
    };
    let cluster = match kv.get("redis") {
        Some(url) => format!(
            "[cluster]\nredis = \"{url}\"\npublishers = {}\n",
            num(kv, "publishers", 2)
        ),
        None => String::new(),
    };
    // `--channels N`: bench-0.. with fixed tokens (see `channel_token`).
    let mut more = String::new();
    for c in 0..channels(kv) {
        more.push_str(&format!(
            "[[channels]]\nname = \"bench-{c}\"\ntokens = {{ app = \"{}\" }}\n",
            channel_token(c)
        ));
    }
    let text = format!(
        "{more}{log}{cluster}[api]\nlisten = \"127.0.0.1:0\"\nauth_key = \"bench\"\n[ingest.http]\nlisten = \"127.0.0.1:0\"\n\
         [ingest.tcp]\nlisten = \"127.0.0.1:0\"\n[ingest.udp]\nlisten = \"off\"\n[store]\npath = \"{}\"\n\
         [[channels]]\nname = \"bench\"\ntokens = {{ app = \"{TOKEN}\", heroku = \"{TOKEN_HEROKU}\" }}\n\
         [[channels]]\nname = \"benchm\"\nmetrics = true\n\
         tokens = {{ app = \"{TOKEN_M}\", heroku = \"{TOKEN_M_HEROKU}\" }}\n",
        dir.path().join("bench.db").display()
    );
    let config = logplex::config::Config::from_toml(&text).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = rt
        .block_on(logplex::start(config, shutdown.clone()))
        .unwrap();
    let addrs = server.addrs;
    rt.spawn(server.wait());
    Target {
        api: addrs.api,
        key: "bench".into(),
        tcp: addrs.tcp.unwrap(),
        http: addrs.http.unwrap(),
        token: TOKEN.into(),
        _server: Some((shutdown, dir, rt)),
    }
}

/// `logplex_messages_received_total{input=...}` from the target's /metrics.
async fn received(t: &Target, input: &str) -> u64 {
    metric(
        t,
        &format!("logplex_messages_received_total{{input=\"{input}\"}}"),
    )
    .await
}

/// Prints what the durable log did with the lines (stderr, beside the JSON figure).
/// Cluster mode (`--redis`): waits (at most 10 s) until every stored line is accounted
/// for by the publisher, then prints how many went into Redis and how many stayed local.
async fn cluster_stats(t: &Target, stored: u64, cpu0: Cpu, start: Instant) {
    if metric(t, "logplex_cluster_up").await == 0 {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut published, mut kept) = (0, 0);
    while Instant::now() < deadline {
        published = metric(t, "logplex_cluster_log_lines_published_total").await;
        kept = metric(t, "logplex_cluster_log_lines_unpublished_total").await;
        if published + kept >= stored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The CPU of the whole process until the publisher has put every line in Redis (or
    // given up on it): ingest's share and the publisher's.
    let cpu = process_cpu_secs() - cpu0.process;
    eprintln!(
        "cluster: {published} lines published into the log streams, {kept} kept local \
         (queue full or Redis away), of {stored} stored; {:.2} s after the start, \
         cpu_ns_per_msg with the publishing {:.0}",
        start.elapsed().as_secs_f64(),
        cpu * 1e9 / stored.max(1) as f64
    );
}

async fn log_stats(t: &Target) {
    let appended = metric(t, "logplex_log_appended_lines_total").await;
    let refused = metric(t, "logplex_log_rejected_lines_total").await;
    let fsyncs = metric(t, "logplex_log_fsyncs_total").await;
    let fsync_secs = metric_f64(t, "logplex_log_fsync_seconds_sum").await;
    if appended + refused > 0 {
        // Counted since the router started (all runs of this invocation).
        eprintln!(
            "durable log: {appended} lines appended, {refused} refused, {fsyncs} fsyncs \
             (mean {:.2} ms, {:.0} lines each)",
            fsync_secs * 1e3 / fsyncs.max(1) as f64,
            appended as f64 / fsyncs.max(1) as f64
        );
        if refused > 0 {
            eprintln!(
                "WARNING: the log refused {refused} lines (kept in memory only): this rate is \
                 not the rate of a log that keeps every line"
            );
        }
    }
}

/// A series' value (`NAME{LABELS}` exactly as exposed) from the target's /metrics; 0 when
/// absent.
async fn metric(t: &Target, series: &str) -> u64 {
    metric_f64(t, series).await as u64
}

/// [`metric`], not rounded.
async fn metric_f64(t: &Target, series: &str) -> f64 {
    shared::metric_f64(t.api, &t.key, series).await
}

async fn api_post(t: &Target, path: &str, body: String) {
    let (status, text) = shared::api(t.api, &t.key, "POST", path, Some(body))
        .await
        .expect("API request");
    assert!(
        (200..300).contains(&status) || status == 409,
        "POST {path}: {status} {}",
        String::from_utf8_lossy(&text)
    );
}

/// Adds the alert rules asked for with `--rules-here`, `--rules-elsewhere`, `--rules-star`.
async fn add_rules(t: &Target, kv: &HashMap<String, String>) {
    let kinds = [
        r#""where":"status>=500""#,
        r#""regex":"Completed 5\\d\\d""#,
        r#""where":"code=H12 and at=error""#,
    ];
    let mut added = Vec::new();
    let here = num(kv, "rules-here", 0);
    // `--rules-here-source heroku`: the same rules, filtered out by source before matching.
    let src = kv
        .get("rules-here-source")
        .map(|s| format!(r#""source":"{s}","#))
        .unwrap_or_default();
    for i in 0..here {
        let m = kinds[i as usize % kinds.len()];
        let body = format!(r#"{{"name":"here-{i}",{src}{m},"threshold":5,"window":"1m"}}"#);
        api_post(t, "/v2/channels/bench/alerts", body).await;
    }
    let elsewhere = num(kv, "rules-elsewhere", 0);
    if elsewhere > 0 {
        api_post(
            t,
            "/v2/channels",
            r#"{"name":"other","tokens":["app"]}"#.into(),
        )
        .await;
    }
    for i in 0..elsewhere {
        let m = kinds[i as usize % kinds.len()];
        let body = format!(r#"{{"name":"else-{i}",{m},"threshold":5,"window":"1m"}}"#);
        api_post(t, "/v2/channels/other/alerts", body).await;
    }
    let star = num(kv, "rules-star", 0);
    for i in 0..star {
        let body = format!(
            r#"{{"name":"star-{i}","source":"heroku","dyno":"router","where":"status>=500","threshold":5,"window":"1m"}}"#
        );
        api_post(t, "/v2/channels/%2A/alerts", body).await;
    }
    for (k, n) in [("here", here), ("elsewhere", elsewhere), ("star", star)] {
        if n > 0 {
            added.push(format!("{n} {k}"));
        }
    }
    if !added.is_empty() {
        eprintln!("alert rules: {}", added.join(", "));
    }
}

async fn wait_received(t: &Target, input: &str, goal: u64, deadline: Instant) -> u64 {
    loop {
        let n = received(t, input).await;
        if n >= goal || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[path = "../tests/common/procstat.rs"]
mod procstat;
#[path = "shared/mod.rs"]
mod shared;

/// CPU seconds this process (the router and the generator, when in-process) has used.
fn process_cpu_secs() -> f64 {
    procstat::cpu_secs("self")
}

/// The name of the in-process router's runtime threads (its blocking ones included).
const ROUTER_THREADS: &str = "router-rt";

/// CPU seconds the in-process router's threads have used: its runtime's, and those the
/// router starts itself (`logplex-log`, …). Without the generator's share, this is the
/// steadier figure for an A/B of the router's own work.
fn router_cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let (head, _) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let tid = t.file_name().into_string().ok()?;
            (comm.starts_with(ROUTER_THREADS) || comm.starts_with("logplex-"))
                .then(|| procstat::cpu_secs(&format!("self/task/{tid}")))
        })
        .sum()
}

/// CPU seconds at a run's start: the process's and the router's.
#[derive(Clone, Copy)]
struct Cpu {
    process: f64,
    router: f64,
}

impl Cpu {
    fn now() -> Cpu {
        Cpu {
            process: process_cpu_secs(),
            router: router_cpu_secs(),
        }
    }
}

/// What [`report`] gives back of a run, for `--rounds`' summary.
#[derive(Clone, Copy)]
struct Figures {
    on: bool,
    msgs_per_sec: f64,
    router_ns: f64,
}

/// Prints a run's figures; `cpu0` is [`Cpu::now`] at its start. CPU per message counts
/// the generator too (the same for runs compared in one invocation), and does not depend
/// on what else shares the cores; `router_cpu_ns_per_msg` (an in-process router only)
/// counts the router's threads alone.
#[allow(clippy::too_many_arguments)]
fn report(
    mode: &str,
    r: &Run,
    conns: u64,
    count: u64,
    got: u64,
    bytes: u64,
    secs: f64,
    cpu0: Cpu,
) -> Figures {
    let (metrics, lines) = (r.label, if r.router { "router" } else { "app" });
    let cpu_ns = (process_cpu_secs() - cpu0.process) * 1e9 / got.max(1) as f64;
    let router_ns = (router_cpu_secs() - cpu0.router) * 1e9 / got.max(1) as f64;
    println!(
        "{{\"mode\":\"{mode}\",\"metrics\":\"{metrics}\",\"lines\":\"{lines}\",\"conns\":{conns},\"sent\":{count},\"stored\":{got},\"secs\":{secs:.3},\
         \"msgs_per_sec\":{:.0},\"mbytes_per_sec\":{:.1},\"cpu_ns_per_msg\":{cpu_ns:.0},\
         \"router_cpu_ns_per_msg\":{router_ns:.0}}}",
        got as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    Figures {
        on: r.label == "on",
        msgs_per_sec: got as f64 / secs,
        router_ns,
    }
}

async fn tcp(t: &Target, kv: &HashMap<String, String>, r: &Run) -> Figures {
    let conns = num(kv, "conns", 4);
    let count = num(kv, "count", 2_000_000);
    let max = Duration::from_secs(num(kv, "max-secs", 60));
    let per = count / conns;
    let n = channels(kv);
    // Build each connection's whole stream first, so the generator costs little while timed.
    let streams: Vec<Vec<u8>> = (0..conns)
        .map(|c| {
            let mut r = r.clone();
            if n > 0 && t._server.is_some() {
                r.token = channel_token(c % n);
            }
            (0..per).flat_map(|i| run_frame(&r, c * per + i)).collect()
        })
        .collect();
    let bytes: u64 = streams.iter().map(|s| s.len() as u64).sum();
    let base = received(t, "tcp").await;
    let start = Instant::now();
    let cpu0 = Cpu::now();
    let failed = shared::send_tcp(streams.into_iter().map(|s| (t.tcp, s)).collect(), max).await;
    if failed > 0 {
        eprintln!("{failed} connections failed");
    }
    let got = wait_received(t, "tcp", base + per * conns, start + max).await - base;
    let figures = report(
        "tcp",
        r,
        conns,
        per * conns,
        got,
        bytes,
        start.elapsed().as_secs_f64(),
        cpu0,
    );
    log_stats(t).await;
    cluster_stats(t, got, cpu0, start).await;
    figures
}

async fn http(t: &Target, kv: &HashMap<String, String>, r: &Run) -> Figures {
    let conns = num(kv, "conns", 4);
    let count = num(kv, "count", 2_000_000);
    let batch = num(kv, "batch", 500);
    let max = Duration::from_secs(num(kv, "max-secs", 60));
    let batches = count / batch / conns;
    let body: Bytes = (0..batch)
        .flat_map(|i| run_frame(r, i))
        .collect::<Vec<u8>>()
        .into();
    let auth = shared::basic(&r.token);
    let base = received(t, "http").await;
    let start = Instant::now();
    let cpu0 = Cpu::now();
    let targets = (0..conns).map(|_| (t.http, auth.clone())).collect();
    let (failed, first) = shared::send_http(targets, body.clone(), batch, batches, max).await;
    if failed > 0 {
        eprintln!(
            "{failed} batches not answered 204 (first: {})",
            first.unwrap_or_default()
        );
    }
    let sent = batches * batch * conns;
    let got = wait_received(t, "http", base + sent, start + max).await - base;
    let figures = report(
        "http",
        r,
        conns,
        sent,
        got,
        sent * body.len() as u64 / batch,
        start.elapsed().as_secs_f64(),
        cpu0,
    );
    log_stats(t).await;
    figures
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Sends at `--rate` msg/s with the send time in each line while a tail reads them back;
/// reports latency percentiles from ingest to the open tail.
async fn latency(t: &Target, kv: &HashMap<String, String>) {
    let rate = num(kv, "rate", 100_000);
    let secs = num(kv, "secs", 3);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::post(format!("http://{}/v2/sessions", t.api))
        .header("authorization", format!("Bearer {}", t.key))
        .body(Full::new(Bytes::from(
            r#"{"channel":"bench","tail":true,"num":0}"#,
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let url = v["url"].as_str().unwrap().to_string();
    let path = url.split_once("/sessions/").unwrap().1.to_string();
    let mut sock = tokio::net::TcpStream::connect(t.api).await.unwrap();
    sock.write_all(format!("GET /sessions/{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let total = rate * secs;
    let reader = tokio::spawn(async move {
        let mut r = BufReader::new(sock);
        let mut lat = Vec::with_capacity(total as usize);
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(secs + 10);
        while (lat.len() as u64) < total && Instant::now() < deadline {
            line.clear();
            match tokio::time::timeout(Duration::from_secs(2), r.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
            if let Some(ns) = line
                .split("sent=")
                .nth(1)
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                lat.push(now_ns().saturating_sub(ns));
            }
        }
        lat
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = tokio::net::TcpStream::connect(t.tcp).await.unwrap();
    let tick = Duration::from_millis(1);
    let per_tick = (rate / 1000).max(1);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut buf = Vec::with_capacity(per_tick as usize * 160);
    while sent < total && start.elapsed() < Duration::from_secs(secs + 5) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        buf.clear();
        while sent < due.min(total) {
            let msg = format!(
                "<190>1 2016-03-08T02:43:26.693600+00:00 host {} web.1 - - latency sent={}",
                t.token,
                now_ns()
            );
            buf.extend_from_slice(format!("{} {}", msg.len(), msg).as_bytes());
            sent += 1;
        }
        if !buf.is_empty() {
            c.write_all(&buf).await.unwrap();
        }
        tokio::time::sleep(tick).await;
    }
    let mut lat = reader.await.unwrap();
    lat.sort_unstable();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1e6
    };
    println!(
        "{{\"mode\":\"latency\",\"rate\":{rate},\"sent\":{sent},\"seen\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        lat.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

fn main() {
    let (mode, kv) = args();
    let target = start_target(&kv);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        add_rules(&target, &kv).await;
        let mut rounds = Vec::new();
        for round in 0..num(&kv, "rounds", 1).max(1) {
            let mut runs = runs(&target, &kv);
            if round % 2 == 1 {
                runs.reverse();
            }
            let mut figures = Vec::new();
            for r in runs {
                match mode.as_str() {
                    "tcp" => figures.push(tcp(&target, &kv, &r).await),
                    "http" => figures.push(http(&target, &kv, &r).await),
                    "latency" => latency(&target, &kv).await,
                    "all" => {
                        tcp(&target, &kv, &r).await;
                        http(&target, &kv, &r).await;
                        latency(&target, &kv).await;
                    }
                    other => eprintln!("unknown mode {other}: tcp, http, latency or all"),
                }
            }
            rounds.push(figures);
        }
        summary(&mode, &rounds);
    });
}

/// With `--metrics both`, the rounds' on/off ratios of msg/s and of the router's CPU per
/// message: each round's, then their median, min and max.
fn summary(mode: &str, rounds: &[Vec<Figures>]) {
    let pairs: Vec<(Figures, Figures)> = rounds
        .iter()
        .filter_map(|f| {
            let on = f.iter().find(|f| f.on)?;
            let off = f.iter().find(|f| !f.on)?;
            Some((*on, *off))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let stats = |ratio: fn(&(Figures, Figures)) -> f64| {
        let mut v: Vec<f64> = pairs.iter().map(ratio).collect();
        let each = v.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        format!(
            "{{\"median\":{median:.3},\"min\":{:.3},\"max\":{:.3},\"rounds\":[{}]}}",
            v[0],
            v[n - 1],
            each.join(",")
        )
    };
    println!(
        "{{\"mode\":\"{mode}\",\"summary\":\"on/off\",\"rounds\":{},\"msgs_per_sec\":{},\
         \"router_cpu_ns_per_msg\":{}}}",
        pairs.len(),
        stats(|(on, off)| on.msgs_per_sec / off.msgs_per_sec),
        stats(|(on, off)| on.router_ns / off.router_ns.max(1.0)),
    );
}

/// For `benches/many.rs`, which includes this file: `mode` (`tcp` or `http`) against a
/// running router whose `token` routes to a channel, with the options of `kv` (`conns`,
/// `count`, `batch`), reported under `label`.
#[allow(dead_code)]
pub(crate) async fn against(
    addrs: (SocketAddr, SocketAddr, SocketAddr),
    key: &str,
    token: &str,
    mode: &str,
    label: &'static str,
    kv: &HashMap<String, String>,
) {
    let (api, tcp_addr, http_addr) = addrs;
    let t = Target {
        api,
        key: key.into(),
        tcp: tcp_addr,
        http: http_addr,
        token: token.into(),
        _server: None,
    };
    let r = Run {
        token: token.into(),
        router: false,
        label,
    };
    match mode {
        "tcp" => tcp(&t, kv, &r).await,
        _ => http(&t, kv, &r).await,
    };
}
