//! The HTTP API of CONTRACT §7: healthcheck, metrics, channels, tokens and sessions.
//! Every route but `/healthcheck`, `/sessions/UUID` and the web console's pages and files
//! (`/`, `/console/FILE`, which hold no data) needs the admin key (Basic with any user, or
//! Bearer), compared in constant time. Errors are one JSON shape.

pub mod alerts;
pub mod metrics;
pub mod platform;
pub mod stats;

use crate::body::{BodyError, Listener};
use crate::config::valid_channel_name;
use crate::http::{json, response, Body};
use crate::server::Node;
use crate::session::Spec;
use crate::store::{self, StoreError};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// An API failure: status, stable id and a sentence for the user.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub id: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, id: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            id,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_params", message)
    }
    pub fn into_response(self) -> Response<Body> {
        let mut r = json(
            self.status,
            &json!({"id": self.id, "message": self.message}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=Logplex"),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(crate::body::RETRY_AFTER_SECS),
            );
        }
        if matches!(
            self.status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::SERVICE_UNAVAILABLE
        ) {
            // The body was not read to its end: the connection cannot be reused.
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        r
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        let status = e.status();
        match e {
            BodyError::TooLarge(_) => {
                ApiError::new(status, "request_too_large", "Request body over 64 KiB.")
            }
            BodyError::OverBudget => ApiError::new(
                status,
                "unavailable",
                format!(
                    "Too many request bodies are being read at once; retry in {} s.",
                    crate::body::RETRY_AFTER_SECS
                ),
            ),
            BodyError::Timeout(_) | BodyError::TooSlow => {
                ApiError::new(status, "request_timeout", format!("Request {e}."))
            }
            BodyError::Read(_) | BodyError::Gzip(_) => {
                ApiError::new(status, "bad_request", format!("Invalid body: {e}."))
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("Not found."),
            StoreError::Conflict => {
                ApiError::new(StatusCode::CONFLICT, "conflict", "It already exists.")
            }
            other => {
                tracing::error!("store: {other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Internal error; see the server log.",
                )
            }
        }
    }
}

pub type ApiResult = Result<Response<Body>, ApiError>;

/// Handles one API request.
pub async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    match route(&node, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Is the request authorised with the admin key (Bearer, or Basic with any user)? The key
/// presented is hashed and compared with the key's hash in constant time.
pub fn authorised(headers: &HeaderMap, key: &crate::admin_key::AdminKey) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let presented = match v.split_once(' ') {
        Some((s, rest)) if s.eq_ignore_ascii_case("bearer") => rest.trim().to_string(),
        Some((s, _)) if s.eq_ignore_ascii_case("basic") => {
            match crate::ingest::http::basic_password(headers) {
                Some(p) => p,
                None => return false,
            }
        }
        _ => return false,
    };
    key.matches(presented.as_bytes())
}

async fn route(node: &Arc<Node>, req: Request<Incoming>) -> ApiResult {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let method = req.method().clone();
    // Unauthenticated routes.
    match (&method, segs.as_slice()) {
        (&Method::GET, ["healthcheck"]) => {
            return Ok(json(StatusCode::OK, &json!({"status": "normal"})));
        }
        (&Method::GET, []) => return Ok(crate::console::console()),
        (&Method::GET, ["console", file]) => {
            return crate::console::file(file)
                .ok_or_else(|| ApiError::not_found(format!("No file {path}.")));
        }
        (&Method::GET, ["sessions", id]) if crate::console::wants_html(req.headers()) => {
            return Ok(crate::console::live(node, id));
        }
        (&Method::GET, ["sessions", id]) => {
            let h = req.headers();
            let sse = h
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/event-stream"));
            let last = h
                .get("last-event-id")
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
            return Ok(crate::session::stream(
                node,
                id,
                sse,
                if sse { last } else { None },
            ));
        }
        _ => {}
    }
    if !authorised(req.headers(), &node.admin_key) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or wrong admin key.",
        ));
    }
    match (&method, segs.as_slice()) {
        (&Method::GET, ["metrics"]) => Ok(metrics(node)),
        (&Method::GET, ["v2", "stats"]) => Ok(stats::stats(node)),
        (&Method::GET, ["v2", "channels"]) => {
            let snap = node.registry.snapshot();
            let list: Vec<_> = snap.records().iter().map(channel_json).collect();
            Ok(json(StatusCode::OK, &serde_json::Value::Array(list)))
        }
        (&Method::POST, ["v2", "channels"]) => create_channel(node, req).await,
        (&Method::GET, ["v2", "channels", name]) => {
            let snap = node.registry.snapshot();
            let rec = snap
                .records()
                .iter()
                .find(|r| r.name == *name)
                .ok_or_else(|| unknown_app(name))?;
            Ok(json(StatusCode::OK, &channel_json(rec)))
        }
        (&Method::PATCH, ["v2", "channels", name]) => {
            let name = name.to_string();
            let patch = read_json(node, req).await?;
            let v = metrics::patch_channel(node, &name, patch).await?;
            Ok(json(StatusCode::OK, &v))
        }
        (&Method::GET, ["v2", "channels", name, "metrics"]) => {
            let v = metrics::channel_metrics(node, name, req.uri().query())?;
            Ok(json(StatusCode::OK, &v))
        }
        (&Method::DELETE, ["v2", "channels", name]) => {
            let n = name.to_string();
            node.registry
                .change(move |c| store::delete_channel(c, &n))
                .await
                .map_err(|e| not_found_as(e, name))?;
            Ok(no_content())
        }
        (&Method::GET, ["v2", "channels", name, "tokens"]) => {
            let snap = node.registry.snapshot();
            let rec = snap
                .records()
                .iter()
                .find(|r| r.name == *name)
                .ok_or_else(|| unknown_app(name))?;
            let list: Vec<_> = rec
                .tokens
                .iter()
                .map(|(n, t)| json!({"name": n, "token": t}))
                .collect();
            Ok(json(StatusCode::OK, &serde_json::Value::Array(list)))
        }
        (&Method::POST, ["v2", "channels", name, "tokens"]) => {
            let name = name.to_string();
            create_token(node, &name, req).await
        }
        (&Method::POST, ["v2", "sessions"]) => create_session(node, req).await,
        (&Method::GET, ["v2", "channels", name, "drains"]) => {
            let n = name.to_string();
            let list = node
                .registry
                .store()
                .call(move |c| store::channel_drains(c, &n))
                .await
                .map_err(|e| not_found_as(e, name))?;
            let list = list
                .iter()
                .map(|d| {
                    let mut v = drain_json(d);
                    v["status"] = status_json(node.drains.status(&d.id));
                    v
                })
                .collect();
            Ok(json(StatusCode::OK, &serde_json::Value::Array(list)))
        }
        (&Method::POST, ["v2", "channels", name, "drains"]) => {
            let name = name.to_string();
            let body: NewDrain = read_json(node, req).await?;
            let d = add_drain(node, &name, &body.url).await?;
            Ok(json(StatusCode::CREATED, &drain_json(&d)))
        }
        (&Method::DELETE, ["v2", "channels", name, "drains", which]) => {
            remove_drain(node, name, which).await?;
            Ok(no_content())
        }
        (_, ["v2", "alerts", ..]) | (_, ["v2", "channels", _, "alerts", ..]) => {
            alerts::route(node, &method, &segs, req).await
        }
        (_, ["apps", ..]) => platform::route(node, &method, &segs, req).await,
        _ => Err(ApiError::not_found(format!("No route {method} {path}."))),
    }
}

