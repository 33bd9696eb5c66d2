//! The cluster bench: what cluster mode costs per message on the nodes and on Redis, and
//! what one node does against several. It starts its own `redis-server` (or a Redis
//! Cluster of three masters), N nodes as separate processes of the release binary
//! (`logplex serve --config FILE`, each with its own data dir and ports), creates the
//! channels through the API, drives a fixed count of lines spread evenly over the nodes'
//! inputs, and reports what each process spent.
//!
//! ```text
//! cargo bench --bench cluster -- tcp|http [--nodes 1] [--redis one|cluster]
//!     [--conns 6] [--channels CONNS] [--count 2000000] [--batch 500]
//!     [--log interval|batch|off] [--publishers N] [--queue-mib N] [--max-secs 60]
//! ```
//! - connection `i` goes to node `i mod nodes` and sends to channel `bench-(i mod
//!   channels)` (each channel made on node 0 through the API, with an `app` token; the
//!   bench waits until every node knows it);
//! - `--redis one`: one `redis-server`; `cluster`: three masters made with `redis-cli
//!   --cluster create`. Neither keeps anything on disk (no RDB, no AOF): the figures are
//!   Redis's work on the streams, not its disk's;
//! - `--log`: each node's durable log (the config's default, `interval`, unless told);
//!   `--publishers` and `--queue-mib`: `cluster.publishers` and `cluster.log_queue_bytes`
//!   (the config's defaults unless told).
//!
//! Figures: a JSON line on stdout and a human summary on stderr. The rate is the lines
//! the nodes counted as received over the time from the first write to the last line
//! received. CPU is read from `/proc/PID/stat` (user + system) of each process before the
//! load and after every node has accounted for its lines (published into the log streams
//! or kept local), so a node's CPU per message counts its publishing too; Redis's per
//! line published. Redis commands from `INFO commandstats` before and after (the bench's
//! own `INFO` left out). The generator is this process.
//!
//! Bounded: every wait has a deadline; the processes it started are killed by their PID
//! (SIGKILL) and reaped when it ends or fails, and its temporary directory is removed.

#[path = "../tests/common/mod.rs"]
pub(crate) mod tc;

#[path = "shared/mod.rs"]
mod shared;

use shared::{frame, num};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tc::redis::{Backend, Redis, RedisCluster};
use tc::serve::{Ports, Serve};

/// The nodes' admin key.
const KEY: &str = tc::KEY;

/// What the bench was asked for.
struct Opts {
    mode: String,
    nodes: usize,
    cluster: bool,
    conns: u64,
    channels: u64,
    count: u64,
    batch: u64,
    log: String,
    publishers: Option<u64>,
    queue_mib: Option<u64>,
    max: Duration,
}

impl Opts {
    fn parse(raw: Vec<String>) -> Result<Opts, String> {
        let (mode, kv) = shared::parse(raw);
        if mode != "tcp" && mode != "http" {
            return Err(format!("mode {mode}: tcp or http"));
        }
        let known = [
            "nodes",
            "redis",
            "conns",
            "channels",
            "count",
            "batch",
            "log",
            "publishers",
            "queue-mib",
            "max-secs",
        ];
        if let Some(k) = kv.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "unknown option --{k} (known: --{})",
                known.join(", --")
            ));
        }
        let cluster = match kv.get("redis").map(String::as_str) {
            None | Some("one") => false,
            Some("cluster") => true,
            Some(other) => return Err(format!("--redis {other}: one or cluster")),
        };
        let log = kv.get("log").cloned().unwrap_or_else(|| "interval".into());
        if !["interval", "batch", "off"].contains(&log.as_str()) {
            return Err(format!("--log {log}: interval, batch or off"));
        }
        let conns = num(&kv, "conns", 6).max(1);
        let nodes = num(&kv, "nodes", 1).clamp(1, 16) as usize;
        if conns < nodes as u64 {
            return Err(format!("--conns {conns}: at least one per node ({nodes})"));
        }
        Ok(Opts {
            mode,
            nodes,
            cluster,
            conns,
            channels: num(&kv, "channels", conns).clamp(1, 1000),
            count: num(&kv, "count", 2_000_000),
            batch: num(&kv, "batch", 500).max(1),
            log,
            publishers: kv.get("publishers").and_then(|v| v.parse().ok()),
            queue_mib: kv.get("queue-mib").and_then(|v| v.parse().ok()),
            max: Duration::from_secs(num(&kv, "max-secs", 60)),
        })
    }
}

