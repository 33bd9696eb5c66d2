//! The alert routes of CONTRACT §7: `GET /v2/alerts`, `GET|POST /v2/channels/NAME/alerts`,
//! `DELETE /v2/channels/NAME/alerts/ALERT`.

use super::{ApiError, ApiResult};
use crate::Shared;
use hyper::body::Incoming;
use hyper::{Method, Request};
use std::sync::Arc;

/// Handles an authorised request whose path is under `/v2/alerts` or `/v2/channels/NAME/alerts`.
pub async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    segs: &[&str],
    req: Request<Incoming>,
) -> ApiResult {
    let _ = (shared, req);
    Err(ApiError::not_found(format!(
        "No route {method} /{}.",
        segs.join("/")
    )))
}