pub(crate) fn no_content() -> Response<Body> {
    let mut r = Response::new(crate::http::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub(crate) fn unknown_app(name: &str) -> ApiError {
    ApiError::not_found(format!("Couldn't find that app: {name}."))
}

pub(crate) fn not_found_as(e: StoreError, name: &str) -> ApiError {
    match e {
        StoreError::NotFound => unknown_app(name),
        other => other.into(),
    }
}

pub(crate) fn channel_json(rec: &store::ChannelRecord) -> serde_json::Value {
    let tokens: serde_json::Map<String, serde_json::Value> = rec
        .tokens
        .iter()
        .map(|(n, t)| (n.clone(), serde_json::Value::String(t.clone())))
        .collect();
    json!({"name": rec.name, "tokens": tokens, "metrics": rec.metrics})
}

fn metrics(node: &Node) -> Response<Body> {
    let snap = node.registry.snapshot();
    let (mut lines, mut bytes, mut n) = (0usize, 0usize, 0i64);
    for c in snap.channels() {
        let (l, b) = c.history_len();
        lines += l;
        bytes += b;
        n += 1;
    }
    node.metrics.history_lines.set(lines as i64);
    node.metrics
        .body_bytes_inflight
        .set(node.bodies.in_flight() as i64);
    node.metrics.history_bytes.set(bytes as i64);
    node.metrics.channels.set(n);
    response(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        node.metrics.render(),
    )
}

/// Reads a JSON body of at most 64 KiB (under the deadline, minimum rate and node
/// budget of [`crate::body`]).
pub(crate) async fn read_json<T: for<'de> Deserialize<'de>>(
    node: &Node,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let (body, _reservation) = node
        .bodies
        .read(Listener::Api, req.into_body(), 64 * 1024, declared)
        .await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("Invalid JSON body: {e}."),
        )
    })
}

