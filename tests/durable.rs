//! The durable log end to end, on the real binary: lines acknowledged by `POST /logs` are
//! still there after `kill -9` (with `fsync = "batch"` as soon as they are acknowledged,
//! with `"interval"` once written), a torn last record is cut and the rest kept, numbering
//! resumes after the lines kept, and a graceful stop saves nothing to the store (everything
//! is in the log already).

mod common;

use common::serve::{write_config, Ports, Serve};
use common::{request, Tmpfs, KEY};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "t.00000000-0000-4000-8000-0000000000d1";

/// A config with the channel `dur` (fixed token) and `log` appended.
fn config(dir: &Path, p: &Ports, log: &str) -> std::path::PathBuf {
    let extra = format!(
        "[log]\n{log}\n[buffers]\nhistory_lines = 20000\n\
         [[channels]]\nname = \"dur\"\ntokens = {{ app = \"{TOKEN}\" }}\n"
    );
    write_config(dir, "config.toml", p, &dir.join("data/logplex.db"), &extra)
}

/// A logplex-1 batch of lines `tag-FIRST` … `tag-(FIRST+N-1)`.
fn batch(tag: &str, first: usize, n: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in first..first + n {
        let f = format!("<190>1 2026-11-27T10:00:00.000000+00:00 host app web.1 - - {tag}-{i}");
        body.extend_from_slice(format!("{} {f}", f.len()).as_bytes());
    }
    body
}

/// POSTs a batch to the HTTP input; the status, or 0 when no answer came (the process was
/// killed meanwhile).
async fn post(p: &Ports, body: Vec<u8>, n: usize) -> u16 {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("token:{TOKEN}")
        )
    );
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let req = hyper::Request::post(format!("http://{}/logs", p.http()))
        .header("content-type", "application/logplex-1")
        .header("authorization", auth)
        .header("logplex-msg-count", n.to_string())
        .body(Full::new(bytes::Bytes::from(body)))
        .expect("a request");
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(resp)) => resp.status().as_u16(),
        _ => 0,
    }
}

