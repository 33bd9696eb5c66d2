//! The web console: its pages and files over HTTP (strict Content-Security-Policy, the live
//! page of a session for a browser's `Accept`), `GET /v2/stats` and the alert state of the
//! API, and both pages driven in a real headless Chromium through WebDriver (fantoccini
//! against Debian's `chromedriver`): history then a new line within 2 s, pause with its
//! counter, filters kept in the URL, marks, UTC or local time, a dropped connection that
//! resumes without repeats or gaps (cut by a TCP proxy in the test), 2,000 lines a second
//! with the DOM trimmed to 10,000 lines, and the console with its apps, a failing drain, a
//! firing alert, a wrong key refused and a live page opened from it; an app's view charting
//! its metrics from real router and l2met lines, every figure read from the page equal to
//! the API's, over an hour and a day, and an app with metrics off turned on from the page.
//!
//! The browser tests take screenshots of the pages; with `LOGPLEX_UPDATE_SCREENSHOTS=1`
//! they are written to `docs/console-live.png`, `docs/console.png` and
//! `docs/console-metrics.png` (shown in the README), otherwise under the target directory.

mod common;

use common::*;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------
// Lines as apps and the Heroku router send them.

/// An RFC 5424 frame stamped now (minus `ago`), octet-counted.
fn frame_now(token: &str, procid: &str, msg: &str, ago: Duration) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    let ts = (time::OffsetDateTime::now_utc() - ago)
        .format(&fmt)
        .unwrap();
    octet(&format!("<190>1 {ts} host {token} {procid} - - {msg}"))
}