fn valid_token_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 48
        && n.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'[' && b != b']')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewChannel {
    name: String,
    #[serde(default)]
    tokens: Vec<String>,
    /// Metrics from the logs for this channel (off when left out).
    #[serde(default)]
    metrics: bool,
}

async fn create_channel(node: &Arc<Node>, req: Request<Incoming>) -> ApiResult {
    let body: NewChannel = read_json(node, req).await?;
    if !valid_channel_name(&body.name) {
        return Err(ApiError::invalid(format!(
            "Name {:?} must start with a letter and use only lowercase letters, digits and dashes (2 to 63).",
            body.name
        )));
    }
    if let Some(t) = body.tokens.iter().find(|t| !valid_token_name(t)) {
        return Err(ApiError::invalid(format!(
            "Token name {t:?} must be 1 to 48 printable characters."
        )));
    }
    let mut tokens = body.tokens;
    tokens.sort();
    tokens.dedup();
    let (name, with_metrics) = (body.name.clone(), body.metrics);
    let rec = node
        .registry
        .change(move |c| {
            let rec = store::create_channel(c, &name, &tokens)?;
            if with_metrics {
                return store::set_channel_metrics(c, &name, true);
            }
            Ok(rec)
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("App {} already exists.", body.name),
            ),
            other => other.into(),
        })?;
    Ok(json(StatusCode::CREATED, &channel_json(&rec)))
}

#[derive(Deserialize)]
struct NewDrain {
    url: String,
}

/// `{"id","token","url"}` of a drain; a password in the URL shows as `***`.
pub(crate) fn drain_json(d: &store::DrainRecord) -> serde_json::Value {
    json!({"id": d.id, "token": d.token, "url": crate::drain::url::redact(&d.url)})
}

/// A drain's `status`: `{"state","last_error","last_error_at","sent","dropped","lag_lines"}`
/// (times in RFC 3339). A drain not running (not yet, or no more) is `connecting` with zeros.
fn status_json(st: Option<crate::drain::Status>) -> serde_json::Value {
    let st = st.unwrap_or(crate::drain::Status {
        state: crate::drain::State::Connecting,
        last_error: None,
        last_error_at: None,
        sent: 0,
        dropped: 0,
        lag_lines: 0,
    });
    let at = st.last_error_at.map(|us| {
        let mut b = bytes::BytesMut::with_capacity(32);
        logplex_proto::render::rfc3339_micros(&mut b, us);
        String::from_utf8_lossy(&b).into_owned()
    });
    json!({
        "state": st.state.as_str(),
        "last_error": st.last_error,
        "last_error_at": at,
        "sent": st.sent,
        "dropped": st.dropped,
        "lag_lines": st.lag_lines,
    })
}

/// Validates and adds a drain; it starts at once (the registry refreshes the drains).
pub(crate) async fn add_drain(
    node: &Arc<Node>,
    channel: &str,
    url: &str,
) -> Result<store::DrainRecord, ApiError> {
    let parsed = crate::drain::DrainUrl::parse(url).map_err(ApiError::invalid)?;
    if drain_loops(node, channel, &parsed).await {
        return Err(ApiError::invalid(format!(
            "A drain to {} would send every line of {channel} back into {channel} (it is this server's log input with a token of {channel}), forever.",
            parsed.redacted
        )));
    }
    let max = node.config.drains.max_per_channel;
    let (ch, u) = (channel.to_string(), url.to_string());
    let r = node
        .registry
        .change(move |c| Ok(store::create_drain(c, &ch, &u, max)))
        .await?;
    r.map_err(|e| match e {
        store::AddDrain::Duplicate => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{url} is already a drain of {channel}."),
        ),
        store::AddDrain::Limit(n) => ApiError::invalid(format!(
            "App {channel} already has {n} drains, the most allowed (drains.max_per_channel)."
        )),
        store::AddDrain::Store(e) => not_found_as(e, channel),
    })
}

