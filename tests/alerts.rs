//! Alerts end to end over real sockets: router and Rails lines through the TCP input fire
//! rules, a real HTTP receiver gets the webhook JSON, the history shows the
//! `heroku[alerts]` line and `/metrics` moves; a dead webhook slows nothing and a failing
//! one is retried; the alert API's answers, including every kind of bad rule.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use logplex::alert::RuleSpec;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const ROUTER_503: &str = r#"at=error code=H12 desc="Request timeout" method=GET path="/" host=demo.herokuapp.com fwd="1.2.3.4" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0"#;
const ROUTER_200: &str = r#"at=info method=GET path="/" host=demo.herokuapp.com fwd="1.2.3.4" dyno=web.1 connect=0ms service=12ms status=200 bytes=1200"#;
const RAILS_500: &str = "Completed 500 Internal Server Error in 2ms";

/// A webhook receiver: answers 500 to the first `fail_first` requests, then 200, and keeps
/// the JSON bodies it accepted.
struct Hook {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    attempts: Arc<AtomicUsize>,
}

impl Hook {
    async fn start(fail_first: usize) -> Hook {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let (b, a) = (bodies.clone(), attempts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = l.accept().await else {
                    return;
                };
                let (b, a) = (b.clone(), a.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (b, a) = (b.clone(), a.clone());
                        async move {
                            let n = a.fetch_add(1, Ordering::SeqCst);
                            let ct = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status = if n < fail_first {
                                500
                            } else {
                                assert_eq!(ct, "application/json");
                                b.lock()
                                    .unwrap()
                                    .push(serde_json::from_slice(&body).unwrap());
                                200
                            };
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Hook {
            addr,
            bodies,
            attempts,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Waits (bounded: 10 s) until `n` bodies were accepted; returns them.
    async fn wait(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.bodies.lock().unwrap().clone();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn rule(name: &str, where_: Option<&str>, regex: Option<&str>) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        app: "*".into(),
        source: None,
        dyno: None,
        where_: where_.map(str::to_string),
        regex: regex.map(str::to_string),
        metric: None,
        above: None,
        threshold: 5,
        window: "1m".into(),
        cooldown: "5m".into(),
        webhook: None,
    }
}

/// The token named `name` of a channel.
async fn token(s: &TestServer, app: &str, name: &str) -> String {
    let (st, body) = request(&s.api(), "GET", &format!("/v2/channels/{app}"), None).await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["tokens"][name].as_str().unwrap().to_string()
}

async fn send_tcp(s: &TestServer, token: &str, procid: &str, msgs: &[&str]) {
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    let mut buf = String::new();
    for m in msgs {
        buf += &octet(&frame(token, procid, m));
    }
    c.write_all(buf.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
}

async fn metrics(s: &TestServer) -> String {
    let (st, body) = request(&s.api(), "GET", "/metrics", None).await;
    assert_eq!(st, 200);
    body
}

async fn wait_metric(s: &TestServer, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(s).await;
        if m.lines().any(|l| l == needle) || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alert_lines(h: &[String]) -> Vec<&String> {
    h.iter().filter(|l| l.contains("heroku[alerts]:")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_5xx_lines_fire_the_webhook_the_line_and_the_metric() {
    let hook = Hook::start(0).await;
    let url = hook.url();
    let s = TestServer::start_with(|c| {
        let mut r = rule("http-5xx", Some("status>=500"), None);
        r.source = Some("heroku".into());
        r.dyno = Some("router".into());
        r.webhook = Some(url);
        c.alerts.push(r);
    })
    .await;
    s.create_app("demo").await;
    let heroku = token(&s, "demo", "heroku").await;
    // 4 errors and some good answers: under the threshold.
    send_tcp(
        &s,
        &heroku,
        "router",
        &[
            ROUTER_503, ROUTER_200, ROUTER_503, ROUTER_503, ROUTER_200, ROUTER_503,
        ],
    )
    .await;
    s.wait_history("demo", |h| h.len() == 6).await;
    // The same 503s from another dyno or source do not count.
    let app = token(&s, "demo", "app").await;
    send_tcp(&s, &app, "router", &[ROUTER_503, ROUTER_503]).await;
    send_tcp(&s, &heroku, "web.1", &[ROUTER_503, ROUTER_503]).await;
    s.wait_history("demo", |h| h.len() == 10).await;
    assert!(
        alert_lines(&s.history("demo", 1500).await).is_empty(),
        "{:?}",
        s.history("demo", 1500).await
    );
    let m = metrics(&s).await;
    assert!(
        m.contains("logplex_alerts_fired_total{alert=\"http-5xx\"} 0"),
        "{m}"
    );
    // The fifth 503 fires.
    send_tcp(&s, &heroku, "router", &[ROUTER_503]).await;
    let got = hook.wait(1).await;
    assert_eq!(got.len(), 1, "no webhook call");
    let v = &got[0];
    assert_eq!(v["alert"], "http-5xx");
    assert_eq!(v["app"], "demo");
    assert_eq!(v["state"], "firing");
    assert_eq!(v["count"], 5);
    assert_eq!(v["threshold"], 5);
    assert_eq!(v["window_seconds"], 60);
    for k in ["first_at", "last_at"] {
        let t = v[k].as_str().unwrap();
        assert!(t.len() >= 20 && t.contains('T'), "{k}: {t}");
    }
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 5);
    assert_eq!(
        samples[0].as_str().unwrap(),
        format!("2016-03-08T02:43:26.693600+00:00 heroku[router]: {ROUTER_503}")
    );
    // The history (what `logplex logs` shows) has the alert line.
    let h = s.wait_history("demo", |h| !alert_lines(h).is_empty()).await;
    let lines = alert_lines(&h);
    assert_eq!(lines.len(), 1, "{h:?}");
    assert!(
        lines[0].ends_with(" heroku[alerts]: Alert http-5xx firing: 5 matching lines in 60s"),
        "{}",
        lines[0]
    );
    let m = wait_metric(&s, "logplex_alerts_fired_total{alert=\"http-5xx\"} 1").await;
    assert!(
        m.contains("logplex_alerts_fired_total{alert=\"http-5xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("logplex_alerts_firing{alert=\"http-5xx\"} 1"),
        "{m}"
    );
    // More errors while firing (and within the cooldown) send nothing more.
    send_tcp(&s, &heroku, "router", &[ROUTER_503, ROUTER_503, ROUTER_503]).await;
    s.wait_history("demo", |h| h.len() == 15).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.bodies.lock().unwrap().len(), 1);
    assert_eq!(alert_lines(&s.history("demo", 1500).await).len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rails_regex_rule_added_through_the_api_fires_and_resolves() {
    let hook = Hook::start(0).await;
    let s = TestServer::start().await;
    let app = s.create_app("demo").await;
    let body = serde_json::json!({
        "name": "rails-5xx", "source": "app", "dyno": "web", "regex": r"Completed 5\d\d",
        "threshold": 3, "window": "2s", "cooldown": "0s", "webhook": hook.url(),
    })
    .to_string();
    let (st, resp) = request(&s.api(), "POST", "/v2/channels/demo/alerts", Some(&body)).await;
    assert_eq!(st, 201, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["name"], "rails-5xx");
    assert_eq!(v["app"], "demo");
    assert_eq!(v["origin"], "api");
    send_tcp(
        &s,
        &app,
        "web.1",
        &[
            "Started GET \"/\" for 1.2.3.4",
            RAILS_500,
            "Completed 200 OK in 3ms",
            RAILS_500,
        ],
    )
    .await;
    // Each connection's lines stored before the next connects: the samples' order is the
    // order of arrival, and two connections may be read in either order.
    s.wait_history("demo", |h| h.len() == 4).await;
    send_tcp(&s, &app, "worker.1", &[RAILS_500]).await; // another dyno: not counted
    s.wait_history("demo", |h| h.len() == 5).await;
    send_tcp(&s, &app, "web.2", &[RAILS_500]).await;
    let got = hook.wait(1).await;
    assert_eq!(got[0]["state"], "firing", "{got:?}");
    assert_eq!(got[0]["count"], 3);
    assert_eq!(got[0]["window_seconds"], 2);
    assert_eq!(
        got[0]["samples"][2],
        format!("2016-03-08T02:43:26.693600+00:00 app[web.2]: {RAILS_500}")
    );
    // Two seconds later the window is empty: resolved, once.
    let got = hook.wait(2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["state"], "resolved");
    assert!(got[1]["count"].as_u64().unwrap() < 3, "{got:?}");
    let h = s.wait_history("demo", |h| alert_lines(h).len() == 2).await;
    let lines = alert_lines(&h);
    assert!(
        lines[0].ends_with("heroku[alerts]: Alert rails-5xx firing: 3 matching lines in 2s"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("heroku[alerts]: Alert rails-5xx resolved: ")
            && lines[1].ends_with(" matching lines in 2s"),
        "{lines:?}"
    );
    let m = metrics(&s).await;
    assert!(
        m.contains("logplex_alerts_fired_total{alert=\"rails-5xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("logplex_alerts_firing{alert=\"rails-5xx\"} 0"),
        "{m}"
    );
    s.stop().await;
}

/// Sends `n` lines matching a threshold-1 rule and returns how long until the last one is
/// in the history.
async fn time_10k(s: &TestServer, token: &str) -> Duration {
    let pad = "p".repeat(100);
    let msgs: Vec<String> = (0..10_000)
        .map(|i| format!("status=500 line={i} {pad}"))
        .collect();
    let refs: Vec<&str> = msgs.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    send_tcp(s, token, "web.1", &refs).await;
    let h = s
        .wait_history("demo", |h| h.iter().any(|l| l.contains("line=9999 ")))
        .await;
    assert!(h.iter().any(|l| l.contains("line=9999 ")), "{h:?}");
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_slows_nothing_and_a_failing_one_is_retried() {
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let flaky = Hook::start(1).await;
    let flaky_url = flaky.url();
    let s = TestServer::start_with(|c| {
        let mut dead = rule("dead-hook", Some("status>=500"), None);
        dead.threshold = 1;
        dead.cooldown = "0s".into();
        dead.window = "1s".into();
        dead.webhook = Some(format!("http://127.0.0.1:{dead_port}/hook"));
        c.alerts.push(dead);
        let mut retried = rule("retried-hook", Some("status>=500"), None);
        retried.threshold = 1;
        retried.webhook = Some(flaky_url);
        c.alerts.push(retried);
    })
    .await;
    let app = s.create_app("demo").await;
    let with_rules = time_10k(&s, &app).await;
    eprintln!("10k lines with a dead webhook: {with_rules:?}");
    assert!(
        with_rules < Duration::from_secs(3),
        "ingestion was slowed: {with_rules:?}"
    );
    // The flaky receiver answered 500 once, then took the retry.
    let got = flaky.wait(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["alert"], "retried-hook");
    assert_eq!(flaky.attempts.load(Ordering::SeqCst), 2);
    let m = wait_metric(&s, "logplex_alert_webhooks_total{result=\"delivered\"} 1").await;
    assert!(
        m.contains("logplex_alert_webhooks_total{result=\"delivered\"} 1"),
        "{m}"
    );
    s.stop().await;
}

async fn post_rule(s: &TestServer, app: &str, json: serde_json::Value) -> (u16, serde_json::Value) {
    let (st, body) = request(
        &s.api(),
        "POST",
        &format!("/v2/channels/{app}/alerts"),
        Some(&json.to_string()),
    )
    .await;
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (st, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_api_creates_lists_deletes_and_refuses_bad_rules() {
    let s = TestServer::start_with(|c| c.alerts.push(rule("http-5xx", Some("status>=500"), None)))
        .await;
    s.create_app("demo").await;
    let good =
        || serde_json::json!({"name": "h12", "where": "code=H12", "threshold": 3, "window": "1m"});
    let (st, v) = post_rule(&s, "demo", good()).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["cooldown"], "5m");
    assert_eq!(v["where"], "code=H12");
    // Duplicate on that channel: 409.
    let (st, v) = post_rule(&s, "demo", good()).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["id"], "conflict");
    assert_eq!(v["message"], "App demo already has an alert named h12.");
    // Unknown app: 404.
    let (st, v) = post_rule(&s, "nope", good()).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["message"], "Couldn't find that app: nope.");
    // Every kind of bad rule: 422 with a sentence saying what is wrong.
    let bad = [
        (
            serde_json::json!({"regex": r"Completed 5\d\d("}),
            r#"Regex "Completed 5\\d\\d(" does not compile: unclosed group."#,
        ),
        (
            serde_json::json!({"where": "status=>500"}),
            r#"Predicate "status=>500" has an unknown operator "=>"; use =, !=, <, <=, > or >=."#,
        ),
        (
            serde_json::json!({"where": "status~5"}),
            r#"Predicate "status~5" has an unknown operator "~"; use =, !=, <, <=, > or >=."#,
        ),
        (
            serde_json::json!({"window": "0s"}),
            r#"Window "0s" must be a duration above 0, like "30s", "1m" or "1h"."#,
        ),
        (
            serde_json::json!({"threshold": 0}),
            "Threshold must be between 1 and 1000000000.",
        ),
        (
            serde_json::json!({"webhook": "ftp://example.com/hook"}),
            r#"Webhook: Scheme "ftp" is not supported; use http:// or https://."#,
        ),
        (
            serde_json::json!({"webhook": "http://example.com:0/hook"}),
            "Webhook: Port 0 is not a port to send to.",
        ),
        (
            serde_json::json!({"webhook": "http://example.com:65536/hook"}),
            r#"Webhook: "http://example.com:65536/hook" is not a URL (invalid port number)."#,
        ),
        (
            serde_json::json!({"webhook": "http://"}),
            r#"Webhook: "http://" is not a URL (empty host)."#,
        ),
        (
            serde_json::json!({"where": "a=1", "regex": "x"}),
            r#"A rule takes either "where" or "regex", not both."#,
        ),
    ];
    for (patch, message) in bad {
        let mut body = serde_json::json!({"name": "bad", "threshold": 3, "window": "1m"});
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        if body.get("where").is_none() && body.get("regex").is_none() {
            body["where"] = "status>=500".into();
        }
        let (st, v) = post_rule(&s, "demo", body.clone()).await;
        assert_eq!(st, 422, "{body} -> {v}");
        assert_eq!(v["id"], "invalid_params");
        assert_eq!(v["message"], message, "{body}");
    }
    // A rule on every app.
    let (st, v) = post_rule(
        &s,
        "%2A",
        serde_json::json!({"name": "any-h10", "where": "code=H10", "threshold": 1, "window": "30s"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["app"], "*");
    // Listing: everything, and a channel's own rules with the `*` ones.
    let (st, body) = request(&s.api(), "GET", "/v2/alerts", None).await;
    assert_eq!(st, 200);
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let names: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|r| {
            (
                r["app"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["origin"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("*", "http-5xx", "config"),
            ("*", "any-h10", "api"),
            ("demo", "h12", "api")
        ]
    );
    s.create_app("other").await;
    let (_, body) = request(&s.api(), "GET", "/v2/channels/other/alerts", None).await;
    let other: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(other.len(), 2);
    // Deleting: a config rule cannot be, an unknown one is 404, a `*` one goes by `*`.
    let del = |path: &'static str| {
        let api = s.api();
        async move { request(&api, "DELETE", path, None).await }
    };
    let (st, body) = del("/v2/channels/*/alerts/http-5xx").await;
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("config.toml"), "{body}");
    let (st, body) = del("/v2/channels/demo/alerts/nope").await;
    assert_eq!(st, 404, "{body}");
    assert!(
        body.contains("Couldn't find that alert on demo: nope."),
        "{body}"
    );
    let (st, body) = del("/v2/channels/demo/alerts/any-h10").await;
    assert_eq!(st, 409, "{body}");
    let (st, body) = del("/v2/channels/nope/alerts/h12").await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = del("/v2/channels/%2A/alerts/any-h10").await;
    assert_eq!(st, 204, "{body}");
    // Rules survive a restart.
    let dir = s.stop().await;
    let mut c = test_config(dir.path());
    c.alerts.push(rule("http-5xx", Some("status>=500"), None));
    let s = TestServer::start_in(dir, c).await;
    let (_, body) = request(&s.api(), "GET", "/v2/channels/demo/alerts", None).await;
    let after: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = after.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["http-5xx", "h12"]);
    let (st, _) = del_after(&s, "/v2/channels/demo/alerts/h12").await;
    assert_eq!(st, 204);
    let (_, body) = request(&s.api(), "GET", "/v2/channels/demo/alerts", None).await;
    assert!(!body.contains("h12"), "{body}");
    s.stop().await;
}

async fn del_after(s: &TestServer, path: &str) -> (u16, String) {
    request(&s.api(), "DELETE", path, None).await
}

/// Webhooks take what drain URLs take: https (certificates checked against
/// `drains.tls_ca_file`) and userinfo as Basic auth, percent-decoded per RFC 3986 only; the
/// API never shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_take_https_and_credentials_like_drains() {
    if !need("openssl", "apt-get install openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path(), "hook");
    let secure = HttpSink::start_tls(&cert, &key, |_| 200).await;
    let plain = HttpSink::start(|_| 200).await;
    let mut c = test_config(dir.path());
    c.drains.tls_ca_file = Some(ca);
    let s = TestServer::start_in(dir, c).await;
    let app = s.create_app("demo").await;
    let hooks = [
        (
            format!("https://hook:a+b&c@127.0.0.1:{}/secure", secure.addr.port()),
            ("hook", "a+b&c"),
        ),
        (
            format!("http://us%2Ber:p%40ss%20w@{}/plain", plain.addr),
            ("us+er", "p@ss w"),
        ),
    ];
    for (i, (url, _)) in hooks.iter().enumerate() {
        let body = serde_json::json!({
            "name": format!("hook-{i}"), "where": "status>=500", "threshold": 1,
            "window": "1m", "webhook": url,
        });
        let (st, resp) = request(
            &s.api(),
            "POST",
            "/v2/channels/demo/alerts",
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(st, 201, "{resp}");
        assert!(
            !resp.contains("a+b&c") && !resp.contains("p%40ss"),
            "{resp}"
        );
    }
    send_tcp(&s, &app, "web.1", &["status=500 boom"]).await;
    for (sink, (_, (user, pass))) in [&secure, &plain].into_iter().zip(&hooks) {
        let got = sink.wait(10, |r| !r.is_empty()).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[0].basic_auth(),
            Some((user.to_string(), pass.to_string()))
        );
        let v: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
        assert_eq!(v["state"], "firing");
    }
    let (_, list) = request(&s.api(), "GET", "/v2/channels/demo/alerts", None).await;
    assert!(list.contains("https://hook:***@127.0.0.1:"), "{list}");
    assert!(
        !list.contains("a+b&c") && !list.contains("p%40ss"),
        "{list}"
    );
    s.stop().await;
}
