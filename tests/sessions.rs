//! Sessions over real sockets: history, filters, live tails, SSE with `Last-Event-ID`, the
//! L11 line for a tail that cannot keep up, and the API's auth and errors.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

/// Reads chunked-body text until `needle` appears (bounded: 5 s).
async fn read_until(r: &mut BufReader<tokio::net::TcpStream>, needle: &str) -> String {
    common::read_until(r, needle, Duration::from_secs(5)).await
}

async fn send_tcp(s: &TestServer, token: &str, lines: &[(&str, &str)]) {
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    let mut buf = String::new();
    for (procid, msg) in lines {
        buf += &octet(&frame(token, procid, msg));
    }
    c.write_all(buf.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_and_num() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    send_tcp(
        &s,
        &token,
        &[
            ("web.1", "a GET 500"),
            ("web.2", "b"),
            ("worker.1", "c 500"),
            ("web.10", "d"),
        ],
    )
    .await;
    s.wait_history("demo", |h| h.len() == 4).await;
    let sr = &s;
    let only = |json: &'static str| async move {
        let url = sr.session(json).await;
        get_text(&url)
            .await
            .lines()
            .map(|l| l.split_once("]: ").unwrap().1.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        only(r#"{"channel":"demo","dyno":"web"}"#).await,
        ["a GET 500", "b", "d"]
    );
    assert_eq!(
        only(r#"{"channel":"demo","dyno":"web.1"}"#).await,
        ["a GET 500"]
    );
    assert_eq!(
        only(r#"{"channel":"demo","grep":"500"}"#).await,
        ["a GET 500", "c 500"]
    );
    assert_eq!(
        only(r#"{"channel":"demo","source":"heroku"}"#).await,
        Vec::<String>::new()
    );
    assert_eq!(only(r#"{"channel":"demo","num":2}"#).await, ["c 500", "d"]);
    // Over log.max_lines_per_session (history reaches into the durable log past the ring).
    let (st, body) = request(
        &s.api(),
        "POST",
        "/v2/sessions",
        Some(r#"{"channel":"demo","num":100001}"#),
    )
    .await;
    assert_eq!(st, 422, "{body}");
    let (st, body) = request(
        &s.api(),
        "POST",
        "/v2/sessions",
        Some(r#"{"channel":"nope"}"#),
    )
    .await;
    assert_eq!(st, 404, "{body}");
    assert!(body.contains("\"id\":\"not_found\""), "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_sees_a_line_sent_after_it_opened() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    send_tcp(&s, &token, &[("web.1", "before")]).await;
    s.wait_history("demo", |h| h.len() == 1).await;
    let url = s.session(r#"{"channel":"demo","tail":true}"#).await;
    let mut r = open_stream(&url, "").await;
    read_until(&mut r, "app[web.1]: before").await;
    send_tcp(&s, &token, &[("web.1", "after")]).await;
    read_until(&mut r, "app[web.1]: after").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_with_last_event_id_without_repeating() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    send_tcp(&s, &token, &[("web.1", "one"), ("web.1", "two")]).await;
    s.wait_history("demo", |h| h.len() == 2).await;
    let url = s.session(r#"{"channel":"demo","tail":true}"#).await;
    let mut r = open_stream(&url, "Accept: text/event-stream\r\n").await;
    let seen = read_until(&mut r, "app[web.1]: two").await;
    assert!(
        seen.contains("id: 1\n") || seen.contains("id: 1\r\n"),
        "{seen:?}"
    );
    assert!(
        seen.contains("data: 2016-03-08T02:43:26.693600+00:00 app[web.1]: one"),
        "{seen:?}"
    );
    drop(r);
    send_tcp(&s, &token, &[("web.1", "three")]).await;
    s.wait_history("demo", |h| h.len() == 3).await;
    let mut r = open_stream(&url, "Accept: text/event-stream\r\nLast-Event-ID: 2\r\n").await;
    let seen = read_until(&mut r, "app[web.1]: three").await;
    assert!(
        !seen.contains("]: one") && !seen.contains("]: two"),
        "repeated lines: {seen:?}"
    );
    assert!(seen.contains("id: 3"), "{seen:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_that_never_reads_slows_nothing_and_is_told_l11() {
    let s = TestServer::start_with(|c| c.buffers.tail_lines = 64).await;
    let token = s.create_app("demo").await;
    let url = s.session(r#"{"channel":"demo","tail":true}"#).await;
    let mut stuck = open_stream(&url, "").await; // never read until the end
    let url2 = s
        .session(r#"{"channel":"demo","tail":true,"grep":"line 49999"}"#)
        .await;
    let mut live = open_stream(&url2, "").await;
    let t0 = std::time::Instant::now();
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    let pad = "p".repeat(200);
    let mut buf = String::new();
    for i in 0..50_000 {
        buf += &octet(&frame(&token, "web.1", &format!("line {i} {pad}")));
    }
    c.write_all(buf.as_bytes()).await.unwrap();
    read_until(&mut live, "line 49999").await;
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "ingestion was slowed: {:?}",
        t0.elapsed()
    );
    // The stuck tail, read now, reports what it lost.
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let mut chunk = [0u8; 65536];
        loop {
            match stuck.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&chunk[..n]);
                    if all.windows(9).any(|w| w == b"line 4999") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains(
            "heroku[logplex]: Error L11 (Tail buffer overflow) -> This tail session dropped"
        ),
        "no L11 in {} bytes",
        text.len()
    );
    let (_, metrics) = request(&s.api(), "GET", "/metrics", None).await;
    assert!(
        !metrics.contains("logplex_tail_dropped_total 0"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_auth_and_errors() {
    let s = TestServer::start().await;
    let api = s.api();
    let (st, body) = request_with(&api, "GET", "/healthcheck", None, &[]).await;
    assert_eq!((st, body.trim()), (200, r#"{"status":"normal"}"#));
    let (st, body) = request_with(&api, "GET", "/v2/channels", None, &[]).await;
    assert_eq!(st, 401);
    assert!(body.contains("\"id\":\"unauthorized\""), "{body}");
    let (st, _) = request_with(
        &api,
        "GET",
        "/v2/channels",
        None,
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(st, 401);
    let basic = format!("Basic {}", {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{KEY}"))
    });
    let (st, body) = request_with(
        &api,
        "GET",
        "/v2/channels",
        None,
        &[("authorization", &basic)],
    )
    .await;
    assert_eq!((st, body.trim()), (200, "[]"));
    let (st, _) = request(&api, "POST", "/v2/channels", Some(r#"{"name":"Bad Name"}"#)).await;
    assert_eq!(st, 422);
    s.create_app("demo").await;
    let (st, body) = request(&api, "POST", "/v2/channels", Some(r#"{"name":"demo"}"#)).await;
    assert_eq!(st, 409, "{body}");
    let (st, body) = request(
        &api,
        "POST",
        "/v2/channels/demo/tokens",
        Some(r#"{"name":"web"}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert!(body.contains("\"token\":\"t."), "{body}");
    let (st, body) = request(&api, "GET", "/v2/channels/demo", None).await;
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tokens"].as_object().unwrap().len(), 3);
    let (st, _) = request(
        &api,
        "GET",
        "/sessions/00000000-0000-4000-8000-000000000000",
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = request(&api, "DELETE", "/v2/channels/demo", None).await;
    assert_eq!(st, 204);
    let (st, _) = request(&api, "GET", "/v2/channels/demo", None).await;
    assert_eq!(st, 404);
    let (st, metrics) = request(&api, "GET", "/metrics", None).await;
    assert_eq!(st, 200);
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_graceful_restart() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    send_tcp(&s, &token, &[("web.1", "kept 1"), ("web.1", "kept 2")]).await;
    s.wait_history("demo", |h| h.len() == 2).await;
    let dir = s.stop().await;
    let c = test_config(dir.path());
    let s = TestServer::start_in(dir, c).await;
    let h = s.history("demo", 10).await;
    assert_eq!(h.len(), 2, "{h:?}");
    assert!(h[1].ends_with("app[web.1]: kept 2"), "{h:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_cannot_inject_sse_fields() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    send_tcp(
        &s,
        &token,
        &[
            ("web.1", "evil\rid: 99999\rdata: forged"),
            ("web.1", "after"),
        ],
    )
    .await;
    s.wait_history("demo", |h| h.len() >= 2).await;
    let url = s.session(r#"{"channel":"demo"}"#).await;
    let mut r = open_stream(&url, "Accept: text/event-stream\r\n").await;
    let seen = read_until(&mut r, "app[web.1]: after").await;
    for line in seen.lines() {
        let line = line.trim_end_matches('\r');
        assert!(
            !line.starts_with("id: 99999"),
            "a log line set the event id: {seen:?}"
        );
    }
    assert!(seen.contains("data: id: 99999"), "{seen:?}");
    s.stop().await;
}

/// Reads a chunked text stream to its end (bounded); returns the text and whether it ended.
async fn read_to_end(r: &mut BufReader<tokio::net::TcpStream>, secs: u64) -> (String, bool) {
    let mut all = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(secs), async {
        let mut chunk = [0u8; 65536];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    all.extend_from_slice(&chunk[..n]);
                    // The last chunk of a chunked body.
                    if all.ends_with(b"0\r\n\r\n") {
                        return;
                    }
                }
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&all).into_owned(), ended)
}

/// A session is bound to the channel it was made for: when the app is destroyed its open
/// streams end and its URL answers 404, and an app created again under the same name is
/// never visible through it (nor through a session of the Heroku API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_with_their_app_and_never_see_a_new_one_of_the_same_name() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    send_tcp(&s, &token, &[("web.1", "old app")]).await;
    s.wait_history("demo", |h| h.len() == 1).await;
    let tail = s.session(r#"{"channel":"demo","tail":true}"#).await;
    let later = s.session(r#"{"channel":"demo","tail":true}"#).await;
    let (st, body) = request(
        &s.api(),
        "POST",
        "/apps/demo/log-sessions",
        Some(r#"{"tail":true}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let heroku = v["logplex_url"].as_str().unwrap().to_string();
    let mut open = open_stream(&tail, "Accept: text/event-stream\r\n").await;
    read_until(&mut open, "app[web.1]: old app").await;

    let (st, _) = request(&s.api(), "DELETE", "/v2/channels/demo", None).await;
    assert_eq!(st, 204);
    let (rest, ended) = read_to_end(&mut open, 5).await;
    assert!(ended, "the open stream did not end with its app: {rest:?}");

    let token = s.create_app("demo").await;
    send_tcp(&s, &token, &[("web.1", "new app")]).await;
    s.wait_history("demo", |h| h.len() == 1).await;
    for url in [&tail, &later, &heroku] {
        let (st, body) = request_with(url, "GET", "", None, &[]).await;
        assert_eq!(st, 404, "{url}: {body}");
        assert!(!body.contains("new app"), "{body}");
    }
    // A new session sees the new app only.
    let h = s.history("demo", 10).await;
    assert_eq!(h.len(), 1);
    assert!(h[0].ends_with("app[web.1]: new app"), "{h:?}");
    s.stop().await;
}

/// Every line a tail loses is counted and told by L11, whichever receive path lost it: lines
/// seen plus the L11 counts add up to the lines sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_tail_accounts_for_every_line() {
    let s = TestServer::start_with(|c| c.buffers.tail_lines = 16).await;
    let token = s.create_app("demo").await;
    let url = s.session(r#"{"channel":"demo","tail":true}"#).await;
    let mut r = open_stream(&url, "").await;
    let n = 30_000;
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    let mut buf = String::new();
    for i in 0..n {
        buf += &octet(&frame(&token, "web.1", &format!("line {i}")));
    }
    c.write_all(buf.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
    let text = read_until(&mut r, &format!("]: line {}\n", n - 1)).await;
    let seen = text
        .lines()
        .filter(|l| l.contains("app[web.1]: line "))
        .count();
    let told: usize = text
        .lines()
        .filter_map(|l| l.split("This tail session dropped ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert!(told > 0, "the tail never lagged; the test proves nothing");
    assert_eq!(seen + told, n, "seen {seen} + told {told}");
    let (_, metrics) = request(&s.api(), "GET", "/metrics", None).await;
    assert!(
        metrics.contains(&format!("logplex_tail_dropped_total {told}")),
        "{metrics}"
    );
    s.stop().await;
}

/// Session URLs are built on `api.public_url` (default: the API's bound address), never on
/// the request's Host header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_urls_come_from_public_url_not_the_host_header() {
    let evil = [
        ("host", "evil.example.com"),
        ("authorization", &format!("Bearer {KEY}")),
    ];
    let s = TestServer::start().await;
    s.create_app("demo").await;
    let (st, body) = request_with(
        &s.api(),
        "POST",
        "/v2/sessions",
        Some(r#"{"channel":"demo"}"#),
        &evil,
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{}/sessions/", s.addrs.api)),
        "{body}"
    );
    s.stop().await;

    let s = TestServer::start_with(|c| c.api.public_url = "https://logs.example.com/".into()).await;
    s.create_app("demo").await;
    let (st, body) = request_with(
        &s.api(),
        "POST",
        "/v2/sessions",
        Some(r#"{"channel":"demo"}"#),
        &evil,
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = v["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://logs.example.com/sessions/"),
        "{url}"
    );
    let (st, body) = request_with(
        &s.api(),
        "POST",
        "/apps/demo/log-sessions",
        Some("{}"),
        &evil,
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = v["logplex_url"].as_str().unwrap();
    assert!(
        url.starts_with("https://logs.example.com/sessions/"),
        "{url}"
    );
    s.stop().await;
}

/// The time now as RFC 3339 with microseconds, as a user would paste it.
fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_until_pick_lines_by_receive_time_from_ring_and_log() {
    // With the log on and a ring of 5, the first batch is only in the log; with it off, the
    // ring holds everything.
    for log_on in [true, false] {
        let s = TestServer::start_with(|c| {
            if log_on {
                c.buffers.history_lines = 5;
            } else {
                c.log.path = "off".into();
            }
        })
        .await;
        let token = s.create_app("demo").await;
        let mut marks = Vec::new();
        for (batch, n) in [("a", 6), ("b", 3), ("c", 2)] {
            let lines: Vec<(&str, String)> =
                (0..n).map(|i| ("web.1", format!("{batch}{i}"))).collect();
            let lines: Vec<(&str, &str)> = lines.iter().map(|(p, m)| (*p, m.as_str())).collect();
            send_tcp(&s, &token, &lines).await;
            let last = format!("{batch}{}", n - 1);
            let h = s
                .wait_history("demo", |h| h.iter().any(|l| l.ends_with(&last)))
                .await;
            assert!(h.iter().any(|l| l.ends_with(&last)), "{h:?}");
            tokio::time::sleep(Duration::from_millis(30)).await;
            marks.push(now_rfc3339());
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let sr = &s;
        let msgs = |json: String| async move {
            let url = sr.session(&json).await;
            get_text(&url)
                .await
                .lines()
                .map(|l| l.split_once("]: ").unwrap().1.to_string())
                .collect::<Vec<_>>()
        };
        let (t1, t2) = (&marks[0], &marks[1]);
        let all_after_a = ["b0", "b1", "b2", "c0", "c1"];
        assert_eq!(
            msgs(format!(r#"{{"channel":"demo","since":"{t1}"}}"#)).await,
            all_after_a,
            "log {log_on}"
        );
        assert_eq!(
            msgs(format!(
                r#"{{"channel":"demo","since":"{t1}","until":"{t2}"}}"#
            ))
            .await,
            ["b0", "b1", "b2"],
            "log {log_on}"
        );
        let before: Vec<String> = (0..6).map(|i| format!("a{i}")).collect();
        assert_eq!(
            msgs(format!(r#"{{"channel":"demo","until":"{t1}"}}"#)).await,
            before,
            "log {log_on}: the first batch (past the ring when the log is on)"
        );
        // num still bounds, keeping the last lines of the window.
        assert_eq!(
            msgs(format!(r#"{{"channel":"demo","until":"{t1}","num":2}}"#)).await,
            ["a4", "a5"],
            "log {log_on}"
        );
        // A duration back from now: everything is younger than an hour, nothing is
        // younger than the time to come.
        assert_eq!(
            msgs(r#"{"channel":"demo","since":"1h"}"#.into())
                .await
                .len(),
            11,
            "log {log_on}"
        );
        // Filters apply inside the window.
        assert_eq!(
            msgs(format!(r#"{{"channel":"demo","since":"{t1}","grep":"c"}}"#)).await,
            ["c0", "c1"],
            "log {log_on}"
        );
        for (body, why) in [
            (
                r#"{"channel":"demo","since":"yesterday"}"#,
                "is neither an RFC 3339 time",
            ),
            (
                r#"{"channel":"demo","until":"1h","tail":true}"#,
                "until cannot be used with tail",
            ),
            (
                r#"{"channel":"demo","since":"1m","until":"2h"}"#,
                "since must be before until",
            ),
        ] {
            let (st, text) = request(&s.api(), "POST", "/v2/sessions", Some(body)).await;
            assert_eq!(st, 422, "{body}: {text}");
            assert!(text.contains(why), "{body}: {text}");
        }
        s.stop().await;
    }
}
