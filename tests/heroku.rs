//! Heroku compatibility, shown with other people's tools: the real `heroku` CLI from npm
//! (pinned, unmodified, run in a network namespace with only loopback), an HTTPS-drain
//! receiver built on `heroku-syslog-parser` from PyPI, and log-shuttle's exact request bytes
//! read back with `logplex logs`.
//!
//! The CLI and the parser are installed by `.ci/run` into `~/.cache/logplex-ci`; without
//! them these tests say SKIP with the command that installs them (and fail under
//! `LOGPLEX_REQUIRE_PEERS=1`).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Set by the outer test on the inner one, which runs only inside the namespace.
const NETNS_VAR: &str = "LOGPLEX_HEROKU_NETNS";
const INSTALL_CLI: &str = "run .ci/run, or npm install --prefix ~/.cache/logplex-ci/heroku \
                           heroku@11.10.0, or set LOGPLEX_HEROKU_CLI to its `heroku`";
const INSTALL_PARSER: &str = "run .ci/run, or python3 -m venv ~/.cache/logplex-ci/venv && \
                              ~/.cache/logplex-ci/venv/bin/pip install \
                              heroku-syslog-parser==0.0.4 pyparsing==3.3.3, or set \
                              LOGPLEX_PYTHON to a python that has it";

fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/logplex-ci")
}

/// The `heroku` CLI: `LOGPLEX_HEROKU_CLI`, else where `.ci/run` installs it (`None` when it
/// is in neither place).
fn heroku_cli() -> Option<PathBuf> {
    let p = match std::env::var_os("LOGPLEX_HEROKU_CLI") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("heroku/node_modules/.bin/heroku"),
    };
    p.is_file().then_some(p)
}

/// The Python that has heroku-syslog-parser: `LOGPLEX_PYTHON`, else `.ci/run`'s venv.
fn parser_python() -> Option<PathBuf> {
    let p = match std::env::var_os("LOGPLEX_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("venv/bin/python"),
    };
    if !p.is_file() {
        return None;
    }
    let o = output(
        "python",
        Command::new(&p).args(["-c", "import heroku_syslog_parser"]),
        None,
        Duration::from_secs(30),
    );
    o.status.success().then_some(p)
}

// ---------------------------------------------------------------------------------------
// The real heroku CLI.

