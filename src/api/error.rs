//! The API's one error type, [`ApiError`]: what went wrong, in domain terms (which thing is
//! missing, which clashes, why a request is invalid), never a status or a sentence. Each API
//! surface turns it into its answer in one place: [`V2`] for the logplex API and the public
//! routes, [`Platform`] for the Heroku Platform API subset, which words a few errors as
//! Heroku does so that the `heroku` CLI shows the messages users know. Both answer JSON
//! `{"id":"not_found","message":"…"}`, with `WWW-Authenticate` on a 401, `Retry-After` on
//! a 503, and `Connection: close` when a body was not read to its end.

use crate::body::{BodyError, RETRY_AFTER_SECS};
use crate::http::json;
use crate::session::UnknownSession;
use crate::store::StoreError;
use axum::response::{IntoResponse, Response};
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::json;

/// Why an API request failed.
#[derive(Debug)]
pub enum ApiError {
    /// 404: something the request names does not exist.
    NotFound(Missing),
    /// 409: it exists already, or it cannot be changed through the API.
    Conflict(Clash),
    /// 422: the request is understood but refused; the reason is written for the user.
    Invalid(String),
    /// 400: the body is not the JSON expected (serde's explanation).
    BadJson(String),
    /// 401: no admin key, or not the right one.
    Unauthorized,
    /// The body could not be read: too large (413), too slow (408), over the shared budget
    /// (503), or broken (400).
    Body(BodyError),
    /// 503: the cluster's config (in Redis) cannot be reached, so nothing can be changed
    /// now (everything else works); the reason is written for the user. With `Retry-After`.
    Unavailable(String),
    /// 416: a Platform API list's `Range` header cannot be read; the reason is written
    /// for the user.
    Range(String),
    /// 500: the store failed, or a bug. Logged; the client is told only to look at the log.
    Internal(String),
}

/// What was not found.
#[derive(Debug)]
pub enum Missing {
    /// An app (channel) by name.
    App(String),
    Drain {
        app: String,
        which: String,
    },
    Alert {
        app: String,
        name: String,
    },
    Session,
    /// A console file, by the path asked for.
    File(String),
    Route {
        method: Method,
        path: String,
    },
    /// A record the store did not find, with nothing more said.
    Record,
}

/// What is in the way.
#[derive(Debug)]
pub enum Clash {
    App(String),
    Token {
        app: String,
        name: String,
    },
    Drain {
        app: String,
        url: String,
    },
    Alert {
        app: String,
        name: String,
    },
    /// A rule of `config.toml`: changed there, not through the API.
    ConfigAlert(String),
    /// A rule on every app (`*`), which one app cannot remove.
    EveryAppAlert(String),
    /// A record the store found already there, with nothing more said.
    Record,
    /// An app whose metrics from the logs are off, asked for them.
    MetricsOff(String),
}

impl ApiError {
    pub fn invalid(reason: impl Into<String>) -> Self {
        ApiError::Invalid(reason.into())
    }
    pub fn no_app(name: &str) -> Self {
        ApiError::NotFound(Missing::App(name.to_string()))
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError::Body(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound(Missing::Record),
            StoreError::Conflict => ApiError::Conflict(Clash::Record),
            StoreError::Unavailable(why) => ApiError::Unavailable(why),
            other => ApiError::Internal(format!("store: {other}")),
        }
    }
}

impl From<UnknownSession> for ApiError {
    fn from(_: UnknownSession) -> Self {
        ApiError::NotFound(Missing::Session)
    }
}

/// An [`ApiError`] answered as the logplex API words it. Handlers of `/v2`, `/metrics`,
/// the public routes and the no-route fallback return it.
#[derive(Debug)]
pub struct V2(pub ApiError);

/// An [`ApiError`] answered as Heroku's Platform API words it: an app or drain that does
/// not exist is "Couldn't find that app." / "Couldn't find that log drain.", a drain added
/// twice is a 422 "Url has already been taken."; everything else as [`V2`].
#[derive(Debug)]
pub struct Platform(pub ApiError);

/// `?` on an [`ApiError`], or on an error that becomes one, in a handler of either surface.
macro_rules! surface_from {
    ($($surface:ident),*) => {$(
        impl From<ApiError> for $surface {
            fn from(e: ApiError) -> Self {
                $surface(e)
            }
        }
        impl From<StoreError> for $surface {
            fn from(e: StoreError) -> Self {
                $surface(e.into())
            }
        }
        impl From<BodyError> for $surface {
            fn from(e: BodyError) -> Self {
                $surface(e.into())
            }
        }
        impl From<UnknownSession> for $surface {
            fn from(e: UnknownSession) -> Self {
                $surface(e.into())
            }
        }
    )*};
}
surface_from!(V2, Platform);

