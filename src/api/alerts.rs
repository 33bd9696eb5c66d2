//! The alert routes of CONTRACT §7: `GET /v2/alerts`, `GET|POST /v2/channels/NAME/alerts`,
//! `DELETE /v2/channels/NAME/alerts/ALERT`.
//!
//! `NAME` may be `*` (or `%2A`) for rules that watch every channel. Listing a channel's rules
//! includes the `*` rules that watch it. Rules from `config.toml` are listed with
//! `"origin":"config"` and cannot be added over or deleted here (409): change the config.
//!
//! Listed rules carry their state since the server started,
//! `"state":{"firing","count","last_fired_at","firing_apps"}`: on that channel when listed
//! through a channel, over every channel the rule watches through `GET /v2/alerts` (firing
//! on any, matches in the windows added up, the latest firing, the apps firing now).

use super::{no_content, read_json, unknown_app, ApiError, ApiResult};
use crate::alert::rule::Rule;
use crate::alert::RuleSpec;
use crate::http::json;
use crate::server::Node;
use crate::store::{self, StoreError};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Handles an authorised request whose path is under `/v2/alerts` or `/v2/channels/NAME/alerts`.
pub async fn route(
    node: &Arc<Node>,
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
            let all = all_rules(node).await?;
            Ok(json(StatusCode::OK, &to_json(node, all.iter(), None)))
        }
        (&Method::GET, ["v2", "channels", app, "alerts"]) => {
            let app = star(app);
            check_app(node, &app)?;
            let all = all_rules(node).await?;
            let mine = all.iter().filter(|(r, _)| r.app == "*" || r.app == app);
            let on = (app != "*").then_some(app.as_str());
            Ok(json(StatusCode::OK, &to_json(node, mine, on)))
        }
        (&Method::POST, ["v2", "channels", app, "alerts"]) => {
            let app = star(app);
            create(node, app, req).await
        }
        (&Method::DELETE, ["v2", "channels", app, "alerts", name]) => {
            let app = star(app);
            delete(node, app, name.to_string()).await
        }
        _ => Err(ApiError::not_found(format!(
            "No route {method} /{}.",
            segs.join("/")
        ))),
    }
}

/// 404 unless `app` is `*` or a channel.
fn check_app(node: &Node, app: &str) -> Result<(), ApiError> {
    if app != "*" && node.registry.snapshot().channel(app).is_none() {
        return Err(unknown_app(app));
    }
    Ok(())
}

/// Config rules first, then the stored ones, each with its origin.
async fn all_rules(node: &Node) -> Result<Vec<(RuleSpec, &'static str)>, ApiError> {
    let stored = node.registry.store().call(store::list_alerts).await?;
    let config = &node.config.alerts;
    let mut out: Vec<(RuleSpec, &'static str)> =
        config.iter().map(|r| (r.clone(), "config")).collect();
    out.extend(
        stored
            .into_iter()
            .filter(|s| !config.iter().any(|c| c.app == s.app && c.name == s.name))
            .map(|s| (s, "api")),
    );
    Ok(out)
}

fn rule_json(r: &RuleSpec, origin: &str) -> serde_json::Value {
    json!({
        "name": r.name,
        "app": r.app,
        "source": r.source,
        "dyno": r.dyno,
        "where": r.where_,
        "regex": r.regex,
        "metric": r.metric,
        "above": r.above.as_deref().map(|a| match a.parse::<f64>() {
            Ok(n) => json!(n),
            Err(_) => json!(a),
        }),
        "threshold": r.threshold,
        "window": r.window,
        "cooldown": r.cooldown,
        "webhook": r.webhook.as_deref().map(crate::drain::url::redact),
        "origin": origin,
    })
}

/// The rules, each with its `"state"` on channel `on` (or on every channel it watches).
fn to_json<'a>(
    node: &Node,
    rules: impl Iterator<Item = &'a (RuleSpec, &'static str)>,
    on: Option<&str>,
) -> serde_json::Value {
    serde_json::Value::Array(
        rules
            .map(|(r, o)| {
                let mut v = rule_json(r, o);
                let mut states = node.alerts.states(&r.app, &r.name);
                if let Some(app) = on {
                    states.retain(|s| &*s.channel == app);
                }
                v["state"] = state_json(&states);
                v
            })
            .collect(),
    )
}

