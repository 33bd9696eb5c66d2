//! `logplex shuttle`, the real binary, the way log-shuttle users run it: against an
//! in-process router (stdin and a command's output, `-s`/`-d`, long lines, `--batch-size`
//! and `--wait`) and against small HTTP inputs written here that answer slowly or refuse,
//! to check drop vs block (L12) and lost batches (L13) frame by frame.

mod common;

use bytes::Bytes;
use common::{ChildGuard, TestServer, KEY};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::process::Command;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, timeout, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_logplex");
/// The token given to the shuttle when it talks to an input written here.
const TOKEN: &str = "t.01234567-89ab-4cde-8f01-23456789abcd";

/// `logplex shuttle ARGS` with stdin, stdout and stderr piped, pointed at `api` (admin key
/// [`KEY`]) and at the HTTP input `ingest`; killed and reaped if the test drops it.
fn shuttle(api: &str, ingest: &str, args: &[&str]) -> Shuttle {
    let cwd = std::env::temp_dir();
    let mut guard = ChildGuard::spawn(
        "logplex shuttle",
        Command::new(BIN)
            .arg("shuttle")
            .args(args)
            .current_dir(cwd)
            .env("LOGPLEX_URL", api)
            .env("LOGPLEX_AUTH_KEY", KEY)
            .env("LOGPLEX_INGEST_URL", ingest)
            .env_remove("LOGPLEX_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let c = guard.child();
    let (stdin, stdout, stderr) = (c.stdin.take(), c.stdout.take(), c.stderr.take());
    Shuttle {
        stdin: stdin.map(|p| tokio::process::ChildStdin::from_std(p).expect("async stdin")),
        stdout: stdout.map(|p| tokio::process::ChildStdout::from_std(p).expect("async stdout")),
        stderr: stderr.map(|p| tokio::process::ChildStderr::from_std(p).expect("async stderr")),
        guard,
    }
}

/// A running shuttle: the [`ChildGuard`] that ends it, and async ends of its pipes.
struct Shuttle {
    guard: ChildGuard,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
}

impl Shuttle {
    /// Closes stdin and waits for the exit (callers bound it with a timeout).
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.stdin.take();
        loop {
            if let Some(st) = self.guard.try_wait() {
                return Ok(st);
            }
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// Closes stdin, reads stdout and stderr to their end and waits for the exit.
    async fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.stdin.take();
        let (stdout, stderr) =
            tokio::try_join!(read_all(self.stdout.take()), read_all(self.stderr.take()))?;
        let status = self.wait().await?;
        Ok(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }
}

async fn read_all(r: Option<impl AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        r.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// The shuttle against the router of `server`.
fn shuttle_to(server: &TestServer, args: &[&str]) -> Shuttle {
    let ingest = format!("http://{}", server.addrs.http.expect("HTTP input on"));
    shuttle(&server.api(), &ingest, args)
}

/// Writes `input` to the child's stdin, closes it and waits (bounded) for the exit.
async fn feed_and_wait(mut child: Shuttle, input: &[u8], limit: Duration) -> (ExitStatus, String) {
    let mut stdin = child.stdin.take().unwrap();
    timeout(limit, stdin.write_all(input))
        .await
        .expect("the shuttle reads its input")
        .unwrap();
    drop(stdin);
    let out = timeout(limit, child.wait_with_output())
        .await
        .expect("the shuttle exits once its input is sent")
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The MSG of a session line `TIMESTAMP SOURCE[PROCID]: MSG`.
fn msg(line: &str) -> &str {
    line.split_once("]: ").map_or("", |(_, m)| m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_lines_arrive_in_order_as_app_web1_and_source_and_dyno_are_respected() {
    let server = TestServer::start().await;
    server.create_app("demo").await;

    let child = shuttle_to(&server, &["-a", "demo"]);
    let (status, err) = feed_and_wait(child, b"one\ntwo\r\nthree\n", Duration::from_secs(10)).await;
    assert!(status.success(), "{status}: {err}");
    // A source the app has no token for yet gets one.
    let child = shuttle_to(&server, &["-a", "demo", "-s", "worker", "-d", "worker.3"]);
    let (status, err) = feed_and_wait(child, b"four", Duration::from_secs(10)).await;
    assert!(status.success(), "{status}: {err}");

    let h = server.wait_history("demo", |h| h.len() >= 4).await;
    let tails: Vec<&str> = h
        .iter()
        .map(|l| l.split_once(' ').map_or("", |(_, rest)| rest))
        .collect();
    assert_eq!(
        tails,
        [
            "app[web.1]: one",
            "app[web.1]: two",
            "app[web.1]: three",
            "worker[worker.3]: four"
        ],
        "{h:?}"
    );
    // TIMESTAMP as log-shuttle writes it: UTC with microseconds.
    let ts = h[0].split(' ').next().unwrap();
    assert_eq!(ts.len(), "2016-03-08T02:43:26.693600+00:00".len(), "{ts}");
    assert!(ts.ends_with("+00:00"), "{ts}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_line_arrives_split_at_utf8_boundaries_and_whole() {
    let server = TestServer::start().await;
    server.create_app("demo").await;

    // 11 bytes a round (1 + 1 + 3 + 4 + 2), so cuts every 10 bytes keep landing inside
    // a character and must move back to its start.
    let long = "ab€😀é".repeat(12);
    let ascii = "0123456789".repeat(3) + "x";
    let input = format!("before\n{long}\n{ascii}\nafter\n");
    let child = shuttle_to(&server, &["-a", "demo", "--max-line-length", "10"]);
    let (status, err) = feed_and_wait(child, input.as_bytes(), Duration::from_secs(10)).await;
    assert!(status.success(), "{status}: {err}");

    let h = server
        .wait_history("demo", |h| h.last().is_some_and(|l| msg(l) == "after"))
        .await;
    let msgs: Vec<&str> = h.iter().map(|l| msg(l)).collect();
    assert_eq!(msgs.first(), Some(&"before"), "{h:?}");
    assert_eq!(msgs.last(), Some(&"after"), "{h:?}");
    let middle = &msgs[1..msgs.len() - 1];
    assert!(
        middle.iter().all(|m| !m.is_empty() && m.len() <= 10),
        "{middle:?}"
    );
    assert!(
        middle.iter().all(|m| !m.contains('\u{FFFD}')),
        "a character was cut: {middle:?}"
    );
    assert_eq!(middle.concat(), format!("{long}{ascii}"), "nothing lost");
    // The ASCII line is cut exactly every 10 bytes, the other one earlier where needed.
    assert_eq!(
        &middle[middle.len() - 4..],
        ["0123456789", "0123456789", "0123456789", "x"]
    );
    let long_pieces = &middle[..middle.len() - 4];
    assert!(long_pieces.len() > long.len() / 10, "{long_pieces:?}");
    assert!(
        long_pieces[..long_pieces.len() - 1]
            .iter()
            .any(|p| p.len() < 10),
        "{long_pieces:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_stdout_and_stderr_arrive_and_its_exit_code_is_kept() {
    if !common::need("sh", "a POSIX shell: apt-get install dash") {
        return;
    }
    let server = TestServer::start().await;
    server.create_app("demo").await;

    let child = shuttle_to(
        &server,
        &[
            "-a",
            "demo",
            "-d",
            "run.1",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    let (status, err) = feed_and_wait(child, b"", Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(3), "{err}");

    let h = server.wait_history("demo", |h| h.len() >= 2).await;
    let mut tails: Vec<&str> = h
        .iter()
        .map(|l| l.split_once(' ').map_or("", |(_, rest)| rest))
        .collect();
    tails.sort_unstable();
    assert_eq!(tails, ["app[run.1]: err", "app[run.1]: out"], "{h:?}");
    server.stop().await;
}

/// Polls the history (every 20 ms, at most `limit`) until a line's MSG is `text`; how long
/// that took.
async fn time_until_seen(server: &TestServer, text: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if server
            .history("demo", 100)
            .await
            .iter()
            .any(|l| msg(l) == text)
        {
            return Some(start.elapsed());
        }
        sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_goes_at_once_and_a_partial_one_after_the_wait() {
    let server = TestServer::start().await;
    server.create_app("demo").await;

    let mut child = shuttle_to(
        &server,
        &["-a", "demo", "--batch-size", "2", "--wait", "5s"],
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\nsecond\n").await.unwrap();
    stdin.flush().await.unwrap();
    let full = time_until_seen(&server, "second", Duration::from_secs(4)).await;
    assert!(
        full.is_some_and(|t| t < Duration::from_secs(2)),
        "a full batch waited: {full:?}"
    );

    // stdin stays open: only the wait sends a lone line.
    stdin.write_all(b"third\n").await.unwrap();
    stdin.flush().await.unwrap();
    let partial = time_until_seen(&server, "third", Duration::from_secs(9)).await;
    assert!(
        partial.is_some_and(|t| t >= Duration::from_millis(4500) && t < Duration::from_secs(8)),
        "a partial batch should go 5s after its first line: {partial:?}"
    );

    drop(stdin);
    let status = timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the shuttle exits at the end of stdin")
        .unwrap();
    assert!(status.success(), "{status}");
    let h = server.history("demo", 100).await;
    let msgs: Vec<&str> = h.iter().map(|l| msg(l)).collect();
    assert_eq!(msgs, ["first", "second", "third"]);
    server.stop().await;
}

/// One request an input written here received.
#[derive(Debug)]
struct Received {
    msg_count: Option<usize>,
    frames: Vec<Frame>,
}

/// The fields of one RFC 5424 frame that the shuttle sets.
#[derive(Debug)]
struct Frame {
    pri: String,
    host: String,
    app: String,
    procid: String,
    msg: String,
}

/// Cuts a logplex-1 body into its octet-counted frames and their fields.
fn parse_body(body: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ').expect("LEN SP");
        let len: usize = std::str::from_utf8(&rest[..space])
            .unwrap()
            .parse()
            .expect("octet count");
        let end = space + 1 + len;
        assert!(end <= rest.len(), "frame runs past the body");
        let text = std::str::from_utf8(&rest[space + 1..end]).expect("UTF-8 frame");
        let f: Vec<&str> = text.splitn(8, ' ').collect();
        assert_eq!(f.len(), 8, "{text}");
        assert_eq!((f[5], f[6]), ("-", "-"), "{text}");
        frames.push(Frame {
            pri: f[0].into(),
            host: f[2].into(),
            app: f[3].into(),
            procid: f[4].into(),
            msg: f[7].into(),
        });
        rest = &rest[end..];
    }
    frames
}

/// A tiny HTTP input on 127.0.0.1: each request is recorded, held for the time `answer`
/// gives for its (0-based) number, then answered with that status.
struct Input {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Input {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Input {
    async fn start(answer: fn(usize) -> (Duration, u16)) -> Input {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let task = tokio::spawn(async move {
            // Connections end with the test; at most a few are opened by one shuttle.
            for _ in 0..64 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let msg_count = parts
                                .headers
                                .get("logplex-msg-count")
                                .and_then(|v| v.to_str().ok()?.parse().ok());
                            let n = {
                                let mut seen = seen.lock().unwrap();
                                seen.push(Received {
                                    msg_count,
                                    frames: parse_body(&body),
                                });
                                seen.len() - 1
                            };
                            let (hold, status) = answer(n);
                            sleep(hold).await;
                            let text = if status == 400 {
                                "frame 1 is malformed"
                            } else {
                                ""
                            };
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(text)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Input {
            addr,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

/// `count` numbered lines, each padded to about `width` bytes.
fn numbered(count: usize, width: usize) -> String {
    (0..count)
        .map(|i| format!("{:<width$}\n", format!("line-{i:04}")))
        .collect()
}

/// The number of a line made by [`numbered`].
fn number(msg: &str) -> usize {
    msg.trim_end()
        .strip_prefix("line-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered line: {msg:?}"))
}

/// The N of `Error LNN: N messages WHAT since TIME.` when `msg` is that notice.
fn notice_count(msg: &str, code: &str, what: &str) -> Option<u64> {
    let rest = msg.strip_prefix(&format!("Error {code}: "))?;
    let (n, rest) = rest.split_once(' ')?;
    let time = rest
        .strip_prefix(&format!("messages {what} since "))?
        .strip_suffix('.')?;
    assert_eq!(
        time.len(),
        "2016-03-08T02:43:26.693600+00:00".len(),
        "{msg}"
    );
    n.parse().ok()
}

/// Checks the frames of every request (headers, fields) and returns the numbers of the
/// lines delivered, in order, and the N of every L12 and L13 notice.
fn account(received: &[Received]) -> (Vec<usize>, Vec<u64>, Vec<u64>) {
    let (mut lines, mut l12, mut l13) = (Vec::new(), Vec::new(), Vec::new());
    for r in received {
        assert_eq!(r.msg_count, Some(r.frames.len()), "Logplex-Msg-Count");
        for f in &r.frames {
            assert_eq!(f.app, TOKEN);
            if f.pri == "<172>1" {
                assert_eq!(
                    (f.host.as_str(), f.procid.as_str()),
                    ("heroku", "log-shuttle")
                );
                if let Some(n) = notice_count(&f.msg, "L12", "dropped") {
                    l12.push(n);
                } else if let Some(n) = notice_count(&f.msg, "L13", "lost") {
                    l13.push(n);
                } else {
                    panic!("unknown notice {:?}", f.msg);
                }
            } else {
                assert_eq!((f.pri.as_str(), f.procid.as_str()), ("<190>1", "web.1"));
                lines.push(number(&f.msg));
            }
        }
    }
    (lines, l12, l13)
}

fn slow_300ms(_: usize) -> (Duration, u16) {
    (Duration::from_millis(300), 204)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_reports_every_dropped_line_in_an_l12() {
    let input = Input::start(slow_300ms).await;
    let child = shuttle(
        "http://127.0.0.1:9",
        &input.url(),
        &[
            "-a",
            "demo",
            "--token",
            TOKEN,
            "--back-buff",
            "1",
            "--batch-size",
            "10",
            "--drop",
        ],
    );
    let (status, err) =
        feed_and_wait(child, numbered(500, 20).as_bytes(), Duration::from_secs(15)).await;
    assert!(status.success(), "{status}: {err}");

    let received = input.take();
    let (lines, l12, l13) = account(&received);
    assert!(!l12.is_empty() && l12.iter().all(|&n| n > 0), "{l12:?}");
    assert!(l13.is_empty(), "{l13:?}");
    assert_eq!(
        lines.len() as u64 + l12.iter().sum::<u64>(),
        500,
        "delivered {} lines, L12 said {l12:?}",
        lines.len()
    );
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    // The oldest lines go: what follows the batch in flight is the newest.
    assert_eq!(lines.last(), Some(&499));
    // Each L12 is the first frame of its request.
    for r in &received {
        for f in r.frames.iter().skip(1) {
            assert_eq!(f.pri, "<190>1", "a notice after a line");
        }
    }
}

fn slow_100ms(_: usize) -> (Duration, u16) {
    (Duration::from_millis(100), 204)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_drop_blocks_the_writer_and_delivers_every_line() {
    // 100 ms a request rather than 300: the 50 batches go one after the other.
    let input = Input::start(slow_100ms).await;
    let mut child = shuttle(
        "http://127.0.0.1:9",
        &input.url(),
        &[
            "-a",
            "demo",
            "--token",
            TOKEN,
            "--back-buff",
            "1",
            "--batch-size",
            "10",
            "--no-drop",
        ],
    );
    // About 200 KiB: more than the pipe (64 KiB), the shuttle's read buffer and its three
    // batches hold, so the writer has to wait for deliveries.
    let data = numbered(500, 400);
    let mut stdin = child.stdin.take().unwrap();
    let start = Instant::now();
    timeout(Duration::from_secs(20), stdin.write_all(data.as_bytes()))
        .await
        .expect("the shuttle keeps reading")
        .unwrap();
    let blocked = start.elapsed();
    drop(stdin);
    let out = timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the shuttle exits")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        blocked >= Duration::from_secs(1),
        "the writer never waited: {blocked:?}"
    );

    let (lines, l12, l13) = account(&input.take());
    assert!(l12.is_empty() && l13.is_empty(), "{l12:?} {l13:?}");
    assert_eq!(lines, (0..500).collect::<Vec<_>>());
}

fn refuse_first(n: usize) -> (Duration, u16) {
    (Duration::ZERO, if n == 0 { 400 } else { 204 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_reported_in_an_l13_in_front_of_the_next() {
    let input = Input::start(refuse_first).await;
    let child = shuttle(
        "http://127.0.0.1:9",
        &input.url(),
        &["-a", "demo", "--token", TOKEN, "--batch-size", "3"],
    );
    let (status, err) =
        feed_and_wait(child, numbered(5, 0).as_bytes(), Duration::from_secs(10)).await;
    // A lost batch is told, never fatal.
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.contains("answered 400 Bad Request: frame 1 is malformed; 3 lines lost."),
        "{err}"
    );

    let received = input.take();
    assert_eq!(received.len(), 2, "{received:?}");
    let (refused, _, _) = account(&received[..1]);
    assert_eq!(refused, [0, 1, 2]);
    let next = &received[1];
    assert_eq!(next.frames[0].pri, "<172>1");
    assert_eq!(
        notice_count(&next.frames[0].msg, "L13", "lost"),
        Some(refused.len() as u64),
        "{:?}",
        next.frames[0]
    );
    let (lines, l12, l13) = account(&received[1..]);
    assert_eq!((lines, l12, l13), (vec![3, 4], vec![], vec![3]));
}

fn unavailable_four_times(n: usize) -> (Duration, u16) {
    (Duration::ZERO, if n < 4 { 503 } else { 204 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_exhausts_its_tries_is_reported_in_an_l13() {
    let input = Input::start(unavailable_four_times).await;
    let mut child = shuttle(
        "http://127.0.0.1:9",
        &input.url(),
        &["-a", "demo", "--token", TOKEN, "--batch-size", "2"],
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(numbered(2, 0).as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    // Four tries, 0.5 + 1 + 2 s apart; the next line comes after them.
    let deadline = Instant::now() + Duration::from_secs(8);
    while input.received.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "fewer than four tries");
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(100)).await;
    stdin.write_all(b"line-0002\n").await.unwrap();
    drop(stdin);
    let out = timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the shuttle exits")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("gave up after 4 tries, 2 lines lost."),
        "{err}"
    );

    let received = input.take();
    assert_eq!(received.len(), 5, "{received:?}");
    let (lines, l12, l13) = account(&received[4..]);
    assert_eq!((lines, l12, l13), (vec![2], vec![], vec![2]));
    assert_eq!(received[4].frames[0].pri, "<172>1");
}

fn refuse_first_two(n: usize) -> (Duration, u16) {
    (Duration::ZERO, if n < 2 { 400 } else { 204 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l13_lost_with_its_batch_is_reported_again_with_the_earlier_time() {
    let input = Input::start(refuse_first_two).await;
    let child = shuttle(
        "http://127.0.0.1:9",
        &input.url(),
        &["-a", "demo", "--token", TOKEN, "--batch-size", "2"],
    );
    let (status, err) =
        feed_and_wait(child, numbered(6, 0).as_bytes(), Duration::from_secs(10)).await;
    assert!(status.success(), "{status}: {err}");

    let received = input.take();
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(account(&received[..1]), (vec![0, 1], vec![], vec![]));
    assert_eq!(account(&received[1..2]), (vec![2, 3], vec![], vec![2]));
    // Both refused batches are counted once, since the first loss.
    assert_eq!(account(&received[2..]), (vec![4, 5], vec![], vec![4]));
    let since = |r: &Received| {
        r.frames[0]
            .msg
            .rsplit_once(" since ")
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(since(&received[2]), since(&received[1]));
}
