//! Syslog drains with the durable log on, against receivers written here (a tokio TCP
//! listener that can be stopped and started again on the same port, optionally slow): a
//! receiver down while lines arrive gets every line exactly once and in order after it
//! returns, with no L10; a slow receiver gets all of a 100 k-line burst; `kill -9` of the
//! server mid-delivery resends at most one batch; a drain behind `drains.max_lag` skips
//! forward with exactly one L10 that counts the lines skipped, and so does one whose unsent
//! lines retention deleted, or the log never wrote (a full tmpfs); an HTTP(S) drain whose
//! tries run out (HTTP 503, a refused certificate) skips nothing and resumes after a
//! restart, even one before its first delivery.

mod common;

use common::serve::{free_port, write_config, Ports, Serve};
use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// A syslog receiver (octet-counted frames) on a fixed port: the MSG of every frame, in
/// the order received, across its restarts.
struct Sink {
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
    /// Pause after each read of at most `chunk` bytes (a slow, single-threaded receiver).
    pause: Option<(usize, Duration)>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Sink {
    fn new(port: u16, pause: Option<(usize, Duration)>) -> Sink {
        Sink {
            port,
            got: Arc::default(),
            pause,
            tasks: Arc::default(),
        }
    }

    /// Listens (again) on its port.
    async fn start(&self) {
        let listener = {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                    Ok(l) => break l,
                    Err(e) if Instant::now() > deadline => panic!("rebind {}: {e}", self.port),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        };
        let (got, pause, tasks) = (self.got.clone(), self.pause, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let got = got.clone();
                let t = tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; pause.map_or(64 << 10, |p| p.0)];
                    loop {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        let (frames, used) = receiver::split_frames(&buf);
                        let msgs: Vec<String> = frames.iter().map(|f| msg_of(f)).collect();
                        got.lock().unwrap().extend(msgs);
                        buf.drain(..used);
                        if let Some((_, d)) = pause {
                            tokio::time::sleep(d).await;
                        }
                    }
                });
                tasks.lock().unwrap().push(t);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Stops listening and closes every connection.
    async fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn got(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (at most `secs`) until `pred` holds for what it received.
    async fn wait(&self, secs: u64, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let g = self.got();
            if pred(&g) || Instant::now() > deadline {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The MSG of a drain frame `<PRI>1 TIME HOST APP PROCID - - MSG`.
fn msg_of(frame: &[u8]) -> String {
    let s = String::from_utf8_lossy(frame);
    s.splitn(8, ' ').nth(7).unwrap_or("").trim_end().to_string()
}

/// Sends `tag-FIRST` … `tag-(FIRST+N-1)` to the syslog TCP input in one connection.
async fn send(addr: std::net::SocketAddr, token: &str, tag: &str, first: usize, n: usize) {
    let mut c = connect(addr).await;
    let mut buf = String::new();
    for i in first..first + n {
        buf += &octet(&frame(token, "web.1", &format!("{tag}-{i}")));
    }
    c.write_all(buf.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
}

async fn add_drain(api: &str, app: &str, port: u16) {
    add_drain_url(api, app, &format!("syslog://127.0.0.1:{port}")).await;
}

async fn add_drain_url(api: &str, app: &str, url: &str) {
    let (st, body) = request(
        api,
        "POST",
        &format!("/v2/channels/{app}/drains"),
        Some(&format!(r#"{{"url":"{url}"}}"#)),
    )
    .await;
    assert_eq!(st, 201, "{body}");
}

/// The lines of `tag`, by number, in the order received.
fn numbers(got: &[String], tag: &str) -> Vec<usize> {
    let p = format!("{tag}-");
    got.iter()
        .filter_map(|m| m.strip_prefix(&p).and_then(|n| n.parse().ok()))
        .collect()
}

fn l10s(got: &[String]) -> Vec<&String> {
    got.iter().filter(|m| m.contains("Error L10")).collect()
}

async fn drain_status(api: &str, app: &str) -> serde_json::Value {
    let (st, body) = request(api, "GET", &format!("/v2/channels/{app}/drains"), None).await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v[0]["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_while_lines_arrive_gets_every_line_once_in_order_and_no_l10() {
    let s = TestServer::start_with(|c| c.drains.buffer_lines = 100).await;
    let token = s.create_app("demo").await;
    let sink = Sink::new(free_port(), None);
    sink.start().await;
    let tcp = s.addrs.tcp.unwrap();
    // Lines from before the drain was added are not its to send: it starts at the end.
    send(tcp, &token, "pre", 0, 30).await;
    s.wait_history("demo", |h| h.len() == 30).await;
    add_drain(&s.api(), "demo", sink.port).await;
    send(tcp, &token, "up", 0, 10).await;
    sink.wait(10, |g| g.len() >= 10).await;

    sink.stop().await;
    // 20,000 lines in 2 s while the receiver is down: 200 times the drain's buffer.
    let (n, parts) = (20_000, 10);
    for p in 0..parts {
        send(tcp, &token, "down", p * n / parts, n / parts).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = drain_status(&s.api(), "demo").await;
    assert_eq!(st["lag_lines"], n, "{st}");
    assert_eq!(st["dropped"], 0, "{st}");
    sink.start().await;
    let t0 = Instant::now();
    let got = sink
        .wait(30, |g| numbers(g, "down").len() >= n && !g.is_empty())
        .await;
    let took = t0.elapsed();
    let down = numbers(&got, "down");
    assert_eq!(
        down,
        (0..n).collect::<Vec<_>>(),
        "every line once, in order"
    );
    assert_eq!(numbers(&got, "up"), (0..10).collect::<Vec<_>>());
    assert!(
        numbers(&got, "pre").is_empty(),
        "a new drain starts at the channel's end"
    );
    assert!(l10s(&got).is_empty(), "no L10: {:?}", l10s(&got));
    // And back on memory: lines sent now arrive too, after the others.
    send(tcp, &token, "after", 0, 50).await;
    let got = sink.wait(10, |g| numbers(g, "after").len() >= 50).await;
    assert_eq!(numbers(&got, "after"), (0..50).collect::<Vec<_>>());
    assert_eq!(got.len(), 10 + n + 50, "nothing twice");
    let st = drain_status(&s.api(), "demo").await;
    assert_eq!(
        (&st["lag_lines"], &st["dropped"]),
        (&0.into(), &0.into()),
        "{st}"
    );
    eprintln!("caught up {n} lines in {took:?} (reconnect backoff included)");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_gets_all_of_a_100k_burst_and_ingestion_does_not_wait() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    // Single-threaded and slow: 16 KiB per read, 2 ms after each (about 8 MB/s).
    let sink = Sink::new(free_port(), Some((16 << 10, Duration::from_millis(2))));
    sink.start().await;
    add_drain(&s.api(), "demo", sink.port).await;
    let n = 100_000;
    let t0 = Instant::now();
    send(s.addrs.tcp.unwrap(), &token, "burst", 0, n).await;
    s.wait_history("demo", |h| {
        h.last()
            .is_some_and(|l| l.ends_with(&format!("burst-{}", n - 1)))
    })
    .await;
    let ingest = t0.elapsed();
    let got = sink.wait(60, |g| g.len() >= n).await;
    let took = t0.elapsed();
    assert_eq!(
        numbers(&got, "burst"),
        (0..n).collect::<Vec<_>>(),
        "100 % delivered, once, in order"
    );
    assert!(l10s(&got).is_empty());
    assert!(
        ingest < took / 2,
        "ingestion ({ingest:?}) did not wait for the receiver ({took:?})"
    );
    eprintln!("burst of {n}: ingested in {ingest:?}, delivered in {took:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_max_lag_a_drain_skips_forward_with_exactly_one_l10() {
    let s = TestServer::start_with(|c| {
        c.drains.buffer_lines = 100;
        c.drains.max_lag = "1s".into();
    })
    .await;
    let token = s.create_app("demo").await;
    let sink = Sink::new(free_port(), None);
    add_drain(&s.api(), "demo", sink.port).await;
    send(s.addrs.tcp.unwrap(), &token, "old", 0, 1000).await;
    s.wait_history("demo", |h| h.last().is_some_and(|l| l.ends_with("old-999")))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sink.start().await;
    // The last 100 lines are in the drain's memory; the 900 before are older than 1 s.
    sink.wait(20, |g| numbers(g, "old").len() >= 100).await;
    // Nothing more comes (no second L10).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sink.got();
    let l10 = l10s(&got);
    assert_eq!(l10.len(), 1, "{l10:?}");
    assert!(
        l10[0].contains("Error L10 (output buffer overflow): 900 messages dropped since "),
        "{}",
        l10[0]
    );
    assert_eq!(numbers(&got, "old"), (900..1000).collect::<Vec<_>>());
    assert_eq!(drain_status(&s.api(), "demo").await["dropped"], 900);
    s.stop().await;
}

const TOKEN: &str = "t.00000000-0000-4000-8000-0000000000d7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_resumes_at_the_cursor_resending_at_most_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::free();
    // Slow: about 4 MB/s, so 150,000 lines take seconds to deliver; fewer could all be
    // delivered before the kill, the socket buffers on the way holding several MB.
    let sink = Sink::new(free_port(), Some((8 << 10, Duration::from_millis(2))));
    sink.start().await;
    let extra = format!(
        "[[channels]]\nname = \"k9\"\ntokens = {{ app = \"{TOKEN}\" }}\n\
         drains = [\"syslog://127.0.0.1:{}\"]\n",
        sink.port
    );
    let cfg = write_config(
        dir.path(),
        "config.toml",
        &p,
        &dir.path().join("data/logplex.db"),
        &extra,
    );
    let mut s = Serve::start(&cfg, p.api(), &[("LOGPLEX_AUTH_KEY", KEY)]);
    let n = 150_000;
    send(p.tcp(), TOKEN, "k", 0, n).await;
    // Mid-delivery: some lines arrived, far from all.
    let before = sink.wait(30, |g| g.len() >= n / 10).await.len();
    assert!(before < n, "the receiver was not slow enough: {before}");
    // Lines taken in and written to the log before the kill survive it (interval mode);
    // intake may have paced itself to the drain for a moment, so it gets a second.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.child.signal(rustix::process::Signal::KILL);
    let _ = s.wait_exit(Duration::from_secs(10));
    // What the kernel still held for the receiver arrives; then nothing more.
    let mut at_kill = sink.got().len();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sink.got().len();
        if now == at_kill {
            break;
        }
        at_kill = now;
    }
    let _s = Serve::start(&cfg, p.api(), &[("LOGPLEX_AUTH_KEY", KEY)]);
    let got = sink
        .wait(60, |g| {
            let nums = numbers(g, "k");
            nums.last() == Some(&(n - 1)) && nums.len() >= n
        })
        .await;
    let nums = numbers(&got, "k");
    let mut seen = vec![0u32; n];
    for &i in &nums {
        seen[i] += 1;
    }
    let missing: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).collect();
    assert!(
        missing.is_empty(),
        "lost {} lines, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let dups = nums.len() - n;
    assert!(
        dups <= 1024,
        "{dups} lines sent twice: more than one batch (1024)"
    );
    // Each run delivers in order: the second starts at most one batch back.
    let restart = nums[at_kill..].first().copied().unwrap_or(n);
    assert!(nums[..at_kill].windows(2).all(|w| w[1] == w[0] + 1));
    let gap = nums[at_kill..].windows(2).find(|w| w[1] != w[0] + 1);
    assert!(gap.is_none(), "after the restart: {gap:?}");
    assert!(
        restart + 1024 >= at_kill && restart <= at_kill,
        "resumed at {restart}, killed after {at_kill}"
    );
    assert!(l10s(&got).is_empty());
    // The drain's count goes on from the one saved with its cursor: every line once (the
    // batch sent again was not counted before the kill), not only those since the restart.
    let api = format!("http://{}", p.api());
    let mut st = drain_status(&api, "k9").await;
    for _ in 0..50 {
        if st["sent"] == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        st = drain_status(&api, "k9").await;
    }
    assert_eq!(st["sent"], n, "{st}");
    assert_eq!(st["dropped"], 0, "{st}");
    eprintln!("kill -9 after {at_kill} of {n} delivered; resent {dups}");
}

/// Sends `tag-FIRST` … `tag-(FIRST+N-1)`, each padded to about `size` bytes, to the syslog
/// TCP input in one connection.
async fn send_padded(addr: std::net::SocketAddr, token: &str, tag: &str, n: usize, size: usize) {
    let mut c = connect(addr).await;
    let pad = ".".repeat(size);
    let mut buf = String::new();
    for i in 0..n {
        buf += &octet(&frame(token, "web.1", &format!("{tag}-{i} {pad}")));
        if buf.len() > 1 << 20 {
            c.write_all(buf.as_bytes()).await.unwrap();
            buf.clear();
        }
    }
    c.write_all(buf.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
}

/// The count of an L10 notice (`… Error L10 (output buffer overflow): N messages dropped
/// since …`).
fn l10_count(msg: &str) -> u64 {
    msg.split("): ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an L10 notice: {msg}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deleting_unsent_lines_makes_the_drain_skip_them_with_exactly_one_l10() {
    // 64 MiB of log at most, in 4 MiB segments; 80 MB of lines while the receiver is down.
    let s = TestServer::start_with(|c| c.log.max_bytes = 64 << 20).await;
    let token = s.create_app("demo").await;
    let sink = Sink::new(free_port(), None);
    add_drain(&s.api(), "demo", sink.port).await;
    let n = 10_000;
    send_padded(s.addrs.tcp.unwrap(), &token, "r", n, 8000).await;
    s.wait_history("demo", |h| {
        h.last()
            .is_some_and(|l| l.starts_with(&format!("r-{} ", n - 1)))
    })
    .await;
    sink.start().await;
    let got = sink
        .wait(60, |g| numbers_padded(g).last() == Some(&(n - 1)))
        .await;
    let nums = numbers_padded(&got);
    let l10 = l10s(&got);
    assert_eq!(l10.len(), 1, "{l10:?}");
    let skipped = l10_count(l10[0]) as usize;
    assert!(
        skipped > 0 && skipped < n,
        "retention deleted {skipped} of {n} lines"
    );
    // The notice comes first, then every line retention kept, once, in order.
    assert!(got[0].contains("Error L10"), "{}", &got[0][..80]);
    assert_eq!(nums, (skipped..n).collect::<Vec<_>>(), "exactly the rest");
    let st = drain_status(&s.api(), "demo").await;
    assert_eq!(st["dropped"], skipped, "{st}");
    eprintln!("retention deleted {skipped} of {n} unsent lines; the drain said so once");
    s.stop().await;
}

/// The numbers of `r-N …` lines (padded), in the order received.
fn numbers_padded(got: &[String]) -> Vec<usize> {
    got.iter()
        .filter_map(|m| m.strip_prefix("r-")?.split(' ').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_the_log_never_wrote_are_skipped_with_exactly_one_l10_and_memory_is_sent() {
    // A full disk is real here: a 4 MiB tmpfs for the log, filled while lines arrive.
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("disk"), "4m") else {
        skip("cannot mount a tmpfs here (needs root and mount(8))");
        return;
    };
    let mut c = test_config(dir.path());
    c.log.path = fs.0.join("log").display().to_string();
    c.drains.buffer_lines = 100;
    let s = TestServer::start_in(dir, c).await;
    let token = s.create_app("demo").await;
    let sink = Sink::new(free_port(), None);
    sink.start().await;
    add_drain(&s.api(), "demo", sink.port).await;
    let tcp = s.addrs.tcp.unwrap();
    send(tcp, &token, "pre", 0, 10).await;
    sink.wait(10, |g| numbers(g, "pre").len() >= 10).await;
    sink.stop().await;
    // Let the log write `pre` (within milliseconds), then leave it no room.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let filler = fs.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // 2,000 lines the log cannot write; the drain's memory keeps the newest 100.
    let n = 2000;
    send(tcp, &token, "full", 0, n).await;
    s.wait_history("demo", |h| h.last().is_some_and(|l| l == "full-1999"))
        .await;
    sink.start().await;
    let got = sink
        .wait(30, |g| numbers(g, "full").last() == Some(&(n - 1)))
        .await;
    let l10 = l10s(&got);
    assert_eq!(l10.len(), 1, "{l10:?}");
    let skipped = l10_count(l10[0]) as usize;
    let full = numbers(&got, "full");
    // What the log wrote before the disk was full (nothing, or a few lines) comes first,
    // then the notice, then the drain's memory: every line once, or counted as skipped.
    let written = full.iter().take_while(|&&i| i < n - 100).count();
    assert_eq!(
        full,
        (0..written).chain(n - 100..n).collect::<Vec<_>>(),
        "memory after what was written"
    );
    assert_eq!(
        skipped,
        n - 100 - written,
        "the notice counts exactly the gap"
    );
    assert_eq!(numbers(&got, "pre"), (0..10).collect::<Vec<_>>());
    let st = drain_status(&s.api(), "demo").await;
    assert_eq!(st["dropped"], skipped, "{st}");
    eprintln!("{skipped} lines never written: skipped with one L10; {written} written first");
    // Room again: the log recovers by itself (then the stop can close it cleanly).
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, h) = request(&s.api(), "GET", "/healthcheck", None).await;
        if h.contains("normal") {
            break;
        }
        assert!(Instant::now() < deadline, "the log did not recover: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = s.stop().await;
    drop(fs);
    drop(dir);
}

/// An HTTP(S) drain with the log on, whose receiver fails every try of a batch until the
/// tries run out at a stop (a stop's flush tries at once): nothing is skipped or announced,
/// and after a restart the receiver, now working, gets every line once, in order.
/// `tls`: the receiver's certificate is refused until the restart trusts its CA.
async fn http_drain_tries_run_out(tls: bool) {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let dir = tempfile::tempdir().unwrap();
    let ok = Arc::new(AtomicBool::new(false));
    let answer = {
        let ok = ok.clone();
        move |_: &Received| if ok.load(SeqCst) { 200 } else { 503 }
    };
    let (sink, ca) = if tls {
        let (ca, cert, key) = make_certs(dir.path(), "certs");
        ok.store(true, SeqCst);
        (HttpSink::start_tls(&cert, &key, answer).await, Some(ca))
    } else {
        (HttpSink::start(answer).await, None)
    };
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{}/logs", sink.addr.port());
    let c = test_config(dir.path());
    let s = TestServer::start_in(dir, c).await;
    let token = s.create_app("demo").await;
    add_drain_url(&s.api(), "demo", &url).await;
    let n = 50;
    send(s.addrs.tcp.unwrap(), &token, "h", 0, n).await;
    // Failing: two tries of the first batch (HTTP 503, or the certificate refused).
    let failing = Instant::now() + Duration::from_secs(15);
    loop {
        let st = drain_status(&s.api(), "demo").await;
        let tried = if tls {
            st["state"] == "failing"
        } else {
            sink.requests().len() >= 2
        };
        if tried {
            if tls {
                let e = st["last_error"].as_str().unwrap_or("");
                assert!(e.contains("certificate"), "{st}");
            }
            break;
        }
        assert!(Instant::now() < failing, "the drain never tried: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = drain_status(&s.api(), "demo").await;
    assert_eq!(st["dropped"], 0, "{st}");
    // The stop's flush uses up the batch's tries at once; with the log it is kept.
    let dir = s.stop().await;
    if !tls {
        let reqs = sink.requests();
        let ids: std::collections::HashSet<String> = reqs
            .iter()
            .map(|r| r.header("logplex-frame-id").to_string())
            .collect();
        assert_eq!(
            (reqs.len(), ids.len()),
            (10, 1),
            "one batch, tried its 10 times"
        );
    }
    ok.store(true, SeqCst);
    let mut c = test_config(dir.path());
    c.drains.tls_ca_file = ca;
    let s = TestServer::start_in(dir, c).await;
    let delivered = |reqs: &[Received]| -> Vec<String> {
        reqs.iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| {
                receiver::split_frames(&r.body)
                    .0
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).trim_end().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let reqs = sink
        .wait(30, |r| {
            delivered(r)
                .iter()
                .any(|f| f.ends_with(&format!(" h-{}", n - 1)))
        })
        .await;
    let frames = delivered(&reqs);
    assert!(
        frames.iter().all(|f| !f.contains("Error L10")),
        "nothing was skipped: {frames:?}"
    );
    let nums: Vec<usize> = frames
        .iter()
        .filter_map(|f| f.rsplit_once(" h-").and_then(|(_, i)| i.parse().ok()))
        .collect();
    assert_eq!(
        nums,
        (0..n).collect::<Vec<_>>(),
        "every line once, in order"
    );
    let st = drain_status(&s.api(), "demo").await;
    assert_eq!(
        (&st["dropped"], &st["lag_lines"]),
        (&0.into(), &0.into()),
        "{st}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_drain_whose_tries_run_out_skips_nothing_and_resumes_after_a_restart() {
    http_drain_tries_run_out(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_drain_refusing_the_certificate_until_its_tries_run_out_skips_nothing() {
    if !need("openssl", "apt-get install openssl") {
        return;
    }
    http_drain_tries_run_out(true).await;
}

/// With the log, an HTTP drain whose receiver answers 503 for 16 s (six tries without the
/// cap: waits of up to 0.25 + 0.5 + 1 + 2 + 4 + 8 s, the next up to 16 s) waits at most
/// 4 s between tries, so the first line reaches the receiver at most about 4 s after it
/// works again; and the receiver was never left alone longer than that meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_drain_with_the_log_tries_at_least_every_4_s_while_its_receiver_fails() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let dir = tempfile::tempdir().unwrap();
    let ok = Arc::new(AtomicBool::new(false));
    let tries = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let answer = {
        let (ok, tries) = (ok.clone(), tries.clone());
        move |_: &Received| {
            tries.lock().unwrap().push(Instant::now());
            if ok.load(SeqCst) {
                200
            } else {
                503
            }
        }
    };
    let sink = HttpSink::start(answer).await;
    let url = format!("http://127.0.0.1:{}/logs", sink.addr.port());
    let c = test_config(dir.path());
    let s = TestServer::start_in(dir, c).await;
    let token = s.create_app("demo").await;
    add_drain_url(&s.api(), "demo", &url).await;
    send(s.addrs.tcp.unwrap(), &token, "w", 0, 20).await;
    let failing_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(16)).await;
    ok.store(true, SeqCst);
    let back = Instant::now();
    let reqs = sink.wait(15, |r| r.iter().any(|r| r.status == 200)).await;
    let first_ok = Instant::now();
    assert!(
        reqs.iter().any(|r| r.status == 200),
        "never delivered after the receiver came back"
    );
    let late = first_ok - back;
    assert!(
        late < Duration::from_millis(5500),
        "first line {late:?} after the receiver came back"
    );
    let tries = tries.lock().unwrap().clone();
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        tries.len() >= 6 && tries[0] - failing_from < Duration::from_secs(3),
        "{} tries, the first {:?} after the lines",
        tries.len(),
        tries.first().map(|t| *t - failing_from)
    );
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(5500)),
        "a wait between tries over 4 s: {gaps:?}"
    );
    s.stop().await;
}