impl IntoResponse for V2 {
    fn into_response(self) -> Response {
        let (status, id, message) = match self.0 {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", missing(m)),
            ApiError::Conflict(c) => (StatusCode::CONFLICT, "conflict", clash(c)),
            ApiError::Invalid(reason) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_params", reason)
            }
            ApiError::Range(reason) => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "requested_range_not_satisfiable",
                reason,
            ),
            ApiError::BadJson(e) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("Invalid JSON body: {e}."),
            ),
            ApiError::Unauthorized => {
                let mut r = answer(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Missing or wrong admin key.".into(),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=Logplex"),
                );
                return r;
            }
            ApiError::Body(e) => return body_error(e),
            ApiError::Unavailable(why) => {
                let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why);
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::cluster::RETRY_AFTER_SECS),
                );
                return r;
            }
            ApiError::Internal(e) => {
                tracing::error!("{e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Internal error; see the server log.".into(),
                )
            }
        };
        answer(status, id, message)
    }
}

impl IntoResponse for Platform {
    fn into_response(self) -> Response {
        match self.0 {
            ApiError::NotFound(Missing::App(_)) => answer(
                StatusCode::NOT_FOUND,
                "not_found",
                "Couldn't find that app.".into(),
            ),
            ApiError::NotFound(Missing::Drain { .. }) => answer(
                StatusCode::NOT_FOUND,
                "not_found",
                "Couldn't find that log drain.".into(),
            ),
            ApiError::Conflict(Clash::Drain { .. }) => answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_params",
                "Url has already been taken.".into(),
            ),
            other => V2(other).into_response(),
        }
    }
}

fn missing(m: Missing) -> String {
    match m {
        Missing::App(name) => format!("Couldn't find that app: {name}."),
        Missing::Drain { app, which } => format!("No drain {which} on {app}."),
        Missing::Alert { app, name } => format!("Couldn't find that alert on {app}: {name}."),
        Missing::Session => "Unknown or expired session.".into(),
        Missing::File(path) => format!("No file {path}."),
        Missing::Route { method, path } => format!("No route {method} {path}."),
        Missing::Record => "Not found.".into(),
    }
}

fn clash(c: Clash) -> String {
    match c {
        Clash::App(name) => format!("App {name} already exists."),
        Clash::Token { app, name } => format!("App {app} already has a token named {name}."),
        Clash::Drain { app, url } => format!("{url} is already a drain of {app}."),
        Clash::Alert { app, name } => format!("App {app} already has an alert named {name}."),
        Clash::ConfigAlert(name) => {
            format!("Alert {name} is defined in config.toml; remove it there and restart.")
        }
        Clash::EveryAppAlert(name) => {
            format!("Alert {name} watches every app; remove it from app \"*\".")
        }
        Clash::Record => "It already exists.".into(),
        Clash::MetricsOff(name) => format!(
            "Metrics are off for app {name}; turn them on with PATCH /v2/channels/{name} \
             {{\"metrics\":true}} or `logplex metrics:enable -a {name}`."
        ),
    }
}

/// A body error's answer: its status and id, and its headers (`Retry-After`, and
/// `Connection: close` when the body was not read to its end).
fn body_error(e: BodyError) -> Response {
    let (id, message) = match &e {
        BodyError::TooLarge(_) => ("request_too_large", "Request body over 64 KiB.".into()),
        BodyError::OverBudget => (
            "unavailable",
            format!(
                "Too many request bodies are being read at once; retry in {RETRY_AFTER_SECS} s."
            ),
        ),
        BodyError::Timeout(_) | BodyError::TooSlow => ("request_timeout", format!("Request {e}.")),
        BodyError::Read(_) | BodyError::Gzip(_) => ("bad_request", format!("Invalid body: {e}.")),
    };
    let mut r = answer(e.status(), id, message);
    e.add_headers(r.headers_mut());
    r
}

/// `{"id":…,"message":…}` with its status.
fn answer(status: StatusCode, id: &str, message: String) -> Response {
    json(status, &json!({"id": id, "message": message})).into_response()
}