/// Runs [`heroku_cli_inside_netns`] (this same test binary) under `unshare -n` with only
/// loopback up, so neither the CLI nor anything it starts can reach the real Heroku; the
/// router is started by the harness inside that namespace, next to the CLI.
#[test]
fn heroku_cli_logs_and_drains() {
    let cli = heroku_cli();
    let cli = cli
        .as_deref()
        .map_or("heroku (npm)".into(), Path::to_string_lossy);
    if !need(&cli, INSTALL_CLI)
        || !need("node", "apt-get install nodejs (20 or later)")
        || !need("unshare", "apt-get install util-linux")
        || !need("ip", "apt-get install iproute2")
    {
        return;
    }
    // Root can make a network namespace directly; others need a user namespace too.
    let unshare: &[&str] = if output(
        "unshare",
        Command::new("unshare").args(["-n", "true"]),
        None,
        Duration::from_secs(10),
    )
    .status
    .success()
    {
        &["-n"]
    } else {
        &["-r", "-n"]
    };
    let me = std::env::current_exe().expect("this test binary's path");
    let out = output(
        "unshare",
        Command::new("unshare")
            .args(unshare)
            .args(["sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
            .arg(me)
            .args([
                "heroku_cli_inside_netns",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NETNS_VAR, "1"),
        None,
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "the test inside the namespace failed");
    assert!(
        stdout.contains("1 passed"),
        "the test inside the namespace did not run"
    );
}

/// What one CLI run printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// The environment of every CLI run: our router, our key, a throwaway HOME, no updates, no
/// telemetry, no colours, and nothing inherited (a developer's own HEROKU_* stays out).
fn heroku_command(cli: &Path, api: &str, home: &Path) -> Command {
    let mut c = Command::new(cli);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("HEROKU_HOST", api)
        .env("HEROKU_API_KEY", KEY)
        .env("HEROKU_DISABLE_AUTOUPDATE", "1")
        .env("HEROKU_SKIP_NEW_VERSION_CHECK", "true")
        .env("DISABLE_TELEMETRY", "true")
        .env("HEROKU_LOGS_COLOR", "0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

async fn heroku(cli: &Path, api: &str, home: &Path, args: &[&str]) -> Run {
    let mut cmd = heroku_command(cli, api, home);
    cmd.args(args);
    let what = format!("heroku {args:?}");
    let out =
        tokio::task::spawn_blocking(move || output(&what, &mut cmd, None, Duration::from_secs(30)))
            .await
            .expect("the heroku run panicked");
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "$ heroku {}\n{}{}",
        args.join(" "),
        run.stdout,
        if run.ok {
            String::new()
        } else {
            format!("(failed)\n{}", run.stderr)
        }
    );
    run
}

/// The next line a child prints (bounded: 20 s).
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    who: &str,
) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{who} printed nothing for 20 s"))
        .unwrap()
        .unwrap_or_else(|| panic!("{who} ended early"))
}

/// Posts frames to `POST /logs` with a token, as a dyno does.
async fn post(s: &TestServer, token: &str, frames: &[String]) {
    use base64::Engine;
    let body: String = frames.iter().map(|f| octet(f)).collect();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"))
    );
    let (st, b) = request_with(
        &format!("http://{}", s.addrs.http.unwrap()),
        "POST",
        "/logs",
        Some(&body),
        &[
            ("authorization", &auth),
            ("content-type", "application/logplex-1"),
        ],
    )
    .await;
    assert_eq!(st, 204, "{b}");
}

fn app_frame(token: &str, ts: &str, procid: &str, msg: &str) -> String {
    format!("<190>1 {ts} host {token} {procid} - - {msg}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by heroku_cli_logs_and_drains inside `unshare -n`"]
async fn heroku_cli_inside_netns() {
    assert_eq!(
        std::env::var(NETNS_VAR).as_deref(),
        Ok("1"),
        "run this only through heroku_cli_logs_and_drains"
    );
    // Only loopback here: nothing can leave.
    let links = output(
        "ip",
        Command::new("ip").args(["-o", "link", "show"]),
        None,
        Duration::from_secs(10),
    );
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        links.lines().all(|l| l.contains(": lo:")),
        "not in an isolated namespace:\n{links}"
    );
    let cli = heroku_cli().expect("the outer test checked the CLI");
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    let s = TestServer::start().await;
    let api = s.api();
    let (st, body) = request(
        &api,
        "POST",
        "/v2/channels",
        Some(r#"{"name":"demo","tokens":["app","heroku"]}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let app = v["tokens"]["app"].as_str().unwrap().to_string();
    let router = v["tokens"]["heroku"].as_str().unwrap().to_string();

    let mut frames = Vec::new();
    let mut expected_all = Vec::new();
    let mut expected_web = Vec::new();
    for i in 0..8 {
        let ts = format!("2016-03-08T02:43:2{i}.693600+00:00");
        let procid = if i % 2 == 0 { "web.1" } else { "web.2" };
        frames.push(app_frame(
            &app,
            &ts,
            procid,
            &format!("Started GET \"/{i}\""),
        ));
        expected_all.push(format!("{ts} app[{procid}]: Started GET \"/{i}\""));
        expected_web.push(expected_all.last().unwrap().clone());
        if i == 3 {
            let ts = "2016-03-08T02:43:23.800000+00:00";
            frames.push(app_frame(&app, ts, "worker.1", "Job done"));
            expected_all.push(format!("{ts} app[worker.1]: Job done"));
        }
    }
    post(&s, &app, &frames).await;
    let rl = "at=info method=GET path=\"/\" host=demo.herokuapp.com request_id=0a1b fwd=\"1.2.3.4\" dyno=web.1 connect=0ms service=3ms status=200 bytes=1548 protocol=https";
    let ts = "2016-03-08T02:43:29.000000+00:00";
    post(
        &s,
        &router,
        &[format!("<158>1 {ts} host heroku router - - {rl}")],
    )
    .await;
    expected_all.push(format!("{ts} heroku[router]: {rl}"));

    // The tail starts first (its history shows it is connected); the two one-shot
    // `logs` and the unknown app run meanwhile.
    let mut tail = ChildGuard::spawn(
        "heroku logs -t",
        heroku_command(&cli, &api, home)
            .args(["logs", "-t", "-a", "demo"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let (all, five, nope) = tokio::join!(
        heroku(&cli, &api, home, &["logs", "-a", "demo"]),
        heroku(
            &cli,
            &api,
            home,
            &["logs", "-n", "5", "--source", "app", "--dyno", "web", "-a", "demo"]
        ),
        heroku(&cli, &api, home, &["logs", "-a", "nope"]),
    );
    assert!(all.ok, "{}", all.stderr);
    assert_eq!(all.stdout, expected_all.join("\n") + "\n");
    assert!(five.ok, "{}", five.stderr);
    assert_eq!(
        five.stdout,
        expected_web[expected_web.len() - 5..].join("\n") + "\n"
    );
    assert!(!nope.ok, "{}", nope.stdout);
    assert!(
        nope.stderr.contains("Couldn't find that app."),
        "{}",
        nope.stderr
    );

    // The tail: history, then a line sent after it started; SIGINT stops it.
    let stdout = tail.child().stdout.take().expect("piped stdout");
    let stdout = tokio::process::ChildStdout::from_std(stdout).expect("an async stdout");
    let mut out = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    while seen.len() < expected_all.len() {
        seen.push(next_line(&mut out, "the tail").await);
    }
    assert_eq!(seen, expected_all);
    let ts = "2016-03-08T02:43:30.000000+00:00";
    post(
        &s,
        &app,
        &[app_frame(&app, ts, "web.3", "live after the start")],
    )
    .await;
    seen.push(next_line(&mut out, "the tail").await);
    assert_eq!(
        seen.last().unwrap(),
        &format!("{ts} app[web.3]: live after the start")
    );
    tail.signal(rustix::process::Signal::INT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tail.try_wait().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tail did not stop on SIGINT"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "$ heroku logs -t -a demo   (stopped with SIGINT)\n{}",
        seen.join("\n")
    );

    // Drains: add (and a duplicate), list, remove by URL, list again.
    // The password is never shown back (`***`); removal takes the URL as given.
    let url = "https://user:secret@127.0.0.1:1/logs?app=demo&x=1";
    let shown = "https://user:***@127.0.0.1:1/logs?app=demo&x=1";
    let r = heroku(&cli, &api, home, &["drains:add", url, "-a", "demo"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, format!("Successfully added drain {shown}\n"));
    let dup = heroku(&cli, &api, home, &["drains:add", url, "-a", "demo"]).await;
    assert!(!dup.ok, "{}", dup.stdout);
    assert!(
        dup.stderr.contains("Url has already been taken."),
        "{}",
        dup.stderr
    );

    let (st, body) = request(&api, "GET", "/apps/demo/log-drains", None).await;
    assert_eq!(st, 200, "{body}");
    let drains: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = drains[0]["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("d."), "{body}");

    let r = heroku(&cli, &api, home, &["drains", "-a", "demo"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, format!("=== Drains\n\n{shown} ({token})\n"));

    let r = heroku(&cli, &api, home, &["drains:remove", url, "-a", "demo"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, format!("Successfully removed drain {shown}\n"));
    let r = heroku(&cli, &api, home, &["drains", "-a", "demo"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    let (_, body) = request(&api, "GET", "/apps/demo/log-drains", None).await;
    assert_eq!(body.trim(), "[]");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// The Platform API shapes, without the CLI (always runs).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_api_shapes_and_errors() {
    let s = TestServer::start().await;
    s.create_app("demo").await;
    let api = s.api();
    let v3 = [
        ("authorization", format!("Bearer {KEY}")),
        (
            "accept",
            "application/vnd.heroku+json; version=3.sdk".into(),
        ),
    ];
    let h: Vec<(&str, &str)> = v3.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let get = |path: &'static str| {
        let (api, h) = (api.clone(), h.clone());
        async move {
            let (st, b) = request_with(&api, "GET", path, None, &h).await;
            (st, serde_json::from_str::<serde_json::Value>(&b).unwrap())
        }
    };
    let (st, app) = get("/apps/demo").await;
    assert_eq!(st, 200);
    assert_eq!(app["name"], "demo");
    assert_eq!(app["generation"]["name"], "cedar");
    let id = app["id"].as_str().unwrap().to_string();
    assert_eq!(
        get("/apps/demo").await.1["id"],
        id.as_str(),
        "ids are stable"
    );
    let (st, by_id) = request_with(&api, "GET", &format!("/apps/{id}"), None, &h).await;
    assert_eq!(st, 200, "{by_id}");
    assert!(by_id.contains("\"name\":\"demo\""), "{by_id}");
    // An id of our shape that no app has: looked for, not found.
    let (st, _) = get("/apps/00000000-0000-8000-8000-000000000000").await;
    assert_eq!(st, 404);

    let (st, e) = get("/apps/nope").await;
    assert_eq!(st, 404);
    assert_eq!(
        e,
        serde_json::json!({"id":"not_found","message":"Couldn't find that app."})
    );
    let (st, _) = request_with(&api, "GET", "/apps/demo", None, &[]).await;
    assert_eq!(st, 401);

    // A log session: 201, and the URL streams.
    let (st, b) = request_with(
        &api,
        "POST",
        "/apps/demo/log-sessions",
        Some(r#"{"lines":"99999","tail":false,"source":"app","dyno":"web"}"#),
        &h,
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let sess: serde_json::Value = serde_json::from_str(&b).unwrap();
    for k in ["id", "created_at", "updated_at"] {
        assert!(sess[k].is_string(), "{k} in {b}");
    }
    let url = sess["logplex_url"].as_str().unwrap();
    assert_eq!(get_text(url).await, "");

    // Drains: create, read, delete by token and by percent-encoded URL; Heroku's errors.
    let post_drain = |url: &'static str| {
        let (api, h) = (api.clone(), h.clone());
        async move {
            let body = format!(r#"{{"url":"{url}"}}"#);
            let (st, b) =
                request_with(&api, "POST", "/apps/demo/log-drains", Some(&body), &h).await;
            (st, serde_json::from_str::<serde_json::Value>(&b).unwrap())
        }
    };
    let (st, d) = post_drain("syslog://127.0.0.1:1").await;
    assert_eq!(st, 201);
    assert_eq!(d["addon"], serde_json::Value::Null);
    assert_eq!(d["app"], serde_json::json!({"id": id, "name": "demo"}));
    assert!(d["created_at"].as_str().unwrap().ends_with('Z'), "{d}");
    let (st, e) = post_drain("syslog://127.0.0.1:1").await;
    assert_eq!((st, e["id"].as_str()), (422, Some("invalid_params")));
    let (st, e) = post_drain("ftp://nowhere").await;
    assert_eq!((st, e["id"].as_str()), (422, Some("invalid_params")));

    let tok = d["token"].as_str().unwrap();
    let (st, b) = request_with(
        &api,
        "GET",
        &format!("/apps/demo/log-drains/{tok}"),
        None,
        &h,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = request_with(
        &api,
        "DELETE",
        &format!("/apps/demo/log-drains/{tok}"),
        None,
        &h,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&b).unwrap(), d);
    let (st, b) = request_with(
        &api,
        "DELETE",
        &format!("/apps/demo/log-drains/{tok}"),
        None,
        &h,
    )
    .await;
    assert_eq!(st, 404);
    assert!(b.contains("Couldn't find that log drain."), "{b}");

    let (st, _) = post_drain("https://u:p@127.0.0.1:1/x?y=1").await;
    assert_eq!(st, 201);
    let (st, b) = request_with(
        &api,
        "DELETE",
        "/apps/demo/log-drains/https%3A%2F%2Fu%3Ap%40127.0.0.1%3A1%2Fx%3Fy%3D1",
        None,
        &h,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("\"https://u:***@127.0.0.1:1/x?y=1\""), "{b}");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// An HTTPS drain read by heroku-syslog-parser.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_drain_parsed_by_heroku_syslog_parser() {
    let Some(python) = parser_python() else {
        skip(&format!(
            "needs heroku-syslog-parser in a Python ({INSTALL_PARSER})"
        ));
        return;
    };
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/heroku_drain_receiver.py");
    let mut rx = ChildGuard::spawn(
        "heroku_drain_receiver.py",
        Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let stdin = rx.child().stdin.take().expect("piped stdin");
    let mut stdin = tokio::process::ChildStdin::from_std(stdin).expect("an async stdin");
    let stdout = rx.child().stdout.take().expect("piped stdout");
    let stdout = tokio::process::ChildStdout::from_std(stdout).expect("an async stdout");
    let mut out = BufReader::new(stdout).lines();
    let port = next_line(&mut out, "the receiver").await;
    let port = port.strip_prefix("PORT ").unwrap().to_string();

    const BUFFER: usize = 5;
    // Without the durable log, so that the buffer's overflow is dropped and told by L10.
    let s = TestServer::start_with(|c| {
        c.drains.buffer_lines = BUFFER;
        c.log.path = "off".into();
    })
    .await;
    let api = s.api();
    let (_, body) = request(
        &api,
        "POST",
        "/v2/channels",
        Some(r#"{"name":"demo","tokens":["app","heroku"]}"#),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let app = v["tokens"]["app"].as_str().unwrap().to_string();
    let router = v["tokens"]["heroku"].as_str().unwrap().to_string();
    let drain_url = format!("http://127.0.0.1:{port}/");
    let (st, body) = request(
        &api,
        "POST",
        "/apps/demo/log-drains",
        Some(&format!(r#"{{"url":"{drain_url}"}}"#)),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let drain: serde_json::Value = serde_json::from_str(&body).unwrap();
    let drain_token = drain["token"].as_str().unwrap().to_string();

    // One line; the receiver stalls on it.
    let ts = "2016-03-08T02:43:26.693600+00:00";
    post(&s, &app, &[app_frame(&app, ts, "web.1", "first")]).await;
    assert_eq!(next_line(&mut out, "the receiver").await, "STALLED");
    // Meanwhile 20 more: the buffer keeps the newest 5, the other 15 are dropped.
    let rl = "at=info method=GET path=\"/\" host=demo.herokuapp.com request_id=8601b555-6a76-4a4c-9ad6-2a3c4b5d6e7f fwd=\"1.2.3.4\" dyno=web.1 connect=0ms service=3ms status=200 bytes=1548 protocol=https";
    let mut frames: Vec<String> = (0..17)
        .map(|i| app_frame(&app, ts, "web.1", &format!("filler {i}")))
        .collect();
    frames.push(app_frame(&app, ts, "web.1", "Started GET \"/\""));
    post(&s, &app, &frames).await;
    post(
        &s,
        &router,
        &[format!("<158>1 {ts} host heroku router - - {rl}")],
    )
    .await;
    post(
        &s,
        &app,
        &[app_frame(&app, ts, "web.2", "Completed 200 OK in 3ms")],
    )
    .await;
    stdin.write_all(b"go\n").await.unwrap();

    let mut got: Vec<serde_json::Value> = Vec::new();
    while got.len() < 1 + 1 + BUFFER {
        got.push(serde_json::from_str(&next_line(&mut out, "the receiver").await).unwrap());
    }
    for g in &got {
        assert!(
            g.get("error").is_none(),
            "their parser refused a frame: {g}"
        );
        assert_eq!(g["version"], 1);
        assert_eq!(g["hostname"], "host");
        let h = &g["headers"];
        assert_eq!(h["Content-Type"], "application/logplex-1");
        assert_eq!(h["Logplex-Drain-Token"], drain_token.as_str());
        assert!(
            h["User-Agent"].as_str().unwrap().starts_with("logplex/"),
            "{h}"
        );
        assert!(!h["Logplex-Frame-Id"].as_str().unwrap().is_empty(), "{h}");
        let in_request = got.iter().filter(|o| o["request"] == g["request"]).count();
        assert_eq!(h["Logplex-Msg-Count"], in_request.to_string().as_str());
    }
    let fields = |g: &serde_json::Value| {
        (
            g["pri"].as_u64().unwrap(),
            g["timestamp"].as_str().unwrap().to_string(),
            g["appname"].as_str().unwrap().to_string(),
            g["procname"].as_str().unwrap().to_string(),
            g["msg"].as_str().unwrap().to_string(),
        )
    };
    let f = |pri: u64, app: &str, proc_: &str, msg: &str| {
        (
            pri,
            ts.to_string(),
            app.to_string(),
            proc_.to_string(),
            msg.to_string(),
        )
    };
    assert_eq!(got[0]["request"], 1);
    assert_eq!(fields(&got[0]), f(190, "app", "web.1", "first"));

    // The next delivery starts with L10, as Heroku's does.
    let l10 = &got[1];
    assert_eq!(l10["request"], 2);
    assert_eq!(
        (
            l10["pri"].as_u64(),
            l10["appname"].as_str(),
            l10["procname"].as_str()
        ),
        (Some(172), Some("heroku"), Some("logplex"))
    );
    let msg = l10["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("Error L10 (output buffer overflow): 15 messages dropped since "),
        "{msg}"
    );
    let rest: Vec<_> = got[2..].iter().map(fields).collect();
    assert_eq!(
        rest,
        vec![
            f(190, "app", "web.1", "filler 15"),
            f(190, "app", "web.1", "filler 16"),
            f(190, "app", "web.1", "Started GET \"/\""),
            f(158, "heroku", "router", rl),
            f(190, "app", "web.2", "Completed 200 OK in 3ms"),
        ]
    );
    // Their logfmt reading of the router line.
    let kv = &got[5]["kv"];
    for (k, v) in [
        ("at", "info"),
        ("method", "GET"),
        ("host", "demo.herokuapp.com"),
        ("request_id", "8601b555-6a76-4a4c-9ad6-2a3c4b5d6e7f"),
        ("dyno", "web.1"),
        ("connect", "0ms"),
        ("service", "3ms"),
        ("status", "200"),
        ("bytes", "1548"),
        ("protocol", "https"),
    ] {
        assert_eq!(kv[k], v, "{k} in {kv}");
    }
    drop(stdin);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// log-shuttle's bytes in, `logplex logs` out.

/// A request exactly as log-shuttle 0.19.1 (Go's net/http) writes it: Host, User-Agent,
/// Content-Length, then the other headers sorted, then `Accept-Encoding: gzip`. Frames
/// are `LEN <190>1 TIME shuttle APPNAME PROCID - - LINE` where LINE keeps its newline,
/// and the token is the Basic password (user `token`), from `-logs-url`.
fn log_shuttle_request(host: &str, token: &str, lines: &[&str]) -> Vec<u8> {
    use base64::Engine;
    let mut body = String::new();
    for l in lines {
        let frame =
            format!("<190>1 2016-03-08T02:43:26.693600+00:00 shuttle {token} shuttle - - {l}\n");
        body.push_str(&format!("{} {frame}", frame.len()));
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"));
    format!(
        "POST /logs HTTP/1.1\r\n\
         Host: {host}\r\n\
         User-Agent: log-shuttle/0.19.1 (go1.9.2; linux; amd64; gc)\r\n\
         Content-Length: {}\r\n\
         Authorization: Basic {auth}\r\n\
         Content-Type: application/logplex-1\r\n\
         Logplex-Msg-Count: {}\r\n\
         X-Request-Id: 3b5c6c9e-0c5a-4a1c-9bb6-0b6a3d2f1e4c\r\n\
         Accept-Encoding: gzip\r\n\
         \r\n\
         {body}",
        body.len(),
        lines.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_shuttle_bytes_read_back_with_logplex_logs() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let addr = s.addrs.http.unwrap();
    let lines = [
        "Started GET \"/siso/\"",
        "Completed 200 OK in 3ms",
        "a=1 b=\"two\"",
    ];
    let mut sock = connect(addr).await;
    sock.write_all(&log_shuttle_request(&addr.to_string(), &token, &lines))
        .await
        .unwrap();
    let mut resp = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8_lossy(&resp[..n]);
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logplex"));
    cmd.args(["logs", "-a", "demo"])
        .env("LOGPLEX_URL", s.api())
        .env("LOGPLEX_AUTH_KEY", KEY);
    let out = tokio::task::spawn_blocking(move || {
        output("logplex logs", &mut cmd, None, Duration::from_secs(30))
    })
    .await
    .expect("logplex logs ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: String = lines
        .iter()
        .map(|l| format!("2016-03-08T02:43:26.693600+00:00 app[shuttle]: {l}\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    s.stop().await;
}

/// `GET /apps/APP/log-drains` comes in parts as Heroku's `Range` header asks: 206 with
/// `Next-Range` while more follow, 200 for the last part, `Content-Range` on each, 416 for
/// a header that cannot be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lists_come_in_ranges() {
    let s = TestServer::start().await;
    s.create_app("ranged").await;
    let api = s.api();
    for i in 0..5 {
        let body = format!(r#"{{"url":"syslog://127.0.0.1:{}"}}"#, 9 + i);
        let (st, b) = request(&api, "POST", "/apps/ranged/log-drains", Some(&body)).await;
        assert_eq!(st, 201, "{b}");
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let get = |range: Option<String>| {
        let client = client.clone();
        let api = api.clone();
        async move {
            let mut req = hyper::Request::get(format!("{api}/apps/ranged/log-drains"))
                .header("authorization", format!("Bearer {KEY}"))
                .header("accept", "application/vnd.heroku+json; version=3");
            if let Some(r) = range {
                req = req.header("range", r);
            }
            let resp = client
                .request(req.body(http_body_util::Full::default()).unwrap())
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let header = |k: &str| {
                resp.headers()
                    .get(k)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let (content, next) = (header("content-range"), header("next-range"));
            let accept = header("accept-ranges");
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, v, content, next, accept)
        }
    };
    let ids = |v: &serde_json::Value| -> Vec<String> {
        let list = v.as_array().unwrap_or_else(|| panic!("{v}"));
        list.iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Without a header: all five (fewer than the default 200), by id.
    let (st, all, content, next, accept) = get(None).await;
    assert_eq!(st, 200);
    let mut want = ids(&all);
    assert_eq!(want.len(), 5);
    assert!(want.is_sorted(), "{want:?}");
    assert_eq!(content.unwrap(), format!("id {}..{}", want[0], want[4]));
    assert!(next.is_none());
    assert_eq!(accept.as_deref(), Some("id"));
    // Two at a time, following Next-Range: 206, 206, 200.
    for (order, header) in [("asc", "id ..; max=2"), ("desc", "id ..; order=desc,max=2")] {
        let (mut range, mut seen, mut statuses) = (Some(header.to_string()), vec![], vec![]);
        while let Some(r) = range.take() {
            assert!(statuses.len() < 5, "the parts never end");
            let (st, part, content, next, _) = get(Some(r)).await;
            let got = ids(&part);
            assert_eq!(
                content.unwrap(),
                format!("id {}..{}", got[0], got[got.len() - 1])
            );
            statuses.push(st);
            seen.extend(got);
            range = next;
        }
        assert_eq!(statuses, [206, 206, 200], "{order}");
        if order == "desc" {
            want.reverse();
        }
        assert_eq!(seen, want, "{order}");
    }
    for bad in ["name ..", "id ..; max=5000", "id"] {
        let (st, e, ..) = get(Some(bad.to_string())).await;
        if bad == "id" {
            // The attribute alone is the whole range.
            assert_eq!(st, 200, "{bad}: {e}");
            continue;
        }
        assert_eq!(st, 416, "{bad}: {e}");
        assert_eq!(e["id"], "requested_range_not_satisfiable", "{e}");
    }
    s.stop().await;
}
