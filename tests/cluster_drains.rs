//! Cluster mode, drains and alerts over three nodes: each node delivers the lines it
//! ingested (every line reaches the drain once), a drain's status on any node is the sum
//! over the nodes, a rule counts the lines of every node and fires (and resolves) once,
//! and a node killed with `kill -9` while its drain's receiver is down delivers its backlog
//! from its durable log once restarted. A real `redis-server`, nodes on free ports (in this
//! process, or the binary for the one killed), receivers written here.

mod common;

use bytes::Bytes;
use common::receiver::{TcpOptions, TcpReceiver};
use common::redis::Redis;
use common::{request, request_bytes, TestServer};
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
    TestServer::start_with(move |c| c.cluster.redis = url).await
}

/// A Redis and three nodes on it; `None` (skipped, said by `have_redis`) without
/// `redis-server`.
async fn three_nodes() -> Option<(Redis, [TestServer; 3])> {
    if !have_redis() {
        return None;
    }
    let redis = Redis::start();
    let a = node(&redis.url()).await;
    let b = node(&redis.url()).await;
    let c = node(&redis.url()).await;
    Some((redis, [a, b, c]))
}

/// Posts lines `NAME-FIRST` .. `NAME-(FIRST+N-1)` with `token` to the HTTP input at
/// `addr`, in one batch; the status.
async fn post(addr: SocketAddr, token: &str, name: &str, first: usize, n: usize) -> u16 {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"))
    );
    let body: String = (first..first + n)
        .map(|i| common::octet(&common::frame(token, "web.1", &format!("{name}-{i}"))))
        .collect();
    let (st, _) = request_bytes(
        &format!("http://{addr}"),
        "POST",
        "/logs",
        Some(Bytes::from(body)),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/logplex-1"),
            ("logplex-msg-count", &n.to_string()),
        ],
    )
    .await;
    st
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
    let Some((mut redis, nodes)) = three_nodes().await else {
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
