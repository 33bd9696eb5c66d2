//! Metrics from the logs over the API (see `docs/metrics.md`):
//! `GET /v2/channels/NAME/metrics?since=1h` answers the channel's roll-ups as JSON and
//! `PATCH /v2/channels/NAME {"metrics":true|false}` turns them on or off.
//!
//! The handlers take the node, the channel's name and what the request carries, and return
//! JSON or an [`ApiError`], so they do not depend on the router that calls them.

use super::v2::channel_json;
use super::{reply, ApiError, Clash, JsonBody, Params, V2};
use crate::server::Node;
use crate::store::{self, StoreError};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use hyper::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The range of a query when `since` is left out.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(3600);

/// The body of `PATCH /v2/channels/NAME`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    pub metrics: bool,
}

/// The `since` of a query string (`since=1h`, `since=90m`): [`DEFAULT_SINCE`] when absent;
/// a 422 when it is not a duration, is zero, or is over 24 hours.
pub fn since(query: Option<&str>) -> Result<Duration, ApiError> {
    let raw = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("since="));
    let Some(raw) = raw else {
        return Ok(DEFAULT_SINCE);
    };
    let max = crate::logmetrics::RETENTION;
    match crate::config::parse_duration(raw) {
        Some(d) if d >= Duration::from_secs(1) && d <= max => Ok(d),
        Some(d) if d > max => Err(ApiError::invalid(format!(
            "since={raw} is over 24h, as far back as metrics are kept."
        ))),
        _ => Err(ApiError::invalid(format!(
            "since={raw:?} is not a duration from 1s to 24h, such as 30m, 1h or 24h."
        ))),
    }
}

/// Whether the query asks for each minute's l2met values (`l2met=minutes`); a 422 for
/// another value.
pub fn l2met_minutes(query: Option<&str>) -> Result<bool, ApiError> {
    let raw = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("l2met="));
    match raw {
        None => Ok(false),
        Some("minutes") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!(
            "l2met={other:?} is not a choice: l2met=minutes adds each minute's l2met values."
        ))),
    }
}

/// `GET /v2/channels/NAME/metrics?since=…[&l2met=minutes]`: the channel's summary over
/// `since` (404 for an unknown channel, 409 when its metrics are off, 422 for a bad `since`
/// or `l2met`).
pub async fn get(
    State(node): State<Arc<Node>>,
    Params(app): Params<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, V2> {
    node.catch_up_on(&app).await;
    Ok(reply(
        StatusCode::OK,
        &channel_metrics(&node, &app, query.as_deref())?,
    ))
}

/// `PATCH /v2/channels/NAME {"metrics":true|false}`: stores the flag and answers the
/// channel's JSON. Turning metrics off forgets the channel's roll-ups; on again, they
/// start empty.
pub async fn patch(
    State(node): State<Arc<Node>>,
    Params(app): Params<String>,
    JsonBody(patch): JsonBody<ChannelPatch>,
) -> Result<Response, V2> {
    let n = app.clone();
    let rec = match &node.cluster {
        Some(c) => c.set_metrics(&app, patch.metrics).await,
        None => {
            node.registry
                .change(Some(&app), move |c| {
                    store::set_channel_metrics(c, &n, patch.metrics)
                })
                .await
        }
    }
    .map_err(|e| match e {
        StoreError::NotFound => ApiError::no_app(&app),
        other => other.into(),
    })?;
    Ok(reply(StatusCode::OK, &channel_json(&rec)))
}

/// The channel's summary over the query's `since`. The snapshot is taken under the
/// channel's lock; the summary is computed without it.
pub fn channel_metrics(
    node: &Node,
    name: &str,
    query: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
    let since = since(query)?;
    let l2met = l2met_minutes(query)?;
    let snap = node.registry.snapshot();
    let ch = snap.channel(name).ok_or_else(|| ApiError::no_app(name))?;
    let now = crate::clock::now_secs();
    let taken = ch
        .with_metrics(|m| m.snapshot(now, since))
        .ok_or_else(|| ApiError::Conflict(Clash::MetricsOff(name.to_string())))?;
    let summary = taken.summary_with(name, since, l2met);
    serde_json::to_value(&summary)
        .map_err(|e| ApiError::Internal(format!("metrics of {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_defaults_to_an_hour_and_stops_at_a_day() {
        assert_eq!(since(None).unwrap(), DEFAULT_SINCE);
        assert_eq!(since(Some("x=1")).unwrap(), DEFAULT_SINCE);
        assert_eq!(
            since(Some("a=b&since=90m")).unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            since(Some("since=24h")).unwrap(),
            crate::logmetrics::RETENTION
        );
        for bad in ["since=25h", "since=0s", "since=abc", "since="] {
            let e = since(Some(bad)).unwrap_err();
            assert!(matches!(e, ApiError::Invalid(_)), "{bad}: {e:?}");
        }
        assert!(!l2met_minutes(None).unwrap());
        assert!(l2met_minutes(Some("since=1h&l2met=minutes")).unwrap());
        assert!(matches!(
            l2met_minutes(Some("l2met=all")),
            Err(ApiError::Invalid(_))
        ));
        match since(Some("since=2d")) {
            Err(ApiError::Invalid(m)) => assert!(m.contains("over 24h"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
