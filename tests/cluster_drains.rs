//! Cluster mode, drains and alerts over three nodes: each node delivers the lines it
//! ingested (every line reaches the drain once), a drain's status on any node is the sum
//! over the nodes, a rule counts the lines of every node and fires (and resolves) once,
//! and a node killed with `kill -9` while its drain's receiver is down delivers its backlog
//! from its durable log once restarted. A real `redis-server`, nodes on free ports (in this
//! process, or the binary for the one killed), receivers written here.

mod common;

use bytes::Bytes;
use common::receiver::{TcpOptions, TcpReceiver};
use common::redis::{node_config, Backend, Redis};
use common::serve::{Ports, Serve};
use common::{request, request_bytes, HttpSink, TestServer};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

fn have_redis() -> bool {
    common::need("redis-server", "apt-get install redis-server")
}

/// A node of the cluster on Redis `url`.
async fn node(url: &str) -> TestServer {
    let url = url.to_string();
    TestServer::start_with(move |c| c.cluster.redis = logplex::config::RedisAt::One(url)).await
}

/// Three nodes on `redis` (one Redis, or a three-master Redis Cluster; `None`, the test
/// skipped and said so, without the tools).
async fn three_nodes(redis: Option<Backend>) -> Option<(Backend, [TestServer; 3])> {
    let redis = redis?;
    let a = redis.node().await;
    let b = redis.node().await;
    let c = redis.node().await;
    Some((redis, [a, b, c]))
}

/// Posts lines `NAME-FIRST` .. `NAME-(FIRST+N-1)` with `token` to the HTTP input at
/// `addr`, in one batch; the status.
async fn post(addr: SocketAddr, token: &str, name: &str, first: usize, n: usize) -> u16 {
    let msgs: Vec<String> = (first..first + n).map(|i| format!("{name}-{i}")).collect();
    post_msgs(addr, token, &msgs).await
}

/// Posts `msgs` with `token` to the HTTP input at `addr`, in one batch; the status.
async fn post_msgs(addr: SocketAddr, token: &str, msgs: &[String]) -> u16 {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"))
    );
    let body: String = msgs
        .iter()
        .map(|m| common::octet(&common::frame(token, "web.1", m)))
        .collect();
    let (st, _) = request_bytes(
        &format!("http://{addr}"),
        "POST",
        "/logs",
        Some(Bytes::from(body)),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/logplex-1"),
            ("logplex-msg-count", &msgs.len().to_string()),
        ],
    )
    .await;
    st
}

/// An alert rule `name` on lines with `status>=500`, firing at `threshold` of them in
/// `window`, whose webhook is `hook`'s `/hook` (JSON for `POST .../alerts`).
fn rule_5xx(name: &str, threshold: u32, window: &str, hook: &HttpSink) -> String {
    format!(
        r#"{{"name":"{name}","where":"status>=500","threshold":{threshold},"window":"{window}","webhook":"{}"}}"#,
        hook.url("/hook")
    )
}

/// Polls `f` every 20 ms until it holds, at most `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn json_get(api: &str, path: &str) -> (u16, Value) {
    let (st, body) = request(api, "GET", path, None).await;
    (st, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// How many times each message (the last word of each frame) reached the receiver.
fn received(out: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut got = HashMap::new();
    for l in text.lines() {
        let msg = l.rsplit(' ').next().unwrap_or_default().to_string();
        *got.entry(msg).or_insert(0) += 1;
    }
    got
}

/// Checks that `got` holds each of `want` exactly once and nothing else.
fn exactly_once(got: &HashMap<String, usize>, want: &[String]) {
    let twice: Vec<_> = got.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let missing: Vec<_> = want.iter().filter(|m| !got.contains_key(*m)).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert_eq!(got.len(), want.len(), "unexpected lines: {got:?}");
}

/// The first drain of `channel` as node `api` lists it.
async fn drain_status(api: &str, channel: &str) -> Value {
    let (st, v) = json_get(api, &format!("/v2/channels/{channel}/drains")).await;
    assert_eq!(st, 200, "{v}");
    v[0]["status"].clone()
}

/// Lines sent to A, B and C reach the one drain exactly once (each node delivers what it
/// ingested); the drain's status on any node counts the lines of all three, with each
/// node's part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_line_once_and_any_node_shows_the_sum() {
    deliver_once_and_sum(Backend::one()).await;
}

/// The same on a three-master Redis Cluster (the status of one drain lives in its
/// channel's slot; a round covers drains of channels in other slots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_every_line_once_and_any_node_shows_the_sum() {
    deliver_once_and_sum(Backend::cluster()).await;
}