/// The Redis the nodes share: one server, or three masters of a Redis Cluster, neither
/// keeping anything on disk.
fn backend(cluster: bool) -> Backend {
    if cluster {
        Backend::Cluster(RedisCluster::start_volatile())
    } else {
        Backend::One(Redis::start())
    }
}

/// `cluster.redis` for the nodes' config: the URL, or the seed nodes.
fn redis_toml(redis: &Backend) -> String {
    let urls: Vec<String> = redis
        .servers()
        .iter()
        .map(|s| format!("\"{}\"", s.url()))
        .collect();
    match redis {
        Backend::One(_) => urls.concat(),
        Backend::Cluster(_) => format!("[{}]", urls.join(", ")),
    }
}

fn redis_cpu_secs(r: &Redis) -> f64 {
    r.pid()
        .map_or(0.0, |pid| tc::procstat::cpu_secs(&pid.to_string()))
}

/// Calls and microseconds by command (`INFO commandstats`, lower case).
fn commandstats(r: &Redis) -> HashMap<String, (u64, u64)> {
    r.info("INFO", "commandstats")
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            Some((name.to_string(), (field("calls"), field("usec"))))
        })
        .collect()
}

/// A node: `logplex serve` in its own process, data dir and ports.
struct Node {
    name: String,
    ports: Ports,
    serve: Serve,
}

impl Node {
    fn start(dir: &Path, i: usize, redis: &Backend, o: &Opts) -> Result<Node, String> {
        let name = format!("node-{i}");
        let home = dir.join(&name);
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        let ports = Ports::free();
        let log = match o.log.as_str() {
            "off" => "path = \"off\"",
            "batch" => "fsync = \"batch\"",
            _ => "fsync = \"interval\"",
        };
        let mut cluster = format!("redis = {}\nnode = \"{name}\"\n", redis_toml(redis));
        if let Some(p) = o.publishers {
            cluster.push_str(&format!("publishers = {p}\n"));
        }
        if let Some(m) = o.queue_mib {
            cluster.push_str(&format!("log_queue_bytes = {}\n", m << 20));
        }
        let extra = format!("[cluster]\n{cluster}[log]\n{log}\n");
        let cfg = tc::redis::node_config_with(&home, "logplex", &ports, &extra);
        let serve = Serve::start(&cfg, ports.api(), &[]);
        Ok(Node { name, ports, serve })
    }
}

/// What every process had spent and counted at one moment.
struct Sample {
    at: Instant,
    node_cpu: Vec<f64>,
    received: Vec<u64>,
    published: Vec<u64>,
    unpublished: Vec<u64>,
    redis_cpu: Vec<f64>,
    commands: HashMap<String, (u64, u64)>,
    generator_cpu: f64,
}

async fn sample(nodes: &[Node], redis: &Backend, input: &str) -> Sample {
    let mut s = Sample {
        at: Instant::now(),
        node_cpu: nodes.iter().map(|n| n.serve.cpu_secs()).collect(),
        received: Vec::new(),
        published: Vec::new(),
        unpublished: Vec::new(),
        redis_cpu: redis.servers().into_iter().map(redis_cpu_secs).collect(),
        commands: HashMap::new(),
        generator_cpu: tc::procstat::cpu_secs("self"),
    };
    for n in nodes {
        let text = shared::metrics_text(n.ports.api(), KEY).await;
        let v = |name: &str| shared::series(&text, name) as u64;
        s.received.push(v(&format!(
            "logplex_messages_received_total{{input=\"{input}\"}}"
        )));
        s.published
            .push(v("logplex_cluster_log_lines_published_total"));
        s.unpublished
            .push(v("logplex_cluster_log_lines_unpublished_total"));
    }
    for r in redis.servers() {
        for (k, (calls, usec)) in commandstats(r) {
            let e = s.commands.entry(k).or_default();
            e.0 += calls;
            e.1 += usec;
        }
    }
    s
}

