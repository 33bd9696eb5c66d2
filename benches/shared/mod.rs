//! What the end-to-end benches share (`load.rs` and `cluster.rs` include this file by
//! path): their argument parsing, the 143-byte benchmark frame, reading a router's
//! `/metrics` and calling its API, and the TCP and HTTP senders that drive the load.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The bench's arguments: a bare word is the mode (`tcp` by default), `--KEY VALUE` an
/// option (cargo's own `--bench` dropped).
pub fn args() -> (String, HashMap<String, String>) {
    parse(std::env::args().skip(1))
}

/// [`args`] from `raw` (the arguments after the program's name).
pub fn parse(raw: impl IntoIterator<Item = String>) -> (String, HashMap<String, String>) {
    let raw: Vec<String> = raw.into_iter().filter(|a| a != "--bench").collect();
    let mut mode = "tcp".to_string();
    let mut kv = HashMap::new();
    let mut i = 0;
    while i < raw.len() {
        if let Some(k) = raw[i].strip_prefix("--") {
            let v = raw.get(i + 1).cloned().unwrap_or_default();
            kv.insert(k.to_string(), v);
            i += 2;
        } else {
            mode = raw[i].clone();
            i += 1;
        }
    }
    (mode, kv)
}

/// Option `k` as a number, `d` when absent or not a number.
pub fn num(kv: &HashMap<String, String>, k: &str, d: u64) -> u64 {
    kv.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// A 143-byte octet-counted frame (the size of the shared benchmark's sample line).
pub fn frame(token: &str, i: u64) -> Vec<u8> {
    let head = format!("<190>1 2016-03-08T02:43:26.693600+00:00 host {token} web.1 - - Started GET \"/siso/\" seq=");
    let mut msg = format!("{head}{i:010}");
    let target = 143 - 4; // "139 " prefix
    while msg.len() < target {
        msg.push('.');
    }
    msg.truncate(target);
    format!("{} {}", msg.len(), msg).into_bytes()
}

/// An API request with the admin key: its status and body, `None` when the router cannot
/// be reached.
pub async fn api(
    api: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Option<(u16, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{api}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .ok()?;
    let resp = client.request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

/// The text of the router's `/metrics` (empty when it cannot be read).
pub async fn metrics_text(api_at: SocketAddr, key: &str) -> String {
    match api(api_at, key, "GET", "/metrics", None).await {
        Some((200, body)) => String::from_utf8_lossy(&body).into_owned(),
        _ => String::new(),
    }
}

/// A series' value (`NAME{LABELS}` exactly as exposed) in the text of `/metrics`; 0 when
/// absent.
pub fn series(text: &str, series: &str) -> f64 {
    let needle = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// A series' value from the router's `/metrics`; 0 when absent.
pub async fn metric_f64(api_at: SocketAddr, key: &str, name: &str) -> f64 {
    series(&metrics_text(api_at, key).await, name)
}

/// Writes each stream (built beforehand, so the generator costs little while timed) on a
/// connection of its own to its address, in 256 KiB writes, then shuts the connection
/// down; waits for every connection (each at most `max`). Returns the connections that
/// failed (could not connect or write).
pub async fn send_tcp(streams: Vec<(SocketAddr, Vec<u8>)>, max: Duration) -> usize {
    let mut tasks = Vec::new();
    for (addr, s) in streams {
        tasks.push(tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await?;
            for chunk in s.chunks(256 * 1024) {
                c.write_all(chunk).await?;
            }
            c.shutdown().await
        }));
    }
    let mut failed = 0;
    for task in tasks {
        if !matches!(tokio::time::timeout(max, task).await, Ok(Ok(Ok(())))) {
            failed += 1;
        }
    }
    failed
}

/// One connection per `(address, Authorization)` sending `batches` POST /logs of `body`
/// (`batch` logplex-1 lines) one after the other, each waiting for its 204; waits for every
/// connection (each at most `max`). Returns the batches not answered 204, and the first
/// answer or error of those.
pub async fn send_http(
    targets: Vec<(SocketAddr, String)>,
    body: Bytes,
    batch: u64,
    batches: u64,
    max: Duration,
) -> (u64, Option<String>) {
    let mut tasks = Vec::new();
    for (addr, auth) in targets {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build_http::<Full<Bytes>>();
            let mut failed = 0;
            let mut first: Option<String> = None;
            for _ in 0..batches {
                let Ok(req) = hyper::Request::post(format!("http://{addr}/logs"))
                    .header("content-type", "application/logplex-1")
                    .header("authorization", &auth)
                    .header("logplex-msg-count", batch.to_string())
                    .body(Full::new(body.clone()))
                else {
                    failed += 1;
                    continue;
                };
                match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.into_body().collect().await;
                        if status != 204 {
                            failed += 1;
                            first.get_or_insert_with(|| {
                                let text = body.map(|b| b.to_bytes()).unwrap_or_default();
                                format!("{status} {}", String::from_utf8_lossy(&text))
                            });
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert_with(|| format!("{e:?}"));
                    }
                }
            }
            (failed, first)
        }));
    }
    let mut failed = 0;
    let mut first = None;
    for task in tasks {
        let (f, e) = match tokio::time::timeout(max, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => (batches, Some(format!("task: {e}"))),
            Err(_) => (batches, Some(format!("not done within {max:?}"))),
        };
        failed += f;
        first = first.or(e);
    }
    (failed, first)
}

/// `Basic` authorization for HTTP input with `token`.
pub fn basic(token: &str) -> String {
    format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("token:{token}")
        )
    )
}
