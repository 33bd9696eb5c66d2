//! Metrics from the logs end to end over real sockets: Heroku router lines (`at=info`,
//! `at=error code=H12 …`), Rails lines with l2met measures and runtime samples sent to a
//! channel with metrics on through syslog TCP and `POST /logs`; the API's JSON checked
//! against an independent computation over the same lines (exact counts, quantiles within
//! 1 %); a channel with metrics off answers 409 until a PATCH turns them on.

mod common;

use bytes::Bytes;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const FIXTURE: &str = include_str!("fixtures/logmetrics/heroku.log");

/// A fixture line: `TIMESTAMP SOURCE[PROCID]: MSG`.
struct Fx<'a> {
    source: &'a str,
    procid: &'a str,
    msg: &'a str,
}

fn fixture() -> Vec<Fx<'static>> {
    FIXTURE
        .lines()
        .map(|l| {
            let (_, rest) = l.split_once(' ').expect("timestamp");
            let (head, msg) = rest.split_once("]: ").expect("SOURCE[PROCID]: MSG");
            let (source, procid) = head.split_once('[').expect("SOURCE[PROCID");
            Fx {
                source,
                procid,
                msg,
            }
        })
        .collect()
}

/// What the lines add up to, computed here on its own: logfmt words split by hand,
/// quantiles by nearest rank over sorted arrays.
#[derive(Default, Debug)]
struct Expected {
    requests: u64,
    by_class: [u64; 6],
    h_codes: BTreeMap<String, u64>,
    bytes: u64,
    service: Vec<f64>,
    connect: Vec<f64>,
    counts: BTreeMap<String, f64>,
    /// last, min, max
    samples: BTreeMap<String, (f64, f64, f64)>,
    measures: BTreeMap<String, Vec<f64>>,
}

/// The words of a logfmt message with quoted values blanked (`desc="Request timeout"`
/// is one word).
fn words(msg: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let end = {
            let mut quoted = false;
            rest.char_indices()
                .find(|&(_, c)| {
                    if c == '"' {
                        quoted = !quoted;
                    }
                    c == ' ' && !quoted
                })
                .map_or(rest.len(), |(i, _)| i)
        };
        let w = &rest[..end];
        rest = &rest[end..];
        if w.is_empty() {
            continue;
        }
        out.push(w.split_once('=').unwrap_or((w, "")));
    }
    out
}

/// `12.5ms` → (12.5, "ms").
fn number_unit(v: &str) -> Option<(f64, &str)> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(v.len());
    Some((v[..split].parse().ok()?, &v[split..]))
}

fn expected(lines: &[Fx]) -> Expected {
    let mut e = Expected::default();
    let mut units: BTreeMap<(String, String), String> = BTreeMap::new();
    for l in lines {
        let w = words(l.msg);
        if l.source == "heroku" && l.procid == "router" {
            let get = |k: &str| w.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
            if let Some(code) = get("code") {
                *e.h_codes.entry(code.to_string()).or_default() += 1;
            }
            let Some(status) = get("status").and_then(|s| s.parse::<usize>().ok()) else {
                continue;
            };
            e.requests += 1;
            e.by_class[status / 100] += 1;
            e.bytes += get("bytes")
                .and_then(|b| b.parse::<u64>().ok())
                .unwrap_or(0);
            let ms = |k| get(k).and_then(|v| v.strip_suffix("ms")?.parse::<f64>().ok());
            e.service.extend(ms("service"));
            e.connect.extend(ms("connect"));
            continue;
        }
        for (key, raw) in w {
            let Some((kind, name)) = key.split_once('#') else {
                continue;
            };
            if !["count", "sample", "measure"].contains(&kind) {
                continue;
            }
            let (value, unit) = if kind == "count" && raw.is_empty() {
                (1.0, "")
            } else {
                match number_unit(raw) {
                    Some(v) => v,
                    None => continue,
                }
            };
            let first = units
                .entry((kind.to_string(), name.to_string()))
                .or_insert_with(|| unit.to_string());
            if first != unit {
                continue;
            }
            let name = name.to_string();
            match kind {
                "count" => *e.counts.entry(name).or_default() += value,
                "sample" => {
                    let s = e.samples.entry(name).or_insert((value, value, value));
                    *s = (value, s.1.min(value), s.2.max(value));
                }
                _ => e.measures.entry(name).or_default().push(value),
            }
        }
    }
    e
}

