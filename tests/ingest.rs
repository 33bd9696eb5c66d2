//! Ingest over real sockets: `logger` over TCP and UDP, `curl` and a hyper client over HTTP,
//! and every kind of bad input of `docs/input.md`, each with its answer.

mod common;

use bytes::Bytes;
use common::*;
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_rfc5424_octet_counted_over_tcp() {
    if !need("logger", "apt-get install bsdutils") {
        return;
    }
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let tcp = s.addrs.tcp.expect("the TCP input is on");
    logger(tcp, true, &token, "Started GET \"/\" for 127.0.0.1");
    let h = s.wait_history("demo", |h| !h.is_empty()).await;
    assert_eq!(h.len(), 1, "{h:?}");
    // logger sends its own timestamp and no PROCID.
    assert!(
        h[0].ends_with(" app: Started GET \"/\" for 127.0.0.1"),
        "{h:?}"
    );
    assert!(h[0].contains('T') && h[0].contains(':'), "{h:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_over_udp() {
    if !need("logger", "apt-get install bsdutils") {
        return;
    }
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let udp = s.addrs.udp.expect("the UDP input is on");
    logger(udp, false, &token, "hello over udp");
    let h = s.wait_history("demo", |h| !h.is_empty()).await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0].ends_with(" app: hello over udp"), "{h:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_posts_a_logplex_batch() {
    if !need("curl", "apt-get install curl") {
        return;
    }
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let body = format!(
        "{}{}",
        octet(&frame("anything", "web.1", "Started GET \"/siso/\"")),
        octet(&frame("anything", "web.2", "Completed 200 OK in 3ms"))
    );
    let http = s.addrs.http.expect("the HTTP input is on");
    let out = curl(&[
        "-u",
        &format!("token:{token}"),
        "-H",
        "Content-Type: application/logplex-1",
        "-H",
        "Logplex-Msg-Count: 2",
        "--data-binary",
        &body,
        &format!("http://{http}/logs"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "204",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = s.history("demo", 10).await;
    assert_eq!(
        h,
        [
            "2016-03-08T02:43:26.693600+00:00 app[web.1]: Started GET \"/siso/\"",
            "2016-03-08T02:43:26.693600+00:00 app[web.2]: Completed 200 OK in 3ms"
        ]
    );
    s.stop().await;
}

/// A 10 MB body: 413, answered from Content-Length before the body is read. curl sends
/// `Expect: 100-continue` for a body this size, so it sees the answer cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_10_mb_body_is_413_before_it_is_read() {
    if !need("curl", "apt-get install curl") {
        return;
    }
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let big = s.dir.path().join("big.body");
    std::fs::write(&big, vec![b'1'; 10 * 1024 * 1024]).expect("write the body file");
    let http = s.addrs.http.expect("the HTTP input is on");
    let out = curl(&[
        "-u",
        &format!("token:{token}"),
        "-H",
        "Content-Type: application/logplex-1",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("http://{http}/logs"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "413",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.history("demo", 10).await.is_empty(), "nothing is stored");
    s.stop().await;
}

/// `curl -sS -o /dev/null -w %{http_code} ARGS` (bounded: 30 s); stdout is the status.
fn curl(args: &[&str]) -> std::process::Output {
    output(
        "curl",
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "20",
            ])
            .args(args),
        None,
        Duration::from_secs(30),
    )
}

async fn post_logs(
    s: &TestServer,
    token: &str,
    body: Bytes,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let auth = format!("Basic {}", base64_encode(&format!("token:{token}")));
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/logplex-1"),
    ];
    headers.extend_from_slice(extra);
    let (st, b) = request_bytes(
        &format!("http://{}", s.addrs.http.unwrap()),
        "POST",
        "/logs",
        Some(body),
        &headers,
    )
    .await;
    (st, String::from_utf8_lossy(&b).into_owned())
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bad_input_gets_a_clear_answer_and_stores_nothing() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let good = octet(&frame("x", "web.1", "good"));

    // Logplex-Msg-Count mismatch: 400 and nothing of the batch stored.
    let (st, body) = post_logs(
        &s,
        &token,
        Bytes::from(good.repeat(2)),
        &[("logplex-msg-count", "3")],
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(!body.is_empty(), "the 400 says nothing");

    // One malformed frame among good ones: 400, nothing stored.
    let bad = format!("{good}{}{good}", octet("<999>1 nonsense"));
    let (st, body) = post_logs(&s, &token, Bytes::from(bad), &[]).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("frame 1"), "{body}");

    // Unknown token: 401 with the challenge.
    let auth = format!(
        "Basic {}",
        base64_encode("token:t.00000000-0000-4000-8000-00000000dead")
    );
    let base = format!("http://{}", s.addrs.http.unwrap());
    let (st, _) = request_with(
        &base,
        "POST",
        "/logs",
        Some(&good),
        &[
            ("authorization", &auth),
            ("content-type", "application/logplex-1"),
        ],
    )
    .await;
    assert_eq!(st, 401);

    // Wrong content type: 415.
    let (st, _) = post_logs(&s, &token, Bytes::from(good.clone()), &[]).await;
    assert_eq!(st, 204);
    let auth = format!("Basic {}", base64_encode(&format!("token:{token}")));
    let (st, _) = request_with(
        &base,
        "POST",
        "/logs",
        Some(&good),
        &[("authorization", &auth), ("content-type", "text/plain")],
    )
    .await;
    assert_eq!(st, 415);

    // A gzip bomb: 100 MB of zeros in ~100 KB, refused by its decompressed size.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..100 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(
        bomb.len() < 4 * 1024 * 1024,
        "the bomb is {} bytes",
        bomb.len()
    );
    let (st, _) = post_logs(
        &s,
        &token,
        Bytes::from(bomb),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(st, 413);

    // A gzip body that is fine.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(octet(&frame("x", "web.1", "zipped")).as_bytes())
        .unwrap();
    let (st, body) = post_logs(
        &s,
        &token,
        Bytes::from(enc.finish().unwrap()),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(st, 204, "{body}");

    let h = s.history("demo", 100).await;
    assert_eq!(h.len(), 2, "only the two accepted batches: {h:?}");
    assert!(
        h[0].ends_with("app[web.1]: good") && h[1].ends_with("app[web.1]: zipped"),
        "{h:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bad_frames_are_skipped_and_the_connection_kept() {
    let s = TestServer::start_with(|c| c.ingest.max_frame = 1024).await;
    let token = s.create_app("demo").await;
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    let mut stream = String::new();
    stream += &octet(&frame(&token, "web.1", "one"));
    stream += &octet("<999>1 not a message"); // malformed: skipped
    stream += &octet(&frame(&token, "web.1", &"x".repeat(2000))); // over max_frame: skipped by length
    stream += &octet(&frame(
        "t.00000000-0000-4000-8000-00000000dead",
        "web.1",
        "unknown token",
    )); // dropped
    stream += "garbage bytes that are no frame\n"; // skipped to the next LF
    stream += &frame(&token, "web.2", "two"); // newline framing
    stream += "\n";
    stream += &octet(&frame(&token, "web.1", "three"));
    c.write_all(stream.as_bytes()).await.unwrap();
    let h = s.wait_history("demo", |h| h.len() >= 3).await;
    let msgs: Vec<&str> = h.iter().map(|l| l.split_once("]: ").unwrap().1).collect();
    assert_eq!(msgs, ["one", "two", "three"]);
    // The connection is still open and usable.
    c.write_all(octet(&frame(&token, "web.1", "four")).as_bytes())
        .await
        .unwrap();
    let h = s.wait_history("demo", |h| h.len() >= 4).await;
    assert!(h[3].ends_with("]: four"), "{h:?}");
    let (_, metrics) = request(&s.api(), "GET", "/metrics", None).await;
    for needle in [
        "logplex_messages_received_total{input=\"tcp\"} 4",
        "logplex_messages_rejected_total{input=\"tcp\",reason=\"too_long\"} 1",
        "logplex_messages_rejected_total{input=\"tcp\",reason=\"unknown_token\"} 1",
        // Kept as histories change, not counted at the scrape: the four lines stored.
        "logplex_history_lines 4\n",
    ] {
        assert!(metrics.contains(needle), "{needle} not in\n{metrics}");
    }
    s.stop().await;
}

/// One bad octet count does not swallow the stream: `9999999999 ` followed by 100,000 good
/// frames on one connection stores all 100,000; the count is counted once and the
/// connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_implausible_count_is_skipped_and_every_frame_after_it_stored() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let n = 100_000;
    let mut stream = String::with_capacity(n * 100);
    stream += "9999999999 ";
    for i in 0..n {
        stream += &octet(&frame(&token, "web.1", &format!("good {i}")));
    }
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    c.write_all(stream.as_bytes()).await.unwrap();
    let last = format!("]: good {}", n - 1);
    let h = s
        .wait_history("demo", |h| h.last().is_some_and(|l| l.ends_with(&last)))
        .await;
    assert!(
        h.last().is_some_and(|l| l.ends_with(&last)),
        "{:?}",
        h.last()
    );
    let (_, metrics) = request(&s.api(), "GET", "/metrics", None).await;
    for needle in [
        format!("logplex_messages_received_total{{input=\"tcp\"}} {n}"),
        "logplex_messages_rejected_total{input=\"tcp\",reason=\"bad_count\"} 1".to_string(),
    ] {
        assert!(metrics.contains(&needle), "{needle} not in\n{metrics}");
    }
    // The connection is still open and usable.
    c.write_all(octet(&frame(&token, "web.1", "after")).as_bytes())
        .await
        .unwrap();
    let h = s
        .wait_history("demo", |h| {
            h.last().is_some_and(|l| l.ends_with("]: after"))
        })
        .await;
    assert!(h.last().unwrap().ends_with("]: after"), "{h:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecoverable_count_closes_only_that_connection() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let mut bad = connect(s.addrs.tcp.unwrap()).await;
    bad.write_all(b"007 <190>1 x").await.unwrap(); // leading zero: cannot resynchronise
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), bad.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the server closes the connection");
    let mut good = connect(s.addrs.tcp.unwrap()).await;
    good.write_all(octet(&frame(&token, "web.1", "still fine")).as_bytes())
        .await
        .unwrap();
    let h = s.wait_history("demo", |h| !h.is_empty()).await;
    assert_eq!(h.len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_do_not_stop_others() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let addr = s.addrs.tcp.unwrap();
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(connect(addr).await);
    }
    let mut c = connect(addr).await;
    c.write_all(octet(&frame(&token, "web.1", "through")).as_bytes())
        .await
        .unwrap();
    let h = s.wait_history("demo", |h| !h.is_empty()).await;
    assert_eq!(h.len(), 1);
    let (_, metrics) = request(&s.api(), "GET", "/metrics", None).await;
    assert!(
        metrics.contains("logplex_tcp_connections 2001"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("tcp_conn"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(idle);
    s.stop().await;
}
