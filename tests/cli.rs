//! The real binary: `logplex serve` in a temporary directory, driven by the project's own
//! client commands (`apps:create`, `tokens`, `logs`, `shuttle`, `drains`) and by `logger`;
//! SIGTERM then `serve` again keeps the history.

mod common;

use common::output;
use common::serve::{write_config as write_config_file, Ports, Serve, BIN};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `dir/config.toml` on free ports, with the data directory `dir/data`: what a user has
/// in the folder they run `logplex` from.
fn write_config(dir: &Path) -> Ports {
    let p = Ports::free();
    write_config_file(dir, "config.toml", &p, &dir.join("data/logplex.db"), "");
    p
}

/// `logplex serve` with `dir/config.toml`, up and listening, its admin key written (the
/// listeners are bound before the store is opened, so the API can accept a connection a
/// moment before `data/admin.key` exists).
fn serve(dir: &Path, p: &Ports) -> Serve {
    let s = Serve::start(&dir.join("config.toml"), p.api(), &[]);
    let key = dir.join("data/admin.key");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !key.exists() {
        assert!(
            Instant::now() < deadline,
            "serve wrote no {}: {}",
            key.display(),
            s.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    s
}

/// SIGTERM; it must exit cleanly (history saved).
fn stop(mut server: Serve) {
    let st = server.stop();
    assert!(
        st.success(),
        "serve exited with {st}: {}",
        server.stderr_text()
    );
}

/// Runs a client command in `dir` the way a user does there: no `--url`, no
/// `LOGPLEX_URL`, so the API address and the admin key come from `./config.toml`.
fn client(dir: &Path, p: &Ports, args: &[&str], stdin: Option<&str>) -> Output {
    output(
        "logplex client",
        Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env_remove("LOGPLEX_URL")
            .env("LOGPLEX_INGEST_URL", format!("http://127.0.0.1:{}", p.http))
            .env_remove("LOGPLEX_AUTH_KEY"),
        stdin.map(str::as_bytes),
        Duration::from_secs(30),
    )
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_logs(dir: &Path, p: &Ports, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = client(dir, p, &["logs", "-a", "demo", "-n", "100"], None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lines: Vec<String> = text(&o).lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_logger_logs_shuttle_and_restart() {
    if !common::need("logger", "apt-get install bsdutils") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = write_config(d);
    let server = serve(d, &p);

    // The admin key was made on first start, readable by the owner only.
    let key = d.join("data/admin.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let o = client(d, &p, &["apps:create", "demo"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = client(d, &p, &["apps"], None);
    assert_eq!(text(&o).trim(), "demo");
    let o = client(d, &p, &["tokens", "-a", "demo"], None);
    let token = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("app "))
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("t."), "{token}");

    common::logger(p.tcp(), true, &token, "from logger");
    let o = client(
        d,
        &p,
        &["shuttle", "-a", "demo", "-d", "worker.1"],
        Some("from shuttle 1\nfrom shuttle 2\n"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let lines = wait_logs(d, &p, 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.ends_with(" app: from logger")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" app[worker.1]: from shuttle 2")),
        "{lines:?}"
    );
    let o = client(
        d,
        &p,
        &["logs", "-a", "demo", "-d", "worker", "-n", "1"],
        None,
    );
    assert_eq!(text(&o).lines().count(), 1);
    assert!(
        text(&o).ends_with("app[worker.1]: from shuttle 2\n"),
        "{}",
        text(&o)
    );
    let o = client(
        d,
        &p,
        &["logs", "-a", "demo", "--grep", "logger", "--json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(text(&o).trim()).unwrap();
    assert_eq!(v["message"], "from logger");
    // A window of receive time: all of it in the last hour, none before an hour ago.
    let o = client(d, &p, &["logs", "-a", "demo", "--since", "1h"], None);
    assert_eq!(text(&o).lines().count(), lines.len(), "{}", text(&o));
    let o = client(d, &p, &["logs", "-a", "demo", "--until", "1h"], None);
    assert!(o.status.success() && text(&o).is_empty(), "{}", text(&o));
    let o = client(d, &p, &["logs", "-a", "demo", "--since", "soon"], None);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("since: \"soon\" is neither"), "{err}");

    stop(server);
    let server = serve(d, &p);
    let after = wait_logs(d, &p, 3);
    assert_eq!(after, lines, "history survives SIGTERM and a new serve");
    stop(server);
}

#[test]
fn client_errors_are_one_sentence_with_the_right_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = write_config(d);
    // Server down.
    let o = run(Command::new(BIN)
        .args(["apps"])
        .env("LOGPLEX_URL", format!("http://127.0.0.1:{}", p.api))
        .env("LOGPLEX_AUTH_KEY", "k"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot reach the server"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Bad usage.
    let o = run(Command::new(BIN).args(["logs"]));
    assert_eq!(o.status.code(), Some(2));
    // Unknown app and wrong key against a running server.
    let server = serve(d, &p);
    let o = client(d, &p, &["logs", "-a", "nope"], None);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown app \"nope\""), "{err}");
    let o = run(Command::new(BIN)
        .args(["apps"])
        .env("LOGPLEX_URL", format!("http://127.0.0.1:{}", p.api))
        .env("LOGPLEX_AUTH_KEY", "wrong"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused the admin key"), "{err}");
    stop(server);
}

#[test]
fn a_bad_config_is_reported_whole_before_anything_listens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[buffers]\nhistory_lines = 0\n[ingest.tcp]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let o = run(Command::new(BIN).args(["serve", "--config"]).arg(&path));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("history_lines") && err.contains("ingest.tcp.listen"),
        "{err}"
    );
}

#[test]
fn drains_commands_never_print_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = write_config(d);
    let server = serve(d, &p);
    let o = client(d, &p, &["apps:create", "demo"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let url = "https://user:a+b&c@127.0.0.1:9/logs";
    let o = client(d, &p, &["drains:add", url, "-a", "demo"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = text(&o);
    assert!(
        out.starts_with("Successfully added drain https://user:***@127.0.0.1:9/logs (d."),
        "{out}"
    );
    let o = client(d, &p, &["drains", "-a", "demo"], None);
    let out = text(&o);
    assert!(out.contains("https://user:***@127.0.0.1:9/logs"), "{out}");
    for o in [&out, &String::from_utf8_lossy(&o.stderr).into_owned()] {
        assert!(!o.contains("a+b&c"), "{o}");
    }
    // The listing is a table with each drain's state; a host that does not resolve is
    // failing, with the resolver's error.
    let o = client(
        d,
        &p,
        &[
            "drains:add",
            "syslog://no-such-host.invalid:514",
            "-a",
            "demo",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = text(&client(d, &p, &["drains", "-a", "demo"], None));
        if out.contains(" failing ") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["URL", "TOKEN", "STATE", "SENT", "DROPPED", "LAG", "LAST", "ERROR"],
        "{out}"
    );
    let bad = lines
        .iter()
        .find(|l| l.starts_with("syslog://no-such-host.invalid:514 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        bad.contains(" failing ") && bad.contains("cannot resolve no-such-host.invalid"),
        "{out}"
    );
    // Removed by the URL as given, password and all.
    let o = client(d, &p, &["drains:remove", url, "-a", "demo"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        text(&o),
        "Successfully removed drain https://user:***@127.0.0.1:9/logs\n"
    );
    stop(server);
}

/// `logs --web` with these variables set (or removed, for `None`).
fn logs_web(dir: &Path, p: &Ports, env: &[(&str, Option<&str>)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(["logs", "-a", "demo", "-t", "--web"])
        .current_dir(dir)
        .env("LOGPLEX_URL", format!("http://127.0.0.1:{}", p.api))
        .env_remove("LOGPLEX_AUTH_KEY")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    run(&mut c)
}

/// The binary with `cmd`'s arguments, to its end (bounded: 30 s).
fn run(cmd: &mut Command) -> Output {
    output("logplex", cmd, None, Duration::from_secs(30))
}

/// A GET with a browser's `Accept`, over a plain socket: status line and body.
fn browser_get(url: &str) -> (String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html,application/xhtml+xml,*/*;q=0.8\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn logs_web_prints_the_live_page_and_opens_it_where_a_desktop_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = write_config(d);
    let server = serve(d, &p);
    let o = client(d, &p, &["apps:create", "demo"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // No display: the URL only, and success.
    let o = logs_web(d, &p, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = text(&o);
    let url = out.trim();
    assert_eq!(out.lines().count(), 1, "{out}");
    let prefix = format!("http://127.0.0.1:{}/sessions/", p.api);
    assert!(url.starts_with(&prefix), "{out}");
    // A browser gets the live page of that tail session; no admin key is in it.
    let (status, page) = browser_get(url);
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        page.contains(r#"data-app="demo""#) && page.contains(r#"data-tail="true""#),
        "{page}"
    );
    let key = std::fs::read_to_string(d.join("data/admin.key")).expect("data/admin.key");
    assert!(
        !page.contains(key.trim()),
        "the admin key is in the page: {page}"
    );

    // A desktop: the opener is asked to open the URL (a stand-in that writes it down).
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opened = d.join("opened");
    let script = bin.join("xdg-open");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" > '{}'\n",
            opened.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = logs_web(d, &p, &[("DISPLAY", Some(":99")), ("PATH", Some(&path))]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let url = text(&o).trim().to_string();
    assert!(url.starts_with(&prefix), "{url}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&opened).map_or(true, |s| s.trim() != url) {
        assert!(
            Instant::now() < deadline,
            "the opener was not run with {url}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A desktop without an opener: still the URL, still success.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = logs_web(
        d,
        &p,
        &[
            ("WAYLAND_DISPLAY", Some("wayland-0")),
            ("PATH", Some(empty.to_str().unwrap())),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text(&o).trim().starts_with(&prefix), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");

    // --web and --json do not go together.
    let o = client(d, &p, &["logs", "-a", "demo", "--web", "--json"], None);
    assert_eq!(o.status.code(), Some(2));
    stop(server);
}

/// A test that fails half-way leaves no `logplex serve` behind: its guard kills and reaps
/// it while the panic unwinds (so a piped `cargo test 2>&1 | cat` does not wait on it).
#[test]
fn a_failing_test_leaves_no_server_running() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let p = write_config(&d);
    let failed = std::thread::spawn(move || {
        let s = serve(&d, &p);
        std::panic::panic_any(s.pid());
    })
    .join()
    .expect_err("the thread fails");
    let pid = *failed.downcast::<u32>().expect("it failed with the pid");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    assert!(
        stat.is_err(),
        "serve (pid {pid}) outlived the failed test: {stat:?}"
    );
}