/// Sends frames over one TCP connection and closes it.
async fn send(s: &TestServer, frames: &[String]) {
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    c.write_all(frames.concat().as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
}

/// Creates an app with tokens `app` and `heroku`; returns both.
async fn app(s: &TestServer, name: &str) -> (String, String) {
    let (st, body) = request(
        &s.api(),
        "POST",
        "/v2/channels",
        Some(&format!(r#"{{"name":"{name}","tokens":["app","heroku"]}}"#)),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let t = |n: &str| v["tokens"][n].as_str().unwrap().to_string();
    (t("app"), t("heroku"))
}

async fn api_json(s: &TestServer, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (st, text) = request(&s.api(), method, path, body.as_deref()).await;
    assert!((200..300).contains(&st), "{method} {path}: {st} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A tail session of `app` with the given history size; returns its URL.
async fn tail_session(s: &TestServer, app: &str, num: usize) -> String {
    s.session(&format!(r#"{{"channel":"{app}","num":{num},"tail":true}}"#))
        .await
}

/// A demo history: app lines of two dynos, router lines with a 503 and an H12, a worker.
fn demo_history(app: &str, heroku: &str) -> Vec<String> {
    let ago = |s: u64| Duration::from_secs(s);
    vec![
        frame_now(
            heroku,
            "router",
            r#"at=info method=GET path="/" host=demo.example.com request_id=5b2c dyno=web.1 connect=0ms service=12ms status=200 bytes=1543"#,
            ago(40),
        ),
        frame_now(app, "web.1", r#"Started GET "/" for 10.1.2.3"#, ago(40)),
        frame_now(
            app,
            "web.1",
            "Completed 200 OK in 11ms (Views: 6.1ms | ActiveRecord: 2.3ms)",
            ago(39),
        ),
        frame_now(
            app,
            "worker.1",
            "Processing ReportJob (id=4411) queue=default",
            ago(35),
        ),
        frame_now(
            heroku,
            "router",
            r#"at=info method=POST path="/orders" host=demo.example.com request_id=9d1e dyno=web.2 connect=1ms service=840ms status=503 bytes=0"#,
            ago(30),
        ),
        frame_now(
            app,
            "web.2",
            r#"Started POST "/orders" for 10.1.2.4"#,
            ago(30),
        ),
        frame_now(
            app,
            "web.2",
            "at=error error=\"PG::ConnectionBad: could not connect to server\"",
            ago(29),
        ),
        frame_now(
            app,
            "worker.1",
            "Completed ReportJob (id=4411) in 2.8s",
            ago(25),
        ),
        frame_now(
            heroku,
            "router",
            r#"at=error code=H12 desc="Request timeout" method=GET path="/reports" host=demo.example.com request_id=77aa dyno=web.1 connect=0ms service=30000ms status=503 bytes=0"#,
            ago(20),
        ),
        frame_now(
            app,
            "web.1",
            r#"Started GET "/health" for 10.1.2.5"#,
            ago(10),
        ),
        frame_now(app, "web.1", "Completed 200 OK in 2ms", ago(10)),
    ]
}

// ---------------------------------------------------------------------------------------
// Pages and API, over plain HTTP.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_files_are_served_with_a_strict_policy() {
    let s = TestServer::start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let get = |path: String, accept: &'static str| {
        let client = client.clone();
        async move {
            let req = hyper::Request::get(path)
                .header("accept", accept)
                .body(http_body_util::Full::default())
                .unwrap();
            let r = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .unwrap()
                .unwrap();
            let (parts, _) = r.into_parts();
            (parts.status.as_u16(), parts.headers)
        }
    };
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let header = |h: &hyper::HeaderMap, n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };

    // The console needs no key to load: it holds nothing until the key is given.
    let (st, h) = get(format!("{}/", s.api()), html).await;
    assert_eq!(st, 200);
    assert!(header(&h, "content-type").starts_with("text/html"), "{h:?}");
    let csp = header(&h, "content-security-policy");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(header(&h, "referrer-policy"), "no-referrer");
    for (file, ctype) in [
        ("live.js", "text/javascript"),
        ("console.js", "text/javascript"),
        ("lines.js", "text/javascript"),
        ("metrics.js", "text/javascript"),
        ("charts.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let (st, h) = get(format!("{}/console/{file}", s.api()), "*/*").await;
        assert_eq!(st, 200, "{file}");
        assert!(header(&h, "content-type").starts_with(ctype), "{file}");
        assert!(
            header(&h, "content-security-policy").starts_with("default-src 'self'"),
            "{file}: {h:?}"
        );
    }
    let (st, _) = get(format!("{}/console/nope.js", s.api()), "*/*").await;
    assert_eq!(st, 404);

    // A session URL: a browser gets the page, EventSource the events, curl the text.
    let (token, _) = app(&s, "demo").await;
    send(&s, &[frame_now(&token, "web.1", "hello", Duration::ZERO)]).await;
    s.wait_history("demo", |h| h.len() == 1).await;
    let url = tail_session(&s, "demo", 10).await;
    let (st, h) = get(url.clone(), html).await;
    assert_eq!(st, 200);
    assert!(header(&h, "content-type").starts_with("text/html"), "{h:?}");
    assert!(
        header(&h, "content-security-policy").starts_with("default-src 'self'"),
        "{h:?}"
    );
    let page = get_text_with(&url, html).await;
    assert!(
        page.contains(r#"data-app="demo""#) && page.contains(r#"data-tail="true""#),
        "{page}"
    );
    assert!(!page.contains(KEY), "no admin key in the live page");
    let (st, h) = get(url.clone(), "text/event-stream").await;
    assert_eq!(
        (st, header(&h, "content-type").as_str()),
        (200, "text/event-stream")
    );
    let text = get_text(&s.session(r#"{"channel":"demo"}"#).await).await;
    assert!(text.ends_with("app[web.1]: hello\n"), "{text}");
    // An unknown session is a 404 page for a browser.
    let gone = format!("{}/sessions/{}", s.api(), uuid::Uuid::new_v4());
    let (st, h) = get(gone, html).await;
    assert_eq!(st, 404);
    assert!(header(&h, "content-type").starts_with("text/html"), "{h:?}");
    s.stop().await;
}

/// GET with an `Accept`; the body as text.
async fn get_text_with(url: &str, accept: &str) -> String {
    let (st, body) = request_with(url, "GET", "", None, &[("accept", accept)]).await;
    assert_eq!(st, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_each_apps_lines_per_minute() {
    let s = TestServer::start().await;
    let (a, _) = app(&s, "loud").await;
    app(&s, "quiet").await;
    let frames: Vec<String> = (0..250)
        .map(|i| frame_now(&a, "web.1", &format!("line {i}"), Duration::ZERO))
        .collect();
    send(&s, &frames).await;
    s.wait_history("loud", |h| h.len() == 250).await;
    let (st, body) = request_with(&s.api(), "GET", "/v2/stats", None, &[]).await;
    assert_eq!(st, 401, "the stats need the admin key: {body}");
    let v = api_json(&s, "GET", "/v2/stats", None).await;
    assert_eq!(v["minutes"], 15);
    let chans = v["channels"].as_array().unwrap();
    assert_eq!(chans.len(), 2, "{v}");
    let loud = chans.iter().find(|c| c["name"] == "loud").unwrap();
    let per_min: Vec<u64> = loud["lines_per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(per_min.len(), 15);
    // The minute may have turned while the lines came in.
    assert_eq!(per_min[13] + per_min[14], 250, "{v}");
    assert_eq!(loud["lines_total"], 250);
    assert_eq!(loud["history_lines"], 250);
    let quiet = chans.iter().find(|c| c["name"] == "quiet").unwrap();
    assert_eq!(quiet["lines_total"], 0);
    // Paged by name as the channel list is, so a million apps are not one body.
    let names = |v: &serde_json::Value| -> Vec<String> {
        let list = v["channels"].as_array().unwrap();
        list.iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let first = api_json(&s, "GET", "/v2/stats?limit=1", None).await;
    assert_eq!(names(&first), ["loud"]);
    assert_eq!(first["channels"][0]["lines_total"], 250);
    let next = api_json(&s, "GET", "/v2/stats?limit=1&after=loud", None).await;
    assert_eq!(names(&next), ["quiet"]);
    let (st, body) = request(&s.api(), "GET", "/v2/stats?limit=0", None).await;
    assert_eq!(st, 422, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_listings_tell_firing_state_and_last_firing() {
    let s = TestServer::start().await;
    let (_, heroku) = app(&s, "demo").await;
    app(&s, "other").await;
    api_json(
        &s,
        "POST",
        "/v2/channels/demo/alerts",
        Some(json!({"name":"http-5xx","where":"status>=500","threshold":2,"window":"1m"})),
    )
    .await;
    api_json(
        &s,
        "POST",
        "/v2/channels/%2A/alerts",
        Some(json!({"name":"h-codes","regex":"code=H\\d\\d","threshold":1,"window":"1m"})),
    )
    .await;
    let state = |v: &Value, name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {v}"))["state"]
            .clone()
    };
    let v = api_json(&s, "GET", "/v2/channels/demo/alerts", None).await;
    assert_eq!(
        state(&v, "http-5xx"),
        json!({"firing": false, "count": 0, "last_fired_at": null, "firing_apps": []})
    );
    send(
        &s,
        &[
            frame_now(&heroku, "router", "at=info status=503", Duration::ZERO),
            frame_now(
                &heroku,
                "router",
                "at=error code=H12 status=503",
                Duration::ZERO,
            ),
        ],
    )
    .await;
    s.wait_history("demo", |h| {
        h.iter().any(|l| l.contains("Alert http-5xx firing"))
    })
    .await;
    let v = api_json(&s, "GET", "/v2/channels/demo/alerts", None).await;
    let st = state(&v, "http-5xx");
    assert_eq!(st["firing"], true, "{v}");
    assert_eq!(st["count"], 2);
    assert_eq!(st["firing_apps"], json!(["demo"]));
    assert!(
        st["last_fired_at"].as_str().unwrap().ends_with("+00:00"),
        "{st}"
    );
    // The rule on every app fires on demo only.
    let v = api_json(&s, "GET", "/v2/alerts", None).await;
    let st = state(&v, "h-codes");
    assert_eq!(
        (st["firing"].clone(), st["count"].clone()),
        (json!(true), json!(1))
    );
    assert_eq!(st["firing_apps"], json!(["demo"]));
    let v = api_json(&s, "GET", "/v2/channels/other/alerts", None).await;
    let st = state(&v, "h-codes");
    assert_eq!(
        st,
        json!({"firing": false, "count": 0, "last_fired_at": null, "firing_apps": []})
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// A real browser.

/// Browser tests run one at a time: each starts a Chromium, and the machine has 2 cores.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A headless Chromium driven over WebDriver.
struct Browser {
    client: Client,
    /// `chromedriver`, started in a process group of its own so that it and the Chromium it
    /// starts are ended by that group's id, even when the test fails half-way.
    _driver: ChildGuard,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// Starts `chromedriver` on a free port and a Chromium session through it, with times
    /// of the time zone `tz`; `None` (and a visible SKIP) without Chromium.
    async fn start(tz: &str) -> Option<Browser> {
        if !need("chromium", "apt-get install chromium")
            || !need("chromedriver", "apt-get install chromium-driver")
        {
            return None;
        }
        let turn = ONE_BROWSER.lock().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        use std::os::unix::process::CommandExt;
        let driver = ChildGuard::spawn(
            "chromedriver",
            Command::new(tool_path("chromedriver").expect("found by need() above"))
                .arg(format!("--port={port}"))
                .env("TZ", tz)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0),
        )
        .whole_group();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": tool_path("chromium").unwrap(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,760",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
        client.set_window_size(1280, 860).await.unwrap();
        Some(Browser {
            client,
            _driver: driver,
            _profile: profile,
            _turn: turn,
        })
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Runs `script` until `ok` holds for its value (bounded by `secs`); returns the value.
    async fn wait_js(&self, script: &str, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script).await;
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting on `{script}`; last value {v}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn keys(&self, css: &str, keys: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(keys)
            .await
            .unwrap();
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Clicks what `css` names, finding it again when the page redrew it between the find
    /// and the click (the console's lists are redrawn on each refresh).
    async fn click_fresh(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.click().await.map(drop),
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "clicking {css}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot as `docs/NAME` with `LOGPLEX_UPDATE_SCREENSHOTS=1`, else under the
    /// target directory.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "a screenshot"
        );
        let dir = if std::env::var("LOGPLEX_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs")
        } else {
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        };
        std::fs::write(dir.join(name), png).unwrap();
    }

    async fn close(self) {
        let Browser { client, .. } = self;
        let _ = client.close().await;
    }
}

/// The text of every line on the live page, oldest first.
const MSGS: &str =
    "return [...document.querySelectorAll('#log .line .msg')].map(e => e.textContent)";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_follows_pauses_filters_and_marks() {
    let Some(b) = Browser::start("Asia/Kolkata").await else {
        return;
    };
    let s = TestServer::start().await;
    let (token, heroku) = app(&s, "demo").await;
    let history = demo_history(&token, &heroku);
    send(&s, &history).await;
    s.wait_history("demo", |h| h.len() == history.len()).await;
    let url = tail_session(&s, "demo", 100).await;
    b.client.goto(&url).await.unwrap();

    // History first, then a line sent afterwards within 2 s.
    let msgs = strings(
        &b.wait_js(MSGS, 10, |v| strings(v).len() == history.len())
            .await,
    );
    assert_eq!(msgs[1], r#"Started GET "/" for 10.1.2.3"#);
    b.wait_js(CONN, 5, |v| v == "live").await;
    let sent = Instant::now();
    send(
        &s,
        &[frame_now(
            &token,
            "web.1",
            "a line sent after",
            Duration::ZERO,
        )],
    )
    .await;
    b.wait_js(MSGS, 2, |v| {
        strings(v).last().map(String::as_str) == Some("a line sent after")
    })
    .await;
    let latency = sent.elapsed();
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    // Marks: the 503s, at=error and H12.
    let marks = b
        .js("return [...document.querySelectorAll('#log .line.error .tag')].map(e => e.textContent)")
        .await;
    assert_eq!(strings(&marks), ["503", "error", "H12"], "{marks}");

    // Space pauses: the view holds while the counter grows; resuming shows the lines.
    b.keys("#log", " ").await;
    b.wait_js(
        "return document.getElementById('pause').getAttribute('aria-pressed')",
        2,
        |v| v == "true",
    )
    .await;
    let before = strings(&b.js(MSGS).await);
    let more: Vec<String> = (1..=5)
        .map(|i| {
            frame_now(
                &token,
                "web.1",
                &format!("while paused {i}"),
                Duration::ZERO,
            )
        })
        .collect();
    send(&s, &more).await;
    b.wait_js(
        "return document.getElementById('newlines').textContent",
        5,
        |v| v == "5 new lines",
    )
    .await;
    assert_eq!(
        strings(&b.js(MSGS).await),
        before,
        "the view held while paused"
    );
    b.screenshot("console-live.png").await;
    b.click("#newlines").await;
    let after = strings(
        &b.wait_js(MSGS, 2, |v| strings(v).len() == before.len() + 5)
            .await,
    );
    assert_eq!(after.last().unwrap(), "while paused 5");
    assert!(
        b.js("return document.getElementById('newlines').hidden")
            .await
            == true,
        "the newlines notice is still shown"
    );

    // A dyno filter hides the other dynos and is kept in the URL.
    b.keys("#f-dyno", "web").await;
    let shown = b
        .wait_js(
            "return [...document.querySelectorAll('#log .line .src')].map(e => e.textContent)",
            2,
            |v| !strings(v).is_empty() && strings(v).iter().all(|s| s.contains("[web.")),
        )
        .await;
    assert_eq!(strings(&shown).len(), after.len() - 5, "{shown}");
    let here = b.client.current_url().await.unwrap();
    assert_eq!(here.fragment(), Some("dyno=web"));
    // A URL with filters opens with them: a source and a text, in any case.
    b.client
        .goto(&format!("{url}#source=heroku&q=TIMEOUT"))
        .await
        .unwrap();
    b.client.refresh().await.unwrap();
    let msgs = strings(&b.wait_js(MSGS, 10, |v| strings(v).len() == 1).await);
    assert!(msgs[0].starts_with("at=error code=H12"), "{msgs:?}");
    assert_eq!(
        b.js("return document.getElementById('f-source').value")
            .await,
        "heroku"
    );

    // `/` goes to the text filter; Escape leaves it; `t` shows local time (+05:30 here).
    b.keys("#log", "/").await;
    assert_eq!(b.js("return document.activeElement.id").await, "f-text");
    b.keys("#f-text", "\u{e00c}").await; // Escape
    assert_eq!(b.js("return document.activeElement.id").await, "log");
    let t = b
        .js("return document.querySelector('#log .line time').textContent")
        .await;
    assert!(t.as_str().unwrap().ends_with("+00:00"), "{t}");
    b.keys("#log", "t").await;
    let t = b
        .wait_js(
            "return document.querySelector('#log .line time').textContent",
            2,
            |v| v.as_str().is_some_and(|t| t.ends_with("+05:30")),
        )
        .await;
    assert!(
        t.as_str().unwrap().contains('.'),
        "the fraction of a second is kept: {t}"
    );
    let here = b.client.current_url().await.unwrap();
    assert_eq!(here.fragment(), Some("source=heroku&q=TIMEOUT&tz=local"));

    // No admin key reaches the page.
    let stored = b
        .js("return sessionStorage.length + localStorage.length")
        .await;
    assert_eq!(stored, 0);

    // A session without a tail shows its history and says when it is complete.
    let url = s.session(r#"{"channel":"demo","num":3}"#).await;
    b.client.goto(&url).await.unwrap();
    let msgs = strings(&b.wait_js(MSGS, 10, |v| strings(v).len() == 3).await);
    assert_eq!(msgs[2], "while paused 5");
    b.wait_js(CONN, 10, |v| v == "end of history").await;
    assert_eq!(strings(&b.js(MSGS).await).len(), 3, "nothing twice");
    // An unknown session says so.
    b.client
        .goto(&format!("{}/sessions/{}", s.api(), uuid::Uuid::new_v4()))
        .await
        .unwrap();
    let said = b
        .js("return document.querySelector('#log .gone').textContent")
        .await;
    assert!(
        said.as_str().unwrap().contains("unknown or has expired"),
        "{said}"
    );
    b.close().await;
    s.stop().await;
}

/// The connection state the live page shows.
const CONN: &str = "return document.getElementById('conn').textContent";

/// A TCP proxy in front of the API whose connections the test can cut, all at once; it
/// keeps the first bytes of every connection (the request head).
struct CutProxy {
    addr: SocketAddr,
    cut: Arc<Mutex<CancellationToken>>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl CutProxy {
    async fn start(target: SocketAddr) -> CutProxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let (c, h) = (cut.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                let stop = c.lock().unwrap().clone();
                let h = h.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let mut buf = vec![0; 8192];
                    let n = match down.read(&mut buf).await {
                        Ok(n) if n > 0 => n,
                        _ => return,
                    };
                    h.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    if up.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        CutProxy { addr, cut, heads }
    }

    /// Drops every open connection; new ones go through.
    fn cut(&self) {
        let old = std::mem::take(&mut *self.cut.lock().unwrap());
        old.cancel();
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_without_repeats_or_gaps() {
    let Some(b) = Browser::start("UTC").await else {
        return;
    };
    let s = TestServer::start().await;
    let (token, _) = app(&s, "demo").await;
    let batch = |r: std::ops::RangeInclusive<u32>| -> Vec<String> {
        r.map(|i| frame_now(&token, "web.1", &format!("n {i}"), Duration::ZERO))
            .collect()
    };
    send(&s, &batch(1..=20)).await;
    s.wait_history("demo", |h| h.len() == 20).await;
    let proxy = CutProxy::start(s.addrs.api).await;
    let url = tail_session(&s, "demo", 100).await;
    let via = url.replace(&s.addrs.api.to_string(), &proxy.addr.to_string());
    b.client.goto(&via).await.unwrap();
    b.wait_js(MSGS, 10, |v| strings(v).len() == 20).await;
    b.wait_js(CONN, 5, |v| v == "live").await;
    // Cut the stream, send while it is down, and more once it is back.
    proxy.cut();
    b.wait_js(CONN, 5, |v| v == "reconnecting…").await;
    send(&s, &batch(21..=30)).await;
    s.wait_history("demo", |h| h.len() == 30).await;
    b.wait_js(CONN, 10, |v| v == "live").await;
    send(&s, &batch(31..=40)).await;
    let got = strings(&b.wait_js(MSGS, 5, |v| strings(v).len() >= 40).await);
    let want: Vec<String> = (1..=40).map(|i| format!("n {i}")).collect();
    assert_eq!(got, want, "every line once, in order");
    // The browser resumed from the last line it had.
    let resumed = proxy
        .heads()
        .iter()
        .filter(|h| h.to_ascii_lowercase().contains("\r\nlast-event-id: 20\r\n"))
        .count();
    assert_eq!(resumed, 1, "{:?}", proxy.heads());
    b.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_keeps_up_with_2000_lines_a_second_and_keeps_10000() {
    let Some(b) = Browser::start("UTC").await else {
        return;
    };
    let s = TestServer::start_with(|c| c.buffers.tail_lines = 20_000).await;
    let (token, _) = app(&s, "demo").await;
    let url = tail_session(&s, "demo", 0).await;
    b.client.goto(&url).await.unwrap();
    b.wait_js(CONN, 10, |v| v == "live").await;
    // 12,000 lines in 6 s: 40 every 20 ms, on one connection.
    let total = 12_000u32;
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    let sender = tokio::spawn(async move {
        let start = Instant::now();
        let mut i = 0;
        while i < total {
            let frames: String = (i..i + 40)
                .map(|k| frame_now(&token, "web.1", &format!("fast {k}"), Duration::ZERO))
                .collect();
            c.write_all(frames.as_bytes()).await.unwrap();
            i += 40;
            let due = start + Duration::from_millis(u64::from(i / 40) * 20);
            tokio::time::sleep_until(due.into()).await;
        }
        c.shutdown().await.unwrap();
        start.elapsed()
    });
    // The page answers the keyboard while the lines pour in: pause and resume.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for pressed in ["true", "false"] {
        b.keys("#log", " ").await;
        b.wait_js(
            "return document.getElementById('pause').getAttribute('aria-pressed')",
            5,
            |v| v == pressed,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sent = sender.await.unwrap();
    let last = format!("fast {}", total - 1);
    let shown = Instant::now();
    b.wait_js(
        "const l = [...document.querySelectorAll('#log .line .msg')].pop(); return l && l.textContent",
        2,
        |v| v.as_str() == Some(last.as_str()),
    )
    .await;
    let behind = shown.elapsed();
    let n = b
        .js("return document.querySelectorAll('#log .line').length")
        .await;
    assert_eq!(n, 10_000, "the DOM keeps the newest 10,000 lines");
    let first = b
        .js("return document.querySelector('#log .line .msg').textContent")
        .await;
    assert_eq!(first, format!("fast {}", total - 10_000).as_str());
    let stats = b.js("return window.logplexLive").await;
    assert_eq!(stats["received"], total);
    let key_delay = stats["maxKeyDelayMs"].as_f64().unwrap();
    assert!(
        key_delay < 250.0,
        "a key waited {key_delay} ms for the page"
    );
    eprintln!(
        "2,000 lines/s: {total} lines sent in {sent:?}; last shown {behind:?} after the end; \
         a key press waited at most {key_delay:.1} ms; \
         {} frames drawn, the longest {:.1} ms, {:.0} ms of drawing in all",
        stats["frames"],
        stats["maxFrameMs"].as_f64().unwrap_or(0.0),
        stats["busyMs"].as_f64().unwrap_or(0.0)
    );
    b.close().await;
    s.stop().await;
}

/// Is the key form on screen? Is the console's main part?
const SHOWN_LOGIN: &str =
    "return getComputedStyle(document.getElementById('login')).display !== 'none'";
const SHOWN_MAIN: &str =
    "return getComputedStyle(document.getElementById('main')).display !== 'none'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_apps_drains_and_alerts_behind_the_key() {
    let Some(b) = Browser::start("UTC").await else {
        return;
    };
    let s = TestServer::start().await;
    let (token, heroku) = app(&s, "demo").await;
    let (api_token, _) = app(&s, "api-prod").await;
    app(&s, "billing-worker").await;
    let sink = HttpSink::start(|_| 200).await;
    api_json(
        &s,
        "POST",
        "/v2/channels/demo/drains",
        Some(json!({"url": sink.url("/logs")})),
    )
    .await;
    api_json(
        &s,
        "POST",
        "/v2/channels/demo/drains",
        Some(json!({"url": "syslog://logs.no-such-host.invalid:6514"})),
    )
    .await;
    api_json(
        &s,
        "POST",
        "/v2/channels/%2A/alerts",
        Some(json!({"name":"http-5xx","source":"heroku","dyno":"router","where":"status>=500","threshold":2,"window":"1m"})),
    )
    .await;
    api_json(
        &s,
        "POST",
        "/v2/channels/api-prod/alerts",
        Some(json!({"name":"slow-requests","where":"service>=5000","threshold":5,"window":"5m"})),
    )
    .await;
    send(&s, &demo_history(&token, &heroku)).await;
    let api_lines: Vec<String> = (0..40)
        .map(|i| {
            frame_now(
                &api_token,
                "web.1",
                &format!("GET /v1/items/{i} 200"),
                Duration::ZERO,
            )
        })
        .collect();
    send(&s, &api_lines).await;
    s.wait_history("demo", |h| {
        h.iter().any(|l| l.contains("Alert http-5xx firing"))
    })
    .await;

    b.client.goto(&format!("{}/", s.api())).await.unwrap();
    b.wait_js(SHOWN_LOGIN, 5, |v| v.as_bool() == Some(true))
        .await;
    // A wrong key is refused, said so, and asked again.
    b.keys("#key", "not-the-key\u{e007}").await; // and Enter
    let said = b
        .wait_js(
            "return document.getElementById('keyerror').textContent",
            5,
            |v| v.as_str().is_some_and(|t| !t.is_empty()),
        )
        .await;
    assert!(said.as_str().unwrap().contains("refused"), "{said}");
    assert_eq!(
        b.js(SHOWN_MAIN).await,
        false,
        "nothing shown with a wrong key"
    );
    assert_eq!(b.js("return sessionStorage.length").await, 0);
    b.keys("#key", &format!("{KEY}\u{e007}")).await;
    b.wait_js(SHOWN_MAIN, 5, |v| v.as_bool() == Some(true))
        .await;

    // The apps, with their line rates; the drains with one failing; the alert firing.
    let apps = b
        .js("return [...document.querySelectorAll('#apps tbody tr')].map(r => r.dataset.app)")
        .await;
    assert_eq!(strings(&apps), ["api-prod", "billing-worker", "demo"]);
    let rate = b
        .js("return document.querySelector('#apps tr[data-app=\"api-prod\"] svg').getAttribute('aria-label')")
        .await;
    let counts: u64 = rate
        .as_str()
        .unwrap()
        .rsplit(": ")
        .next()
        .unwrap()
        .split(", ")
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(counts, 40, "{rate}");
    let failing = b
        .wait_js(
            "return [...document.querySelectorAll('#drains tbody tr')].map(r => r.textContent)",
            15,
            |v| strings(v).iter().any(|r| r.contains("failing")),
        )
        .await;
    let failing = strings(&failing);
    let bad = failing.iter().find(|r| r.contains("failing")).unwrap();
    assert!(
        bad.contains("syslog://logs.no-such-host.invalid:6514")
            && bad.contains("logs.no-such-host.invalid:6514: ")
            && bad.contains(" s ago"),
        "{failing:?}"
    );
    assert!(
        failing
            .iter()
            .any(|r| r.contains("/logs") && r.contains("connected")),
        "{failing:?}"
    );
    let alerts = strings(
        &b.js("return [...document.querySelectorAll('#alerts tbody tr')].map(r => r.textContent)")
            .await,
    );
    let fired = alerts.iter().find(|r| r.starts_with("http-5xx")).unwrap();
    assert!(
        fired.contains("firing on demo") && fired.contains("s ago"),
        "{alerts:?}"
    );
    assert!(
        alerts
            .iter()
            .any(|r| r.starts_with("slow-requests") && r.contains("quiet")),
        "{alerts:?}"
    );
    b.screenshot("console.png").await;

    // The key is kept for the tab: a reload does not ask again.
    b.client.refresh().await.unwrap();
    b.wait_js(SHOWN_MAIN, 5, |v| v.as_bool() == Some(true))
        .await;
    assert_eq!(b.js(SHOWN_LOGIN).await, false, "the key is not asked again");

    // A live page of any app, opened from the console, in a new tab without the key.
    let console = b.client.window().await.unwrap();
    b.click("#apps tr[data-app=\"demo\"] button.tail").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let live = loop {
        let all = b.client.windows().await.unwrap();
        if let Some(w) = all.into_iter().find(|w| *w != console) {
            break w;
        }
        assert!(Instant::now() < deadline, "no live page opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    b.client.switch_to_window(live).await.unwrap();
    let msgs = strings(&b.wait_js(MSGS, 10, |v| strings(v).len() >= 11).await);
    assert!(
        msgs.iter().any(|m| m.starts_with("Alert http-5xx firing")),
        "{msgs:?}"
    );
    assert!(
        b.client
            .current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/sessions/"),
        "{:?}",
        b.client.current_url().await
    );
    assert_eq!(
        b.js("return sessionStorage.length").await,
        0,
        "no key in the live page"
    );
    b.close().await;
    s.stop().await;
}

/// The apps shown on the overview, in order.
const APPS_SHOWN: &str =
    "return [...document.querySelectorAll('#apps tbody tr')].map(r => r.dataset.app)";

/// Is the element of this id on screen?
fn shown(id: &str) -> String {
    format!("return getComputedStyle(document.getElementById('{id}')).display !== 'none'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_pages_through_many_apps_and_opens_any_by_name() {
    let Some(b) = Browser::start("UTC").await else {
        return;
    };
    let s = TestServer::start().await;
    // 120 apps: pages of 50, 50 and 20.
    let names: Vec<String> = (0..120).map(|i| format!("app-{i:03}")).collect();
    for n in &names {
        s.create_app(n).await;
    }
    b.client.goto(&format!("{}/", s.api())).await.unwrap();
    b.wait_js(SHOWN_LOGIN, 5, |v| v.as_bool() == Some(true))
        .await;
    b.keys("#key", &format!("{KEY}\u{e007}")).await;
    let want = |from: usize, to: usize| names[from..to].to_vec();
    let page_is = |from: usize, to: usize| {
        let want = want(from, to);
        move |v: &Value| strings(v) == want
    };
    b.wait_js(APPS_SHOWN, 10, page_is(0, 50)).await;
    assert_eq!(b.js(&shown("next")).await, true);
    assert_eq!(b.js(&shown("previous")).await, false);
    assert_eq!(
        b.js("return document.getElementById('page').textContent")
            .await,
        "apps app-000 to app-049"
    );

    b.click("#next").await;
    b.wait_js(APPS_SHOWN, 10, page_is(50, 100)).await;
    assert_eq!(b.js(&shown("previous")).await, true);
    b.click("#next").await;
    b.wait_js(APPS_SHOWN, 10, page_is(100, 120)).await;
    assert_eq!(b.js(&shown("next")).await, false, "the last page");
    assert_eq!(b.js(&shown("first")).await, true);
    b.screenshot("console-pages.png").await;
    // A refresh stays on the page.
    b.click("#refresh").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.wait_js(APPS_SHOWN, 10, page_is(100, 120)).await;
    b.click("#previous").await;
    b.wait_js(APPS_SHOWN, 10, page_is(50, 100)).await;
    b.click("#next").await;
    b.wait_js(APPS_SHOWN, 10, page_is(100, 120)).await;
    b.click("#first").await;
    b.wait_js(APPS_SHOWN, 10, page_is(0, 50)).await;

    // Any app opens by name, on a page or not.
    b.keys("#find", "app-117\u{e007}").await;
    b.wait_js(&shown("appview"), 5, |v| v.as_bool() == Some(true))
        .await;
    assert_eq!(
        b.js("return [location.hash, document.getElementById('appview-name').textContent]")
            .await,
        json!(["#app=app-117", "app-117"])
    );
    b.close().await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// An app's view: charts of its metrics from the logs.

/// Router lines as Heroku's router writes them (info, 404s, redirects, H12 and H13
/// errors), with service times spread from 3 ms to 30 s.
fn router_lines(heroku: &str, lines: std::ops::Range<usize>) -> Vec<String> {
    lines
        .map(|i| {
            let service = 3 + (i * 37) % 400;
            let connect = i % 4;
            let msg = if i % 10 == 9 {
                format!(
                    r#"at=error code=H12 desc="Request timeout" method=GET path="/reports/{i}" host=shop.example.com request_id=r{i} fwd="10.0.0.{}" dyno=web.1 connect={connect}ms service=30000ms status=503 bytes=0 protocol=https"#,
                    i % 250
                )
            } else if i % 13 == 12 {
                format!(
                    r#"at=error code=H13 desc="Connection closed without response" method=POST path="/orders" host=shop.example.com request_id=r{i} fwd="10.0.0.1" dyno=web.2 connect={connect}ms service={service}ms status=503 bytes=0 protocol=https"#
                )
            } else {
                let status = match i % 7 {
                    5 => 404,
                    6 => 302,
                    _ => 200,
                };
                format!(
                    r#"at=info method=GET path="/items/{i}" host=shop.example.com request_id=r{i} fwd="10.0.0.2" dyno=web.{} connect={connect}ms service={service}ms status={status} bytes={} protocol=https"#,
                    1 + i % 2,
                    500 + i * 3
                )
            };
            frame_now(heroku, "router", &msg, Duration::ZERO)
        })
        .collect()
}

/// l2met lines of the app and Heroku's runtime metrics.
fn l2met_lines(app: &str, heroku: &str) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..12 {
        out.push(frame_now(
            app,
            "web.1",
            &format!(
                "source=web.1 count#orders.created={} measure#db.query={}.{}ms",
                1 + i % 3,
                4 + i * 3,
                i % 10
            ),
            Duration::ZERO,
        ));
    }
    for (mem, rss, pgpgin, load) in [
        ("212.3", "1234.5678", "348836", "0.2"),
        ("230.9", "1240.25", "349102", "0.45"),
        ("198.7", "1219.125", "350417", "0.1"),
    ] {
        out.push(frame_now(
            heroku,
            "web.1",
            &format!(
                "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 sample#memory_total={mem}MB sample#memory_rss={rss}MB sample#memory_pgpgin={pgpgin}pages sample#load_avg_1m={load}"
            ),
            Duration::ZERO,
        ));
    }
    out
}

/// A number as the page writes it (`1,234`, `33.75 ms`, `12.50 %`, `–` for none).
fn page_number(text: &str) -> Option<f64> {
    let t = text
        .trim()
        .trim_end_matches(" ms")
        .trim_end_matches(" %")
        .replace(',', "");
    t.parse().ok()
}

/// The API's number, or `None` for null.
fn api_number(v: &Value) -> Option<f64> {
    v.as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_view_charts_its_metrics_as_the_api_counts_them() {
    let Some(b) = Browser::start("UTC").await else {
        return;
    };
    let s = TestServer::start().await;
    let v = api_json(
        &s,
        "POST",
        "/v2/channels",
        Some(json!({"name": "shop", "tokens": ["app", "heroku"], "metrics": true})),
    )
    .await;
    let tok = |n: &str| v["tokens"][n].as_str().unwrap().to_string();
    let (token, heroku) = (tok("app"), tok("heroku"));
    app(&s, "quiet").await;
    const REQUESTS: usize = 120;
    // For the picture in docs/, the traffic is spread over five minutes so that the charts
    // have several to draw; otherwise it is sent at once.
    let rounds: &[usize] = if std::env::var("LOGPLEX_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        &[16, 30, 22, 40, 12]
    } else {
        &[REQUESTS]
    };
    let mut sent = 0;
    for (i, n) in rounds.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        send(&s, &router_lines(&heroku, sent..sent + n)).await;
        send(&s, &l2met_lines(&token, &heroku)).await;
        sent += n;
    }
    assert_eq!(sent, REQUESTS);
    let path = "/v2/channels/shop/metrics?since=1h&l2met=minutes";
    let deadline = Instant::now() + Duration::from_secs(10);
    while api_json(&s, "GET", path, None).await["router"]["requests"] != REQUESTS
        || api_json(&s, "GET", path, None).await["l2met"]["sample"]["load_avg_1m"]["last"] != 0.1
    {
        assert!(Instant::now() < deadline, "lines not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The view, opened by its URL: asked for the key once, then charts. Requests/min
    // divides by the minutes counted so far, which grow by one at a minute's turn: the page
    // and the API are read early in a minute.
    let into_minute = time::OffsetDateTime::now_utc().second() as u64;
    if into_minute > 45 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    b.client
        .goto(&format!("{}/#app=shop", s.api()))
        .await
        .unwrap();
    b.wait_js(SHOWN_LOGIN, 5, |v| v.as_bool() == Some(true))
        .await;
    b.keys("#key", &format!("{KEY}\u{e007}")).await;
    let figure = "return document.querySelector('[data-figure=\"requests\"]')?.textContent ?? ''";
    b.wait_js(figure, 10, |v| v.as_str().is_some_and(|t| !t.is_empty()))
        .await;
    assert_eq!(
        b.js("return getComputedStyle(document.getElementById('overview')).display")
            .await,
        "none",
        "the view replaces the overview"
    );
    let api = api_json(&s, "GET", path, None).await;
    let r = &api["router"];
    let text = |css: String| {
        let b = &b;
        async move {
            let v = b
                .js(&format!(
                    "return document.querySelector({css:?})?.textContent ?? null"
                ))
                .await;
            v.as_str()
                .unwrap_or_else(|| panic!("{css} is not on the page"))
                .to_string()
        }
    };
    let fig = |key: &'static str| text(format!("[data-figure=\"{key}\"]"));

    // The figures, as text, equal the API's.
    assert_eq!(page_number(&fig("requests").await), Some(REQUESTS as f64));
    let minutes = api["minutes"].as_array().unwrap();
    assert_eq!(
        fig("requests_per_min").await,
        format!("{:.1}", REQUESTS as f64 / minutes.len() as f64)
    );
    let s5xx = r["by_status"]["5xx"].as_u64().unwrap();
    assert!(s5xx > 0);
    assert_eq!(
        fig("5xx_pct").await,
        format!("{:.2} %", 100.0 * s5xx as f64 / REQUESTS as f64)
    );
    for q in ["p50", "p95", "p99"] {
        let shown = match q {
            "p50" => fig("service_p50").await,
            "p95" => fig("service_p95").await,
            _ => fig("service_p99").await,
        };
        assert_eq!(
            page_number(&shown),
            api_number(&r["service_ms"][q]),
            "service {q}: {shown}"
        );
    }
    // Each status class in the requests chart's legend and its accessible name.
    let label = b
        .js("return document.querySelector('[data-chart=\"requests\"] svg').getAttribute('aria-label')")
        .await;
    for class in ["2xx", "3xx", "4xx", "5xx"] {
        let n = r["by_status"][class].as_u64().unwrap();
        assert!(n > 0, "{class}");
        let legend = text(format!(
            "[data-chart=\"requests\"] [data-legend=\"{class}\"] .value"
        ))
        .await;
        assert_eq!(page_number(&legend), Some(n as f64), "{class}");
        assert!(
            label.as_str().unwrap().contains(&format!("{class} {n}")),
            "{label}"
        );
    }
    // Drawn: one path per class with requests, a line per quantile, a title.
    let drawn = b
        .js("return [...document.querySelectorAll('[data-chart] svg path')].map(p => p.closest('[data-chart]').dataset.chart + ':' + p.dataset.series)")
        .await;
    let drawn = strings(&drawn);
    for want in [
        "requests:2xx",
        "requests:5xx",
        "errors:5xx %",
        "service:p50",
        "service:p99",
        "count#orders.created:orders.created",
        "sample#memory_total:min–max",
        "sample#memory_total:last",
        "measure#db.query:p95",
    ] {
        assert!(drawn.iter().any(|d| d == want), "{want} in {drawn:?}");
    }
    assert_eq!(
        b.js("return document.querySelectorAll('[data-chart] svg > title').length")
            .await,
        b.js("return document.querySelectorAll('[data-chart] svg').length")
            .await
    );
    // The top H-codes.
    let codes = r["h_codes"].as_object().unwrap();
    assert_eq!(codes.len(), 2, "{codes:?}");
    for (code, n) in codes {
        let shown = text(format!("[data-hcode=\"{code}\"] .value")).await;
        assert_eq!(page_number(&shown), n.as_f64(), "{code}");
    }
    // The l2met names: counts, samples' last/min/max, measures' count and quantiles.
    let l2 = &api["l2met"];
    let legend = |chart: String, item: &'static str| {
        text(format!(
            "[data-chart=\"{chart}\"] [data-legend=\"{item}\"] .value"
        ))
    };
    assert_eq!(
        page_number(&legend("count#orders.created".into(), "total").await),
        api_number(&l2["count"]["orders.created"])
    );
    for name in ["memory_total", "memory_rss", "memory_pgpgin", "load_avg_1m"] {
        for stat in ["last", "min", "max"] {
            assert_eq!(
                page_number(&legend(format!("sample#{name}"), stat).await),
                api_number(&l2["sample"][name][stat]),
                "{name} {stat}"
            );
        }
    }
    for stat in ["count", "p50", "p95", "p99"] {
        assert_eq!(
            page_number(&legend("measure#db.query".into(), stat).await),
            api_number(&l2["measure"]["db.query"][stat]),
            "db.query {stat}"
        );
    }

    b.screenshot("console-metrics.png").await;

    // The per-minute values, as a table: the API's minutes with requests.
    b.click("[data-chart=\"requests\"] details summary").await;
    let rows = b
        .wait_js(
            "return [...document.querySelectorAll('[data-chart=\"requests\"] tr[data-at]')].map(r => [r.dataset.at, ...[...r.querySelectorAll('td')].map(c => c.textContent)])",
            5,
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let shown: Vec<Vec<String>> = rows.as_array().unwrap().iter().map(strings).collect();
    let want: Vec<Vec<String>> = minutes
        .iter()
        .filter(|m| m["requests"].as_u64() > Some(0))
        .map(|m| {
            let mut row = vec![m["at"].as_str().unwrap().to_string()];
            for k in ["requests", "2xx", "3xx", "4xx", "5xx"] {
                row.push(m[k].as_u64().unwrap().to_string());
            }
            row
        })
        .collect();
    assert_eq!(shown, want);
    // And an l2met name's: each minute's count# sum.
    b.click("[data-chart=\"count#orders.created\"] details summary")
        .await;
    let rows = b
        .wait_js(
            "return [...document.querySelectorAll('[data-chart=\"count#orders.created\"] tr[data-at]')].map(r => [r.dataset.at, r.querySelector('td').textContent])",
            5,
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let shown: Vec<Vec<String>> = rows.as_array().unwrap().iter().map(strings).collect();
    let want: Vec<Vec<String>> = minutes
        .iter()
        .filter_map(|m| {
            let n = m["l2met"]["count"]["orders.created"].as_f64()?;
            Some(vec![m["at"].as_str().unwrap().to_string(), n.to_string()])
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(shown, want);

    // A day: the same figures over 24 hours, said in the charts' names.
    b.click("[data-range=\"24h\"]").await;
    b.wait_js(
        "return document.querySelector('[data-chart=\"requests\"] svg')?.getAttribute('aria-label') ?? ''",
        10,
        |v| v.as_str().is_some_and(|t| t.contains("last 24 hours")),
    )
    .await;
    assert!(b
        .js("return location.hash")
        .await
        .as_str()
        .unwrap()
        .contains("range=24h"));
    assert_eq!(
        b.js("return document.querySelector('[data-range=\"24h\"]').getAttribute('aria-pressed')")
            .await,
        "true"
    );
    let day = api_json(&s, "GET", "/v2/channels/shop/metrics?since=24h", None).await;
    assert_eq!(
        page_number(&fig("requests").await),
        api_number(&day["router"]["requests"])
    );
    assert_eq!(
        page_number(&fig("service_p95").await),
        api_number(&day["router"]["service_ms"]["p95"])
    );

    // New lines show on the next refresh (`r` here; every minute by itself).
    send(&s, &router_lines(&heroku, 0..10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while api_json(&s, "GET", path, None).await["router"]["requests"] != REQUESTS + 10 {
        assert!(Instant::now() < deadline, "lines not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.keys("body", "r").await;
    b.wait_js(figure, 10, |v| {
        v.as_str().and_then(page_number) == Some((REQUESTS + 10) as f64)
    })
    .await;

    // An app with metrics off: said so, with the command, and a button that turns them on.
    b.client
        .goto(&format!("{}/#app=quiet", s.api()))
        .await
        .unwrap();
    let off = b
        .wait_js(
            "return document.getElementById('metrics-off')?.textContent ?? ''",
            10,
            |v| v.as_str().is_some_and(|t| !t.is_empty()),
        )
        .await;
    assert!(
        off.as_str()
            .unwrap()
            .contains("logplex metrics:enable -a quiet"),
        "{off}"
    );
    b.click_fresh("#metrics-enable").await;
    b.wait_js(figure, 10, |v| v.as_str() == Some("0")).await;
    let ch = api_json(&s, "GET", "/v2/channels/quiet", None).await;
    assert_eq!(ch["metrics"], true, "{ch}");

    // Back to every app; the app's name links to its view.
    b.click_fresh("a.back").await;
    b.wait_js(
        "return getComputedStyle(document.getElementById('overview')).display",
        5,
        |v| v != "none",
    )
    .await;
    b.click_fresh("#apps tr[data-app=\"shop\"] th a").await;
    b.wait_js(figure, 10, |v| {
        v.as_str().and_then(page_number) == Some((REQUESTS + 10) as f64)
    })
    .await;
    b.close().await;
    s.stop().await;
}
