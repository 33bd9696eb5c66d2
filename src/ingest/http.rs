//! `POST /logs`: logplex-1 batches over HTTP (`docs/input.md`). All or nothing per batch: every
//! frame is checked before any is stored. gzip bodies are capped by their decompressed size.
//! A batch sent by a drain of the same channel (its `Logplex-Drain-Token`) is refused: it
//! would loop.
//! Bodies are read under the deadline, minimum rate and node budget of [`crate::body`],
//! and only once the token is known.

use crate::body::{BodyError, Listener};
use crate::channel::Logged;
use crate::config::FsyncMode;
use crate::http::{response, Body};
use crate::line::Line;
use crate::metrics::{InputCounters, Reject};
use crate::server::Node;
use base64::Engine;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;

/// Handles one request to the HTTP input.
pub async fn handle(
    node: Arc<Node>,
    counters: InputCounters,
    req: Request<Incoming>,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/logs") => match post_logs(&node, &counters, req).await {
            Ok(n) => {
                let mut r = response(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
                r.headers_mut().remove(header::CONTENT_TYPE);
                tracing::trace!("stored {n} lines");
                r
            }
            Err(Rejection(status, reason, body)) => {
                let mut r = response(status, "text/plain; charset=utf-8", format!("{reason}\n"));
                if status == StatusCode::SERVICE_UNAVAILABLE && body.is_none() {
                    // The durable log cannot write: it retries the disk every second.
                    r.headers_mut().insert(
                        header::RETRY_AFTER,
                        header::HeaderValue::from(crate::body::RETRY_AFTER_SECS),
                    );
                }
                if status == StatusCode::UNAUTHORIZED {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Basic realm=Logplex"),
                    );
                }
                if let Some(e) = body {
                    e.add_headers(r.headers_mut());
                }
                r
            }
        },
        (_, "/logs") => response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST /logs\n",
        ),
        (&Method::GET, "/healthcheck") => response(
            StatusCode::OK,
            "application/json",
            format!("{{\"status\":\"{}\"}}\n", node.health()),
        ),
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the log input is POST /logs\n",
        ),
    }
}

/// A refusal: status, reason, and the body error behind it (which adds headers).
struct Rejection(StatusCode, String, Option<BodyError>);

impl From<(StatusCode, String)> for Rejection {
    fn from((status, reason): (StatusCode, String)) -> Self {
        Rejection(status, reason, None)
    }
}

impl From<BodyError> for Rejection {
    fn from(e: BodyError) -> Self {
        Rejection(e.status(), e.to_string(), Some(e))
    }
}

/// The token in `Authorization: Basic base64(user:token)` (the user name is ignored).
pub fn basic_password(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let s = String::from_utf8(decoded).ok()?;
    let (_, pass) = s.split_once(':')?;
    Some(pass.to_string())
}

async fn post_logs(
    node: &Node,
    counters: &InputCounters,
    req: Request<Incoming>,
) -> Result<usize, Rejection> {
    let max_body = node.config.ingest.http.max_body;
    let headers = req.headers();
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/logplex-1") {
        return Err(Rejection(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/logplex-1, not {ctype:?}"),
            None,
        ));
    }
    let token = basic_password(headers).ok_or((
        StatusCode::UNAUTHORIZED,
        "missing Basic authorization with the channel token as password".to_string(),
    ))?;
    let snap = node.registry.snapshot();
    let route = snap
        .route(token.as_bytes())
        .ok_or_else(|| (StatusCode::UNAUTHORIZED, "unknown token".to_string()))?
        .clone();
    if let Some(log) = &node.log {
        if let crate::log::Health::Degraded { reason, .. } = log.health() {
            counters.reject(Reject::NotStored, 1);
            return Err(Rejection(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the durable log cannot write ({reason}); nothing of this batch was stored, retry later"),
                None,
            ));
        }
    }
    let drain_token = headers
        .get("logplex-drain-token")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.trim().to_string());
    let expected = match headers.get("logplex-msg-count") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or((
                    StatusCode::BAD_REQUEST,
                    "Logplex-Msg-Count is not a number".to_string(),
                ))?,
        ),
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(e) => {
            return Err(Rejection(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {e:?} is not supported (use gzip)"),
                None,
            ))
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let (body, mut reservation) = node
        .bodies
        .read(Listener::Http, req.into_body(), max_body, declared)
        .await?;
    let body = if gzip {
        node.bodies.gunzip(&body, max_body, &mut reservation)?
    } else {
        body
    };
    let frames = logplex_proto::split_batch(&body, node.config.ingest.max_frame, expected)
        .map_err(|e| {
            counters.reject(Reject::Malformed, 1);
            (StatusCode::BAD_REQUEST, e.to_string())
        })?;
    // A batch one of this channel's own drains sent: stored, it would go back out to that
    // drain, and come back, forever.
    if let Some(drain) = drain_token {
        if snap.is_drain_of(drain.as_bytes(), &route.channel) {
            counters.reject(Reject::DrainLoop, frames.len() as u64);
            return Err(Rejection(
                StatusCode::BAD_REQUEST,
                format!(
                    "this batch comes from {drain}, a drain of this same app (Logplex-Drain-Token): storing it would send it back to that drain forever"
                ),
                None,
            ));
        }
    }
    let mut lines = Vec::with_capacity(frames.len());
    // Router and l2met lines read here, out of the channel's lock, when the channel has
    // metrics on.
    let metered = route.channel.metered();
    let mut reads = metered.then(crate::logmetrics::Reads::default);
    for (i, f) in frames.iter().enumerate() {
        match logplex_proto::parse_lenient(f) {
            Ok(m) => {
                if let Some(r) = &mut reads {
                    r.line(&route.source, m.procid, m.msg, f);
                }
                lines.push(Line::from_parsed(f, &m, &route.source));
            }
            Err(e) => {
                counters.reject(Reject::Malformed, frames.len() as u64);
                return Err(Rejection(
                    StatusCode::BAD_REQUEST,
                    format!("frame {i}: {e}"),
                    None,
                ));
            }
        }
    }
    let count = lines.len();
    super::wait_for_log(node.log.as_deref()).await;
    let (n, logged) = route
        .channel
        .push_paced(
            lines.into_iter(),
            count,
            tokio::time::Instant::now() + std::time::Duration::from_millis(100),
            reads
                .as_ref()
                .map_or(crate::channel::Read::Not, crate::channel::Read::Done),
        )
        .await;
    counters.received.inc_by(n as u64);
    let not_stored = |why: String| {
        Rejection(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the durable log did not keep this batch ({why}); its lines reached tails and drains, but retry to keep them"),
            None,
        )
    };
    match (logged, &node.log) {
        (Logged::Refused(e), _) => return Err(not_stored(e.to_string())),
        (Logged::At(at), Some(log)) if node.config.log.fsync == FsyncMode::Batch => {
            log.durable(at)
                .await
                .map_err(|e| not_stored(e.to_string()))?;
        }
        _ => {}
    }
    Ok(n)
}
