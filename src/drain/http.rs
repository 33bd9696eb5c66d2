//! HTTP(S) drains: `application/logplex-1` batches of Heroku's HTTPS-drain frames
//! (`LEN <PRI>1 TIME host SOURCE PROCID - MSG LF`), one request in flight, retried on 429, 5xx
//! and network errors with the same `Logplex-Frame-Id`; other 4xx drop the batch (L10).

use super::backoff::Backoff;
use super::{pause, wait_for_work, Drain, Shared, Wait, FLUSH_DEADLINE};
use crate::line::now_micros;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use logplex_proto::render;
use std::time::{Duration, Instant};

/// Largest batch body.
const BATCH_BYTES: usize = 100 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of one batch before it is dropped (and announced with L10).
const MAX_ATTEMPTS: u32 = 10;
const USER_AGENT: &str = concat!("logplex/", env!("CARGO_PKG_VERSION"));

/// What became of one attempt.
enum Outcome {
    Delivered,
    Retry(String),
    Refused(u16),
}

/// The task of an `http://` or `https://` drain.
pub async fn run(d: &Drain, shared: &Shared) {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*shared.tls.config(d.url.insecure)).clone())
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1)
        .build(connector);
    let auth = d.url.auth.as_ref().map(|(u, p)| {
        let userpass = [&u[..], b":", &p[..]].concat();
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(userpass)
        )
    });
    let token = String::from_utf8_lossy(&d.token).into_owned();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut flush_deadline: Option<Instant> = None;
    let mut out = BytesMut::with_capacity(BATCH_BYTES + 4096);
    loop {
        if shared.flush.is_cancelled() && flush_deadline.is_none() {
            flush_deadline = Some(Instant::now() + FLUSH_DEADLINE);
        }
        // Past the flush deadline, what is left (an L10 for a receiver that is down or
        // refuses) is dropped: shutdown does not wait for it.
        if flush_deadline.is_some_and(|t| Instant::now() > t) {
            return;
        }
        if wait_for_work(d, shared, None).await != Wait::Work {
            return;
        }
        let (lines, dropped) = d.take(usize::MAX, BATCH_BYTES);
        out.clear();
        let mut count = lines.len();
        if let Some(dr) = dropped {
            render::l10_http(&mut out, now_micros(), dr.count, dr.since);
            count += 1;
        }
        for l in &lines {
            render::http_drain(
                &mut out,
                l.pri,
                l.timestamp(),
                b"host",
                &l.source,
                l.procid(),
                l.msg(),
            );
        }
        let body = out.split().freeze();
        let frame_id = uuid::Uuid::new_v4().simple().to_string();
        let n = lines.len() as u64;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = hyper::Request::post(&d.url.endpoint)
                .header("content-type", "application/logplex-1")
                .header("logplex-msg-count", count.to_string())
                .header("logplex-frame-id", &frame_id)
                .header("logplex-drain-token", &token)
                .header("user-agent", USER_AGENT);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let outcome = match req.body(Full::new(body.clone())) {
                Err(e) => Outcome::Refused({
                    tracing::warn!(drain = %token, "cannot build the request: {e}");
                    0
                }),
                Ok(req) => match d
                    .writing(tokio::time::timeout(REQUEST_TIMEOUT, client.request(req)))
                    .await
                {
                    Err(_) => {
                        Outcome::Retry(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))
                    }
                    Ok(Err(e)) => Outcome::Retry(error_chain(&e)),
                    Ok(Ok(resp)) => {
                        let status = resp.status().as_u16();
                        let _ =
                            tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect()).await;
                        match status {
                            200..=299 => Outcome::Delivered,
                            429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
                            other => Outcome::Refused(other),
                        }
                    }
                },
            };
            match outcome {
                Outcome::Delivered => {
                    d.set_connected(true);
                    d.count_sent(n);
                    d.counters.buffered.sub(n as i64);
                    backoff.reset();
                    break;
                }
                Outcome::Refused(status) => {
                    tracing::warn!(drain = %token, url = %d.url.redacted, "batch of {n} refused with HTTP {status}; dropped");
                    drop_batch(d, n, dropped);
                    d.failed(format_args!("batch refused with HTTP {status}"));
                    // The next delivery (at least the L10 of this one) waits a backoff: a
                    // receiver that refuses everything must not be sent a batch in a loop.
                    // Flushing at shutdown there is no waiting, so a refused L10 alone ends
                    // the flush.
                    if (n == 0 && flush_deadline.is_some())
                        || !pause(d, shared, backoff.next_delay()).await
                    {
                        return;
                    }
                    break;
                }
                Outcome::Retry(why) => {
                    d.set_connected(false);
                    d.failed(&why);
                    tracing::debug!(drain = %token, url = %d.url.redacted, attempt, "batch not delivered: {why}");
                    let out_of_time = flush_deadline.is_some_and(|t| Instant::now() > t);
                    if attempt >= MAX_ATTEMPTS || out_of_time {
                        drop_batch(d, n, dropped);
                        if n == 0 && flush_deadline.is_some() {
                            // Flushing, and only an L10 was left: nothing more to deliver.
                            return;
                        }
                        break;
                    }
                    d.counters.retried.inc();
                    if !pause(d, shared, backoff.next_delay()).await {
                        // Removed while retrying: the batch is dropped, and counted.
                        drop_batch(d, n, dropped);
                        return;
                    }
                    if shared.flush.is_cancelled() && flush_deadline.is_none() {
                        flush_deadline = Some(Instant::now() + FLUSH_DEADLINE);
                    }
                }
            }
        }
    }
}

/// An error and its causes, `outer: inner: …` (hyper's own message is only "client error
/// (Connect)"; the cause says which name did not resolve or which address refused).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A batch that will not be delivered: counted, and announced by the next L10 (with the
/// drops it was itself announcing).
fn drop_batch(d: &Drain, n: u64, dropped: Option<super::buffer::Dropped>) {
    d.buffer.unshift(Vec::new(), dropped);
    d.buffer.lost(n);
    d.count_dropped(n);
    d.counters.buffered.sub(n as i64);
}