/// Polls `done` every 20 ms until it holds or `within` passes; whether it held.
async fn wait_for<F, Fut>(within: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if done().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes channels `bench-0`.. on node 0, waits until every node knows each (its API
/// answers 200), and returns their `app` tokens.
async fn channels(nodes: &[Node], n: u64) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    for c in 0..n {
        let name = format!("bench-{c}");
        let body = format!(r#"{{"name":"{name}","tokens":["app"]}}"#);
        let (status, text) = shared::api(
            nodes[0].ports.api(),
            KEY,
            "POST",
            "/v2/channels",
            Some(body),
        )
        .await
        .ok_or("node-0's API cannot be reached")?;
        if status != 201 {
            return Err(format!(
                "POST /v2/channels {name}: {status} {}",
                String::from_utf8_lossy(&text)
            ));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| format!("POST /v2/channels: {e}"))?;
        let token = v["tokens"]["app"]
            .as_str()
            .ok_or_else(|| format!("no app token in {v}"))?;
        tokens.push(token.to_string());
        for node in &nodes[1..] {
            let path = format!("/v2/channels/{name}");
            let api = node.ports.api();
            let known = wait_for(Duration::from_secs(10), || async {
                matches!(
                    shared::api(api, KEY, "GET", &path, None).await,
                    Some((200, _))
                )
            })
            .await;
            if !known {
                return Err(format!("{} did not know {name} within 10 s", node.name));
            }
        }
    }
    Ok(tokens)
}

/// The load, built before it is timed (so the generator costs little while timed): a
/// stream per TCP connection, or a body per HTTP connection, with where it goes.
enum Load {
    Tcp(Vec<(SocketAddr, Vec<u8>)>),
    Http(Vec<(SocketAddr, String, bytes::Bytes)>),
}

/// What [`prepare`] built: the load, its lines, bytes, and HTTP batches.
struct Prepared {
    load: Load,
    lines: u64,
    bytes: u64,
    batches: u64,
}

fn prepare(o: &Opts, nodes: &[Node], tokens: &[String]) -> Prepared {
    let target = |i: u64| {
        (
            &nodes[(i % o.nodes as u64) as usize],
            &tokens[(i % o.channels) as usize],
        )
    };
    if o.mode == "tcp" {
        let per = o.count / o.conns;
        let streams: Vec<(SocketAddr, Vec<u8>)> = (0..o.conns)
            .map(|i| {
                let (node, token) = target(i);
                let s = (0..per).flat_map(|j| frame(token, i * per + j)).collect();
                (node.ports.tcp(), s)
            })
            .collect();
        let bytes = streams.iter().map(|(_, s)| s.len() as u64).sum();
        Prepared {
            load: Load::Tcp(streams),
            lines: per * o.conns,
            bytes,
            batches: 0,
        }
    } else {
        let batches = o.count / o.batch / o.conns;
        let bodies: Vec<(SocketAddr, String, bytes::Bytes)> = (0..o.conns)
            .map(|i| {
                let (node, token) = target(i);
                let body: Vec<u8> = (0..o.batch).flat_map(|j| frame(token, j)).collect();
                (node.ports.http(), shared::basic(token), body.into())
            })
            .collect();
        let bytes = bodies
            .iter()
            .map(|(_, _, b)| batches * b.len() as u64)
            .sum();
        Prepared {
            load: Load::Http(bodies),
            lines: batches * o.batch * o.conns,
            bytes,
            batches: batches * o.conns,
        }
    }
}

/// Sends the load: every connection at once, each at most `--max-secs`.
async fn drive(o: &Opts, load: Load) {
    match load {
        Load::Tcp(streams) => {
            let failed = shared::send_tcp(streams, o.max).await;
            if failed > 0 {
                eprintln!("{failed} connections failed");
            }
        }
        Load::Http(bodies) => {
            let batches = o.count / o.batch / o.conns;
            let tasks: Vec<_> = bodies
                .into_iter()
                .map(|(addr, auth, body)| {
                    tokio::spawn(shared::send_http(
                        vec![(addr, auth)],
                        body,
                        o.batch,
                        batches,
                        o.max,
                    ))
                })
                .collect();
            let (mut failed, mut first) = (0, None);
            for t in tasks {
                let (f, e) = t.await.unwrap_or((batches, None));
                failed += f;
                first = first.or(e);
            }
            if failed > 0 {
                eprintln!(
                    "{failed} batches not answered 204 (first: {})",
                    first.unwrap_or_default()
                );
            }
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(o: &Opts, nodes: &[Node], redis: &Backend) -> Result<serde_json::Value, String> {
    let api: Vec<SocketAddr> = nodes.iter().map(|n| n.ports.api()).collect();
    for (n, a) in nodes.iter().zip(&api) {
        let up = wait_for(Duration::from_secs(30), || async {
            shared::metric_f64(*a, KEY, "logplex_cluster_up").await >= 1.0
        })
        .await;
        if !up {
            return Err(format!(
                "{} not up in the cluster within 30 s: {}",
                n.name,
                n.serve.stderr_text()
            ));
        }
    }
    let tokens = channels(nodes, o.channels).await?;
    let load_before = loadavg();
    let input = o.mode.as_str();
    let Prepared {
        load,
        lines: sent,
        bytes,
        batches,
    } = prepare(o, nodes, &tokens);
    let mut s0 = sample(nodes, redis, input).await;
    // The run's time starts with the load, after the first sample's reads.
    s0.at = Instant::now();
    drive(o, load).await;
    // Every line received by the nodes (or the deadline).
    let received = |s: &Sample| -> u64 {
        s.received
            .iter()
            .zip(&s0.received)
            .map(|(a, b)| a.saturating_sub(*b))
            .sum()
    };
    let mut s1 = sample(nodes, redis, input).await;
    let deadline = s0.at + o.max;
    while received(&s1) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        s1 = sample(nodes, redis, input).await;
    }
    // Then every node has accounted for its lines: published or kept local.
    let accounted = |s: &Sample| {
        (0..nodes.len()).all(|i| {
            (s.published[i] + s.unpublished[i]).saturating_sub(s0.published[i] + s0.unpublished[i])
                >= s1.received[i].saturating_sub(s0.received[i])
        })
    };
    let mut s2 = sample(nodes, redis, input).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !accounted(&s2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s2 = sample(nodes, redis, input).await;
    }
    let load_after = loadavg();
    Ok(report(
        o,
        &s0,
        &s1,
        &s2,
        nodes,
        sent,
        bytes,
        batches,
        &load_before,
        &load_after,
    ))
}

#[allow(clippy::too_many_arguments)]
fn report(
    o: &Opts,
    s0: &Sample,
    s1: &Sample,
    s2: &Sample,
    nodes: &[Node],
    sent: u64,
    bytes: u64,
    batches: u64,
    load_before: &str,
    load_after: &str,
) -> serde_json::Value {
    let secs = (s1.at - s0.at).as_secs_f64();
    let publish_secs = (s2.at - s0.at).as_secs_f64();
    let got: Vec<u64> = (0..nodes.len())
        .map(|i| s1.received[i].saturating_sub(s0.received[i]))
        .collect();
    let ingested: u64 = got.iter().sum();
    let published: u64 = (0..nodes.len())
        .map(|i| s2.published[i].saturating_sub(s0.published[i]))
        .sum();
    let unpublished: u64 = (0..nodes.len())
        .map(|i| s2.unpublished[i].saturating_sub(s0.unpublished[i]))
        .sum();
    let us = |cpu: f64, n: u64| cpu * 1e6 / n.max(1) as f64;
    let mut per_node = Vec::new();
    let mut node_cpu = 0.0;
    for (i, n) in nodes.iter().enumerate() {
        let cpu = s2.node_cpu[i] - s0.node_cpu[i];
        let cpu_ingest = s1.node_cpu[i] - s0.node_cpu[i];
        node_cpu += cpu;
        per_node.push(serde_json::json!({
            "node": n.name,
            "msgs": got[i],
            "msgs_per_sec": (got[i] as f64 / secs).round(),
            "cpu_secs": cpu,
            "cpu_us_per_msg": us(cpu, got[i]),
            "cpu_us_per_msg_until_received": us(cpu_ingest, got[i]),
            "cores_while_ingesting": cpu_ingest / secs,
            "published": s2.published[i].saturating_sub(s0.published[i]),
            "unpublished": s2.unpublished[i].saturating_sub(s0.unpublished[i]),
        }));
    }
    let redis_cpu: Vec<f64> = s2
        .redis_cpu
        .iter()
        .zip(&s0.redis_cpu)
        .map(|(a, b)| a - b)
        .collect();
    let redis_total: f64 = redis_cpu.iter().sum();
    // Commands the nodes sent during the run (the bench's own INFO left out).
    let mut commands = BTreeMap::new();
    let (mut calls, mut usec) = (0u64, 0u64);
    for (k, (c, u)) in &s2.commands {
        let (c0, u0) = s0.commands.get(k).copied().unwrap_or_default();
        let n = c.saturating_sub(c0);
        if k == "info" || n == 0 {
            continue;
        }
        commands.insert(k.clone(), n);
        calls += n;
        usec += u.saturating_sub(u0);
    }
    let xadd = commands.get("xadd").copied().unwrap_or(0);
    let generator = s1.generator_cpu - s0.generator_cpu;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all_cpu = node_cpu + redis_total + (s2.generator_cpu - s0.generator_cpu);
    let json = serde_json::json!({
        "mode": o.mode,
        "nodes": o.nodes,
        "redis": if o.cluster { "cluster3" } else { "one" },
        "log": o.log,
        "conns": o.conns,
        "channels": o.channels,
        "sent": sent,
        "ingested": ingested,
        "secs": secs,
        "msgs_per_sec": (ingested as f64 / secs).round(),
        "mbytes_per_sec": bytes as f64 / secs / 1e6,
        "node_cpu_us_per_msg": us(node_cpu, ingested),
        "per_node": per_node,
        "published": published,
        "unpublished": unpublished,
        "published_secs": publish_secs,
        "redis_cpu_secs": redis_cpu,
        "redis_cpu_us_per_line": us(redis_total, published),
        "redis_commands": commands,
        "redis_commands_per_msg": calls as f64 / published.max(1) as f64,
        "redis_commands_per_http_batch": if batches > 0 { calls as f64 / batches as f64 } else { 0.0 },
        "redis_command_us_per_line": us(usec as f64 / 1e6, published),
        "lines_per_xadd": published as f64 / xadd.max(1) as f64,
        "generator_cpu_us_per_msg": us(generator, ingested),
        "cores": cores,
        "cores_used": all_cpu / publish_secs,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    });
    println!("{json}");
    let node_list: Vec<String> = per_node
        .iter()
        .map(|n| {
            format!(
                "{} {:.2} M msg/s {:.2} µs",
                n["node"].as_str().unwrap_or(""),
                n["msgs_per_sec"].as_f64().unwrap_or(0.0) / 1e6,
                n["cpu_us_per_msg"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    let cmd_list: Vec<String> = commands.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!(
        "cluster {} {} node(s) on {}: {:.2} M msg/s ({:.0} MB/s) in {secs:.2} s; nodes {:.2} µs \
         CPU/msg [{}]; published {published} (kept local {unpublished}) by {publish_secs:.2} s; \
         redis {:.3} µs CPU/line, {:.4} commands/line ({}), {:.0} lines/XADD; generator \
         {:.2} µs/msg; {:.2} of {cores} cores busy; load {load_before} -> {load_after}",
        o.mode,
        o.nodes,
        if o.cluster {
            "a 3-master Redis Cluster"
        } else {
            "one Redis"
        },
        ingested as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6,
        us(node_cpu, ingested),
        node_list.join(", "),
        us(redis_total, published),
        calls as f64 / published.max(1) as f64,
        cmd_list.join(", "),
        published as f64 / xadd.max(1) as f64,
        us(generator, ingested),
        all_cpu / publish_secs,
    );
    json
}

/// The bench with the arguments `raw` (as after the program's name): its JSON figures,
/// `None` when `redis-server` (or for `--redis cluster`, `redis-cli`) is not installed
/// (said on stdout with a `SKIP` line), or why it could not run.
pub fn bench(raw: Vec<String>) -> Result<Option<serde_json::Value>, String> {
    let o = Opts::parse(raw)?;
    if !tc::need("redis-server", "apt-get install redis-server")
        || (o.cluster && !tc::need("redis-cli", "apt-get install redis-tools"))
    {
        return Ok(None);
    }
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let redis = backend(o.cluster);
    let nodes = (0..o.nodes)
        .map(|i| Node::start(dir.path(), i, &redis, &o))
        .collect::<Result<Vec<_>, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(run(&o, &nodes, &redis)).map(Some)
    // Dropped here, in this order: the runtime, the nodes, Redis (each process killed by
    // its PID and reaped), then the temporary directory.
}

fn main() {
    if let Err(e) = bench(std::env::args().skip(1).collect()) {
        eprintln!("cluster bench: {e}");
        std::process::exit(1);
    }
}
