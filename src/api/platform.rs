//! The Heroku Platform API subset of CONTRACT §7, so the real `heroku` CLI works against
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

use super::{read_json, ApiError, ApiResult};
use crate::http::json;
use crate::server::Node;
use crate::session::Spec;
use crate::store::{self, ChannelRecord, DrainRecord, StoreError};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Handles an authorised request whose path starts with `/apps`.
pub async fn route(
    node: &Arc<Node>,
    method: &Method,
    segs: &[&str],
    req: Request<Incoming>,
) -> ApiResult {
    let app = match segs.get(1) {
        Some(a) => find_app(node, a)?,
        None => return Err(no_route(method, segs)),
    };
    match (method, &segs[2..]) {
        (&Method::GET, []) => Ok(json(StatusCode::OK, &app_json(&app))),
        (&Method::POST, ["log-sessions"]) => log_session(node, &app, req).await,
        (&Method::GET, ["log-drains"]) => {
            let list = drains(node, &app).await?;
            let list: Vec<Value> = list.iter().map(|d| drain_json(&app, d)).collect();
            Ok(json(StatusCode::OK, &Value::Array(list)))
        }
        (&Method::POST, ["log-drains"]) => {
            let body: NewDrain = read_json(node, req).await?;
            let d = super::add_drain(node, &app.name, &body.url)
                .await
                .map_err(heroku_drain_error)?;
            Ok(json(StatusCode::CREATED, &drain_json(&app, &d)))
        }
        (&Method::GET, ["log-drains", which]) => {
            let which = percent_decode(which).ok_or_else(unknown_drain)?;
            let d = drains(node, &app)
                .await?
                .into_iter()
                .find(|d| d.matches(&which))
                .ok_or_else(unknown_drain)?;
            Ok(json(StatusCode::OK, &drain_json(&app, &d)))
        }
        (&Method::DELETE, ["log-drains", which]) => {
            let which = percent_decode(which).ok_or_else(unknown_drain)?;
            let d = super::remove_drain(node, &app.name, &which)
                .await
                .map_err(|e| match e.status {
                    StatusCode::NOT_FOUND => unknown_drain(),
                    _ => e,
                })?;
            // Heroku answers a removal with the drain as it was.
            Ok(json(StatusCode::OK, &drain_json(&app, &d)))
        }
        _ => Err(no_route(method, segs)),
    }
}

fn no_route(method: &Method, segs: &[&str]) -> ApiError {
    ApiError::not_found(format!("No route {method} /{}.", segs.join("/")))
}

/// Heroku's answer for an app that does not exist (the CLI shows the message as is).
fn unknown_app() -> ApiError {
    ApiError::not_found("Couldn't find that app.")
}

fn unknown_drain() -> ApiError {
    ApiError::not_found("Couldn't find that log drain.")
}

/// The app named, or whose id is, `name_or_id` (Heroku accepts either in the path).
fn find_app(node: &Node, name_or_id: &str) -> Result<ChannelRecord, ApiError> {
    let snap = node.registry.snapshot();
    let recs = snap.records();
    recs.iter()
        .find(|r| r.name == name_or_id)
        .or_else(|| recs.iter().find(|r| app_id(r) == name_or_id))
        .cloned()
        .ok_or_else(unknown_app)
}

async fn drains(node: &Node, app: &ChannelRecord) -> Result<Vec<DrainRecord>, ApiError> {
    let n = app.name.clone();
    node.registry
        .store()
        .call(move |c| store::channel_drains(c, &n))
        .await
        .map_err(|e| match e {
            // Destroyed between the lookup and now.
            StoreError::NotFound => unknown_app(),
            other => other.into(),
        })
}

/// A stable UUID for an app: FNV-1a (128 bits) of its name and creation time, shaped as a
/// version 8 ("custom") UUID. Not a secret; it only has to agree between calls.
pub fn app_id(rec: &ChannelRecord) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    let created = rec.created_at.to_be_bytes();
    for b in rec.name.bytes().chain([0]).chain(created) {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    let mut bytes = h.to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    uuid::Uuid::from_bytes(bytes).to_string()
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

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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

#[derive(Deserialize)]
struct NewDrain {
    url: String,
}

/// Our drain errors, worded as Heroku words them; a duplicate is Heroku's 422.
fn heroku_drain_error(e: ApiError) -> ApiError {
    match e.status {
        StatusCode::CONFLICT => ApiError::invalid("Url has already been taken."),
        StatusCode::NOT_FOUND => unknown_app(),
        _ => e,
    }
}

/// `POST /apps/APP/log-sessions`. The body is read leniently, as Heroku does: every field
/// is optional, `lines` may be a number or a numeric string and is capped at the history
/// size, unknown fields (the CLI's `type` for fir apps) are ignored.
async fn log_session(node: &Arc<Node>, app: &ChannelRecord, req: Request<Incoming>) -> ApiResult {
    let body: Value = read_json(node, req).await?;
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
        Some(_) => return Err(ApiError::invalid("Lines must be a number.")),
    };
    let tail = match body.get("tail") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let id = node.sessions.create(Spec {
        channel: app.name.clone(),
        channel_id: app.id,
        num: lines.min(node.config.buffers.history_lines),
        tail,
        source: text("source"),
        dyno: text("dyno"),
        grep: None,
    });
    let at = heroku_time(now_secs());
    Ok(json(
        StatusCode::CREATED,
        &json!({
            "id": id.to_string(),
            "logplex_url": format!("{}/sessions/{id}", node.public_url),
            "created_at": at,
            "updated_at": at,
        }),
    ))
}

/// Decodes `%XX` escapes of a path segment (the CLI sends a drain URL with
/// `encodeURIComponent`); `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
    fn decodes_encode_uri_component() {
        assert_eq!(
            percent_decode("https%3A%2F%2Fu%3Ap%40example.com%2Flogs%3Fa%3D1").as_deref(),
            Some("https://u:p@example.com/logs?a=1")
        );
        assert_eq!(percent_decode("d.abc").as_deref(), Some("d.abc"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn times_look_like_herokus() {
        assert_eq!(heroku_time(1_457_404_206), "2016-03-08T02:30:06Z");
    }
}
