//! Shared test harness: a router started with `logplex::start` on port 0 in a temporary
//! data directory, and small clients that speak the real wire.
#![allow(dead_code)]

pub mod child;
pub mod procstat;
pub mod receiver;
pub mod redis;
pub mod serve;

pub use child::{output, ChildGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use logplex::config::{Config, Listen};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

pub const KEY: &str = "test-admin-key";

pub struct TestServer {
    pub addrs: logplex::Addrs,
    pub shutdown: CancellationToken,
    pub handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
}

/// A config on port 0 everywhere, in a temporary directory.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.api.listen = Listen::Addr(([127, 0, 0, 1], 0).into());
    c.api.auth_key = KEY.into();
    c.ingest.http.listen = Listen::Addr(([127, 0, 0, 1], 0).into());
    c.ingest.tcp.listen = Listen::Addr(([127, 0, 0, 1], 0).into());
    c.ingest.udp.listen = Listen::Addr(([127, 0, 0, 1], 0).into());
    c.store.path = dir.join("logplex.db");
    c.alerts.clear();
    c
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut c = test_config(dir.path());
        tweak(&mut c);
        Self::start_in(dir, c).await
    }

    pub async fn start_in(dir: tempfile::TempDir, c: Config) -> TestServer {
        c.validate().unwrap();
        let shutdown = CancellationToken::new();
        // A server of this test stopped or aborted just before may still be dropping its
        // durable log on another thread, and the log directory's lock goes only with it (a
        // process that exits releases it at once): wait for that, bounded.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let server = loop {
            match logplex::start(c.clone(), shutdown.clone()).await {
                Ok(s) => break s,
                Err(e)
                    if format!("{e:#}").contains("in use by another process")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("start: {e:?}"),
            }
        };
        let addrs = server.addrs;
        let handle = tokio::spawn(server.wait());
        TestServer {
            addrs,
            shutdown,
            handle: Some(handle),
            dir,
        }
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.addrs.api)
    }

    /// Stops the server gracefully and waits for it; returns the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        self.dir
    }

    /// Creates a channel with `app` and `heroku` tokens; returns the `app` token.
    pub async fn create_app(&self, name: &str) -> String {
        let (status, body) = request(
            &self.api(),
            "POST",
            "/v2/channels",
            Some(&format!(r#"{{"name":"{name}","tokens":["app","heroku"]}}"#)),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["tokens"]["app"].as_str().unwrap().to_string()
    }

    /// Reads the history of a channel through a session (what `logplex logs` shows).
    pub async fn history(&self, channel: &str, num: usize) -> Vec<String> {
        let url = self
            .session(&format!(r#"{{"channel":"{channel}","num":{num}}}"#))
            .await;
        let body = get_text(&url).await;
        body.lines().map(str::to_string).collect()
    }

    /// Creates a session; returns its URL.
    pub async fn session(&self, json: &str) -> String {
        let (status, body) = request(&self.api(), "POST", "/v2/sessions", Some(json)).await;
        assert_eq!(status, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["url"].as_str().unwrap().to_string()
    }

    /// Polls the history until `pred` holds (bounded: 5 s).
    pub async fn wait_history(
        &self,
        channel: &str,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let h = self.history(channel, 1500).await;
            if pred(&h) || tokio::time::Instant::now() > deadline {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An API request with the admin key; returns status and body text.
pub async fn request(base: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    request_with(
        base,
        method,
        path,
        body,
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await
}

/// A request with explicit headers.
pub async fn request_with(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (s, b) = request_bytes(
        base,
        method,
        path,
        body.map(|b| Bytes::from(b.to_string())),
        headers,
    )
    .await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

pub async fn request_bytes(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Bytes>,
    headers: &[(&str, &str)],
) -> (u16, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.unwrap_or_default())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (status, body)
}

/// GET a URL with no auth; the whole body as text.
pub async fn get_text(url: &str) -> String {
    let (status, body) = request_with(url, "GET", "", None, &[]).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// An RFC 5424 frame as a dyno sends it.
pub fn frame(token: &str, procid: &str, msg: &str) -> String {
    format!("<190>1 2016-03-08T02:43:26.693600+00:00 host {token} {procid} - - {msg}")
}

/// The frame, octet-counted.
pub fn octet(m: &str) -> String {
    format!("{} {}", m.len(), m)
}

/// Opens a TCP connection to `addr`.
pub async fn connect(addr: SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Is the outside tool `tool` (a program on PATH, or an absolute path) available to this
/// test? When it is not, the test says so on the terminal (past cargo's output capture)
/// as `SKIP <test>: needs <tool> (<how to install>)` and should return at once; with
/// `LOGPLEX_REQUIRE_PEERS=1` (set by `.ci/run`) a missing tool fails the test instead.
///
/// ```ignore
/// if !common::need("rsyslogd", "apt-get install rsyslog") { return; }
/// ```
pub fn need(tool: &str, install: &str) -> bool {
    if tool_path(tool).is_some() {
        return true;
    }
    skip(&format!("needs {tool} ({install})"))
}

/// Where `tool` is: itself when it is a path to a file, else its first match on PATH.
pub fn tool_path(tool: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(tool);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|c| c.is_file())
}

/// Reports the current test as skipped for `why` (see [`need`]); returns false so a test can
/// `return` on it. Panics instead when `LOGPLEX_REQUIRE_PEERS=1`.
pub fn skip(why: &str) -> bool {
    let name = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map(|(a, _)| a.to_string()).unwrap_or(s))
        .unwrap_or_default();
    let line = format!("SKIP {exe}::{name}: {why}\n");
    if std::env::var("LOGPLEX_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        // Worded so the line does not start with `SKIP`: the closing summary counts those.
        panic!(
            "LOGPLEX_REQUIRE_PEERS=1 forbids skipping: {}",
            line.trim_end()
        );
    }
    // Written to the stderr handle itself, not with eprintln!, so cargo's capture of a
    // passing test's output does not hide it; in one write, so that the line stays whole
    // among libtest's own (the closing summary of `.ci/run` counts lines that start with
    // `SKIP `).
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    false
}

/// A small tmpfs mounted for a test; unmounted when dropped.
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    pub fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let out = output(
            "mount",
            std::process::Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir),
            None,
            Duration::from_secs(10),
        );
        out.status.success().then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a file a test's server still holds open must not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// One request an [`HttpSink`] received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    /// A header as text ("" when missing).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The user and password of its `Authorization: Basic`, decoded.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        use base64::Engine;
        let v = self.header("authorization").strip_prefix("Basic ")?;
        let raw = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

/// An HTTP receiver written in the test (hyper on 127.0.0.1, port 0): keeps every request
/// and answers each with the status `answer` picks for it. Stops when dropped.
pub struct HttpSink {
    pub addr: SocketAddr,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    stop: CancellationToken,
}

impl HttpSink {
    pub async fn start(answer: impl Fn(&Received) -> u16 + Send + Sync + 'static) -> HttpSink {
        Self::serve(None, answer).await
    }

    /// The same over HTTPS, with the certificate and key of PEM files (see [`make_certs`]).
    pub async fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        answer: impl Fn(&Received) -> u16 + Send + Sync + 'static,
    ) -> HttpSink {
        let certs = rustls_pemfile::certs(&mut &std::fs::read(cert).unwrap()[..])
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut &std::fs::read(key).unwrap()[..])
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        Self::serve(Some(acceptor), answer).await
    }

    async fn serve(
        tls: Option<tokio_rustls::TlsAcceptor>,
        answer: impl Fn(&Received) -> u16 + Send + Sync + 'static,
    ) -> HttpSink {
        use std::sync::{Arc, Mutex};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let stop = CancellationToken::new();
        let answer = Arc::new(answer);
        let (g, s) = (got.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let sock = tokio::select! {
                    r = l.accept() => match r { Ok((sock, _)) => sock, Err(_) => return },
                    _ = s.cancelled() => return,
                };
                let (g, answer, s, tls) = (g.clone(), answer.clone(), s.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (g, answer) = (g.clone(), answer.clone());
                            async move {
                                let path = req.uri().to_string();
                                let headers = req.headers().clone();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let mut r = Received {
                                    path,
                                    headers,
                                    body,
                                    status: 0,
                                };
                                r.status = answer(&r);
                                let status = r.status;
                                g.lock().unwrap().push(r);
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let conn =
                                http.serve_connection(hyper_util::rt::TokioIo::new(sock), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = s.cancelled() => {}
                            }
                        }
                        Some(tls) => {
                            let Ok(Ok(sock)) =
                                tokio::time::timeout(Duration::from_secs(5), tls.accept(sock))
                                    .await
                            else {
                                return;
                            };
                            let conn =
                                http.serve_connection(hyper_util::rt::TokioIo::new(sock), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = s.cancelled() => {}
                            }
                        }
                    }
                });
            }
        });
        HttpSink { addr, got, stop }
    }

    /// `http://ADDR{path}` (use `https://` for one started with [`HttpSink::start_tls`]).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Polls the requests until `pred` holds (bounded by `secs`).
    pub async fn wait(&self, secs: u64, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.requests();
            if pred(&r) || tokio::time::Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A CA and a server certificate for 127.0.0.1, made with openssl (call
/// `need("openssl", ...)` first).
pub fn make_certs(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let run = |args: &[&str]| {
        let o = output(
            "openssl",
            std::process::Command::new("openssl")
                .args(args)
                .current_dir(&d),
            None,
            Duration::from_secs(60),
        );
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=logplex test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (d.join("ca.pem"), d.join("server.pem"), d.join("server.key"))
}

/// Sends `message` with `logger(1)` (util-linux) to a syslog input at `addr`, RFC 5424,
/// octet-counted over TCP or one datagram over UDP, with the tag `tag`; the test fails
/// with logger's own words when it does not succeed (call `need("logger", ...)` first).
pub fn logger(addr: SocketAddr, tcp: bool, tag: &str, message: &str) {
    let mut cmd = std::process::Command::new("logger");
    cmd.args([
        if tcp { "--tcp" } else { "--udp" },
        "--rfc5424",
        "--server",
        &addr.ip().to_string(),
        "--port",
        &addr.port().to_string(),
        "-t",
        tag,
        "-p",
        "user.info",
    ]);
    if tcp {
        cmd.arg("--octet-count");
    }
    cmd.arg(message);
    let o = output("logger", &mut cmd, None, Duration::from_secs(10));
    assert!(
        o.status.success(),
        "logger exited with {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Opens a session's stream over a raw socket (`extra`: more request headers, each ending
/// in CRLF); the reader after the response's headers.
pub async fn open_stream(url: &str, extra: &str) -> BufReader<tokio::net::TcpStream> {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut sock = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut r = BufReader::new(sock);
    let mut status = String::new();
    r.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await.unwrap();
        if h == "\r\n" {
            break;
        }
    }
    r
}

/// Reads chunked-body text until `needle` appears (bounded: `within`).
pub async fn read_until(
    r: &mut BufReader<tokio::net::TcpStream>,
    needle: &str,
    within: Duration,
) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + within;
    while !seen.contains(needle) {
        let mut line = String::new();
        let n = tokio::time::timeout_at(deadline, r.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; saw {seen:?}"))
            .unwrap();
        assert!(n > 0, "stream ended before {needle:?}; saw {seen:?}");
        seen.push_str(&line);
    }
    seen
}
