//! The HTTP API, routed with axum: the logplex API (`/v2`, in the README), the Heroku
//! Platform API subset ([`platform`]), the web [`console`](crate::console), session URLs,
//! `/healthcheck` and `/metrics`. [`router`] builds the one [`Router`]; [`handle`] hands it
//! each request of the API listener, whose connections [`crate::http::serve`] accepts and
//! caps.
//!
//! | Method | Path                                   | Auth | Handler                       |
//! |--------|----------------------------------------|------|-------------------------------|
//! | GET    | `/healthcheck`                         | no   | [`healthcheck`]               |
//! | GET    | `/`                                    | no   | [`console`]                   |
//! | GET    | `/console/{file}`                      | no   | [`console_file`]              |
//! | GET    | `/sessions/{id}`                       | no   | [`session`] (text, SSE, page) |
//! | GET    | `/metrics`                             | key  | [`metrics()`]                 |
//! | GET    | `/v2/stats`                            | key  | [`stats::stats`]              |
//! | GET    | `/v2/channels`                         | key  | [`v2::list_channels`]         |
//! | POST   | `/v2/channels`                         | key  | [`v2::create_channel`]        |
//! | GET    | `/v2/channels/{app}`                   | key  | [`v2::channel`]               |
//! | DELETE | `/v2/channels/{app}`                   | key  | [`v2::delete_channel`]        |
//! | PATCH  | `/v2/channels/{app}` `{"metrics"}`     | key  | [`metrics::patch`]            |
//! | GET    | `/v2/channels/{app}/metrics?since=`    | key  | [`metrics::get`]              |
//! | GET    | `/v2/channels/{app}/tokens`            | key  | [`v2::tokens`]                |
//! | POST   | `/v2/channels/{app}/tokens`            | key  | [`v2::create_token`]          |
//! | GET    | `/v2/channels/{app}/drains`            | key  | [`v2::drains`]                |
//! | POST   | `/v2/channels/{app}/drains`            | key  | [`v2::create_drain`]          |
//! | DELETE | `/v2/channels/{app}/drains/{which}`    | key  | [`v2::delete_drain`]          |
//! | GET    | `/v2/channels/{app}/alerts`            | key  | [`alerts::list_on`]           |
//! | POST   | `/v2/channels/{app}/alerts`            | key  | [`alerts::create`]            |
//! | DELETE | `/v2/channels/{app}/alerts/{name}`     | key  | [`alerts::delete`]            |
//! | GET    | `/v2/alerts`                           | key  | [`alerts::list`]              |
//! | POST   | `/v2/sessions`                         | key  | [`v2::create_session`]        |
//! | GET    | `/apps/{app}`                          | key  | [`platform::app`]             |
//! | POST   | `/apps/{app}/log-sessions`             | key  | [`platform::log_session`]     |
//! | GET    | `/apps/{app}/log-drains`               | key  | [`platform::drains`]          |
//! | POST   | `/apps/{app}/log-drains`               | key  | [`platform::add_drain`]       |
//! | GET    | `/apps/{app}/log-drains/{which}`       | key  | [`platform::drain`]           |
//! | DELETE | `/apps/{app}/log-drains/{which}`       | key  | [`platform::remove_drain`]    |
//! | any    | anything else                          | key  | [`no_route`] (404)            |
//!
//! "key" is the admin key, as Bearer or as the password of Basic with any user, checked by
//! one layer, [`require_admin_key`], in constant time; the routes without it hold no data
//! (the console asks for the key in the browser) or are guarded by their unguessable URL
//! (sessions). A request without the key gets 401 before any 404 or 422, so unknown paths
//! say nothing. Path segments are percent-decoded (the CLI encodes them; `%2A` is `*`), and
//! a trailing `/` is ignored. Errors are [`ApiError`]s, answered by [`V2`] or [`Platform`].

pub mod alerts;
pub mod error;
pub mod metrics;
pub mod platform;
pub mod range;
pub mod stats;
pub mod v2;

pub use error::{ApiError, Clash, Missing, Platform, V2};

use crate::body::Listener;
use crate::server::Node;
use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, StatusCode, Uri};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// The API's routes, as in the table of the module's documentation.
pub fn router(node: Arc<Node>) -> Router {
    let public = Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/", get(console))
        .route("/console/{file}", get(console_file))
        .route("/sessions/{id}", get(session))
        .method_not_allowed_fallback(no_route);
    let keyed = Router::new()
        .route("/metrics", get(metrics))
        .route("/v2/stats", get(stats::stats))
        .route(
            "/v2/channels",
            get(v2::list_channels).post(v2::create_channel),
        )
        .route(
            "/v2/channels/{app}",
            get(v2::channel)
                .delete(v2::delete_channel)
                .patch(metrics::patch),
        )
        .route("/v2/channels/{app}/metrics", get(metrics::get))
        .route(
            "/v2/channels/{app}/tokens",
            get(v2::tokens).post(v2::create_token),
        )
        .route(
            "/v2/channels/{app}/drains",
            get(v2::drains).post(v2::create_drain),
        )
        .route(
            "/v2/channels/{app}/drains/{which}",
            axum::routing::delete(v2::delete_drain),
        )
        .route(
            "/v2/channels/{app}/alerts",
            get(alerts::list_on).post(alerts::create),
        )
        .route(
            "/v2/channels/{app}/alerts/{name}",
            axum::routing::delete(alerts::delete),
        )
        .route("/v2/alerts", get(alerts::list))
        .route("/v2/sessions", post(v2::create_session))
        .route("/apps/{app}", get(platform::app))
        .route("/apps/{app}/log-sessions", post(platform::log_session))
        .route(
            "/apps/{app}/log-drains",
            get(platform::drains).post(platform::add_drain),
        )
        .route(
            "/apps/{app}/log-drains/{which}",
            get(platform::drain).delete(platform::remove_drain),
        )
        .method_not_allowed_fallback(no_route)
        .fallback(no_route)
        // After the routes and the fallback: the layer guards them all.
        .layer(middleware::from_fn_with_state(
            node.clone(),
            require_admin_key,
        ));
    public.merge(keyed).with_state(node)
}