/// Every MSG in the channel's history, oldest first.
async fn history(p: &Ports) -> Vec<String> {
    history_of(p, r#"{"channel":"dur","num":20000}"#).await
}

fn kill9(s: &Serve) {
    s.child.signal(rustix::process::Signal::KILL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_survive_kill_9_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    let c = config(dir.path(), &p, "fsync = \"batch\"");
    let env = [("LOGPLEX_AUTH_KEY", KEY)];
    let mut acked: Vec<String> = Vec::new();
    let mut next = 0usize;
    let started = Instant::now();
    for round in 0..20 {
        let mut s = Serve::start(&c, p.api(), &env);
        // Everything acknowledged so far is there, once, in order.
        let got = history(&p).await;
        assert_eq!(
            got.len(),
            acked.len(),
            "round {round}: {} lines back of {} acknowledged (first missing: {:?})",
            got.len(),
            acked.len(),
            acked.iter().find(|a| !got.contains(a))
        );
        assert_eq!(
            got, acked,
            "round {round}: history differs from what was acknowledged"
        );
        // Batches go in from two clients while the process is killed at a random moment.
        let deadline = Instant::now() + Duration::from_millis(20 + (round * 37 % 150) as u64);
        let mut senders = Vec::new();
        for client in 0..2 {
            let first = next + client * 100_000;
            senders.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut i = first;
                while Instant::now() < deadline {
                    let n = 20;
                    if post(&p, batch("l", i, n), n).await == 204 {
                        ok.push((i, n));
                    }
                    i += n;
                }
                ok
            }));
        }
        tokio::time::sleep_until(deadline.into()).await;
        kill9(&s);
        let _ = s.wait_exit(Duration::from_secs(10));
        let mut done: Vec<(usize, usize)> = Vec::new();
        for t in senders {
            done.extend(t.await.unwrap());
        }
        // A batch answered 204 before the kill is on disk; in-flight ones may or may not be
        // (they were never acknowledged): the next round reads what is there and checks
        // the acknowledged ones are, by content.
        let s2 = Serve::start(&c, p.api(), &env);
        let got = history(&p).await;
        for (i, n) in &done {
            for k in *i..i + n {
                let want = format!("l-{k}");
                assert!(
                    got.contains(&want),
                    "round {round}: acknowledged line {want} lost by kill -9 ({} lines back)",
                    got.len()
                );
            }
        }
        acked = got;
        next += 200_000;
        // Killed again (the guard's drop), idle this time.
        drop(s2);
    }
    eprintln!(
        "20 kill -9 rounds, {} lines acknowledged and kept, in {:.1}s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(!acked.is_empty(), "no batch was ever acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_interval_fsync_what_was_written_survives_kill_9_and_numbering_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    let c = config(dir.path(), &p, "fsync = \"interval\"");
    let env = [("LOGPLEX_AUTH_KEY", KEY)];
    let s = Serve::start(&c, p.api(), &env);
    for b in 0..10 {
        assert_eq!(post(&p, batch("a", b * 100, 100), 100).await, 204);
    }
    // Written within the flush window (2 ms); the page cache survives the process.
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill9(&s);
    drop(s);
    let s = Serve::start(&c, p.api(), &env);
    let got = history(&p).await;
    let want: Vec<String> = (0..1000).map(|i| format!("a-{i}")).collect();
    assert_eq!(got, want, "history after kill -9 in interval mode");
    // New lines are numbered after the kept ones: an SSE stream's ids keep growing.
    assert_eq!(post(&p, batch("b", 0, 1), 1).await, 204);
    let url = session_url(&p, r#"{"channel":"dur","num":2}"#).await;
    let (_, sse) =
        common::request_with(&url, "GET", "", None, &[("accept", "text/event-stream")]).await;
    let ids: Vec<u64> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.trim().parse().ok())
        .collect();
    assert_eq!(
        ids,
        vec![1000, 1001],
        "SSE ids of the last two lines: {sse}"
    );
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_cut_and_the_rest_kept_and_a_stop_saves_nothing_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    let c = config(dir.path(), &p, "");
    let env = [("LOGPLEX_AUTH_KEY", KEY)];
    let mut s = Serve::start(&c, p.api(), &env);
    for b in 0..5 {
        assert_eq!(post(&p, batch("t", b * 10, 10), 10).await, 204);
    }
    let t0 = Instant::now();
    assert!(s.stop().success(), "graceful stop: {}", s.stderr_text());
    let stop = t0.elapsed();
    assert!(stop < Duration::from_secs(3), "a stop took {stop:?}");
    // The store holds no saved history: the log has it all.
    let db = rusqlite::Connection::open(dir.path().join("data/logplex.db")).unwrap();
    let saved: i64 = db
        .query_row("SELECT count(*) FROM history", [], |r| r.get(0))
        .unwrap();
    assert_eq!(saved, 0, "history rows saved in the store at stop");
    drop(db);
    // A torn record at the end of the active segment: half of a record's bytes.
    let logdir = dir.path().join("data/log");
    let mut segs: Vec<_> = std::fs::read_dir(&logdir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    let last = segs.last().expect("a segment");
    let bytes = std::fs::read(last).unwrap();
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[..bytes.len().min(90) / 2]);
    std::fs::write(last, &torn).unwrap();
    let s = Serve::start(&c, p.api(), &env);
    let got = history(&p).await;
    let want: Vec<String> = (0..50).map(|i| format!("t-{i}")).collect();
    assert_eq!(got, want, "history after a torn tail");
    assert_eq!(
        std::fs::metadata(last).unwrap().len(),
        bytes.len() as u64,
        "the torn tail was cut back to the last whole record"
    );
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_reach_back_past_the_ring_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    // A ring of 100 lines; 1,000 sent.
    let extra = format!(
        "[buffers]\nhistory_lines = 100\n\
         [[channels]]\nname = \"dur\"\ntokens = {{ app = \"{TOKEN}\" }}\n"
    );
    let c = write_config(
        dir.path(),
        "config.toml",
        &p,
        &dir.path().join("data/logplex.db"),
        &extra,
    );
    let env = [("LOGPLEX_AUTH_KEY", KEY)];
    let mut s = Serve::start(&c, p.api(), &env);
    for b in 0..10 {
        assert_eq!(post(&p, batch("r", b * 100, 100), 100).await, 204);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let want: Vec<String> = (0..1000).map(|i| format!("r-{i}")).collect();
    let got = history_of(&p, r#"{"channel":"dur","num":5000}"#).await;
    assert_eq!(got, want, "1,000 lines through a ring of 100");
    let got = history_of(&p, r#"{"channel":"dur","num":250}"#).await;
    assert_eq!(got, want[750..], "the last 250");
    // Filters apply to the lines from the log too.
    let got = history_of(&p, r#"{"channel":"dur","num":3,"grep":"r-12"}"#).await;
    assert_eq!(got, ["r-127", "r-128", "r-129"], "grep over the log");
    // And after a restart.
    assert!(s.stop().success(), "{}", s.stderr_text());
    let s = Serve::start(&c, p.api(), &env);
    let got = history_of(&p, r#"{"channel":"dur","num":1000}"#).await;
    assert_eq!(got, want, "after a restart");
    drop(s);
}

/// The URL of a session made with `body`.
async fn session_url(p: &Ports, body: &str) -> String {
    let api = format!("http://{}", p.api());
    let (st, b) = request(&api, "POST", "/v2/sessions", Some(body)).await;
    assert_eq!(st, 201, "session {body}: {b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("session JSON");
    v["url"].as_str().expect("a session url").to_string()
}

/// Every MSG of a session made with `body`, oldest first.
async fn history_of(p: &Ports, body: &str) -> Vec<String> {
    let url = session_url(p, body).await;
    let (st, text) = common::request_with(&url, "GET", "", None, &[]).await;
    assert_eq!(st, 200, "{text}");
    text.lines()
        .map(|l| l.rsplit_once(": ").map_or(l, |(_, m)| m).to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_degraded_then_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("disk"), "4m") else {
        common::skip("cannot mount a tmpfs here (needs root and mount(8))");
        return;
    };
    let p = Ports::free();
    let c = config(
        dir.path(),
        &p,
        &format!("path = \"{}\"", fs.0.join("log").display()),
    );
    let env = [("LOGPLEX_AUTH_KEY", KEY)];
    let s = Serve::start(&c, p.api(), &env);
    assert_eq!(post(&p, batch("ok", 0, 10), 10).await, 204);
    // Fill the disk but for a little.
    let filler = fs.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // Batches until the log fails to write: then 503 with Retry-After and degraded.
    let health = || async {
        common::request_with(
            &format!("http://{}", p.api()),
            "GET",
            "/healthcheck",
            None,
            &[],
        )
        .await
        .1
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 10;
    loop {
        let st = post(&p, batch("fill", i, 100), 100).await;
        i += 100;
        if st == 503 {
            break;
        }
        assert_eq!(st, 204, "a batch on a filling disk");
        assert!(
            Instant::now() < deadline,
            "the log never failed on a full disk"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let h = health().await;
    assert!(h.contains("degraded"), "healthcheck on a full disk: {h}");
    // Room again: the log tries the disk every second and recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if post(&p, batch("back", 0, 10), 10).await == 204 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log did not recover: {}",
            s.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let h = health().await;
    assert!(h.contains("normal"), "healthcheck after recovery: {h}");
    let got = history(&p).await;
    assert!(
        got.iter().any(|l| l == "back-9") && got.iter().any(|l| l == "ok-9"),
        "lines before and after the full disk: {got:?}"
    );
    drop(s);
}
