//! Drains against real receivers: rsyslog (TCP and TLS, started privately on 127.0.0.1 with
//! its own config), HTTP and syslog receivers written in the test, a UDP socket; and the
//! faults of the drains issue, each with exact accounting: delivered + dropped (as reported
//! by L10) == sent.

mod common;

use common::receiver::{TcpOptions, TcpReceiver};
use common::serve::free_port;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// A syslog receiver written here (see [`TcpReceiver`]); returns it, its port and the file
/// it writes one message per line to.
fn receiver(dir: &Path, name: &str, opts: TcpOptions) -> (TcpReceiver, u16, PathBuf) {
    let r = TcpReceiver::start(dir, name, opts);
    let (port, out) = (r.port, r.out.clone());
    (r, port, out)
}

/// An HTTP drain receiver that answers with `statuses` in turn (the last one repeats).
async fn http_receiver(statuses: &'static [u16]) -> HttpSink {
    let n = std::sync::atomic::AtomicUsize::new(0);
    HttpSink::start(move |_| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        statuses[i.min(statuses.len() - 1)]
    })
    .await
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls a file until it has `n` lines (bounded).
async fn wait_lines(path: &Path, n: usize, secs: u64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let l = read_lines(path);
        if l.len() >= n || Instant::now() > deadline {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A private rsyslogd listening on `port` (TLS when `tls` = (ca, cert, key)), writing
/// `HOSTNAME APP-NAME PROCID MSG` per message to the returned file, and each message as
/// received (`%rawmsg%`) to `raw.log` beside it.
fn rsyslog(dir: &Path, port: u16, tls: Option<(&Path, &Path, &Path)>) -> (ChildGuard, PathBuf) {
    let work = dir.join(format!("rsyslog-{port}"));
    std::fs::create_dir_all(&work).unwrap();
    let out = work.join("out.log");
    let (global, module) = match tls {
        None => (format!("global(workDirectory=\"{}\")", work.display()), "module(load=\"imtcp\")".to_string()),
        Some((ca, cert, key)) => (
            format!(
                "global(workDirectory=\"{}\" DefaultNetstreamDriverCAFile=\"{}\" \
                 DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\")",
                work.display(),
                ca.display(),
                cert.display(),
                key.display()
            ),
            "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")"
                .to_string(),
        ),
    };
    let conf = format!(
        "{global}\n{module}\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
         template(name=\"t\" type=\"string\" string=\"%hostname% %app-name% %procid% %msg%\\n\")\n\
         template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
         *.* action(type=\"omfile\" file=\"{}\" template=\"t\")\n\
         *.* action(type=\"omfile\" file=\"{}\" template=\"raw\")\n",
        out.display(),
        work.join("raw.log").display()
    );
    let conf_path = work.join("rsyslog.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = ChildGuard::spawn(
        "rsyslogd",
        Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf_path)
            .arg("-i")
            .arg(work.join("rsyslogd.pid"))
            .stdin(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(st) = child.try_wait() {
            panic!("rsyslogd exited with {st} before listening on {port}");
        }
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, out)
}

/// Is rsyslog's TLS driver installed (rsyslog-gnutls)? Says SKIP when it is not: without it
/// rsyslogd starts but never listens with TLS.
fn has_rsyslog_gtls() -> bool {
    let found = ["/usr/lib", "/usr/lib64", "/usr/local/lib"]
        .iter()
        .flat_map(|base| {
            let base = Path::new(base);
            let arch = std::fs::read_dir(base)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path());
            std::iter::once(base.to_path_buf()).chain(arch)
        })
        .any(|d| d.join("rsyslog/lmnsd_gtls.so").is_file());
    found || skip("needs rsyslog's TLS driver lmnsd_gtls.so (apt-get install rsyslog-gnutls)")
}

/// A router whose drains trust a fresh CA, and that CA's certificate with a receiver's
/// certificate and key for it (`[ca, cert, key]`); `None` (the test skipped) without
/// rsyslogd, its TLS driver or openssl.
async fn server_trusting_rsyslog_tls() -> Option<(TestServer, [PathBuf; 3])> {
    if !need("rsyslogd", "apt-get install rsyslog")
        || !need("openssl", "apt-get install openssl")
        || !has_rsyslog_gtls()
    {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path(), "good");
    let mut c = test_config(dir.path());
    c.drains.tls_ca_file = Some(ca.clone());
    Some((TestServer::start_in(dir, c).await, [ca, cert, key]))
}

async fn send_lines(s: &TestServer, token: &str, prefix: &str, n: usize) {
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    let mut buf = String::new();
    for i in 0..n {
        buf += &octet(&frame(token, "web.1", &format!("{prefix} {i}")));
    }
    c.write_all(buf.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
}

async fn add_drain(s: &TestServer, app: &str, url: &str) -> String {
    let (st, body) = request(
        &s.api(),
        "POST",
        &format!("/v2/channels/{app}/drains"),
        Some(&format!(r#"{{"url":"{url}"}}"#)),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// (delivered lines matching `prefix`, dropped as announced by L10 frames).
fn account(lines: &[String], prefix: &str) -> (usize, u64) {
    let delivered = lines.iter().filter(|l| l.contains(prefix)).count();
    let dropped = lines
        .iter()
        .filter_map(|l| l.split("Error L10 (output buffer overflow): ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    (delivered, dropped)
}

/// Polls a receiver's output until delivered + announced drops of `prefix` lines reach `n`
/// (bounded by `secs`); returns (delivered, dropped).
async fn wait_accounted(path: &Path, prefix: &str, n: u64, secs: u64) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (d, x) = account(&read_lines(path), prefix);
        if d as u64 + x >= n || Instant::now() > deadline {
            return (d, x);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_a_syslog_drain() {
    if !need("rsyslogd", "apt-get install rsyslog") {
        return;
    }
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let port = free_port();
    let (_rs, out) = rsyslog(s.dir.path(), port, None);
    let drain = add_drain(&s, "demo", &format!("syslog://127.0.0.1:{port}")).await;
    send_lines(&s, &token, "to rsyslog", 500).await;
    let got = wait_lines(&out, 500, 10).await;
    assert_eq!(got.len(), 500, "{:?}", got.last());
    for (i, l) in got.iter().enumerate() {
        assert_eq!(l, &format!("{drain} app web.1 to rsyslog {i}"));
    }
    s.stop().await;
}

/// The L10 notice of a syslog drain, as rsyslog received it, is strict RFC 5424: HOSTNAME is
/// the drain token, APP-NAME `heroku`, PROCID `logplex`, MSGID and SD nil. (rsyslog itself
/// reads a frame with one `-` where MSGID and SD belong leniently; strict parsers refuse it
/// and other lenient ones fall back to RFC 3164, losing all three.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_parses_the_l10_notice_of_a_syslog_drain() {
    if !need("rsyslogd", "apt-get install rsyslog") {
        return;
    }
    // Without the durable log: drop-oldest and L10 (tests/drain_log.rs: the same with it).
    let s = TestServer::start_with(|c| {
        c.drains.buffer_lines = 100;
        c.log.path = "off".into();
    })
    .await;
    let token = s.create_app("demo").await;
    let port = free_port();
    let drain = add_drain(&s, "demo", &format!("syslog://127.0.0.1:{port}")).await;
    send_lines(&s, &token, "early", 1000).await;
    s.wait_history("demo", |h| h.len() >= 1000).await;
    let (_rs, out) = rsyslog(s.dir.path(), port, None);
    let (delivered, dropped) = wait_accounted(&out, "early", 1000, 15).await;
    assert_eq!(delivered as u64 + dropped, 1000);
    let got = read_lines(&out);
    let head = format!("{drain} heroku logplex Error L10 (output buffer overflow): {dropped} messages dropped since ");
    assert!(got[0].starts_with(&head), "{:?}", got[0]);
    assert!(got[0].ends_with('.'), "{:?}", got[0]);
    let raw = read_lines(&out.with_file_name("raw.log"));
    let (host, app, procid, msg) = strict_fields(raw[0].as_bytes());
    assert_eq!(
        (host, app.as_str(), procid.as_str()),
        (drain, "heroku", "logplex")
    );
    assert!(
        msg.starts_with("Error L10 (output buffer overflow): "),
        "{msg}"
    );
    s.stop().await;
}

/// A frame of a drain as our strict RFC 5424 parser reads it: the text without its
/// octet count, which must end with exactly the LF of the frame.
fn strict_fields(frame: &[u8]) -> (String, String, String, String) {
    let m = logplex_proto::parse(frame).unwrap_or_else(|e| {
        panic!("{e}: {:?}", String::from_utf8_lossy(frame));
    });
    assert_eq!((m.msgid, m.structured_data), (&b"-"[..], &b"-"[..]));
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (s(m.hostname), s(m.app_name), s(m.procid), s(m.msg))
}

/// How a receiver written here reads a logplex-1 batch.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Split {
    /// Line by line, as many users' receivers do; the number of lines must match
    /// `Logplex-Msg-Count` (else 400, which logplex takes as "drop the batch").
    Lines,
    /// By octet count (RFC 6587); every frame must end with the LF it counts.
    Octets,
}

/// The messages of one batch read the `split` way, or why the receiver refuses it.
fn read_batch(split: Split, r: &Received) -> Result<Vec<String>, String> {
    let count: usize = r
        .header("logplex-msg-count")
        .parse()
        .map_err(|_| "no count")?;
    let body = &r.body[..];
    let mut frames: Vec<&[u8]> = Vec::new();
    match split {
        Split::Lines => {
            let text = body
                .strip_suffix(b"\n")
                .ok_or("the body does not end with LF")?;
            for line in text.split(|&b| b == b'\n') {
                let sp = line.iter().position(|&b| b == b' ').ok_or("no length")?;
                frames.push(&line[sp + 1..]);
            }
        }
        Split::Octets => {
            let mut rest = body;
            while !rest.is_empty() {
                let sp = rest.iter().position(|&b| b == b' ').ok_or("no length")?;
                let n: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
                let f = rest.get(sp + 1..sp + 1 + n).ok_or("truncated")?;
                frames.push(f.strip_suffix(b"\n").ok_or("a frame without its LF")?);
                rest = &rest[sp + 1 + n..];
            }
        }
    }
    if frames.len() != count {
        return Err(format!(
            "{} frames, Logplex-Msg-Count {count}",
            frames.len()
        ));
    }
    Ok(frames
        .iter()
        .map(|f| {
            let m = logplex_proto::parse_lenient(f).unwrap();
            assert_eq!((m.hostname, m.app_name), (&b"host"[..], &b"app"[..]));
            String::from_utf8_lossy(m.msg).into_owned()
        })
        .collect())
}

/// Every drain frame ends with one LF counted in its length: a receiver that splits a batch
/// on LF and one that splits it by octet count both see every message, once; syslog frames
/// parse strictly with MSG ending in exactly that LF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_frames_end_with_lf_for_line_and_octet_receivers() {
    let s = TestServer::start_with(|c| c.drains.buffer_lines = 10_000).await;
    let token = s.create_app("demo").await;
    let answer = |split: Split| {
        move |r: &Received| {
            if read_batch(split, r).is_ok() {
                200
            } else {
                400
            }
        }
    };
    let lines = HttpSink::start(answer(Split::Lines)).await;
    let octets = HttpSink::start(answer(Split::Octets)).await;
    add_drain(&s, "demo", &lines.url("/logs")).await;
    add_drain(&s, "demo", &octets.url("/logs")).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_drain = add_drain(
        &s,
        "demo",
        &format!(
            "syslog+udp://127.0.0.1:{}",
            udp.local_addr().unwrap().port()
        ),
    )
    .await;
    let n = 3000;
    send_lines(&s, &token, "line", n).await;
    let expect: Vec<String> = (0..n).map(|i| format!("line {i}")).collect();
    for (sink, split) in [(&lines, Split::Lines), (&octets, Split::Octets)] {
        let reqs = sink
            .wait(15, |r| {
                r.iter()
                    .filter(|q| q.status == 200)
                    .map(|q| read_batch(split, q).unwrap().len())
                    .sum::<usize>()
                    >= n
            })
            .await;
        assert!(reqs.len() > 1, "{split:?}: want more than one batch");
        for q in &reqs {
            assert_eq!(
                q.status,
                200,
                "{split:?} refused a batch: {:?}",
                read_batch(split, q)
            );
        }
        let got: Vec<String> = reqs
            .iter()
            .flat_map(|q| read_batch(split, q).unwrap())
            .collect();
        assert_eq!(got, expect, "{split:?}");
    }
    let mut buf = [0u8; 2048];
    for i in 0..3 {
        let k = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let (host, app, procid, msg) = strict_fields(&buf[..k]);
        assert_eq!(
            (host, app, procid),
            (udp_drain.clone(), "app".into(), "web.1".into())
        );
        assert_eq!(msg, format!("line {i}\n"));
    }
    s.stop().await;
}

/// Userinfo in an HTTP drain URL becomes Basic auth, percent-decoded per RFC 3986 only (`+`
/// and `&` are themselves); the password is never shown by the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_credentials_reach_the_receiver_exactly_and_are_never_shown() {
    let table: &[(&str, &str, &str)] = &[
        ("user:a+b&c", "user", "a+b&c"),
        ("user:s%40cret", "user", "s@cret"),
        ("us%2Ber:pa%20ss", "us+er", "pa ss"),
        ("u:p%3Aw%25", "u", "p:w%"),
        ("u:%E2%82%AC;=,!$'()*~", "u", "€;=,!$'()*~"),
        ("u:pa%2Bss%26", "u", "pa+ss&"),
    ];
    let s = TestServer::start_with(|c| c.drains.max_per_channel = 10).await;
    let token = s.create_app("demo").await;
    let sink = HttpSink::start(|_| 200).await;
    for (i, (userinfo, _, _)) in table.iter().enumerate() {
        let url = format!("http://{userinfo}@{}/d{i}", sink.addr);
        let (st, body) = request(
            &s.api(),
            "POST",
            "/v2/channels/demo/drains",
            Some(&serde_json::json!({ "url": url }).to_string()),
        )
        .await;
        assert_eq!(st, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let shown = v["url"].as_str().unwrap();
        let user = userinfo.split(':').next().unwrap();
        assert_eq!(shown, format!("http://{user}:***@{}/d{i}", sink.addr));
    }
    send_lines(&s, &token, "auth", 1).await;
    let reqs = sink.wait(10, |r| r.len() >= table.len()).await;
    for (i, (userinfo, user, pass)) in table.iter().enumerate() {
        let r = reqs
            .iter()
            .find(|r| r.path == format!("/d{i}"))
            .unwrap_or_else(|| panic!("no request for {userinfo}"));
        assert_eq!(
            r.basic_auth(),
            Some((user.to_string(), pass.to_string())),
            "{userinfo}"
        );
    }
    // Listings show `***` for every password (ours and Heroku's routes).
    for path in ["/v2/channels/demo/drains", "/apps/demo/log-drains"] {
        let (st, body) = request(&s.api(), "GET", path, None).await;
        assert_eq!(st, 200, "{body}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(list.len(), table.len());
        for d in &list {
            assert!(d["url"].as_str().unwrap().contains(":***@"), "{d}");
        }
        for (_, _, pass) in table {
            assert!(!body.contains(pass), "{path} shows a password: {body}");
        }
    }
    // A drain can be removed by its URL as shown, or as given (Heroku's route, which takes
    // a percent-encoded URL, as `heroku drains:remove URL` sends it).
    let enc = |u: &str| {
        u.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    for url in [
        format!("http://user:***@{}/d0", sink.addr),
        format!("http://user:s%40cret@{}/d1", sink.addr),
    ] {
        let (st, body) = request(
            &s.api(),
            "DELETE",
            &format!("/apps/demo/log-drains/{}", enc(&url)),
            None,
        )
        .await;
        assert_eq!(st, 200, "{url}: {body}");
        assert!(body.contains(":***@") && !body.contains("cret"), "{body}");
    }
    let (_, body) = request(&s.api(), "GET", "/v2/channels/demo/drains", None).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), table.len() - 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_a_tls_drain_and_a_wrong_certificate_is_l14() {
    let Some((s, [ca, cert, key])) = server_trusting_rsyslog_tls().await else {
        return;
    };
    let (_other_ca, bad_cert, bad_key) = make_certs(s.dir.path(), "other");
    let token = s.create_app("demo").await;
    let good_port = free_port();
    let (_good, good_out) = rsyslog(s.dir.path(), good_port, Some((&ca, &cert, &key)));
    let bad_port = free_port();
    let (_bad, bad_out) = rsyslog(s.dir.path(), bad_port, Some((&ca, &bad_cert, &bad_key)));
    let drain = add_drain(&s, "demo", &format!("syslog+tls://127.0.0.1:{good_port}")).await;
    add_drain(&s, "demo", &format!("syslog+tls://127.0.0.1:{bad_port}")).await;
    send_lines(&s, &token, "over tls", 200).await;
    let got = wait_lines(&good_out, 200, 10).await;
    let ours: Vec<&String> = got.iter().filter(|l| l.contains("over tls")).collect();
    assert_eq!(ours.len(), 200);
    assert_eq!(ours[199], &format!("{drain} app web.1 over tls 199"));
    // The L14 line reaches the good drain as RFC 5424 that rsyslog parses: our token, heroku,
    // logplex (the same shape as every drain frame).
    let got = wait_lines(&good_out, 201, 10).await;
    let l14 = got
        .iter()
        .find(|l| l.contains("Error L14"))
        .expect("the L14 line on the good drain");
    assert!(
        l14.starts_with(&format!(
            "{drain} heroku logplex Error L14 (certificate validation): "
        )),
        "{l14}"
    );
    // The other receiver's certificate is not from our CA: L14 in the channel, nothing sent.
    let h = s
        .wait_history("demo", |h| h.iter().any(|l| l.contains("Error L14")))
        .await;
    let l14 = h
        .iter()
        .find(|l| l.contains("Error L14"))
        .expect("an L14 line");
    assert!(
        l14.contains("heroku[logplex]: Error L14 (certificate validation): "),
        "{l14}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        read_lines(&bad_out).is_empty(),
        "nothing may reach a receiver we do not trust"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_drain_sends_one_datagram_per_message() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let drain = add_drain(&s, "demo", &format!("syslog+udp://127.0.0.1:{port}")).await;
    send_lines(&s, &token, "udp", 3).await;
    let mut buf = [0u8; 2048];
    for i in 0..3 {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(
            got,
            format!("<190>1 2016-03-08T02:43:26.693600+00:00 {drain} app web.1 - - udp {i}\n")
        );
    }
    s.stop().await;
}

/// The requests of `sink` as JSON: status, path, headers (lowercase names), the
/// octet-counted frames of the body and what followed the last whole frame.
fn http_requests(sink: &HttpSink) -> Vec<serde_json::Value> {
    sink.requests()
        .iter()
        .map(|r| {
            let (frames, used) = common::receiver::split_frames(&r.body);
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), text(v.as_bytes()).into()))
                .collect();
            serde_json::json!({
                "status": r.status,
                "path": r.path,
                "headers": headers,
                "frames": frames.iter().map(|f| text(f)).collect::<Vec<_>>(),
                "trailing": text(&r.body[used..]),
            })
        })
        .collect()
}

async fn wait_http(
    sink: &HttpSink,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http_requests(sink);
        if pred(&r) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_drain_headers_framing_and_retry_on_429() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let sink = http_receiver(&[429, 200]).await;
    let port = sink.addr.port();
    let drain = add_drain(
        &s,
        "demo",
        &format!("http://user:secret@127.0.0.1:{port}/logs"),
    )
    .await;
    send_lines(&s, &token, "over http", 20).await;
    let reqs = wait_http(&sink, |r| {
        r.iter()
            .filter(|q| q["status"] == 200)
            .map(|q| q["frames"].as_array().unwrap().len())
            .sum::<usize>()
            >= 20
    })
    .await;
    assert!(reqs.len() >= 2, "{reqs:?}");
    assert_eq!(reqs[0]["status"], 429);
    // The retry carries the same frame id and the same frames.
    assert_eq!(
        reqs[0]["headers"]["logplex-frame-id"],
        reqs[1]["headers"]["logplex-frame-id"]
    );
    assert_eq!(reqs[0]["frames"], reqs[1]["frames"]);
    let h = &reqs[1]["headers"];
    assert_eq!(h["content-type"], "application/logplex-1");
    assert_eq!(h["logplex-drain-token"], drain.as_str());
    assert!(
        h["user-agent"].as_str().unwrap().starts_with("logplex/"),
        "{h:?}"
    );
    assert_eq!(h["authorization"], "Basic dXNlcjpzZWNyZXQ=");
    assert_eq!(reqs[1]["path"], "/logs");
    let delivered: Vec<String> = reqs
        .iter()
        .filter(|q| q["status"] == 200)
        .flat_map(|q| {
            let frames = q["frames"].as_array().unwrap();
            assert_eq!(
                q["headers"]["logplex-msg-count"],
                frames.len().to_string().as_str()
            );
            assert_eq!(q["trailing"], "");
            frames
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(delivered.len(), 20);
    assert_eq!(
        delivered[0],
        "<190>1 2016-03-08T02:43:26.693600+00:00 host app web.1 - over http 0\n"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_400_drops_the_batch_without_retry_and_l10_counts_it() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let sink = http_receiver(&[400, 200]).await;
    let port = sink.addr.port();
    add_drain(&s, "demo", &format!("http://127.0.0.1:{port}/")).await;
    send_lines(&s, &token, "first", 10).await;
    let reqs = wait_http(&sink, |r| !r.is_empty()).await;
    let refused = reqs[0]["frames"].as_array().unwrap().len();
    assert_eq!(reqs[0]["status"], 400);
    send_lines(&s, &token, "second", 5).await;
    let delivered = |r: &[serde_json::Value]| {
        r.iter()
            .filter(|q| q["status"] == 200)
            .flat_map(|q| q["frames"].as_array().unwrap().clone())
            .collect::<Vec<_>>()
    };
    let reqs = wait_http(&sink, |r| {
        delivered(r)
            .iter()
            .filter(|f| f.as_str().unwrap().contains(" second "))
            .count()
            == 5
    })
    .await;
    // A 400 is not retried: every request carries its own frame id.
    let mut ids: Vec<&str> = reqs
        .iter()
        .map(|q| q["headers"]["logplex-frame-id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), reqs.len(), "a refused batch was sent again");
    let frames: Vec<String> = delivered(&reqs)
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let l10 = frames
        .iter()
        .find(|f| f.contains("Error L10"))
        .expect("an L10 frame after the refused batch");
    assert!(
        l10.starts_with("<172>1 ")
            && l10.contains(" host heroku logplex - Error L10 (output buffer overflow): "),
        "{l10}"
    );
    let (first_delivered, dropped) = account(&frames, " first ");
    assert_eq!(dropped as usize, refused);
    assert_eq!(
        first_delivered + dropped as usize,
        10,
        "delivered + dropped == sent"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_from_the_start_then_up_exact_accounting() {
    // Without the durable log: drop-oldest and L10 (tests/drain_log.rs: the same with it).
    let s = TestServer::start_with(|c| {
        c.drains.buffer_lines = 100;
        c.log.path = "off".into();
    })
    .await;
    let token = s.create_app("demo").await;
    let port = free_port();
    add_drain(&s, "demo", &format!("syslog://127.0.0.1:{port}")).await;
    send_lines(&s, &token, "early", 1000).await;
    s.wait_history("demo", |h| h.len() >= 1000).await;
    let (_r, _, out) = receiver(
        s.dir.path(),
        "late",
        TcpOptions {
            port,
            ..Default::default()
        },
    );
    let (delivered, dropped) = wait_accounted(&out, "early", 1000, 15).await;
    assert_eq!(
        delivered as u64 + dropped,
        1000,
        "delivered {delivered} + dropped {dropped}"
    );
    assert!(
        delivered <= 100 && dropped >= 900,
        "delivered {delivered}, dropped {dropped}"
    );
    let got = read_lines(&out);
    assert!(
        got[0].contains("Error L10"),
        "the L10 frame comes first: {:?}",
        got.first()
    );
    assert!(
        got.last().unwrap().ends_with("early 999"),
        "{:?}",
        got.last()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_that_dies_and_comes_back_exact_accounting() {
    // Without the durable log: drop-oldest and L10 (tests/drain_log.rs: the same with it).
    let s = TestServer::start_with(|c| {
        c.drains.buffer_lines = 100;
        c.log.path = "off".into();
    })
    .await;
    let token = s.create_app("demo").await;
    let (r1, port, out1) = receiver(s.dir.path(), "one", TcpOptions::default());
    add_drain(&s, "demo", &format!("syslog://127.0.0.1:{port}")).await;
    send_lines(&s, &token, "before", 50).await;
    assert_eq!(wait_lines(&out1, 50, 10).await.len(), 50);
    drop(r1); // the receiver dies
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_lines(&s, &token, "during", 500).await;
    s.wait_history("demo", |h| {
        h.iter().filter(|l| l.contains("during")).count() == 500
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_r2, _, out2) = receiver(
        s.dir.path(),
        "two",
        TcpOptions {
            port,
            ..Default::default()
        },
    );
    let (delivered, dropped) = wait_accounted(&out2, "during", 500, 20).await;
    assert_eq!(
        delivered as u64 + dropped,
        500,
        "delivered {delivered} + dropped {dropped}"
    );
    assert_eq!(account(&read_lines(&out1), "before").0, 50);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_slows_neither_ingestion_nor_another_drain() {
    // Without the durable log: drop-oldest and L10 (tests/drain_log.rs: the same with it).
    let s = TestServer::start_with(|c| {
        c.drains.buffer_lines = 500;
        c.log.path = "off".into();
    })
    .await;
    let token = s.create_app("demo").await;
    let (_slow, slow_port, slow_out) = receiver(
        s.dir.path(),
        "slow",
        TcpOptions {
            read_delay: Duration::from_millis(5),
            ..Default::default()
        },
    );
    let (_fast, fast_port, fast_out) = receiver(s.dir.path(), "fast", TcpOptions::default());
    add_drain(&s, "demo", &format!("syslog://127.0.0.1:{slow_port}")).await;
    add_drain(&s, "demo", &format!("syslog://127.0.0.1:{fast_port}")).await;
    // Far more than the kernel's socket buffers hold, so the slow receiver really is behind.
    let n = 100_000;
    let t0 = Instant::now();
    send_lines(&s, &token, "burst", n).await;
    s.wait_history("demo", |h| {
        h.last()
            .is_some_and(|l| l.ends_with(&format!("burst {}", n - 1)))
    })
    .await;
    let ingest = t0.elapsed();
    assert!(ingest < Duration::from_secs(5), "ingestion took {ingest:?}");
    let (fd, fx) = wait_accounted(&fast_out, "burst", n as u64, 20).await;
    assert!(
        fd as u64 + fx == n as u64 && fd >= n / 2,
        "the fast drain kept up: {fd} delivered, {fx} dropped"
    );
    let (sd, sx) = wait_accounted(&slow_out, "burst", n as u64, 30).await;
    assert_eq!(
        sd as u64 + sx,
        n as u64,
        "slow: delivered {sd} + dropped {sx}"
    );
    assert!(sx > 0, "the slow drain had to drop");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_api_validation_and_limits() {
    let s = TestServer::start_with(|c| c.drains.max_per_channel = 2).await;
    s.create_app("demo").await;
    let api = s.api();
    let post = |url: &str| {
        let body = format!(r#"{{"url":"{url}"}}"#);
        let api = api.clone();
        async move { request(&api, "POST", "/v2/channels/demo/drains", Some(&body)).await }
    };
    for (url, needle) in [
        ("ftp://x:1", "Scheme"),
        ("syslog://x", "needs a port"),
        ("syslog://u:p@x:1", "Credentials"),
    ] {
        let (st, body) = post(url).await;
        assert_eq!(st, 422, "{url}: {body}");
        assert!(
            body.contains(needle) && body.contains("invalid_params"),
            "{body}"
        );
    }
    assert_eq!(post("syslog://127.0.0.1:9").await.0, 201);
    let (st, body) = post("syslog://127.0.0.1:9").await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(post("http://127.0.0.1:9/").await.0, 201);
    let (st, body) = post("syslog+udp://127.0.0.1:9").await;
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("most allowed"), "{body}");
    let (st, body) = request(&api, "GET", "/v2/channels/demo/drains", None).await;
    assert_eq!(st, 200);
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 2);
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(
        request(
            &api,
            "DELETE",
            &format!("/v2/channels/demo/drains/{id}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        request(
            &api,
            "DELETE",
            &format!("/v2/channels/demo/drains/{id}"),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        request(&api, "GET", "/v2/channels/nope/drains", None)
            .await
            .0,
        404
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_drain_buffers() {
    let s = TestServer::start_with(|c| c.drains.buffer_lines = 50_000).await;
    let token = s.create_app("demo").await;
    // A receiver that reads nothing for its first 1.5 s: the drain's writes stall, so lines
    // pile up in its buffer (intake is not held back by a stalled drain).
    let (_r, port, out) = receiver(
        s.dir.path(),
        "flush",
        TcpOptions {
            start_delay: Duration::from_millis(1500),
            ..Default::default()
        },
    );
    add_drain(&s, "demo", &format!("syslog://127.0.0.1:{port}")).await;
    let n = 30_000;
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    let pad = "p".repeat(200);
    let mut buf = String::new();
    for i in 0..n {
        buf += &octet(&frame(&token, "web.1", &format!("at exit {i} {pad}")));
    }
    c.write_all(buf.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
    s.wait_history("demo", |h| {
        h.last()
            .is_some_and(|l| l.contains(&format!("at exit {} ", n - 1)))
    })
    .await;
    let (_, metrics) = request(&s.api(), "GET", "/metrics", None).await;
    let buffered: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("logplex_drain_buffered{type=\"syslog\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        buffered > 0,
        "the drain should still hold lines at shutdown"
    );
    // Stop now: what the drain still holds is sent (within the flush deadline) before exit.
    let dir = s.stop().await;
    let (delivered, dropped) = wait_accounted(&out, "at exit", n as u64, 10).await;
    assert_eq!(
        (delivered, dropped),
        (n, 0),
        "{buffered} were buffered at shutdown"
    );
    drop(dir);
}

/// Forwards every connection to `to`, like a proxy the router cannot see through.
async fn forwarder(to: std::net::SocketAddr) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut a, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut b) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    });
    port
}

/// A drain that posts an app's lines back into the same app is a loop (every line comes
/// back, forever): refused when added if its URL is our own HTTP input with a token of the
/// app, and, when it gets there another way (a proxy), refused at ingest by its
/// `Logplex-Drain-Token`, counted, never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_into_its_own_app_is_refused_when_added_and_at_ingest() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let other = s.create_app("other").await;
    let input = s.addrs.http.unwrap();
    let port = input.port();
    for url in [
        format!("http://x:{token}@127.0.0.1:{port}/logs"),
        format!("http://:{token}@localhost:{port}/logs"),
        format!("http://x:{token}@0.0.0.0:{port}/logs"),
    ] {
        let (st, body) = request(
            &s.api(),
            "POST",
            "/v2/channels/demo/drains",
            Some(&serde_json::json!({ "url": url }).to_string()),
        )
        .await;
        assert_eq!(st, 422, "{url}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains("would send every line of demo back into demo") && !msg.contains(&token),
            "{msg}"
        );
    }
    // Into another app, or another port: not a loop of this app.
    add_drain(
        &s,
        "demo",
        &format!("http://x:{other}@127.0.0.1:{port}/logs"),
    )
    .await;
    // Through a proxy the router cannot see through: accepted when added ...
    let via = forwarder(input).await;
    add_drain(
        &s,
        "demo",
        &format!("http://x:{token}@127.0.0.1:{via}/logs"),
    )
    .await;
    send_lines(&s, &token, "once", 3).await;
    // ... the lines reach "other" through the first drain, but those coming back into demo
    // are refused: demo keeps exactly its 3 lines.
    s.wait_history("other", |h| h.len() >= 3).await;
    let refused = || async {
        let m = request(&s.api(), "GET", "/metrics", None).await.1;
        m.lines()
            .find_map(|l| {
                l.strip_prefix(
                    "logplex_messages_rejected_total{input=\"http\",reason=\"drain_loop\"} ",
                )
            })
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused().await < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = refused().await;
    assert!(first >= 3, "{first}");
    // The drain, refused, backs off: its L10 is not sent back in a tight loop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = refused().await;
    assert!(later - first <= 5, "{first} then {later} a second later");
    let h = s.history("demo", 100).await;
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(s.history("other", 100).await.len(), 3);
    // Removed first, so that shutdown does not spend its flush deadline on them.
    let (_, body) = request(&s.api(), "GET", "/v2/channels/demo/drains", None).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    for d in list {
        let path = format!("/v2/channels/demo/drains/{}", d["id"].as_str().unwrap());
        assert_eq!(request(&s.api(), "DELETE", &path, None).await.0, 204);
    }
    s.stop().await;
}

/// A receiver that refuses every batch (4xx) is not sent the next one in a tight loop (each
/// refusal waits a backoff), and at shutdown the drain gives up on it within the flush
/// deadline instead of holding the exit up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_refuses_everything_is_not_hammered_nor_holds_up_shutdown() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    let sink = HttpSink::start(|_| 400).await;
    add_drain(&s, "demo", &sink.url("/")).await;
    send_lines(&s, &token, "refused", 5).await;
    sink.wait(5, |r| !r.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = sink.requests().len();
    assert!(
        n <= 6,
        "{n} requests within a second to a receiver that refuses all"
    );
    let t = Instant::now();
    s.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        t.elapsed()
    );
}

/// The status of each drain, as `GET /v2/channels/NAME/drains` shows it.
async fn drain_statuses(s: &TestServer, app: &str) -> Vec<serde_json::Value> {
    let (st, body) = request(&s.api(), "GET", &format!("/v2/channels/{app}/drains"), None).await;
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the drain listing until the drain whose URL contains `url` satisfies `pred`
/// (bounded: 10 s); returns its status.
async fn wait_status(
    s: &TestServer,
    url: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = drain_statuses(s, "demo").await;
        let d = list
            .iter()
            .find(|d| d["url"].as_str().unwrap().contains(url))
            .unwrap_or_else(|| panic!("no drain {url} in {list:?}"))
            .clone();
        if pred(&d["status"]) || Instant::now() > deadline {
            return d["status"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each drain tells how it is doing: a healthy one is `connected` with what it sent; one
/// whose host does not resolve, whose port refuses, or whose receiver refuses its batches is
/// `failing` with the reason and when; drops and lines waiting are counted per drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_status_tells_a_healthy_drain_from_failing_ones() {
    let s = TestServer::start_with(|c| {
        c.drains.buffer_lines = 10;
        c.drains.max_per_channel = 10;
    })
    .await;
    let token = s.create_app("demo").await;
    let ok = HttpSink::start(|_| 200).await;
    let refusing = HttpSink::start(|_| 403).await;
    let closed = free_port();
    add_drain(&s, "demo", &ok.url("/ok")).await;
    add_drain(&s, "demo", &refusing.url("/refused")).await;
    add_drain(&s, "demo", "syslog://no-such-host.invalid:514").await;
    add_drain(&s, "demo", &format!("http://127.0.0.1:{closed}/closed")).await;
    // Before any line: the bad name is already failing, the others have not been tried.
    let st = wait_status(&s, "no-such-host", |st| st["state"] == "failing").await;
    assert_eq!(st["state"], "failing", "{st}");
    let err = st["last_error"].as_str().unwrap();
    assert!(
        err.contains("no-such-host.invalid") && err.contains("resolve"),
        "{err}"
    );
    assert!(
        st["last_error_at"].as_str().unwrap().ends_with("+00:00"),
        "{st}"
    );
    let st = wait_status(&s, "/ok", |_| true).await;
    assert_eq!(st["state"], "connecting", "{st}");

    send_lines(&s, &token, "status", 5).await;
    let st = wait_status(&s, "/ok", |st| st["sent"] == 5).await;
    assert_eq!(
        st,
        serde_json::json!({"state": "connected", "last_error": null, "last_error_at": null,
                           "sent": 5, "dropped": 0, "lag_lines": 0, "lag_seconds": 0.0})
    );
    // The 5 lines may reach the drain in more than one batch (the first is taken as soon as
    // a line is there), each refused in turn after a backoff: wait for all of them.
    let st = wait_status(&s, "/refused", |st| {
        st["state"] == "failing" && st["dropped"] == 5
    })
    .await;
    assert_eq!(st["state"], "failing", "{st}");
    assert_eq!(st["last_error"], "batch refused with HTTP 403", "{st}");
    assert_eq!(st["dropped"], 5, "{st}");
    let st = wait_status(&s, "/closed", |st| st["state"] == "failing").await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{st}"
    );
    // The unresolvable syslog drain holds at most its buffer in memory, the rest stays in
    // the durable log: nothing is dropped, and its lag counts every line not delivered.
    send_lines(&s, &token, "more", 50).await;
    let st = wait_status(&s, "no-such-host", |st| st["lag_lines"] == 55).await;
    assert_eq!(
        (&st["dropped"], &st["lag_lines"]),
        (&0.into(), &55.into()),
        "{st}"
    );
    assert!(st["lag_seconds"].as_f64().unwrap() > 0.0, "{st}");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("no-such-host.invalid"),
        "{st}"
    );
    for d in drain_statuses(&s, "demo").await {
        let path = format!("/v2/channels/demo/drains/{}", d["id"].as_str().unwrap());
        assert_eq!(request(&s.api(), "DELETE", &path, None).await.0, 204);
    }
    s.stop().await;
}

/// A receiver that accepts connections and never answers: it reads nothing (its receive
/// buffer is small, so writes into it stall once the kernel's buffers are full), never
/// completes a TLS handshake and never answers an HTTP request. Returns its port; the
/// connections are held until the test's runtime ends.
async fn silent_receiver() -> u16 {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = sock.local_addr().unwrap().port();
    let l = sock.listen(64).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            held.push(c);
        }
    });
    port
}

/// Stops a router whose drain (`scheme://` to a receiver that never answers) still holds
/// lines; the stop must end within the flush deadline (5 s) plus a small margin, whatever
/// the drain is waiting on (a write, a TLS handshake, an HTTP answer, a backoff).
async fn stop_within_flush_deadline(scheme: &str) {
    let s = TestServer::start_with(|c| c.drains.buffer_lines = 50_000).await;
    let token = s.create_app("demo").await;
    let port = silent_receiver().await;
    add_drain(&s, "demo", &format!("{scheme}://127.0.0.1:{port}/")).await;
    // 40,000 lines of 500 bytes: more than the kernel buffers between us and the receiver.
    let n = 40_000;
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    let pad = "p".repeat(500);
    let mut buf = String::new();
    for i in 0..n {
        buf += &octet(&frame(&token, "web.1", &format!("stuck {i} {pad}")));
    }
    c.write_all(buf.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
    s.wait_history("demo", |h| {
        h.last()
            .is_some_and(|l| l.contains(&format!("stuck {} ", n - 1)))
    })
    .await;
    // Let the drain get stuck in its write, handshake or request.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, metrics) = request(&s.api(), "GET", "/metrics", None).await;
    let buffered: i64 = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("logplex_drain_buffered{"))
        .filter_map(|l| l.split_once("} "))
        .map(|(_, v)| v.parse::<i64>().unwrap())
        .sum();
    assert!(buffered > 0, "{scheme}: the drain should still hold lines");
    let t = Instant::now();
    s.stop().await;
    let took = t.elapsed();
    eprintln!("{scheme}:// drain to a receiver that never answers: stop took {took:?}");
    assert!(
        took < Duration::from_millis(6_500),
        "{scheme}: stop took {took:?}, past the 5 s flush deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_within_the_flush_deadline_https() {
    stop_within_flush_deadline("https").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_within_the_flush_deadline_http() {
    stop_within_flush_deadline("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_within_the_flush_deadline_syslog_tls() {
    stop_within_flush_deadline("syslog+tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_within_the_flush_deadline_syslog() {
    stop_within_flush_deadline("syslog").await;
}

/// Throughput of the drain path, TCP input → channel → syslog drain → a tokio receiver
/// counting frames: a measurement, not a check (`cargo test --release --test drains --
/// --ignored --nocapture drain_throughput`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn drain_throughput() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    // DRAIN_LOG=off: the drain without the durable log (buffer and intake pacing only).
    let off = std::env::var("DRAIN_LOG").is_ok_and(|v| v == "off");
    let s = TestServer::start_with(|c| {
        if off {
            c.log.path = "off".into();
        }
    })
    .await;
    let token = s.create_app("demo").await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(AtomicU64::new(0));
    let count = got.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut b = vec![0u8; 256 * 1024];
                while let Ok(n) = c.read(&mut b).await {
                    if n == 0 {
                        break;
                    }
                    let lf = memchr::memchr_iter(b'\n', &b[..n]).count();
                    count.fetch_add(lf as u64, Ordering::Relaxed);
                }
            });
        }
    });
    add_drain(&s, "demo", &format!("syslog://127.0.0.1:{port}")).await;
    let n: u64 = std::env::var("DRAIN_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let mut chunk = String::new();
    for i in 0..1000 {
        chunk += &octet(&frame(
            &token,
            "web.1",
            &format!("measured line {i:06} of the drain"),
        ));
    }
    let t = Instant::now();
    let mut c = connect(s.addrs.tcp.unwrap()).await;
    for _ in 0..n / 1000 {
        c.write_all(chunk.as_bytes()).await.unwrap();
    }
    c.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (0, Instant::now());
    loop {
        let g = got.load(Ordering::Relaxed);
        if g >= n || Instant::now() > deadline {
            break;
        }
        if g != last.0 {
            last = (g, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let g = got.load(Ordering::Relaxed);
    eprintln!(
        "drain throughput (log {}): {g} of {n} frames in {secs:.3}s = {:.2} M lines/s",
        if off { "off" } else { "on" },
        g as f64 / secs / 1e6
    );
    s.stop().await;
}

/// With the durable log, a TLS syslog drain whose receiver (a real rsyslogd over gtls) is
/// stopped while 3,000 lines arrive (three times the drain's buffer) and then started again
/// on the same port gets every one of them once, in order, and no L10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_syslog_drain_whose_rsyslog_restarts_gets_every_line_once_in_order() {
    let Some((s, [ca, cert, key])) = server_trusting_rsyslog_tls().await else {
        return;
    };
    let token = s.create_app("demo").await;
    let port = free_port();
    let certs = Some((ca.as_path(), cert.as_path(), key.as_path()));
    let (receiver, out) = rsyslog(s.dir.path(), port, certs);
    let drain = add_drain(&s, "demo", &format!("syslog+tls://127.0.0.1:{port}")).await;
    send_lines(&s, &token, "up", 100).await;
    let got = wait_lines(&out, 100, 10).await;
    assert_eq!(got.iter().filter(|l| l.contains(" up ")).count(), 100);

    drop(receiver);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = 3000;
    send_lines(&s, &token, "down", n).await;
    s.wait_history("demo", |h| {
        h.iter().any(|l| l.ends_with(&format!("down {}", n - 1)))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_receiver, out) = rsyslog(s.dir.path(), port, certs);
    let got = wait_lines(&out, 100 + n, 30).await;
    let down: Vec<usize> = got
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{drain} app web.1 down ")))
        .filter_map(|i| i.parse().ok())
        .collect();
    assert_eq!(
        down,
        (0..n).collect::<Vec<_>>(),
        "every line once, in order"
    );
    assert!(
        got.iter().all(|l| !l.contains("Error L10")),
        "nothing skipped: {:?}",
        got.iter()
            .filter(|l| l.contains("Error L10"))
            .collect::<Vec<_>>()
    );
    s.stop().await;
}