/// Would a drain of `channel` to `url` post the channel's lines back into it? It would when
/// the URL is this server's HTTP input (its bound address, or a name or address that
/// resolves to it, such as `localhost`) with one of the channel's tokens as password.
/// (A loop through something this cannot see, a proxy, is refused at ingest instead.)
async fn drain_loops(node: &Node, channel: &str, url: &crate::drain::DrainUrl) -> bool {
    let Some(input) = node.http_addr else {
        return false;
    };
    let Some((_, password)) = url
        .auth
        .as_ref()
        .filter(|_| url.kind == crate::drain::Kind::Http)
    else {
        return false;
    };
    if url.port != input.port() {
        return false;
    }
    let own_token = node
        .registry
        .snapshot()
        .records()
        .iter()
        .find(|r| r.name == channel)
        .is_some_and(|r| r.tokens.iter().any(|(_, t)| t.as_bytes() == &password[..]));
    if !own_token {
        return false;
    }
    let lookup = tokio::net::lookup_host((url.host.as_str(), url.port));
    match tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await {
        Ok(Ok(addrs)) => addrs.into_iter().any(|a| reaches(input, a)),
        _ => false,
    }
}

/// Does a connection to `a` reach a listener bound to `input`?
fn reaches(input: std::net::SocketAddr, a: std::net::SocketAddr) -> bool {
    if a.port() != input.port() {
        return false;
    }
    let (ip, bound) = (a.ip().to_canonical(), input.ip().to_canonical());
    // Connecting to 0.0.0.0 or :: reaches this host.
    let local = |ip: std::net::IpAddr| {
        ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
    };
    if bound.is_unspecified() {
        local(ip)
    } else {
        ip == bound || (ip.is_unspecified() && bound.is_loopback())
    }
}

/// Removes a drain by id, token or URL; it stops at once.
pub(crate) async fn remove_drain(
    node: &Arc<Node>,
    channel: &str,
    which: &str,
) -> Result<store::DrainRecord, ApiError> {
    let (ch, w) = (channel.to_string(), which.to_string());
    node.registry
        .change(move |c| store::delete_drain(c, &ch, &w))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(format!("No drain {which} on {channel}.")),
            other => other.into(),
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

async fn create_token(node: &Arc<Node>, channel: &str, req: Request<Incoming>) -> ApiResult {
    let body: NewToken = read_json(node, req).await?;
    if !valid_token_name(&body.name) {
        return Err(ApiError::invalid(format!(
            "Token name {:?} must be 1 to 48 printable characters.",
            body.name
        )));
    }
    let (ch, tn) = (channel.to_string(), body.name.clone());
    let token = node
        .registry
        .change(move |c| store::create_token(c, &ch, &tn))
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("App {channel} already has a token named {}.", body.name),
            ),
            other => not_found_as(other, channel),
        })?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"name": body.name, "token": token}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    channel: String,
    num: Option<usize>,
    #[serde(default)]
    tail: bool,
    source: Option<String>,
    dyno: Option<String>,
    grep: Option<String>,
}

/// `POST /v2/sessions`; the URL is built on `api.public_url`, never the Host header.
async fn create_session(node: &Arc<Node>, req: Request<Incoming>) -> ApiResult {
    let b: NewSession = read_json(node, req).await?;
    let max = node.config.buffers.history_lines;
    let num = b.num.unwrap_or(100);
    if num > max {
        return Err(ApiError::invalid(format!(
            "num {num} is over the history size ({max})."
        )));
    }
    let channel_id = match node.registry.snapshot().channel(&b.channel) {
        Some(c) => c.id,
        None => return Err(unknown_app(&b.channel)),
    };
    let nonempty = |o: Option<String>| o.filter(|s| !s.is_empty());
    let id = node.sessions.create(Spec {
        channel: b.channel,
        channel_id,
        num,
        tail: b.tail,
        source: nonempty(b.source),
        dyno: nonempty(b.dyno),
        grep: nonempty(b.grep),
    });
    Ok(json(
        StatusCode::CREATED,
        &json!({"url": format!("{}/sessions/{id}", node.public_url)}),
    ))
}