/// Answers one request of the API listener with `router`. The body is not handed to the
/// router as axum's: it stays hyper's, in the request's extensions, so that [`JsonBody`]
/// reads it through the node's body limits ([`crate::body`]), as the HTTP input does.
pub async fn handle(router: Router, req: Request<Incoming>) -> Response {
    let (mut parts, body) = req.into_parts();
    trim_trailing_slash(&mut parts.uri);
    parts
        .extensions
        .insert(RawBody(Arc::new(Mutex::new(Some(body)))));
    let req = Request::from_parts(parts, axum::body::Body::empty());
    match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// `/v2/channels/` is `/v2/channels`, as it always was.
fn trim_trailing_slash(uri: &mut Uri) {
    let path = uri.path();
    if path.len() <= 1 || !path.ends_with('/') {
        return;
    }
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let pq = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_string(),
    };
    let mut p = std::mem::take(uri).into_parts();
    p.path_and_query = pq.parse().ok();
    if let Ok(u) = Uri::from_parts(p) {
        *uri = u;
    }
}

/// The layer in front of every route but the public ones: the admin key, or 401.
pub async fn require_admin_key(
    State(node): State<Arc<Node>>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if authorised(req.headers(), &node.admin_key.load()) {
        next.run(req).await
    } else {
        V2(ApiError::Unauthorized).into_response()
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

/// `GET /healthcheck`: `normal`, or `degraded` while the durable log cannot write.
pub async fn healthcheck(State(node): State<Arc<Node>>) -> Response {
    crate::http::json(StatusCode::OK, &json!({"status": node.health()})).into_response()
}

/// `GET /`: the console page.
pub async fn console() -> Response {
    crate::console::console().into_response()
}

/// `GET /console/FILE`: one of the console's embedded files.
pub async fn console_file(Params(file): Params<String>) -> Result<Response, V2> {
    crate::console::file(&file)
        .map(IntoResponse::into_response)
        .ok_or_else(|| {
            V2(ApiError::NotFound(Missing::File(format!(
                "/console/{file}"
            ))))
        })
}

/// `GET /sessions/UUID`: the live page for a browser's navigation, else the stream (SSE
/// for an `Accept` of `text/event-stream`, resuming after `Last-Event-ID`; text otherwise).
pub async fn session(
    State(node): State<Arc<Node>>,
    Params(id): Params<String>,
    headers: HeaderMap,
) -> Result<Response, V2> {
    // In cluster mode a session made on another node is read from Redis.
    crate::session::adopt(&node, &id).await;
    if crate::console::wants_html(&headers) {
        return Ok(crate::console::live(&node, &id).into_response());
    }
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let last = headers
        .get("last-event-id")
        .and_then(|v| crate::session::EventId::parse(v.to_str().ok()?));
    let r = crate::session::stream(&node, &id, sse, if sse { last } else { None })?;
    Ok(r.into_response())
}

/// `GET /metrics`: Prometheus text, with the gauges read at this moment refreshed first.
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    // Kept as the histories change: a scrape visits no channel.
    let (lines, bytes) = node.registry.history_totals();
    node.metrics.history_lines.set(lines as i64);
    node.metrics
        .body_bytes_inflight
        .set(node.bodies.in_flight() as i64);
    node.metrics.history_bytes.set(bytes as i64);
    node.metrics
        .channels
        .set(node.registry.snapshot().len() as i64);
    crate::http::response(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        node.metrics.render(),
    )
    .into_response()
}

/// Any request no route takes (behind the admin key, so only a client with the key learns
/// which paths exist), and a method a route does not answer.
pub async fn no_route(method: Method, uri: Uri) -> V2 {
    V2(ApiError::NotFound(Missing::Route {
        method,
        path: uri.path().to_string(),
    }))
}

/// The request's body as hyper gave it, until [`JsonBody`] takes it.
#[derive(Clone)]
struct RawBody(Arc<Mutex<Option<Incoming>>>);

impl RawBody {
    fn take(&self) -> Option<Incoming> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A JSON body of at most 64 KiB, read under the deadline, minimum rate and shared budget
/// of [`crate::body`]. Its errors (body and JSON) are worded alike on both surfaces.
pub struct JsonBody<T>(pub T);

/// The most an API body may hold.
const MAX_BODY: usize = 64 * 1024;

impl<T: DeserializeOwned> FromRequest<Arc<Node>> for JsonBody<T> {
    type Rejection = V2;

    async fn from_request(req: axum::extract::Request, node: &Arc<Node>) -> Result<Self, V2> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let body = req
            .extensions()
            .get::<RawBody>()
            .and_then(RawBody::take)
            .ok_or_else(|| ApiError::Internal("the request's body was not kept".into()))?;
        let (bytes, _reservation) = node
            .bodies
            .read(Listener::Api, body, MAX_BODY, declared)
            .await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| V2(ApiError::BadJson(e.to_string())))
    }
}

/// The path's parameters, percent-decoded. A segment that is not UTF-8 once decoded
/// matches no route.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = V2;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, V2> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Params(t)),
            Err(_) => Err(V2(ApiError::NotFound(Missing::Route {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
            }))),
        }
    }
}

/// A JSON answer.
pub(crate) fn reply(status: StatusCode, value: &serde_json::Value) -> Response {
    crate::http::json(status, value).into_response()
}

/// 204, for a removal.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