fn exact(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).max(1) - 1;
    v[i.min(v.len() - 1)]
}

fn near(got: &serde_json::Value, want: f64, what: &str) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {got} is no number"));
    assert!(
        (g - want).abs() <= 0.01 * want.abs(),
        "{what}: got {g}, exact {want}"
    );
}

/// Creates `name` with `app` and `heroku` tokens; returns (app token, heroku token).
async fn create(s: &TestServer, name: &str, metrics: bool) -> (String, String) {
    let (st, body) = request(
        &s.api(),
        "POST",
        "/v2/channels",
        Some(&format!(
            r#"{{"name":"{name}","tokens":["app","heroku"],"metrics":{metrics}}}"#
        )),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["metrics"], metrics, "{v}");
    let t = |k: &str| v["tokens"][k].as_str().unwrap().to_string();
    (t("app"), t("heroku"))
}

fn token_of<'a>(l: &Fx, tokens: &'a (String, String)) -> &'a str {
    if l.source == "heroku" {
        &tokens.1
    } else {
        &tokens.0
    }
}

/// Sends lines over syslog TCP, octet-counted, on one connection.
async fn send_tcp(s: &TestServer, lines: &[Fx<'_>], tokens: &(String, String)) {
    send_tcp_to(s.addrs.tcp.unwrap(), lines, tokens).await
}

async fn send_tcp_to(tcp: std::net::SocketAddr, lines: &[Fx<'_>], tokens: &(String, String)) {
    let mut c = connect(tcp).await;
    let mut out = String::new();
    for l in lines {
        out.push_str(&octet(&frame(token_of(l, tokens), l.procid, l.msg)));
    }
    c.write_all(out.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
}

/// Sends lines through `POST /logs`, one batch per run of lines with the same token.
async fn send_http(s: &TestServer, lines: &[Fx<'_>], tokens: &(String, String)) {
    use base64::Engine;
    let base = format!("http://{}", s.addrs.http.unwrap());
    for run in lines.chunk_by(|a, b| a.source == b.source) {
        let token = token_of(&run[0], tokens);
        let body: String = run
            .iter()
            .map(|l| octet(&frame(token, l.procid, l.msg)))
            .collect();
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"))
        );
        let count = run.len().to_string();
        let (st, b) = request_bytes(
            &base,
            "POST",
            "/logs",
            Some(Bytes::from(body)),
            &[
                ("authorization", &auth),
                ("content-type", "application/logplex-1"),
                ("logplex-msg-count", &count),
            ],
        )
        .await;
        assert!(st == 204 || st == 200, "{st} {b:?}");
    }
}

/// The metrics JSON once `pred` holds (polled, 10 s at most).
async fn metrics_when(
    s: &TestServer,
    name: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    metrics_at(&s.api(), name, pred).await
}

/// [`metrics_when`] of the API at `api` (`http://…`).
async fn metrics_at(
    api: &str,
    name: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (st, body) = request(api, "GET", &format!("/v2/channels/{name}/metrics"), None).await;
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if pred(&v) || tokio::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn check(v: &serde_json::Value, e: &Expected) {
    let r = &v["router"];
    assert_eq!(r["requests"], e.requests, "{r}");
    for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        assert_eq!(r["by_status"][class], e.by_class[i + 2], "{class}");
    }
    let codes: BTreeMap<String, u64> = serde_json::from_value(r["h_codes"].clone()).unwrap();
    assert_eq!(codes, e.h_codes);
    assert!(codes.contains_key("H12"), "{codes:?}");
    assert_eq!(r["bytes"], e.bytes);
    for (q, k) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        near(
            &r["service_ms"][k],
            exact(&e.service, q),
            &format!("service {k}"),
        );
        near(
            &r["connect_ms"][k],
            exact(&e.connect, q),
            &format!("connect {k}"),
        );
    }
    let l2 = &v["l2met"];
    let counts: BTreeMap<String, f64> = serde_json::from_value(l2["count"].clone()).unwrap();
    assert_eq!(counts, e.counts);
    assert_eq!(
        l2["sample"].as_object().unwrap().len(),
        e.samples.len(),
        "{}",
        l2["sample"]
    );
    for (name, (last, min, max)) in &e.samples {
        let s = &l2["sample"][name];
        assert_eq!(
            (s["last"].as_f64(), s["min"].as_f64(), s["max"].as_f64()),
            (Some(*last), Some(*min), Some(*max)),
            "sample {name}"
        );
    }
    assert_eq!(l2["measure"].as_object().unwrap().len(), e.measures.len());
    for (name, values) in &e.measures {
        let m = &l2["measure"][name];
        assert_eq!(m["count"], values.len() as u64, "measure {name}");
        for (q, k) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
            near(&m[k], exact(values, q), &format!("measure {name} {k}"));
        }
    }
    let minutes = v["minutes"].as_array().unwrap();
    let sum: u64 = minutes
        .iter()
        .map(|m| m["requests"].as_u64().unwrap())
        .sum();
    let s5: u64 = minutes.iter().map(|m| m["5xx"].as_u64().unwrap()).sum();
    assert_eq!((sum, s5), (e.requests, e.by_class[5]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_and_app_lines_over_tcp_and_http_match_an_independent_computation() {
    let s = TestServer::start().await;
    let tokens = create(&s, "myapp", true).await;
    let lines = fixture();
    let (first, second) = lines.split_at(lines.len() / 2);
    let want_first = expected(first);
    // TCP first, then HTTP once TCP's lines are in, so `last` of a sample is well defined.
    send_tcp(&s, first, &tokens).await;
    let v = metrics_when(&s, "myapp", |v| {
        v["router"]["requests"] == want_first.requests
    })
    .await;
    check(&v, &want_first);
    send_http(&s, second, &tokens).await;
    let want = expected(&lines);
    assert!(want.requests > 400 && want.h_codes.len() >= 3, "{want:?}");
    assert!(
        want.samples.contains_key("memory_total") && want.measures.contains_key("rails.request")
    );
    let v = metrics_when(&s, "myapp", |v| v["router"]["requests"] == want.requests).await;
    check(&v, &want);
    assert_eq!(v["app"], "myapp");
    assert!(
        v["since"].as_str().unwrap().ends_with('Z'),
        "{}",
        v["since"]
    );
    // A range is a duration from 1 s to 24 h.
    for (q, status) in [("since=24h", 200), ("since=25h", 422), ("since=soon", 422)] {
        let (st, body) = request(
            &s.api(),
            "GET",
            &format!("/v2/channels/myapp/metrics?{q}"),
            None,
        )
        .await;
        assert_eq!(st, status, "{q}: {body}");
    }
    let (st, body) = request(&s.api(), "GET", "/v2/channels/nope/metrics", None).await;
    assert_eq!(st, 404, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_off_answer_409_until_a_patch_turns_them_on() {
    let s = TestServer::start().await;
    let tokens = create(&s, "quiet", false).await;
    let router = [Fx {
        source: "heroku",
        procid: "router",
        msg: r#"at=info method=GET path="/" host=quiet.herokuapp.com fwd="1.2.3.4" dyno=web.1 connect=1ms service=20ms status=200 bytes=10 protocol=https"#,
    }];
    send_tcp(&s, &router, &tokens).await;
    s.wait_history("quiet", |h| h.len() == 1).await;
    let (st, body) = request(&s.api(), "GET", "/v2/channels/quiet/metrics", None).await;
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("metrics:enable -a quiet"), "{body}");
    let (_, body) = request(&s.api(), "GET", "/v2/channels/quiet", None).await;
    assert!(body.contains(r#""metrics":false"#), "{body}");

    for (patch, status) in [
        (r#"{"metrics":"yes"}"#, 400),
        (r#"{"metrics":true,"x":1}"#, 400),
    ] {
        let (st, body) = request(&s.api(), "PATCH", "/v2/channels/quiet", Some(patch)).await;
        assert_eq!(st, status, "{patch}: {body}");
    }
    let (st, _) = request(
        &s.api(),
        "PATCH",
        "/v2/channels/nope",
        Some(r#"{"metrics":true}"#),
    )
    .await;
    assert_eq!(st, 404);
    let (st, body) = request(
        &s.api(),
        "PATCH",
        "/v2/channels/quiet",
        Some(r#"{"metrics":true}"#),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains(r#""metrics":true"#), "{body}");
    // Counting starts now: the line sent before is not in.
    let v = metrics_when(&s, "quiet", |_| true).await;
    assert_eq!(v["router"]["requests"], 0, "{v}");
    send_tcp(&s, &router, &tokens).await;
    send_tcp(&s, &router, &tokens).await;
    let v = metrics_when(&s, "quiet", |v| v["router"]["requests"] == 2).await;
    assert_eq!(v["router"]["requests"], 2, "{v}");
    let (_, list) = request(&s.api(), "GET", "/v2/channels", None).await;
    assert!(list.contains(r#""metrics":true"#), "{list}");
    // Off again: 409 once more.
    let (st, _) = request(
        &s.api(),
        "PATCH",
        "/v2/channels/quiet",
        Some(r#"{"metrics":false}"#),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = request(&s.api(), "GET", "/v2/channels/quiet/metrics", None).await;
    assert_eq!(st, 409);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_survive_a_graceful_restart() {
    let s = TestServer::start().await;
    let tokens = create(&s, "keep", true).await;
    let lines = fixture();
    send_tcp(&s, &lines, &tokens).await;
    let want = expected(&lines);
    let before = metrics_when(&s, "keep", |v| v["router"]["requests"] == want.requests).await;
    check(&before, &want);
    let dir = s.stop().await;
    let c = test_config(dir.path());
    let s = TestServer::start_in(dir, c).await;
    let (_, body) = request(&s.api(), "GET", "/v2/channels/keep", None).await;
    assert!(body.contains(r#""metrics":true"#), "{body}");
    let after = metrics_when(&s, "keep", |_| true).await;
    check(&after, &want);
    assert_eq!(after["l2met"], before["l2met"]);
    s.stop().await;
}

/// Two apps with metrics on and one with them off, their lines interleaved in runs of
/// random length on one connection and in one write: ingest reads each run ahead for its
/// own app (hundreds of runs a read, more than a connection keeps between reads), and each
/// app's metrics add up to its own lines alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_runs_of_metered_apps_on_one_connection_count_each_apps_own_lines() {
    let s = TestServer::start().await;
    let apps = [
        ("runs-a", create(&s, "runs-a", true).await),
        ("runs-b", create(&s, "runs-b", true).await),
        ("runs-c", create(&s, "runs-c", false).await),
    ];
    let lines = fixture();
    // A fixed LCG: each line stays with the previous line's app or moves to another.
    let (mut x, mut app) = (12_345u32, 0usize);
    let mut of_app: [Vec<&Fx>; 3] = Default::default();
    let mut out = String::new();
    let mut runs = 0;
    for l in &lines {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        if (x >> 16) % 3 != 0 {
            app = (app + 1 + (x >> 20) as usize % 2) % 3;
            runs += 1;
        }
        of_app[app].push(l);
        out.push_str(&octet(&frame(token_of(l, &apps[app].1), l.procid, l.msg)));
    }
    assert!(runs > 500, "{runs} runs");
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    c.write_all(out.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
    for (i, (name, _)) in apps.iter().enumerate().take(2) {
        let mine: Vec<Fx> = of_app[i]
            .iter()
            .map(|l| Fx {
                source: l.source,
                procid: l.procid,
                msg: l.msg,
            })
            .collect();
        let want = expected(&mine);
        assert!(want.requests > 100, "{name}: {want:?}");
        let v = metrics_when(&s, name, |v| v["router"]["requests"] == want.requests).await;
        check(&v, &want);
    }
    // The third app, metrics off, has none to show.
    let (st, body) = request(&s.api(), "GET", "/v2/channels/runs-c/metrics", None).await;
    assert_eq!(st, 409, "{body}");
    s.stop().await;
}

/// With the durable log on, the roll-ups survive `kill -9` of the real binary: they come
/// back from the last periodic save, no line counted twice, and the lines logged after
/// that save are read into them again from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_survive_kill_9_from_the_last_save_and_the_log() {
    use common::serve::{write_config, Ports, Serve};
    const APP: &str = "t.00000000-0000-4000-8000-0000000000e1";
    const HEROKU: &str = "t.00000000-0000-4000-8000-0000000000e2";
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    let config = |every: &str| {
        let extra = format!(
            "[store]\nmetrics_save_interval = \"{every}\"\n\
             [[channels]]\nname = \"crash\"\nmetrics = true\n\
             tokens = {{ app = \"{APP}\", heroku = \"{HEROKU}\" }}\n"
        );
        write_config(
            dir.path(),
            "config.toml",
            &p,
            &dir.path().join("data/logplex.db"),
            &extra,
        )
    };
    let env = [("LOGPLEX_AUTH_KEY", KEY)];
    let api = format!("http://{}", p.api());
    let tokens = (APP.to_string(), HEROKU.to_string());
    let lines = fixture();
    let (first, rest) = lines.split_at(lines.len() / 3);
    let kill9 = |mut s: Serve| {
        s.child.signal(rustix::process::Signal::KILL);
        let _ = s.wait_exit(Duration::from_secs(10));
    };

    // The seq saved with the roll-ups, read from the store as the node runs.
    let db = dir.path().join("data/logplex.db");
    let saved_seq = || {
        let c =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()?;
        c.query_row(
            "SELECT seq FROM logmetrics WHERE channel = 'crash'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .ok()
    };

    // Saved every second: the first third in, saved, kill -9.
    let s = Serve::start(&config("1s"), p.api(), &env);
    send_tcp_to(p.tcp(), first, &tokens).await;
    let want = expected(first);
    let v = metrics_at(&api, "crash", |v| v["router"]["requests"] == want.requests).await;
    check(&v, &want);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while saved_seq() != Some(first.len() as i64) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(saved_seq(), Some(first.len() as i64));
    kill9(s);

    // No save in this run: back from the save (the log holds no line after it), then the
    // rest in and kill -9 again.
    let s = Serve::start(&config("1h"), p.api(), &env);
    check(&metrics_at(&api, "crash", |_| true).await, &want);
    let written = || async {
        let (_, text) = request(&api, "GET", "/metrics", None).await;
        text.lines()
            .find_map(|l| l.strip_prefix("logplex_log_written_bytes_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = written().await;
    send_tcp_to(p.tcp(), rest, &tokens).await;
    let want = expected(&lines);
    let v = metrics_at(&api, "crash", |v| v["router"]["requests"] == want.requests).await;
    check(&v, &want);
    // Written to the log's file (the page cache survives the process): at least the frames.
    let frames: usize = rest
        .iter()
        .map(|l| frame(token_of(l, &tokens), l.procid, l.msg).len())
        .sum();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while written().await < before + frames as f64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(written().await >= before + frames as f64);
    kill9(s);

    // The save of the first run plus the rest read back from the log.
    let info = [("LOGPLEX_AUTH_KEY", KEY), ("RUST_LOG", "info")];
    let mut s = Serve::start(&config("1h"), p.api(), &info);
    check(&metrics_at(&api, "crash", |_| true).await, &want);
    let said = s.stderr_text();
    assert!(
        said.contains(&format!("lines_replayed={}", rest.len())),
        "{said}"
    );
    assert!(s.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_text_has_the_series_of_apps_with_metrics_on_only() {
    let s = TestServer::start().await;
    let tokens = create(&s, "promapp", true).await;
    let quiet = create(&s, "quietapp", false).await;
    let lines = fixture();
    send_tcp(&s, &lines, &tokens).await;
    send_tcp(&s, &lines[..50], &quiet).await;
    let want = expected(&lines);
    metrics_when(&s, "promapp", |v| v["router"]["requests"] == want.requests).await;
    let (st, text) = request(&s.api(), "GET", "/metrics", None).await;
    assert_eq!(st, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let series =
        |name: &str, app: &str, key: &str, value: &str| -> Option<prometheus_parse::Value> {
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == name
                        && s.labels.get("app") == Some(app)
                        && (key.is_empty() || s.labels.get(key) == Some(value))
                })
                .map(|s| s.value.clone())
        };
    use prometheus_parse::Value::{Counter, Gauge};
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let got = series("logplex_app_requests_total", "promapp", "class", class);
        assert_eq!(got, Some(Counter(want.by_class[i + 1] as f64)), "{class}");
    }
    for (code, n) in &want.h_codes {
        let got = series("logplex_app_h_codes_total", "promapp", "code", code);
        assert_eq!(got, Some(Counter(*n as f64)), "{code}");
    }
    assert_eq!(
        series("logplex_app_response_bytes_total", "promapp", "", ""),
        Some(Counter(want.bytes as f64))
    );
    for (q, label) in [(0.5, "0.5"), (0.95, "0.95"), (0.99, "0.99")] {
        let Some(Gauge(v)) = series("logplex_app_service_ms", "promapp", "quantile", label) else {
            panic!("no service quantile {label} in\n{text}");
        };
        near(&serde_json::json!(v), exact(&want.service, q), label);
    }
    assert!(matches!(
        series("logplex_app_l2met_names", "promapp", "", ""),
        Some(Gauge(n)) if n > 5.0
    ));
    // Bounded labels only, and nothing for the app with metrics off.
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("logplex_app_"))
    {
        assert_eq!(sample.labels.get("app"), Some("promapp"), "{sample:?}");
        for key in sample.labels.keys() {
            assert!(
                ["app", "class", "code", "quantile"].contains(&key.as_str()),
                "{sample:?}"
            );
        }
    }
    s.stop().await;
}

/// The CLI against `s`: `logplex ARGS` with `--url` and the admin key from the environment.
async fn cli(s: &TestServer, args: &[&str]) -> (bool, String, String) {
    let (api, args): (String, Vec<String>) =
        (s.api(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let o = output(
            "logplex client",
            std::process::Command::new(env!("CARGO_BIN_EXE_logplex"))
                .args(&args)
                .env("LOGPLEX_URL", api)
                .env("LOGPLEX_AUTH_KEY", KEY),
            None,
            Duration::from_secs(30),
        );
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_turns_metrics_on_and_prints_a_table_with_sparklines_or_the_json() {
    let s = TestServer::start().await;
    let tokens = create(&s, "cliapp", false).await;
    let (ok, _, err) = cli(&s, &["metrics", "-a", "cliapp"]).await;
    assert!(!ok && err.contains("metrics:enable -a cliapp"), "{err}");
    let (ok, out, err) = cli(&s, &["metrics:enable", "-a", "cliapp"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "Metrics on for cliapp\n");
    let lines = fixture();
    send_tcp(&s, &lines, &tokens).await;
    let want = expected(&lines);
    let v = metrics_when(&s, "cliapp", |v| v["router"]["requests"] == want.requests).await;

    let (ok, out, err) = cli(&s, &["metrics", "-a", "cliapp", "--since", "30m"]).await;
    assert!(ok, "{err}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{out}"))
            .to_string()
    };
    assert!(out.starts_with("cliapp since "), "{out}");
    let minutes = v["minutes"].as_array().unwrap().len() as f64;
    let rpm = format!("{:.1}", want.requests as f64 / minutes);
    assert!(row("requests/min").contains(&rpm), "{out}");
    let pct = format!(
        "{:.2}%",
        100.0 * want.by_class[5] as f64 / want.requests as f64
    );
    assert!(row("5xx %").contains(&pct), "{out}");
    assert!(
        row("requests/min").ends_with(['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█']),
        "{out}"
    );
    assert!(row("service p50/p95/p99").contains(" ms"), "{out}");
    assert!(
        row("H12").contains(&want.h_codes["H12"].to_string()),
        "{out}"
    );
    assert!(row("measure#rails.request").contains("values"), "{out}");
    assert!(row("sample#memory_total").contains("min "), "{out}");

    let (ok, out, err) = cli(&s, &["metrics", "-a", "cliapp", "--json"]).await;
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["router"], v["router"]);
    let (ok, _, err) = cli(&s, &["metrics", "-a", "cliapp", "--since", "2d"]).await;
    assert!(!ok && err.contains("over 24h"), "{err}");
    let (ok, out, _) = cli(&s, &["metrics:disable", "-a", "cliapp"]).await;
    assert!(ok && out == "Metrics off for cliapp\n", "{out}");
    let (ok, _, err) = cli(&s, &["metrics:enable", "-a", "nope"]).await;
    assert!(!ok && err.contains("nope"), "{err}");
    s.stop().await;
}

fn router_line(service_ms: u32, status: u16) -> String {
    format!(
        r#"at=info method=GET path="/" host=alertapp.herokuapp.com fwd="1.2.3.4" dyno=web.1 connect=1ms service={service_ms}ms status={status} bytes=10 protocol=https"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_alert_fires_and_resolves_with_its_webhook_and_in_band_line() {
    let hook = HttpSink::start(|_| 200).await;
    let s = TestServer::start().await;
    let tokens = create(&s, "alertapp", true).await;
    create(&s, "nometrics", false).await;
    let rule = |extra: &str| {
        format!(
            r#"{{"name":"slow","metric":"router.p95_service","above":"500ms","window":"1m","cooldown":"0s","webhook":"{}"{extra}}}"#,
            hook.url("/hook")
        )
    };
    // On an app with metrics off: refused at creation, saying why.
    let (st, body) = request(
        &s.api(),
        "POST",
        "/v2/channels/nometrics/alerts",
        Some(&rule("")),
    )
    .await;
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("metrics off"), "{body}");
    // A metric rule takes neither a line condition nor a threshold.
    for (extra, field) in [
        (r#","where":"status>=500""#, "not both"),
        (r#","threshold":5"#, "no \\\"threshold\\\""),
    ] {
        let (st, body) = request(
            &s.api(),
            "POST",
            "/v2/channels/alertapp/alerts",
            Some(&rule(extra)),
        )
        .await;
        assert_eq!(st, 422, "{body}");
        assert!(body.contains(field), "{field}: {body}");
    }
    let (st, body) = request(
        &s.api(),
        "POST",
        "/v2/channels/alertapp/alerts",
        Some(&rule("")),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert!(body.contains(r#""metric":"router.p95_service""#), "{body}");
    // A `*` rule on every app: skipped where metrics are off, counted where they are on.
    let ratio = format!(
        r#"{{"name":"errors","metric":"router.5xx_ratio","above":0.05,"window":"1m","cooldown":"0s","webhook":"{}"}}"#,
        hook.url("/star")
    );
    let (st, body) = request(&s.api(), "POST", "/v2/channels/*/alerts", Some(&ratio)).await;
    assert_eq!(st, 201, "{body}");
    assert!(body.contains(r#""above":0.05"#), "{body}");

    let slow: Vec<String> = (0..5).map(|_| router_line(900, 200)).collect();
    let send = |msgs: Vec<String>| {
        let tokens = tokens.clone();
        let s = &s;
        async move {
            let lines: Vec<Fx> = msgs
                .iter()
                .map(|m| Fx {
                    source: "heroku",
                    procid: "router",
                    msg: m,
                })
                .collect();
            send_tcp(s, &lines, &tokens).await;
        }
    };
    send(slow).await;
    let got = hook.wait(10, |r| r.iter().any(|r| r.path == "/hook")).await;
    let fired: serde_json::Value = serde_json::from_slice(
        &got.iter()
            .find(|r| r.path == "/hook")
            .expect("a firing webhook")
            .body,
    )
    .unwrap();
    assert_eq!(fired["state"], "firing", "{fired}");
    assert_eq!(
        (&fired["alert"], &fired["app"]),
        (&"slow".into(), &"alertapp".into())
    );
    assert_eq!(fired["metric"], "router.p95_service");
    near(&fired["count"], 900.0, "webhook count");
    assert_eq!(fired["threshold"], 500.0);
    assert_eq!(fired["window_seconds"], 60);
    let h = s
        .wait_history("alertapp", |h| {
            h.iter().any(|l| l.contains("Alert slow firing"))
        })
        .await;
    let line = h.iter().find(|l| l.contains("Alert slow firing")).unwrap();
    assert!(
        line.contains(
            "heroku[alerts]: Alert slow firing: router.p95_service 900 over 60s, above 500"
        ),
        "{line}"
    );
    // Fast requests bring the p95 under the limit: resolved once.
    send((0..200).map(|_| router_line(10, 200)).collect()).await;
    let got = hook
        .wait(10, |r| {
            r.iter()
                .any(|r| r.path == "/hook" && String::from_utf8_lossy(&r.body).contains("resolved"))
        })
        .await;
    let resolved: serde_json::Value = serde_json::from_slice(
        &got.iter()
            .filter(|r| r.path == "/hook")
            .nth(1)
            .expect("a resolving webhook")
            .body,
    )
    .unwrap();
    assert_eq!(resolved["state"], "resolved", "{resolved}");
    assert!(resolved["count"].as_f64().unwrap() <= 500.0, "{resolved}");
    s.wait_history("alertapp", |h| {
        h.iter().any(|l| l.contains("Alert slow resolved"))
    })
    .await
    .iter()
    .find(|l| l.contains("Alert slow resolved"))
    .expect("the in-band resolved line");
    // The 5xx ratio rule fires on alertapp when errors come, never on the app without metrics.
    send((0..20).map(|_| router_line(10, 503)).collect()).await;
    let got = hook.wait(10, |r| r.iter().any(|r| r.path == "/star")).await;
    let star: Vec<serde_json::Value> = got
        .iter()
        .filter(|r| r.path == "/star")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(star.len(), 1, "{star:?}");
    assert_eq!(
        (&star[0]["app"], &star[0]["state"]),
        (&"alertapp".into(), &"firing".into())
    );
    near(&star[0]["count"], 20.0 / 225.0, "5xx ratio");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_and_lists_metric_alert_rules() {
    let s = TestServer::start().await;
    create(&s, "ruled", true).await;
    let (ok, out, err) = cli(
        &s,
        &[
            "alerts:add",
            "errors",
            "-a",
            "ruled",
            "--metric",
            "router.5xx_ratio",
            "--above",
            "0.05",
            "--window",
            "5m",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("Added alert errors app=ruled metric=router.5xx_ratio above=0.05"),
        "{out}"
    );
    let (ok, out, err) = cli(&s, &["alerts", "-a", "ruled"]).await;
    assert!(
        ok && out.contains("metric=router.5xx_ratio above=0.05"),
        "{out}{err}"
    );
    // --above goes with --metric; a bad limit is the server's sentence.
    let (ok, _, err) = cli(&s, &["alerts:add", "x", "-a", "ruled", "--above", "1"]).await;
    assert!(!ok && err.contains("--metric"), "{err}");
    let (ok, _, err) = cli(
        &s,
        &[
            "alerts:add",
            "y",
            "-a",
            "ruled",
            "--metric",
            "router.5xx_ratio",
            "--above",
            "fast",
        ],
    )
    .await;
    assert!(!ok && err.contains("Above \"fast\""), "{err}");
    s.stop().await;
}