/// `{"firing","count","last_fired_at","firing_apps"}` over the given (rule, channel) states.
fn state_json(states: &[crate::alert::WatchState]) -> serde_json::Value {
    let last = states.iter().filter_map(|s| s.last_fired_us).max();
    let at = last.map(|us| {
        let mut b = bytes::BytesMut::with_capacity(32);
        logplex_proto::render::rfc3339_micros(&mut b, us);
        String::from_utf8_lossy(&b).into_owned()
    });
    let firing: Vec<&str> = states
        .iter()
        .filter(|s| s.firing)
        .map(|s| &*s.channel)
        .collect();
    json!({
        "firing": !firing.is_empty(),
        "count": states.iter().map(|s| s.count).sum::<u64>(),
        "last_fired_at": at,
        "firing_apps": firing,
    })
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
    metric: Option<String>,
    #[serde(default, deserialize_with = "crate::alert::spec::number_or_text")]
    above: Option<String>,
    threshold: Option<u64>,
    window: Option<String>,
    cooldown: Option<String>,
    webhook: Option<String>,
}

async fn create(node: &Arc<Node>, app: String, req: Request<Incoming>) -> ApiResult {
    let b: NewAlert = read_json(node, req).await?;
    let nonempty = |o: Option<String>| o.filter(|s| !s.trim().is_empty());
    let spec = RuleSpec {
        name: b
            .name
            .ok_or_else(|| ApiError::invalid("A rule needs a \"name\"."))?,
        app: app.clone(),
        source: nonempty(b.source),
        dyno: nonempty(b.dyno),
        where_: nonempty(b.where_),
        regex: nonempty(b.regex),
        threshold: match (b.threshold, &b.metric) {
            (Some(t), _) => t,
            (None, Some(_)) => 0,
            (None, None) => {
                return Err(ApiError::invalid(
                    "A rule needs a \"threshold\", like 5 (or a \"metric\" and \"above\").",
                ))
            }
        },
        metric: nonempty(b.metric),
        above: nonempty(b.above),
        window: b
            .window
            .ok_or_else(|| ApiError::invalid("A rule needs a \"window\", like \"1m\"."))?,
        cooldown: b.cooldown.unwrap_or_else(|| "5m".into()),
        webhook: nonempty(b.webhook),
    };
    // The first problem is the answer, as the API says one thing at a time.
    Rule::compile(&spec, "api").map_err(|e| ApiError::invalid(e[0].to_string()))?;
    check_app(node, &app)?;
    if spec.metric.is_some() && app != "*" {
        let on = node
            .registry
            .snapshot()
            .records()
            .iter()
            .any(|r| r.name == app && r.metrics);
        if !on {
            return Err(ApiError::invalid(format!(
                "App {app} has metrics off, so a metric rule would never fire; turn them on first \
                 (PATCH /v2/channels/{app} {{\"metrics\":true}} or `logplex metrics:enable -a {app}`)."
            )));
        }
    }
    let conflict = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("App {app} already has an alert named {}.", spec.name),
        )
    };
    if node
        .config
        .alerts
        .iter()
        .any(|c| c.app == spec.app && c.name == spec.name)
    {
        return Err(conflict());
    }
    let to_store = spec.clone();
    node.registry
        .change(move |c| store::create_alert(c, &to_store))
        .await
        .map_err(|e| match e {
            StoreError::Conflict => conflict(),
            StoreError::NotFound => unknown_app(&app),
            other => other.into(),
        })?;
    Ok(json(StatusCode::CREATED, &rule_json(&spec, "api")))
}

async fn delete(node: &Arc<Node>, app: String, name: String) -> ApiResult {
    check_app(node, &app)?;
    let config = &node.config.alerts;
    if config.iter().any(|c| c.app == app && c.name == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("Alert {name} is defined in config.toml; remove it there and restart."),
        ));
    }
    let (a, n) = (app.clone(), name.clone());
    let found = node
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
    let stored = node.registry.store().call(store::list_alerts).await?;
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
