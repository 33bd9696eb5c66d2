//! The alert routes of CONTRACT §7: `GET /v2/alerts`, `GET|POST /v2/channels/NAME/alerts`,
//! `DELETE /v2/channels/NAME/alerts/ALERT`.
//!
//! `NAME` may be `*` (or `%2A`) for rules that watch every channel. Listing a channel's rules
//! includes the `*` rules that watch it. Rules from `config.toml` are listed with
//! `"origin":"config"` and cannot be added over or deleted here (409): change the config.

use super::{no_content, read_json, unknown_app, ApiError, ApiResult};
use crate::alert::rule::Rule;
use crate::config::AlertConfig;
use crate::http::json;
use crate::store::{self, StoreError};
use crate::Shared;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Handles an authorised request whose path is under `/v2/alerts` or `/v2/channels/NAME/alerts`.
pub async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    segs: &[&str],
    req: Request<Incoming>,
) -> ApiResult {
    let star = |s: &str| {
        if s == "%2A" || s == "%2a" {
            "*".to_string()
        } else {
            s.to_string()
        }
    };
    match (method, segs) {
        (&Method::GET, ["v2", "alerts"]) => {
            let all = all_rules(shared).await?;
            Ok(json(StatusCode::OK, &to_json(all.iter())))
        }
        (&Method::GET, ["v2", "channels", app, "alerts"]) => {
            let app = star(app);
            check_app(shared, &app)?;
            let all = all_rules(shared).await?;
            let mine = all.iter().filter(|(r, _)| r.app == "*" || r.app == app);
            Ok(json(StatusCode::OK, &to_json(mine)))
        }
        (&Method::POST, ["v2", "channels", app, "alerts"]) => {
            let app = star(app);
            create(shared, app, req).await
        }
        (&Method::DELETE, ["v2", "channels", app, "alerts", name]) => {
            let app = star(app);
            delete(shared, app, name.to_string()).await
        }
        _ => Err(ApiError::not_found(format!(
            "No route {method} /{}.",
            segs.join("/")
        ))),
    }
}

/// 404 unless `app` is `*` or a channel.
fn check_app(shared: &Shared, app: &str) -> Result<(), ApiError> {
    if app != "*" && shared.registry.snapshot().channel(app).is_none() {
        return Err(unknown_app(app));
    }
    Ok(())
}

/// Config rules first, then the stored ones, each with its origin.
async fn all_rules(shared: &Shared) -> Result<Vec<(AlertConfig, &'static str)>, ApiError> {
    let stored = shared.registry.store().call(store::list_alerts).await?;
    let config = &shared.config.alerts;
    let mut out: Vec<(AlertConfig, &'static str)> =
        config.iter().map(|r| (r.clone(), "config")).collect();
    out.extend(
        stored
            .into_iter()
            .filter(|s| !config.iter().any(|c| c.app == s.app && c.name == s.name))
            .map(|s| (s, "api")),
    );
    Ok(out)
}

fn rule_json(r: &AlertConfig, origin: &str) -> serde_json::Value {
    json!({
        "name": r.name,
        "app": r.app,
        "source": r.source,
        "dyno": r.dyno,
        "where": r.where_,
        "regex": r.regex,
        "threshold": r.threshold,
        "window": r.window,
        "cooldown": r.cooldown,
        "webhook": r.webhook,
        "origin": origin,
    })
}

fn to_json<'a>(rules: impl Iterator<Item = &'a (AlertConfig, &'static str)>) -> serde_json::Value {
    serde_json::Value::Array(rules.map(|(r, o)| rule_json(r, o)).collect())
}

/// The body of `POST /v2/channels/NAME/alerts`; `app` comes from the path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAlert {
    name: Option<String>,
    source: Option<String>,
    dyno: Option<String>,
    #[serde(rename = "where")]
    where_: Option<String>,
    regex: Option<String>,
    threshold: Option<u64>,
    window: Option<String>,
    cooldown: Option<String>,
    webhook: Option<String>,
}

async fn create(shared: &Arc<Shared>, app: String, req: Request<Incoming>) -> ApiResult {
    let b: NewAlert = read_json(shared, req).await?;
    let nonempty = |o: Option<String>| o.filter(|s| !s.trim().is_empty());
    let spec = AlertConfig {
        name: b
            .name
            .ok_or_else(|| ApiError::invalid("A rule needs a \"name\"."))?,
        app: app.clone(),
        source: nonempty(b.source),
        dyno: nonempty(b.dyno),
        where_: nonempty(b.where_),
        regex: nonempty(b.regex),
        threshold: b
            .threshold
            .ok_or_else(|| ApiError::invalid("A rule needs a \"threshold\", like 5."))?,
        window: b
            .window
            .ok_or_else(|| ApiError::invalid("A rule needs a \"window\", like \"1m\"."))?,
        cooldown: b.cooldown.unwrap_or_else(|| "5m".into()),
        webhook: nonempty(b.webhook),
    };
    Rule::compile(&spec, "api").map_err(|e| ApiError::invalid(e.to_string()))?;
    check_app(shared, &app)?;
    let conflict = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("App {app} already has an alert named {}.", spec.name),
        )
    };
    if shared
        .config
        .alerts
        .iter()
        .any(|c| c.app == spec.app && c.name == spec.name)
    {
        return Err(conflict());
    }
    let to_store = spec.clone();
    shared
        .registry
        .change(move |c| store::create_alert(c, &to_store))
        .await
        .map_err(|e| match e {
            StoreError::Conflict => conflict(),
            StoreError::NotFound => unknown_app(&app),
            other => other.into(),
        })?;
    Ok(json(StatusCode::CREATED, &rule_json(&spec, "api")))
}

async fn delete(shared: &Arc<Shared>, app: String, name: String) -> ApiResult {
    check_app(shared, &app)?;
    let config = &shared.config.alerts;
    if config.iter().any(|c| c.app == app && c.name == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("Alert {name} is defined in config.toml; remove it there and restart."),
        ));
    }
    let (a, n) = (app.clone(), name.clone());
    let found = shared
        .registry
        .change(move |c| match store::delete_alert(c, &a, &n) {
            Ok(()) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        })
        .await?;
    if found {
        return Ok(no_content());
    }
    // A rule on every app is not removed through one app.
    let stored = shared.registry.store().call(store::list_alerts).await?;
    if app != "*" && (config.iter().chain(stored.iter())).any(|c| c.app == "*" && c.name == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("Alert {name} watches every app; remove it from app \"*\"."),
        ));
    }
    Err(ApiError::not_found(format!(
        "Couldn't find that alert on {app}: {name}."
    )))
}
