//! Cluster mode: several nodes (`logplex::start` in this process, or the binary when a
//! test kills one) share one config through a real `redis-server` started by the test.

mod common;

use bytes::Bytes;
use common::redis::{node_config, Backend, Redis};
use common::serve::{Ports, Serve};
use common::{open_stream, read_until, request, request_bytes, request_with, TestServer};
use serde_json::Value;
use std::time::{Duration, Instant};

fn have_redis() -> bool {
    common::need("redis-server", "apt-get install redis-server")
}

/// A node of the cluster on Redis `url`.
async fn node(url: &str) -> TestServer {
    let url = url.to_string();
    TestServer::start_with(move |c| {
        c.cluster.redis = logplex::config::RedisAt::One(url);
    })
    .await
}

/// A Redis and one node on it; `None` (the test is skipped, said by `have_redis`) when
/// `redis-server` is not installed.
async fn one_node() -> Option<(Backend, TestServer)> {
    let redis = Backend::one()?;
    let a = redis.node().await;
    Some((redis, a))
}

/// A Redis and two nodes on it; `None` (the test is skipped, said by `have_redis`) when
/// `redis-server` is not installed.
async fn two_nodes() -> Option<(Backend, TestServer, TestServer)> {
    let (redis, a) = one_node().await?;
    let b = redis.node().await;
    Some((redis, a, b))
}

/// Two nodes on `redis`.
async fn two_nodes_on(redis: Backend) -> (Backend, TestServer, TestServer) {
    let a = redis.node().await;
    let b = redis.node().await;
    (redis, a, b)
}

/// Posts one line with `token` to a node's HTTP input; the status.
async fn post_line(s: &TestServer, token: &str, msg: &str) -> u16 {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"))
    );
    let frame = common::octet(&common::frame(token, "web.1", msg));
    let (st, _) = request_bytes(
        &format!("http://{}", s.addrs.http.unwrap()),
        "POST",
        "/logs",
        Some(Bytes::from(frame)),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/logplex-1"),
        ],
    )
    .await;
    st
}

