//! The Heroku Platform API subset, so the real `heroku` CLI works against
//! logplex: `GET /apps/APP`, `POST /apps/APP/log-sessions`, `GET|POST /apps/APP/log-drains`,
//! `GET|DELETE /apps/APP/log-drains/ID_URL_OR_TOKEN`.
//!
//! Shapes follow Heroku's API (version 3): an app is `{"id","name","generation",...}`, a log
//! drain `{"id","url","token","addon","app","created_at","updated_at"}` (a password in
//! the URL shown as `***`), errors
//! `{"id":"not_found","message":"Couldn't find that app."}`. Any `Accept` is answered with
//! version 3 JSON (the CLI asks for `version=3` or `version=3.sdk`). A channel is an app; its
//! id is derived from its name and creation time, so it is stable across calls and restarts
//! but differs for an app destroyed and created again, as on Heroku.

use super::range::Range;
use super::v2::{self, NewDrain};
use super::{reply, ApiError, JsonBody, Missing, Params, Platform};
use crate::clock::now_secs;
use crate::server::Node;
use crate::session::Spec;
use crate::store::{self, ChannelRecord, DrainRecord};
use axum::extract::{FromRequestParts, RawPathParams, State};
use axum::http::request::Parts;
use axum::response::Response;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

/// The app of the path, named or by its id (Heroku accepts either); it is looked up before
/// the body is read, so an unknown app is answered as such whatever the body.
pub struct App(pub ChannelRecord);

impl FromRequestParts<Arc<Node>> for App {
    type Rejection = Platform;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, Platform> {
        let params = RawPathParams::from_request_parts(parts, node).await.ok();
        let name_or_id = params
            .as_ref()
            .and_then(|p| p.iter().find(|(k, _)| *k == "app"))
            .map(|(_, v)| v.to_string());
        let Some(name_or_id) = name_or_id else {
            // Not UTF-8 once decoded.
            return Err(Platform(ApiError::NotFound(Missing::Route {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
            })));
        };
        node.catch_up_on(&name_or_id).await;
        let snap = node.registry.snapshot();
        // By name in O(log n); by id (rare: the CLI sends names) a scan, which makes no
        // record and no text per app, and only for what can be one of our ids (an unknown
        // name is a 404 at once, not a walk of every app).
        let by_id = || {
            let id = uuid::Uuid::parse_str(&name_or_id)
                .ok()
                .filter(|u| u.get_version_num() == 8)?;
            snap.find_record(|name, created_at| app_uuid(name, created_at) == id)
        };
        snap.record(&name_or_id)
            .or_else(by_id)
            .map(App)
            .ok_or_else(|| Platform(ApiError::no_app(&name_or_id)))
    }
}

/// `GET /apps/APP`.
pub async fn app(App(app): App) -> Response {
    reply(StatusCode::OK, &app_json(&app))
}

/// `GET /apps/APP/log-drains`, in parts by id as Heroku's `Range` header asks (200 at a
/// time without one; see [`super::range`]).
pub async fn drains(
    State(node): State<Arc<Node>>,
    App(app): App,
    headers: HeaderMap,
) -> Result<Response, Platform> {
    const ATTRS: &[&str] = &["id"];
    let range = match headers.get(header::RANGE) {
        None => Range::all("id"),
        Some(h) => h
            .to_str()
            .map_err(|_| "The Range header is not text.".to_string())
            .and_then(|h| Range::parse(h, ATTRS))
            .map_err(ApiError::Range)?,
    };
    let part = range.apply(drains_of(&node, &app).await?, |d| &d.id);
    let list: Vec<Value> = part.items.iter().map(|d| drain_json(&app, d)).collect();
    let status = if part.partial() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut r = reply(status, &Value::Array(list));
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("id"));
    let text = |v: String| HeaderValue::from_str(&v).ok();
    if let Some(v) = part.content.and_then(text) {
        h.insert(header::CONTENT_RANGE, v);
    }
    if let Some(v) = part.next.and_then(text) {
        h.insert("next-range", v);
    }
    Ok(r)
}

/// `POST /apps/APP/log-drains` `{"url"}`.
pub async fn add_drain(
    State(node): State<Arc<Node>>,
    App(app): App,
    JsonBody(body): JsonBody<NewDrain>,
) -> Result<Response, Platform> {
    let d = v2::add_drain(&node, &app.name, &body.url).await?;
    Ok(reply(StatusCode::CREATED, &drain_json(&app, &d)))
}

/// `GET /apps/APP/log-drains/ID_URL_OR_TOKEN` (a URL percent-encoded, as the CLI sends it).
pub async fn drain(
    State(node): State<Arc<Node>>,
    App(app): App,
    Params((_, which)): Params<(String, String)>,
) -> Result<Response, Platform> {
    let d = drains_of(&node, &app)
        .await?
        .into_iter()
        .find(|d| d.matches(&which))
        .ok_or_else(|| {
            ApiError::NotFound(Missing::Drain {
                app: app.name.clone(),
                which,
            })
        })?;
    Ok(reply(StatusCode::OK, &drain_json(&app, &d)))
}