async fn deliver_once_and_sum(redis: Option<Backend>) {
    let Some((redis, nodes)) = three_nodes(redis).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rx = TcpReceiver::start(dir.path(), "drain", TcpOptions::default());
    let token = nodes[0].create_app("spread").await;
    let (st, body) = request(
        &nodes[1].api(),
        "POST",
        "/v2/channels/spread/drains",
        Some(&format!(r#"{{"url":"syslog://127.0.0.1:{}"}}"#, rx.port)),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    // A drain of another channel (another slot on a Redis Cluster) in the same status
    // rounds.
    nodes[0].create_app("elsewhere").await;
    let (st, body) = request(
        &nodes[2].api(),
        "POST",
        "/v2/channels/elsewhere/drains",
        Some(&format!(r#"{{"url":"syslog://127.0.0.1:{}"}}"#, rx.port)),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    // The token and the drain on every node.
    for n in &nodes {
        until(
            Duration::from_secs(2),
            "the drain on every node",
            || async {
                json_get(&n.api(), "/v2/channels/spread/drains")
                    .await
                    .1
                    .as_array()
                    .is_some_and(|d| d.len() == 1)
            },
        )
        .await;
    }
    let mut want = Vec::new();
    for (n, name) in nodes.iter().zip(["a", "b", "c"]) {
        for batch in 0..3 {
            let first = batch * 100;
            assert_eq!(
                post(n.addrs.http.unwrap(), &token, name, first, 100).await,
                204
            );
            want.extend((first..first + 100).map(|i| format!("{name}-{i}")));
        }
    }
    until(
        Duration::from_secs(10),
        "every line at the receiver",
        || async { received(&rx.out).len() >= want.len() },
    )
    .await;
    // Give a duplicate time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    exactly_once(&received(&rx.out), &want);

    // Every node's status reaches Redis within about a second.
    for n in &nodes {
        until(
            Duration::from_secs(5),
            "the sum over the three nodes",
            || async { drain_status(&n.api(), "spread").await["sent"] == 900 },
        )
        .await;
        let s = drain_status(&n.api(), "spread").await;
        assert_eq!(s["scope"], "cluster", "{s}");
        assert_eq!(s["state"], "connected", "{s}");
        assert_eq!(s["dropped"], 0, "{s}");
        let parts = s["nodes"].as_array().unwrap();
        assert_eq!(parts.len(), 3, "{s}");
        assert!(parts.iter().all(|p| p["sent"] == 300), "{s}");
        // This node's own part first.
        let me = format!(":{}", n.addrs.api.port());
        assert!(parts[0]["node"].as_str().unwrap().ends_with(&me), "{s}");
    }

    // Redis away: each node answers with its own part, marked, never an error.
    let Backend::One(mut redis) = redis else {
        for n in nodes {
            n.stop().await;
        }
        return;
    };
    redis.kill();
    let a = &nodes[0];
    until(
        Duration::from_secs(5),
        "A's own status, marked local",
        || async { drain_status(&a.api(), "spread").await["scope"] == "local" },
    )
    .await;
    let s = drain_status(&a.api(), "spread").await;
    assert_eq!(s["sent"], 300, "{s}");
    assert_eq!(s["nodes"].as_array().map(Vec::len), Some(1), "{s}");
    for n in nodes {
        n.stop().await;
    }
}

/// A rule whose threshold only the lines of the three nodes together reach (3 matches on
/// each, threshold 9) fires once and resolves once over the cluster: one webhook request
/// each, one in-band line each in the channel (read from any node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_counts_the_lines_of_every_node_and_fires_once() {
    fires_once(Backend::one()).await;
}

/// The same on a three-master Redis Cluster (the rule's counts and state in the
/// channel's slot, the set of firing windows in another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_rule_fires_once() {
    fires_once(Backend::cluster()).await;
}

async fn fires_once(redis: Option<Backend>) {
    let Some((_redis, nodes)) = three_nodes(redis).await else {
        return;
    };
    let hook = HttpSink::start(|_| 200).await;
    let token = nodes[0].create_app("spread").await;
    let rule = rule_5xx("spread-5xx", 9, "6s", &hook);
    let (st, body) = request(
        &nodes[2].api(),
        "POST",
        "/v2/channels/spread/alerts",
        Some(&rule),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    for n in &nodes {
        until(Duration::from_secs(2), "the rule on every node", || async {
            json_get(&n.api(), "/v2/channels/spread/alerts")
                .await
                .1
                .to_string()
                .contains("spread-5xx")
        })
        .await;
    }
    let t = Instant::now();
    for (i, n) in nodes.iter().enumerate() {
        let msgs: Vec<String> = (0..3)
            .map(|k| format!("at=error status=503 node={i} k={k}"))
            .collect();
        assert_eq!(post_msgs(n.addrs.http.unwrap(), &token, &msgs).await, 204);
        // A line that does not match.
        assert_eq!(
            post_msgs(n.addrs.http.unwrap(), &token, &["status=200".into()]).await,
            204
        );
    }
    let state = |r: &common::Received| -> (String, u64) {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        (
            v["state"].as_str().unwrap_or_default().to_string(),
            v["count"].as_u64().unwrap_or(0),
        )
    };
    let got = hook.wait(10, |r| !r.is_empty()).await;
    assert!(!got.is_empty(), "no firing within 10 s");
    println!("fired {:?} after the first line", t.elapsed());
    assert_eq!(state(&got[0]), ("firing".to_string(), 9));
    let got = hook.wait(20, |r| r.len() >= 2).await;
    assert_eq!(got.len(), 2, "no resolving within 20 s");
    assert_eq!(state(&got[1]).0, "resolved");
    // Nothing more: no node fired on its own, none fired twice.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = hook.requests();
    let states: Vec<_> = got.iter().map(state).collect();
    assert_eq!(got.len(), 2, "{states:?}");

    // One line of each in the channel, from any node.
    let h = nodes[1].history("spread", 100).await;
    let fired: Vec<_> = h
        .iter()
        .filter(|l| l.contains("Alert spread-5xx firing: 9 matching lines in 6s"))
        .collect();
    let resolved: Vec<_> = h
        .iter()
        .filter(|l| l.contains("Alert spread-5xx resolved"))
        .collect();
    assert_eq!((fired.len(), resolved.len()), (1, 1), "{h:#?}");
    // The metrics of the three nodes together: one firing.
    let mut total = 0;
    for n in &nodes {
        let (_, m) = request(&n.api(), "GET", "/metrics", None).await;
        total += m
            .lines()
            .find_map(|l| {
                l.strip_prefix("logplex_alerts_fired_total{alert=\"spread-5xx\"} ")?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
    }
    assert_eq!(total, 1);
    for n in nodes {
        n.stop().await;
    }
}

/// Redis away: a node counts the lines it ingests and fires on its own, as alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_away_a_node_fires_on_its_own_count() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start();
    let a = node(&redis.url()).await;
    let hook = HttpSink::start(|_| 200).await;
    let token = a.create_app("alone").await;
    let rule = rule_5xx("boom", 3, "1m", &hook);
    let (st, body) = request(&a.api(), "POST", "/v2/channels/alone/alerts", Some(&rule)).await;
    assert_eq!(st, 201, "{body}");
    redis.kill();
    until(Duration::from_secs(5), "degraded", || async {
        json_get(&a.api(), "/healthcheck").await.1["status"] == "degraded"
    })
    .await;
    let msgs: Vec<String> = (0..3).map(|k| format!("status=500 k={k}")).collect();
    assert_eq!(post_msgs(a.addrs.http.unwrap(), &token, &msgs).await, 204);
    let got = hook.wait(10, |r| !r.is_empty()).await;
    assert_eq!(got.len(), 1, "no local firing with Redis away");
    let v: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["count"].as_u64()),
        (Some("firing"), Some(3))
    );
    a.stop().await;
}

/// Node A (the binary) takes lines while its drain's receiver is down, is killed with
/// `kill -9` and started again: its backlog, kept in its durable log, reaches the receiver
/// once it is up, each line once, beside B's own backlog. Meanwhile B shows A's lines
/// waiting in the drain's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_delivers_its_backlog_once_after_a_restart() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let b = node(&redis.url()).await;
    let token = b.create_app("backlog").await;
    let rx_port = common::serve::free_port();
    let (st, body) = request(
        &b.api(),
        "POST",
        "/v2/channels/backlog/drains",
        Some(&format!(r#"{{"url":"syslog://127.0.0.1:{rx_port}"}}"#)),
    )
    .await;
    assert_eq!(st, 201, "{body}");

    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    let cfg = node_config(dir.path(), "a", &p, &redis.url());
    let mut a = Serve::start(&cfg, p.api(), &[]);
    until(
        Duration::from_secs(5),
        "the token accepted on A",
        || async { post(p.http(), &token, "a", 0, 1).await == 204 },
    )
    .await;
    let mut want = vec!["a-0".to_string()];
    for first in [1, 101] {
        assert_eq!(post(p.http(), &token, "a", first, 100).await, 204);
        want.extend((first..first + 100).map(|i| format!("a-{i}")));
    }
    assert_eq!(post(b.addrs.http.unwrap(), &token, "b", 0, 50).await, 204);
    want.extend((0..50).map(|i| format!("b-{i}")));
    // A's lines wait: B sees them in the drain's status (A's part, through Redis).
    until(
        Duration::from_secs(5),
        "A's backlog in the status on B",
        || async {
            let s = drain_status(&b.api(), "backlog").await;
            s["lag_lines"] == 251 && s["state"] == "failing" && s["sent"] == 0
        },
    )
    .await;
    // The log's writer thread writes what A took in within milliseconds (kill -9 keeps
    // what was written, fsync or not); the kill comes well after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.child.signal(rustix::process::Signal::KILL);
    a.wait_exit(Duration::from_secs(10));
    // A gone: its part leaves the status within the expiry of its hash.
    until(
        Duration::from_secs(6),
        "A's part gone from B's status",
        || async {
            drain_status(&b.api(), "backlog").await["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 1)
        },
    )
    .await;

    let _a = Serve::start(&cfg, p.api(), &[]);
    let rx = TcpReceiver::start(
        dir.path(),
        "drain",
        TcpOptions {
            port: rx_port,
            ..TcpOptions::default()
        },
    );
    until(
        Duration::from_secs(30),
        "both backlogs at the receiver",
        || async { received(&rx.out).len() >= want.len() },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    exactly_once(&received(&rx.out), &want);
    until(
        Duration::from_secs(5),
        "the sum after the restart",
        || async {
            let s = drain_status(&b.api(), "backlog").await;
            s["sent"] == 251 && s["lag_lines"] == 0
        },
    )
    .await;
    b.stop().await;
}

/// A rule fired by node A (the binary, the only one with matching lines) is resolved by B
/// once A is killed with `kill -9`: B follows the cluster's firing windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_fired_by_a_killed_node_is_resolved_by_another() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let b = node(&redis.url()).await;
    let hook = HttpSink::start(|_| 200).await;
    let token = b.create_app("orphan").await;
    let rule = rule_5xx("boom", 3, "4s", &hook);
    let (st, body) = request(&b.api(), "POST", "/v2/channels/orphan/alerts", Some(&rule)).await;
    assert_eq!(st, 201, "{body}");
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    let cfg = node_config(dir.path(), "a", &p, &redis.url());
    let mut a = Serve::start(&cfg, p.api(), &[]);
    until(
        Duration::from_secs(5),
        "the token accepted on A",
        || async { post(p.http(), &token, "warmup", 0, 1).await == 204 },
    )
    .await;
    let msgs: Vec<String> = (0..3).map(|k| format!("status=502 k={k}")).collect();
    assert_eq!(post_msgs(p.http(), &token, &msgs).await, 204);
    let got = hook.wait(10, |r| !r.is_empty()).await;
    assert_eq!(got.len(), 1, "A did not fire");
    a.child.signal(rustix::process::Signal::KILL);
    a.wait_exit(Duration::from_secs(10));
    let got = hook.wait(15, |r| r.len() >= 2).await;
    assert_eq!(got.len(), 2, "nobody resolved after A died");
    let v: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(v["state"], "resolved");
    let h = b.history("orphan", 50).await;
    assert_eq!(
        h.iter()
            .filter(|l| l.contains("Alert boom resolved"))
            .count(),
        1,
        "{h:#?}"
    );
    b.stop().await;
}

/// A channel destroyed and made again under its name starts its rules' windows empty over
/// the cluster: two matches before and one after do not make the three a rule asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_made_again_does_not_inherit_its_windows() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let a = node(&redis.url()).await;
    let hook = HttpSink::start(|_| 200).await;
    let rule = rule_5xx("boom", 3, "1m", &hook);
    let count = || async {
        let (_, v) = json_get(&a.api(), "/v2/channels/again/alerts").await;
        v.as_array()
            .and_then(|rules| rules.first())
            .and_then(|r| r["state"]["count"].as_u64())
    };
    for (round, lines) in [(0, 2), (1, 1)] {
        if round == 1 {
            let (st, body) = request(&a.api(), "DELETE", "/v2/channels/again", None).await;
            assert_eq!(st, 204, "{body}");
        }
        let token = a.create_app("again").await;
        let (st, body) = request(&a.api(), "POST", "/v2/channels/again/alerts", Some(&rule)).await;
        assert_eq!(st, 201, "{body}");
        let msgs: Vec<String> = (0..lines).map(|k| format!("status=500 k={k}")).collect();
        assert_eq!(post_msgs(a.addrs.http.unwrap(), &token, &msgs).await, 204);
        // Counted in Redis by a round, and shown.
        until(
            Duration::from_secs(5),
            "the matches counted in Redis",
            || async {
                let in_redis = redis.int(&[
                    "EVAL",
                    "local n = 0 for _, k in ipairs(redis.call('KEYS', '*:alert:*:counts')) do \
                 for _, v in ipairs(redis.call('HVALS', k)) do n = n + tonumber(v) end end \
                 return n",
                    "0",
                ]);
                // The old app's two stay in Redis (until they expire) beside the new one's.
                in_redis == [2, 3][round] && count().await == Some(lines as u64)
            },
        )
        .await;
    }
    // Two more rounds: still one match, nothing fired.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(count().await, Some(1));
    assert!(hook.requests().is_empty(), "fired on the old app's matches");
    a.stop().await;
}