/// Polls `f` every 2 ms until it holds, at most `within`; how long it took.
async fn until<F, Fut>(within: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    loop {
        if f().await {
            return t.elapsed();
        }
        assert!(t.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn health(s: &TestServer) -> String {
    let (_, body) = request_with(&s.api(), "GET", "/healthcheck", None, &[]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["status"].as_str().unwrap_or_default().to_string()
}

/// Waits (up to 5 s each) until every one of `nodes` says `status` in its healthcheck.
async fn health_is(nodes: &[&TestServer], status: &str) {
    for &n in nodes {
        until(Duration::from_secs(5), status, || async move {
            health(n).await == status
        })
        .await;
    }
}

async fn json_get(s: &TestServer, path: &str) -> (u16, Value) {
    let (st, body) = request(&s.api(), "GET", path, None).await;
    (st, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// An app and its token made on A take lines on B within 1 s; a drain and an alert rule
/// added on B show on A; the app destroyed on A stops taking lines on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_reach_the_others() {
    if let Some(redis) = Backend::one() {
        changes_on_one_node_reach_the_others_on(redis).await;
    }
}

/// [`changes_on_one_node_reach_the_others`] on a Redis Cluster of three masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_reach_the_others_on_a_redis_cluster() {
    if let Some(redis) = Backend::cluster() {
        changes_on_one_node_reach_the_others_on(redis).await;
    }
}

async fn changes_on_one_node_reach_the_others_on(redis: Backend) {
    let (_redis, a, b) = two_nodes_on(redis).await;
    assert_eq!(health(&a).await, "normal");

    let token = a.create_app("shared").await;
    until(Duration::from_secs(1), "the token accepted on B", || {
        let (b, t) = (&b, &token);
        async move { post_line(b, t, "hello from B").await == 204 }
    })
    .await;
    let h = b.wait_history("shared", |h| !h.is_empty()).await;
    assert!(h[0].ends_with("app[web.1]: hello from B"), "{h:?}");
    // A token added on B routes on A.
    let (st, body) = request(
        &b.api(),
        "POST",
        "/v2/channels/shared/tokens",
        Some(r#"{"name":"worker"}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let worker: Value = serde_json::from_str(&body).unwrap();
    let worker = worker["token"].as_str().unwrap().to_string();
    until(Duration::from_secs(1), "B's token accepted on A", || {
        let (a, t) = (&a, &worker);
        async move { post_line(a, t, "from a worker").await == 204 }
    })
    .await;

    // A drain and a rule added on B.
    let (st, body) = request(
        &b.api(),
        "POST",
        "/v2/channels/shared/drains",
        Some(r#"{"url":"syslog://127.0.0.1:9"}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = request(
        &b.api(),
        "POST",
        "/v2/channels/shared/alerts",
        Some(r#"{"name":"boom","where":"status>=500","threshold":3,"window":"1m"}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    until(
        Duration::from_secs(1),
        "the drain and the rule on A",
        || {
            let a = &a;
            async move {
                let (_, drains) = json_get(a, "/v2/channels/shared/drains").await;
                let (_, rules) = json_get(a, "/v2/channels/shared/alerts").await;
                drains.as_array().is_some_and(|d| d.len() == 1)
                    && rules.to_string().contains("\"boom\"")
            }
        },
    )
    .await;
    // The same drain again, on A this time: Redis says it is there.
    let (st, _) = request(
        &a.api(),
        "POST",
        "/v2/channels/shared/drains",
        Some(r#"{"url":"syslog://127.0.0.1:9"}"#),
    )
    .await;
    assert_eq!(st, 409);
    // Removed on A, gone on B.
    let (st, body) = request(
        &a.api(),
        "DELETE",
        "/v2/channels/shared/drains/syslog%3A%2F%2F127.0.0.1%3A9",
        None,
    )
    .await;
    assert_eq!(st, 204, "{body}");
    until(Duration::from_secs(1), "the drain gone from B", || {
        let b = &b;
        async move {
            let (_, drains) = json_get(b, "/v2/channels/shared/drains").await;
            drains.as_array().is_some_and(|d| d.is_empty())
        }
    })
    .await;

    // Destroyed on A: B refuses its lines.
    let (st, _) = request(&a.api(), "DELETE", "/v2/channels/shared", None).await;
    assert_eq!(st, 204);
    until(Duration::from_secs(1), "the token refused on B", || {
        let (b, t) = (&b, &token);
        async move { post_line(b, t, "too late").await == 401 }
    })
    .await;
    let (st, _) = json_get(&b, "/v2/channels/shared").await;
    assert_eq!(st, 404);
    a.stop().await;
    b.stop().await;
}

/// The same name asked of two nodes at once is made once: one 201, one 409, and both
/// nodes route the winner's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_name_made_on_two_nodes_at_once_is_made_once() {
    let Some((_redis, a, b)) = two_nodes().await else {
        return;
    };
    for i in 0..20 {
        let name = format!("race-{i}");
        let body = format!(r#"{{"name":"{name}","tokens":["app"]}}"#);
        let (aa, ba) = (a.api(), b.api());
        let (ra, rb) = tokio::join!(
            request(&aa, "POST", "/v2/channels", Some(&body)),
            request(&ba, "POST", "/v2/channels", Some(&body)),
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "{name}: {ra:?} {rb:?}");
        let won = if ra.0 == 201 { &ra.1 } else { &rb.1 };
        let won: Value = serde_json::from_str(won).unwrap();
        for n in [&a, &b] {
            let (st, got) = json_get(n, &format!("/v2/channels/{name}")).await;
            assert_eq!(st, 200);
            assert_eq!(got["tokens"], won["tokens"], "{name}");
        }
    }
    a.stop().await;
    b.stop().await;
}

/// Redis killed: intake goes on on both nodes, a change answers 503 with Retry-After, the
/// healthcheck says degraded. Redis back with its data: a change made then reaches the
/// other node, and both are normal again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_intake_and_refuses_changes_until_it_is_back() {
    if !have_redis() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start_persistent(dir.path());
    let a = node(&redis.url()).await;
    let b = node(&redis.url()).await;
    let token = a.create_app("steady").await;
    until(Duration::from_secs(1), "the token on B", || {
        let (b, t) = (&b, &token);
        async move { post_line(b, t, "before").await == 204 }
    })
    .await;

    redis.kill();
    health_is(&[&a, &b], "degraded").await;
    for n in [&a, &b] {
        assert_eq!(post_line(n, &token, "while Redis is down").await, 204);
    }
    let (st, body) = common::request_bytes(
        &a.api(),
        "POST",
        "/v2/channels",
        Some(Bytes::from_static(br#"{"name":"later","tokens":["app"]}"#)),
        &[("authorization", &format!("Bearer {}", common::KEY))],
    )
    .await;
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("\"unavailable\""));
    // Sessions still work from the replica.
    let h = b.wait_history("steady", |h| h.len() >= 2).await;
    assert!(
        h.iter().any(|l| l.ends_with("while Redis is down")),
        "{h:?}"
    );

    redis.restart();
    health_is(&[&a, &b], "normal").await;
    // Back: the first change asked is taken (the writer's old connection was dropped
    // when the follower lost Redis).
    let (st, body) = request(
        &a.api(),
        "POST",
        "/v2/channels",
        Some(r#"{"name":"later","tokens":["app"]}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let later = v["tokens"]["app"].as_str().unwrap().to_string();
    until(Duration::from_secs(3), "the change on B", || {
        let (b, t) = (&b, &later);
        async move { post_line(b, t, "after").await == 204 }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A node killed (`kill -9`) while another makes a change resumes from its saved position
/// when it starts again and has the change; a node that starts with an empty replica
/// loads the whole config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_resumes_from_its_position_and_a_new_one_loads_everything() {
    let Some((redis, a)) = one_node().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    let cfg = node_config(dir.path(), "b", &p, &redis.url());
    let env = [("RUST_LOG", "info")];
    let mut b = Serve::start(&cfg, p.api(), &env);
    let b_api = format!("http://{}", p.api());

    a.create_app("first").await;
    until(Duration::from_secs(2), "first on B", || {
        let b_api = &b_api;
        async move { request(b_api, "GET", "/v2/channels/first", None).await.0 == 200 }
    })
    .await;
    b.child.signal(rustix::process::Signal::KILL);
    b.wait_exit(Duration::from_secs(10));
    let first_run = b.stderr_text();

    let second = a.create_app("second").await;
    let (st, _) = request(&a.api(), "DELETE", "/v2/channels/first", None).await;
    assert_eq!(st, 204);
    let mut b = Serve::start(&cfg, p.api(), &env);
    // Caught up before it serves.
    let (st, body) = request(&b_api, "GET", "/v2/channels/second", None).await;
    assert_eq!(st, 200, "{body}: {}", b.stderr_text());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tokens"]["app"], second.as_str());
    assert_eq!(
        request(&b_api, "GET", "/v2/channels/first", None).await.0,
        404
    );
    let (_, metrics) = request(&b_api, "GET", "/metrics", None).await;
    for series in [
        "logplex_cluster_up 1",
        "logplex_cluster_full_loads_total 0",
        "logplex_cluster_changes_applied_total 2",
    ] {
        assert!(metrics.contains(series), "{series} not in {metrics}");
    }
    let log = b.stderr_text();
    assert!(first_run.contains("loaded the whole config"), "{first_run}");
    assert!(
        log.contains("following the change stream") && !log.contains("loaded the whole config"),
        "the restarted node did not resume from its position: {log}"
    );

    // A new node: everything, at once.
    let c = node(&redis.url()).await;
    let (st, got) = json_get(&c, "/v2/channels/second").await;
    assert_eq!(st, 200);
    assert_eq!(got["tokens"]["app"], second.as_str());
    assert_eq!(json_get(&c, "/v2/channels/first").await.0, 404);
    b.stop();
    a.stop().await;
    c.stop().await;
}

/// How long a token made on A takes to be accepted on B: p50 and p99 over 100 creates
/// (printed), p99 under 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reaches_another_node_within_a_second() {
    let Some((_redis, a, b)) = two_nodes().await else {
        return;
    };
    let mut took = Vec::new();
    for i in 0..100 {
        let token = a.create_app(&format!("app-{i}")).await;
        let t = until(Duration::from_secs(1), "the token on B", || {
            let (b, t) = (&b, &token);
            async move { post_line(b, t, "x").await == 204 }
        })
        .await;
        took.push(t);
    }
    took.sort();
    let (p50, p99) = (took[49], took[98]);
    eprintln!("create on A -> token accepted on B: p50 {p50:?}, p99 {p99:?} (100 creates)");
    assert!(p99 < Duration::from_secs(1));
    a.stop().await;
    b.stop().await;
}

/// What one node answered, another answers too, at once: an app created through A is found
/// by B's API the moment A has answered (B waits for the changes Redis holds before it says
/// "not found"), as a client behind one address meets a different node on each request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_made_on_one_node_is_found_on_another_at_once() {
    let Some((_redis, a, b)) = two_nodes().await else {
        return;
    };
    for i in 0..40 {
        let app = format!("app-{i}");
        a.create_app(&app).await;
        let (st, body) = match i % 4 {
            0 => request(&b.api(), "GET", &format!("/v2/channels/{app}"), None).await,
            1 => {
                let rule = r#"{"name":"r","where":"status>=500","threshold":1,"window":"1m"}"#;
                let path = format!("/v2/channels/{app}/alerts");
                request(&b.api(), "POST", &path, Some(rule)).await
            }
            2 => {
                let session = format!(r#"{{"channel":"{app}","num":10}}"#);
                request(&b.api(), "POST", "/v2/sessions", Some(&session)).await
            }
            _ => request(&b.api(), "GET", &format!("/v2/channels/{app}/alerts"), None).await,
        };
        assert!(st == 200 || st == 201, "{app} on B: {st} {body}");
    }
    a.stop().await;
    b.stop().await;
}

/// A single node turned into a cluster fills the empty Redis with its apps (ids and tokens
/// kept), which a second node then serves; a Redis restarted empty is filled again from a
/// node's replica when it reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_fills_an_empty_redis_with_its_apps() {
    if !have_redis() {
        return;
    }
    let alone = TestServer::start().await;
    let token = alone.create_app("solo").await;
    let (st, _) = request(
        &alone.api(),
        "POST",
        "/v2/channels/solo/drains",
        Some(r#"{"url":"syslog://127.0.0.1:9"}"#),
    )
    .await;
    assert_eq!(st, 201);
    let dir = alone.stop().await;

    let mut redis = Redis::start();
    let mut c = common::test_config(dir.path());
    c.cluster.redis = logplex::config::RedisAt::One(redis.url());
    let a = TestServer::start_in(dir, c).await;
    let b = node(&redis.url()).await;
    assert_eq!(post_line(&b, &token, "on B").await, 204);
    let (_, drains) = json_get(&b, "/v2/channels/solo/drains").await;
    assert_eq!(drains.as_array().map(Vec::len), Some(1), "{drains}");

    // Redis loses everything: the first node back fills it again.
    redis.restart();
    health_is(&[&a, &b], "normal").await;
    let (st, _) = request(
        &b.api(),
        "POST",
        "/v2/channels/solo/tokens",
        Some(r#"{"name":"web"}"#),
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(post_line(&a, &token, "still routed").await, 204);
    until(Duration::from_secs(2), "B's new token on A", || {
        let a = &a;
        async move {
            let (_, got) = json_get(a, "/v2/channels/solo").await;
            got["tokens"]["web"].is_string()
        }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A node without a key of its own takes the cluster's admin key (set by the first node);
/// its own generated key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_takes_the_clusters_admin_key() {
    let Some((redis, a)) = one_node().await else {
        return;
    };
    let url = redis.url();
    let b = TestServer::start_with(move |c| {
        c.cluster.redis = logplex::config::RedisAt::One(url);
        c.api.auth_key = String::new();
    })
    .await;
    let own = std::fs::read_to_string(b.dir.path().join("admin.key")).unwrap();
    let (st, _) = request(&b.api(), "GET", "/v2/channels", None).await;
    assert_eq!(st, 200, "the cluster's key is refused on B");
    let (st, _) = request_with(
        &b.api(),
        "GET",
        "/v2/channels",
        None,
        &[("authorization", &format!("Bearer {}", own.trim()))],
    )
    .await;
    assert_eq!(st, 401, "B's own key still works");
    a.stop().await;
    b.stop().await;
}

/// A node away while more changes were made than the stream keeps loads the whole config
/// when it returns: what was made meanwhile is there, what was destroyed is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_past_the_streams_length_loads_everything() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    let cluster = move |c: &mut logplex::config::Config| {
        c.cluster.redis = logplex::config::RedisAt::One(url.clone());
        c.cluster.changes_kept = 100;
    };
    let a = TestServer::start_with(cluster.clone()).await;
    let b = TestServer::start_with(cluster.clone()).await;
    a.create_app("old").await;
    until(Duration::from_secs(1), "old on B", || {
        let b = &b;
        async move { json_get(b, "/v2/channels/old").await.0 == 200 }
    })
    .await;
    let dir = b.stop().await;
    let (st, _) = request(&a.api(), "DELETE", "/v2/channels/old", None).await;
    assert_eq!(st, 204);
    for i in 0..300 {
        let (st, body) = request(
            &a.api(),
            "POST",
            "/v2/channels",
            Some(&format!(r#"{{"name":"new-{i}"}}"#)),
        )
        .await;
        assert_eq!(st, 201, "{body}");
    }
    // Trimmed to about 100 (in whole blocks of Redis's stream nodes).
    let kept = redis.int(&["XLEN", "logplex:{cfg}:changes"]);
    assert!(kept < 250, "the stream kept {kept} changes");
    let mut c = common::test_config(dir.path());
    cluster(&mut c);
    let b = TestServer::start_in(dir, c).await;
    assert_eq!(json_get(&b, "/v2/channels/old").await.0, 404);
    let (_, list) = json_get(&b, "/v2/channels").await;
    assert_eq!(list.as_array().map(Vec::len), Some(300), "{list}");
    a.stop().await;
    b.stop().await;
}

/// A channel declared in one node's config, with its fixed token, is written through
/// Redis: another node routes the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_declared_in_config_reaches_every_node() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let token = "t.00000000-0000-4000-8000-00000000c1c1";
    let url = redis.url();
    let a = TestServer::start_with(move |c| {
        c.cluster.redis = logplex::config::RedisAt::One(url);
        c.channels.push(logplex::config::ChannelConfig {
            name: "declared".into(),
            tokens: [("app".to_string(), token.to_string())].into(),
            drains: vec!["syslog://127.0.0.1:9".into()],
            metrics: Some(true),
        });
    })
    .await;
    let b = node(&redis.url()).await;
    until(Duration::from_secs(3), "the declared token on B", || {
        let b = &b;
        async move { post_line(b, token, "declared").await == 204 }
    })
    .await;
    until(Duration::from_secs(3), "its drain and metrics on B", || {
        let b = &b;
        async move {
            let (_, ch) = json_get(b, "/v2/channels/declared").await;
            let (_, drains) = json_get(b, "/v2/channels/declared/drains").await;
            ch["metrics"] == true && drains.as_array().is_some_and(|d| d.len() == 1)
        }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// Posts `n` lines with `token` to a node's HTTP input in one batch; the status.
async fn post_batch(s: &TestServer, token: &str, prefix: &str, n: usize) -> u16 {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"))
    );
    let body: String = (0..n)
        .map(|i| common::octet(&common::frame(token, "web.1", &format!("{prefix} {i}"))))
        .collect();
    let (st, _) = request_bytes(
        &format!("http://{}", s.addrs.http.unwrap()),
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

/// The entries of a channel's log stream: (node, line count) of each, oldest first.
async fn stream_entries(redis: &Backend, channel: &str) -> Vec<(String, u64)> {
    let xrange = redis::cmd("XRANGE")
        .arg(format!("logplex:{{ch:{channel}}}:log"))
        .arg("-")
        .arg("+")
        .clone();
    let r: redis::streams::StreamRangeReply = match redis {
        Backend::One(r) => {
            let client = redis::Client::open(r.url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            xrange.query_async(&mut conn).await.unwrap()
        }
        // Routed to the master of the stream's slot.
        Backend::Cluster(c) => {
            let client = redis::cluster::ClusterClient::new(c.urls()).unwrap();
            let mut conn = client.get_async_connection().await.unwrap();
            xrange.query_async(&mut conn).await.unwrap()
        }
    };
    r.ids
        .iter()
        .map(|e| {
            (
                e.get::<String>("n").unwrap_or_default(),
                e.get::<u64>("c").unwrap_or(0),
            )
        })
        .collect()
}

/// What a node ingests goes into the channel's log stream, a batch per entry (never an
/// entry per line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_batches_go_into_the_channels_stream() {
    let Some((redis, a)) = one_node().await else {
        return;
    };
    let token = a.create_app("streamed").await;
    for i in 0..5 {
        assert_eq!(post_batch(&a, &token, &format!("batch {i}"), 20).await, 204);
    }
    let r = &redis;
    until(
        Duration::from_secs(5),
        "100 lines in the stream",
        || async move {
            stream_entries(r, "streamed")
                .await
                .iter()
                .map(|e| e.1)
                .sum::<u64>()
                == 100
        },
    )
    .await;
    let entries = stream_entries(&redis, "streamed").await;
    assert!(
        entries.len() <= 5,
        "an entry per batch at most: {entries:?}"
    );
    let (_, metrics) = request(&a.api(), "GET", "/metrics", None).await;
    assert!(
        metrics.contains("logplex_cluster_log_lines_published_total 100"),
        "{metrics}"
    );
    a.stop().await;
}

/// The session lines (`… app[web.1]: MSG`) in a text body, their MSG only.
fn msgs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once("]: ").map(|(_, m)| m.to_string()))
        .collect()
}

/// A session URL of one node, pointed at another (sessions live in Redis).
fn on(url: &str, node: &TestServer) -> String {
    let path = url.split_once("/sessions/").unwrap().1;
    format!("{}/sessions/{path}", node.api())
}

/// Lines ingested on A and on B show in the history read from C, in the stream's order
/// (each line waited into the stream before the next is sent, so that order is the
/// order they were sent in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_ingested_on_two_nodes_show_from_a_third_in_order() {
    if let Some(redis) = Backend::one() {
        lines_ingested_on_two_nodes_show_from_a_third_in_order_on(redis).await;
    }
}

/// [`lines_ingested_on_two_nodes_show_from_a_third_in_order`] on a Redis Cluster of three masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_from_two_nodes_show_from_a_third_on_a_redis_cluster() {
    if let Some(redis) = Backend::cluster() {
        lines_ingested_on_two_nodes_show_from_a_third_in_order_on(redis).await;
    }
}

async fn lines_ingested_on_two_nodes_show_from_a_third_in_order_on(redis: Backend) {
    let (redis, a, b) = two_nodes_on(redis).await;
    let c = redis.node().await;
    let token = a.create_app("everywhere").await;
    until(Duration::from_secs(2), "the token on B", || {
        let (b, t) = (&b, &token);
        async move { post_line(b, t, "warm-up").await == 204 }
    })
    .await;
    let mut sent = vec!["warm-up".to_string()];
    let r = &redis;
    until(
        Duration::from_secs(2),
        "the warm-up in the stream",
        || async move { stream_entries(r, "everywhere").await.len() == 1 },
    )
    .await;
    for i in 0..6 {
        let (n, name) = if i % 2 == 0 { (&a, "A") } else { (&b, "B") };
        let msg = format!("line {i} from {name}");
        assert_eq!(post_line(n, &token, &msg).await, 204);
        sent.push(msg);
        let (r, want) = (&redis, sent.len() as u64);
        until(
            Duration::from_secs(2),
            "the line in the stream",
            || async move {
                stream_entries(r, "everywhere")
                    .await
                    .iter()
                    .map(|e| e.1)
                    .sum::<u64>()
                    == want
            },
        )
        .await;
    }
    let url = c.session(r#"{"channel":"everywhere","num":100}"#).await;
    let got = msgs(&common::get_text(&url).await);
    assert_eq!(got, sent);
    // `-n 3`: the last three.
    let url = c.session(r#"{"channel":"everywhere","num":3}"#).await;
    assert_eq!(msgs(&common::get_text(&url).await), sent[4..]);
    // Both nodes wrote entries.
    let nodes: std::collections::HashSet<String> = stream_entries(&redis, "everywhere")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

/// A session made on A streams from B (its URL pointed at B); one never made is 404 on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_node_is_read_on_another() {
    if let Some(redis) = Backend::one() {
        a_session_made_on_one_node_is_read_on_another_on(redis).await;
    }
}

/// [`a_session_made_on_one_node_is_read_on_another`] on a Redis Cluster of three masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_node_is_read_on_another_on_a_redis_cluster() {
    if let Some(redis) = Backend::cluster() {
        a_session_made_on_one_node_is_read_on_another_on(redis).await;
    }
}

async fn a_session_made_on_one_node_is_read_on_another_on(redis: Backend) {
    let (redis, a, b) = two_nodes_on(redis).await;
    let token = a.create_app("roaming").await;
    assert_eq!(post_batch(&a, &token, "hello", 3).await, 204);
    let r = &redis;
    until(
        Duration::from_secs(2),
        "3 lines in the stream",
        || async move {
            stream_entries(r, "roaming")
                .await
                .iter()
                .map(|e| e.1)
                .sum::<u64>()
                == 3
        },
    )
    .await;
    let url = a
        .session(r#"{"channel":"roaming","num":10,"grep":"hello 1"}"#)
        .await;
    assert_eq!(msgs(&common::get_text(&on(&url, &b)).await), ["hello 1"]);
    let (st, _) = request_with(
        &b.api(),
        "GET",
        &format!("/sessions/{}", uuid::Uuid::new_v4()),
        None,
        &[],
    )
    .await;
    assert_eq!(st, 404);
    a.stop().await;
    b.stop().await;
}

/// A tail on B sees lines sent to A; the time from A's 204 to the line in B's tail, over
/// 200 lines one at a time: p50 and p99 printed, p99 under 50 ms asked (500 ms asserted,
/// for a loaded CI machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_on_one_node_sees_lines_sent_to_another() {
    if let Some(redis) = Backend::one() {
        a_tail_on_one_node_sees_lines_sent_to_another_on(redis).await;
    }
}

/// [`a_tail_on_one_node_sees_lines_sent_to_another`] on a Redis Cluster of three masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_on_one_node_sees_lines_sent_to_another_on_a_redis_cluster() {
    if let Some(redis) = Backend::cluster() {
        a_tail_on_one_node_sees_lines_sent_to_another_on(redis).await;
    }
}

async fn a_tail_on_one_node_sees_lines_sent_to_another_on(redis: Backend) {
    let (_redis, a, b) = two_nodes_on(redis).await;
    let token = a.create_app("tailed").await;
    until(Duration::from_secs(2), "the app on B", || {
        let b = &b;
        async move { json_get(b, "/v2/channels/tailed").await.0 == 200 }
    })
    .await;
    let url = b
        .session(r#"{"channel":"tailed","num":0,"tail":true}"#)
        .await;
    let mut tail = open_stream(&url, "").await;
    let mut took = Vec::new();
    for i in 0..200 {
        let msg = format!("ping {i}");
        assert_eq!(post_line(&a, &token, &msg).await, 204);
        let t = Instant::now();
        read_until(&mut tail, &format!("]: {msg}\n"), Duration::from_secs(5)).await;
        took.push(t.elapsed());
    }
    took.sort();
    let (p50, p99) = (took[took.len() / 2], took[took.len() * 99 / 100]);
    println!("a line sent to A reaches a tail on B: p50 {p50:?}, p99 {p99:?} (200 lines)");
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    a.stop().await;
    b.stop().await;
}

/// The SSE ids of the event stream, with their MSG.
fn events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut id = String::new();
    for l in text.lines() {
        if let Some(i) = l.strip_prefix("id: ") {
            id = i.to_string();
        } else if let Some(d) = l.strip_prefix("data: ") {
            if let Some((_, m)) = d.split_once("]: ") {
                out.push((id.clone(), m.to_string()));
            }
        }
    }
    out
}

/// An SSE tail on A, cut; lines sent meanwhile to A and B; the client reconnects to B with
/// the last `Last-Event-ID` it had from A: B sends every line after it, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_from_one_node_resumes_on_another() {
    let Some((_redis, a, b)) = two_nodes().await else {
        return;
    };
    let token = a.create_app("resumed").await;
    until(Duration::from_secs(2), "the token on B", || {
        let (b, t) = (&b, &token);
        async move { post_line(b, t, "first").await == 204 }
    })
    .await;
    let url = a
        .session(r#"{"channel":"resumed","num":10,"tail":true}"#)
        .await;
    let mut sse = open_stream(&url, "Accept: text/event-stream\r\n").await;
    assert_eq!(post_batch(&a, &token, "before", 3).await, 204);
    let seen = read_until(&mut sse, "]: before 2\n", Duration::from_secs(5)).await;
    drop(sse);
    let ev = events(&seen);
    let got: Vec<&str> = ev.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(got, ["first", "before 0", "before 1", "before 2"]);
    let last = ev.last().unwrap().0.clone();
    assert!(last.split('-').count() == 3, "a stream position: {last}");
    // While the client is away.
    assert_eq!(post_batch(&a, &token, "away-a", 2).await, 204);
    assert_eq!(post_batch(&b, &token, "away-b", 2).await, 204);
    let mut sse = open_stream(
        &on(&url, &b),
        &format!("Accept: text/event-stream\r\nLast-Event-ID: {last}\r\n"),
    )
    .await;
    assert_eq!(post_line(&a, &token, "after").await, 204);
    let seen = read_until(&mut sse, "]: after\n", Duration::from_secs(5)).await;
    let mut got: Vec<String> = events(&seen).into_iter().map(|e| e.1).collect();
    assert_eq!(got.pop().as_deref(), Some("after"), "{seen}");
    got.sort();
    assert_eq!(
        got,
        ["away-a 0", "away-a 1", "away-b 0", "away-b 1"],
        "{seen}"
    );
    a.stop().await;
    b.stop().await;
}

/// A counter or gauge of a node's `/metrics` (0 when absent).
async fn metric(s: &TestServer, name: &str) -> u64 {
    let (_, m) = request(&s.api(), "GET", "/metrics", None).await;
    m.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Posts one line with `token` to the HTTP input at `addr`; the status.
async fn post_to(addr: std::net::SocketAddr, token: &str, msg: &str) -> u16 {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"))
    );
    let frame = common::octet(&common::frame(token, "web.1", msg));
    let (st, _) = request_bytes(
        &format!("http://{addr}"),
        "POST",
        "/logs",
        Some(Bytes::from(frame)),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/logplex-1"),
        ],
    )
    .await;
    st
}

/// Node A (the binary) takes lines and is killed with `kill -9`: B still serves them as
/// the app's history, from the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_lines_are_served_by_another() {
    if !have_redis() {
        return;
    }
    let redis = Backend::One(Redis::start());
    let b = node(&redis.url()).await;
    let token = b.create_app("orphan").await;
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    let cfg = node_config(dir.path(), "a", &p, &redis.url());
    let mut a = Serve::start(&cfg, p.api(), &[]);
    until(Duration::from_secs(5), "the token accepted on A", || {
        let t = &token;
        async move { post_to(p.http(), t, "from A 0").await == 204 }
    })
    .await;
    for i in 1..5 {
        assert_eq!(post_to(p.http(), &token, &format!("from A {i}")).await, 204);
    }
    let r = &redis;
    until(
        Duration::from_secs(5),
        "A's lines in the stream",
        || async move {
            stream_entries(r, "orphan")
                .await
                .iter()
                .map(|e| e.1)
                .sum::<u64>()
                == 5
        },
    )
    .await;
    a.child.signal(rustix::process::Signal::KILL);
    a.wait_exit(Duration::from_secs(10));
    let got = msgs(&common::get_text(&b.session(r#"{"channel":"orphan","num":10}"#).await).await);
    let want: Vec<String> = (0..5).map(|i| format!("from A {i}")).collect();
    assert_eq!(got, want);
    b.stop().await;
}

/// Redis killed and restarted (with its data) during intake: A takes lines all along
/// (its queue to Redis holds 2 KiB, so some of them cannot wait); B's tail pauses, then
/// resumes by itself with the lines that waited and says with L11 how many did not; a
/// session opened on A while Redis is away shows A's own lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_during_intake_tails_resume_and_tell_what_they_missed() {
    if !have_redis() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut redis = Redis::start_persistent(data.path());
    let url = redis.url();
    let a = TestServer::start_with(move |c| {
        c.cluster.redis = logplex::config::RedisAt::One(url);
        c.cluster.log_queue_bytes = 2048;
    })
    .await;
    let b = node(&redis.url()).await;
    let token = a.create_app("bumpy").await;
    until(Duration::from_secs(2), "the app on B", || {
        let b = &b;
        async move { json_get(b, "/v2/channels/bumpy").await.0 == 200 }
    })
    .await;
    let url = b
        .session(r#"{"channel":"bumpy","num":0,"tail":true}"#)
        .await;
    let mut tail = open_stream(&url, "").await;
    assert_eq!(post_line(&a, &token, "before").await, 204);
    read_until(&mut tail, "]: before\n", Duration::from_secs(5)).await;

    redis.kill();
    health_is(&[&a, &b], "degraded").await;
    const DURING: usize = 40;
    for i in 0..DURING {
        assert_eq!(post_line(&a, &token, &format!("during {i}")).await, 204);
    }
    // A's own sessions go on from A's lines while Redis is away.
    let local = a.session(r#"{"channel":"bumpy","num":100}"#).await;
    let mine = msgs(&common::get_text(&local).await);
    assert_eq!(mine.len(), DURING + 1, "{mine:?}");

    redis.restart();
    health_is(&[&a, &b], "normal").await;
    // A's queue goes into the stream once its publisher is back.
    until(Duration::from_secs(5), "A's queue published", || {
        let a = &a;
        async move { metric(a, "logplex_cluster_log_lines_published_total").await > 1 }
    })
    .await;
    assert_eq!(post_line(&a, &token, "after").await, 204);
    let seen = read_until(&mut tail, "]: after\n", Duration::from_secs(10)).await;
    let lost = metric(&a, "logplex_cluster_log_lines_unpublished_total").await as usize;
    assert!(lost > 0 && lost < DURING, "{lost} of {DURING} lost");
    assert!(
        seen.contains(&format!(
            "Error L11 (Tail buffer overflow) -> This tail session dropped {lost} messages"
        )),
        "{seen}"
    );
    let during = msgs(&seen)
        .iter()
        .filter(|m| m.starts_with("during"))
        .count();
    // Every line is shown or announced, none both: a round that failed after Redis took
    // it (killed before it answered; this happens to "before" about one run in ten) is
    // found in the stream when Redis is back, not announced.
    assert_eq!(during + lost, DURING, "{during} seen, {lost} lost: {seen}");
    a.stop().await;
    b.stop().await;
}

/// An app destroyed and made again under the same name starts with an empty history on
/// every node: the lines of the one before are not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_made_again_does_not_show_the_lines_of_the_one_before() {
    let Some((redis, a, b)) = two_nodes().await else {
        return;
    };
    let old = a.create_app("reborn").await;
    assert_eq!(post_line(&a, &old, "old").await, 204);
    let r = &redis;
    until(
        Duration::from_secs(2),
        "the old line in the stream",
        || async move { stream_entries(r, "reborn").await.len() == 1 },
    )
    .await;
    let (st, _) = request(&a.api(), "DELETE", "/v2/channels/reborn", None).await;
    assert_eq!(st, 204);
    let new = a.create_app("reborn").await;
    assert_eq!(post_line(&a, &new, "new").await, 204);
    until(Duration::from_secs(2), "the new line on B", || {
        let b = &b;
        async move {
            let (st, body) = request(
                &b.api(),
                "POST",
                "/v2/sessions",
                Some(r#"{"channel":"reborn","num":10}"#),
            )
            .await;
            if st != 201 {
                return false;
            }
            let v: Value = serde_json::from_str(&body).unwrap();
            msgs(&common::get_text(v["url"].as_str().unwrap()).await) == ["new"]
        }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A name `PREFIX-N` whose channel's log stream lives on another master of `rc` than the
/// config.
fn away_from_config(rc: &common::redis::RedisCluster, prefix: &str) -> String {
    let cfg = rc.owner("logplex:{cfg}:changes");
    (0..100)
        .map(|i| format!("{prefix}-{i}"))
        .find(|n| rc.owner(&format!("logplex:{{ch:{n}}}:log")) != cfg)
        .expect("some name hashes away from the config's master")
}

/// App `name` made on A, its token taking lines on B, and a tail on B that has seen A's
/// line `before`: the token and the tail.
async fn tailed_on(
    a: &TestServer,
    b: &TestServer,
    name: &str,
) -> (String, tokio::io::BufReader<tokio::net::TcpStream>) {
    let token = a.create_app(name).await;
    until(Duration::from_secs(2), "the token on B", || {
        let t = &token;
        async move { post_line(b, t, "warm-up").await == 204 }
    })
    .await;
    let url = b
        .session(&format!(r#"{{"channel":"{name}","num":0,"tail":true}}"#))
        .await;
    let mut tail = open_stream(&url, "").await;
    assert_eq!(post_line(a, &token, "before").await, 204);
    read_until(&mut tail, "]: before\n", Duration::from_secs(5)).await;
    (token, tail)
}

/// On a Redis Cluster, a master killed (`kill -9`). One that holds only a channel's log
/// stream: ingest and config changes go on, and a tail on B sees A's lines again once it
/// is back. The one that holds the config's slot (`{cfg}`): changes answer 503 and both
/// nodes say `degraded` while ingest goes on everywhere; once it is back, changes are
/// taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_of_a_redis_cluster_costs_only_its_slots() {
    let Some(redis) = Backend::cluster() else {
        return;
    };
    let (mut redis, a, b) = two_nodes_on(redis).await;
    let Backend::Cluster(rc) = &mut redis else {
        unreachable!("started as a cluster")
    };
    let cfg = rc.owner("logplex:{cfg}:changes");
    let name = away_from_config(rc, "spread");
    let logs = rc.owner(&format!("logplex:{{ch:{name}}}:log"));
    let (token, mut tail) = tailed_on(&a, &b, &name).await;

    // The log stream's master goes: ingest and changes go on.
    rc.nodes[logs].kill();
    for n in [&a, &b] {
        assert_eq!(post_line(n, &token, "while its master is away").await, 204);
    }
    let (st, body) = request(
        &a.api(),
        "POST",
        "/v2/channels",
        Some(r#"{"name":"made-meanwhile","tokens":["app"]}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(health(&b).await, "normal");
    rc.nodes[logs].restart();
    rc.wait_ok();
    // Back: B's tail sees A's lines again (after what was queued meanwhile).
    let t = Instant::now();
    let mut seen = false;
    while !seen && t.elapsed() < Duration::from_secs(15) {
        assert_eq!(post_line(&a, &token, "after its return").await, 204);
        seen = tokio::time::timeout(
            Duration::from_millis(500),
            read_until(&mut tail, "]: after its return\n", Duration::from_secs(60)),
        )
        .await
        .is_ok();
    }
    println!(
        "a tail on B saw A's lines again {:?} after the master was back",
        t.elapsed()
    );

    // The config's master goes: changes 503, ingest goes on, then all comes back.
    rc.nodes[cfg].kill();
    health_is(&[&a, &b], "degraded").await;
    for n in [&a, &b] {
        assert_eq!(post_line(n, &token, "while the config is away").await, 204);
    }
    let (st, body) = request(
        &a.api(),
        "POST",
        "/v2/channels",
        Some(r#"{"name":"later","tokens":["app"]}"#),
    )
    .await;
    assert_eq!(st, 503, "{body}");
    let h = b.wait_history(&name, |h| h.len() >= 2).await;
    assert!(
        h.iter().any(|l| l.ends_with("while the config is away")),
        "{h:?}"
    );
    rc.nodes[cfg].restart();
    rc.wait_ok();
    health_is(&[&a, &b], "normal").await;
    let mut st = 0;
    let t = Instant::now();
    while st != 201 && t.elapsed() < Duration::from_secs(10) {
        st = request(
            &a.api(),
            "POST",
            "/v2/channels",
            Some(r#"{"name":"later","tokens":["app"]}"#),
        )
        .await
        .0;
        if st != 201 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(st, 201, "a change once the config's master is back");
    until(Duration::from_secs(3), "the change on B", || {
        let b = &b;
        async move { json_get(b, "/v2/channels/later").await.0 == 200 }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A channel's slot moved to another master of a Redis Cluster while two nodes take its
/// lines (`ASK` while its keys move, `MOVED` after): a tail on B sees every line of both
/// nodes once, in each node's order, and no L11; history from B holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channels_slot_moved_to_another_master_loses_nothing() {
    let Some(redis) = Backend::cluster() else {
        return;
    };
    let (redis, a, b) = two_nodes_on(redis).await;
    let Backend::Cluster(rc) = &redis else {
        unreachable!("started as a cluster")
    };
    let name = "moving";
    let stream = format!("logplex:{{ch:{name}}}:log");
    let (token, mut tail) = tailed_on(&a, &b, name).await;

    // Lines from A and B, one after the other, all through the move.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let intake = {
        let (a_http, b_http) = (a.addrs.http.unwrap(), b.addrs.http.unwrap());
        let (token, stop) = (token.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 600 {
                for (node, addr) in [("a", a_http), ("b", b_http)] {
                    let st = post_to(addr, &token, &format!("{node}-{sent}")).await;
                    assert_eq!(st, 204);
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };
    let to = (rc.owner(&stream) + 1) % rc.nodes.len();
    tokio::task::block_in_place(|| rc.move_slot_of(&stream, to, Duration::from_millis(300)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = intake.await.unwrap();
    assert!(sent > 10, "only {sent} lines each during the move");
    println!("{sent} lines from each node during the move");
    assert_eq!(post_line(&a, &token, "after").await, 204);
    let seen = read_until(&mut tail, "]: after\n", Duration::from_secs(10)).await;
    assert!(!seen.contains("L11"), "{seen}");
    let got = msgs(&seen);
    for node in ["a", "b"] {
        let mine: Vec<&String> = got
            .iter()
            .filter(|m| m.starts_with(&format!("{node}-")))
            .collect();
        let want: Vec<String> = (0..sent).map(|i| format!("{node}-{i}")).collect();
        assert_eq!(
            mine,
            want.iter().collect::<Vec<_>>(),
            "{node}'s lines in B's tail"
        );
    }
    let h = b.wait_history(name, |h| h.len() >= 2 * sent + 3).await;
    assert_eq!(
        h.len(),
        2 * sent + 3,
        "warm-up, before, the lines, after: {h:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// The master of a channel's slot killed on a Redis Cluster with replicas: its replica
/// takes over (node timeout 1 s) and, with no restart of that master, B's tail sees A's
/// lines again and A's lines sent after the failover are all in B's history. (Lines Redis
/// acknowledged but had not yet copied to the replica are lost with the master, as Redis
/// replication is asynchronous; none are in this test, which waits for them to be copied.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masters_replica_takes_over_its_channels() {
    if !(common::need("redis-server", "apt-get install redis-server")
        && common::need("redis-cli", "apt-get install redis-tools"))
    {
        return;
    }
    let redis = Backend::Cluster(common::redis::RedisCluster::start_with(1));
    let (mut redis, a, b) = two_nodes_on(redis).await;
    let Backend::Cluster(rc) = &mut redis else {
        unreachable!("started as a cluster")
    };
    let name = away_from_config(rc, "failover");
    let master = rc.owner(&format!("logplex:{{ch:{name}}}:log"));
    let replica = rc.replica_of(master);
    let (token, mut tail) = tailed_on(&a, &b, &name).await;
    // The replica linked and caught up before the master goes.
    until(Duration::from_secs(10), "the replica in sync", || async {
        rc.nodes[replica]
            .info("INFO", "replication")
            .contains("master_link_status:up")
            && rc.nodes[master].cli(&["WAIT", "1", "200"]) == "1"
    })
    .await;

    rc.nodes[master].kill();
    let t = Instant::now();
    until(Duration::from_secs(15), "the replica promoted", || async {
        rc.nodes[replica].cli(&["ROLE"]).starts_with("master")
    })
    .await;
    let promoted = t.elapsed();
    // A's lines reach B's tail again, without the old master coming back.
    let mut n = 0;
    let mut seen = false;
    while !seen && t.elapsed() < Duration::from_secs(20) {
        assert_eq!(post_line(&a, &token, &format!("after {n}")).await, 204);
        seen = tokio::time::timeout(
            Duration::from_millis(500),
            read_until(
                &mut tail,
                &format!("]: after {n}\n"),
                Duration::from_secs(60),
            ),
        )
        .await
        .is_ok();
        n += 1;
    }
    assert!(seen, "B's tail never saw A's lines after the failover");
    println!(
        "replica promoted {promoted:?} after the kill; B's tail saw A's lines {:?} after the kill",
        t.elapsed()
    );
    let h = b
        .wait_history(&name, |h| {
            h.iter().any(|l| l.ends_with(&format!("after {}", n - 1)))
        })
        .await;
    assert!(h.iter().any(|l| l.ends_with("]: before")), "{h:?}");
    a.stop().await;
    b.stop().await;
}
