//! `GET /v2/stats`: each channel's line rate (lines stored per minute over the last
//! minutes, and since start) and history size, a page of channels by name at a time
//! (`?limit=&after=`, as `GET /v2/channels`), for the web console and for scripts that
//! want to know which apps are loud.
//!
//! ```json
//! {"at":"2026-…+00:00","minutes":15,
//!  "channels":[{"name":"demo","lines_per_minute":[0,…,42],"lines_total":1234,"history_lines":1234}]}
//! ```
//! `lines_per_minute` holds `minutes` counts, oldest first, per wall-clock minute; the last
//! is the minute under way (so it grows until the minute ends). Counts are of this node's
//! intake since it started; history restored at start is not counted. Paged by name as
//! `GET /v2/channels` is (`?limit=&after=`, 1,000 by default, a `Link` to the next page).

use super::v2::Page;
use super::V2;
use crate::channel::{Channel, RATE_MINUTES};
use crate::server::Node;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;

/// `GET /v2/stats[?limit=N&after=NAME]`: a page (`Page`) of channels by name, as
/// `GET /v2/channels` pages them (a million channels are not one body).
pub async fn stats(
    State(node): State<Arc<Node>>,
    RawQuery(query): RawQuery,
) -> Result<Response, V2> {
    let page = Page::from_query(query.as_deref())?;
    let now = crate::clock::now_micros();
    let snap = node.registry.snapshot();
    Ok(page.reply(
        "/v2/stats",
        page.take(snap.channels_after(&page.after)),
        |c: &&Arc<Channel>| &c.name,
        |items| {
            let channels: Vec<Value> = items
                .iter()
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
            json!({
                "at": crate::alert::rfc3339(Some(now)),
                "minutes": RATE_MINUTES,
                "channels": channels,
            })
        },
    ))
}
