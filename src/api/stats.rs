//! `GET /v2/stats`: every channel's line rate (lines stored per minute over the last
//! minutes, and since start) and history size, in one request, for the web console and
//! for scripts that want to know which apps are loud.
//!
//! ```json
//! {"at":"2026-…+00:00","minutes":15,
//!  "channels":[{"name":"demo","lines_per_minute":[0,…,42],"lines_total":1234,"history_lines":1234}]}
//! ```
//! `lines_per_minute` holds `minutes` counts, oldest first, per wall-clock minute; the last
//! is the minute under way (so it grows until the minute ends). Counts are of this node's
//! intake since it started; history restored at start is not counted.

use super::reply;
use crate::channel::RATE_MINUTES;
use crate::server::Node;
use axum::extract::State;
use axum::response::Response;
use hyper::StatusCode;
use serde_json::json;
use std::sync::Arc;

/// `GET /v2/stats`.
pub async fn stats(State(node): State<Arc<Node>>) -> Response {
    let now = crate::clock::now_micros();
    let snap = node.registry.snapshot();
    let channels: Vec<serde_json::Value> = snap
        .channels()
        .map(|c| {
            let rate = c.line_rate();
            json!({
                "name": &*c.name,
                "lines_per_minute": rate.minutes(now).to_vec(),
                "lines_total": rate.total(),
                "history_lines": c.history_len().0,
            })
        })
        .collect();
    reply(
        StatusCode::OK,
        &json!({
            "at": crate::alert::rfc3339(Some(now)),
            "minutes": RATE_MINUTES,
            "channels": channels,
        }),
    )
}