/// `DELETE /apps/APP/log-drains/ID_URL_OR_TOKEN`: Heroku answers with the drain as it was.
pub async fn remove_drain(
    State(node): State<Arc<Node>>,
    App(app): App,
    Params((_, which)): Params<(String, String)>,
) -> Result<Response, Platform> {
    let d = v2::remove_drain(&node, &app.name, &which).await?;
    Ok(reply(StatusCode::OK, &drain_json(&app, &d)))
}

async fn drains_of(node: &Node, app: &ChannelRecord) -> Result<Vec<DrainRecord>, ApiError> {
    let n = app.name.clone();
    node.registry
        .store()
        .call(move |c| store::channel_drains(c, &n))
        .await
        // Not found: destroyed between the lookup and now.
        .map_err(v2::or_no_app(&app.name))
}

/// A stable UUID for an app: FNV-1a (128 bits) of its name and creation time, shaped as a
/// version 8 ("custom") UUID. Not a secret; it only has to agree between calls.
pub fn app_id(rec: &ChannelRecord) -> String {
    app_uuid(&rec.name, rec.created_at).to_string()
}

/// [`app_id`] of the app `name` made at `created_at`, as a UUID.
fn app_uuid(name: &str, created_at: i64) -> uuid::Uuid {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    let created = created_at.to_be_bytes();
    for b in name.bytes().chain([0]).chain(created) {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    let mut bytes = h.to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    uuid::Uuid::from_bytes(bytes)
}

/// Unix seconds as Heroku writes times: `2016-03-08T02:43:26Z`.
fn heroku_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The app object. `generation` `cedar` tells the CLI to use log sessions with `lines` and
/// `tail` (a `fir` app would be streamed differently).
fn app_json(rec: &ChannelRecord) -> Value {
    let at = heroku_time(rec.created_at);
    json!({
        "id": app_id(rec),
        "name": rec.name,
        "generation": {"id": "cedar", "name": "cedar"},
        "created_at": at,
        "updated_at": at,
    })
}

/// A Heroku log-drain object; drains are never add-on drains here.
fn drain_json(app: &ChannelRecord, d: &DrainRecord) -> Value {
    let at = heroku_time(d.created_at);
    json!({
        "id": d.id,
        "url": crate::drain::url::redact(&d.url),
        "token": d.token,
        "addon": null,
        "app": {"id": app_id(app), "name": app.name},
        "created_at": at,
        "updated_at": at,
    })
}

/// `POST /apps/APP/log-sessions`. The body is read leniently, as Heroku does: every field
/// is optional, `lines` may be a number or a numeric string and is capped at the history
/// size, unknown fields (the CLI's `type` for fir apps) are ignored.
pub async fn log_session(
    State(node): State<Arc<Node>>,
    App(app): App,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Platform> {
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let lines = match body.get("lines") {
        None | Some(Value::Null) => 100,
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as usize,
        Some(Value::String(s)) => s
            .trim()
            .parse::<usize>()
            .map_err(|_| ApiError::invalid("Lines must be a number."))?,
        Some(_) => return Err(ApiError::invalid("Lines must be a number.").into()),
    };
    let tail = match body.get("tail") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let id = crate::session::create(
        &node,
        Spec {
            channel: app.name.clone(),
            channel_id: app.id,
            num: lines.min(node.config.buffers.history_lines),
            tail,
            source: text("source"),
            dyno: text("dyno"),
            grep: None,
            since_us: None,
            until_us: None,
        },
    )
    .await;
    let at = heroku_time(now_secs());
    Ok(reply(
        StatusCode::CREATED,
        &json!({
            "id": id.to_string(),
            "logplex_url": format!("{}/sessions/{id}", node.public_url),
            "created_at": at,
            "updated_at": at,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, created_at: i64) -> ChannelRecord {
        ChannelRecord {
            id: 1,
            name: name.into(),
            tokens: vec![],
            created_at,
            metrics: false,
        }
    }

    #[test]
    fn app_ids_are_stable_uuids() {
        let a = app_id(&rec("demo", 1_457_404_206));
        assert_eq!(a, app_id(&rec("demo", 1_457_404_206)));
        assert_ne!(a, app_id(&rec("demo", 1_457_404_207)));
        assert_ne!(a, app_id(&rec("demo2", 1_457_404_206)));
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 8);
    }

    #[test]
    fn times_look_like_herokus() {
        assert_eq!(heroku_time(1_457_404_206), "2016-03-08T02:30:06Z");
    }
}
