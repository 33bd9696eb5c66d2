//! The alert rules of the logplex API: `GET /v2/alerts`, `GET|POST /v2/channels/NAME/alerts`,
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

use super::{no_content, reply, ApiError, Clash, JsonBody, Missing, Params, V2};
use crate::alert::rule::Rule;
use crate::alert::RuleSpec;
use crate::server::Node;
use crate::store::{self, StoreError};
use axum::extract::State;
use axum::response::Response;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// `GET /v2/alerts`: every rule, its state over every channel it watches.
pub async fn list(State(node): State<Arc<Node>>) -> Result<Response, V2> {
    let all = all_rules(&node).await?;
    Ok(reply(StatusCode::OK, &to_json(&node, all.iter(), None)))
}

/// `GET /v2/channels/NAME/alerts`: the channel's rules and the `*` rules, their state on
/// that channel (on every channel for `NAME` `*`).
pub async fn list_on(
    State(node): State<Arc<Node>>,
    Params(app): Params<String>,
) -> Result<Response, V2> {
    check_app(&node, &app).await?;
    let all = all_rules(&node).await?;
    let mine = all.iter().filter(|(r, _)| r.app == "*" || r.app == app);
    let on = (app != "*").then_some(app.as_str());
    Ok(reply(StatusCode::OK, &to_json(&node, mine, on)))
}

/// 404 unless `app` is `*` or a channel.
async fn check_app(node: &Node, app: &str) -> Result<(), ApiError> {
    if app == "*" {
        return Ok(());
    }
    node.catch_up_on(app).await;
    if node.registry.snapshot().channel(app).is_none() {
        return Err(ApiError::no_app(app));
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
    let at = crate::alert::rfc3339(last);
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
pub struct NewAlert {
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

/// `POST /v2/channels/NAME/alerts`: the rule, compiled before it is stored.
pub async fn create(
    State(node): State<Arc<Node>>,
    Params(app): Params<String>,
    JsonBody(b): JsonBody<NewAlert>,
) -> Result<Response, V2> {
    let spec = spec(app, b)?;
    // The first problem is the answer, as the API says one thing at a time.
    Rule::compile(&spec, "api").map_err(|e| ApiError::invalid(e[0].to_string()))?;
    check_app(&node, &spec.app).await?;
    let app = &spec.app;
    if spec.metric.is_some() && app != "*" {
        let on = node
            .registry
            .snapshot()
            .record(app)
            .is_some_and(|r| r.metrics);
        if !on {
            return Err(ApiError::invalid(format!(
                "App {app} has metrics off, so a metric rule would never fire; turn them on first \
                 (PATCH /v2/channels/{app} {{\"metrics\":true}} or `logplex metrics:enable -a {app}`)."
            ))
            .into());
        }
    }
    let conflict = || {
        ApiError::Conflict(Clash::Alert {
            app: spec.app.clone(),
            name: spec.name.clone(),
        })
    };
    if node
        .config
        .alerts
        .iter()
        .any(|c| c.app == spec.app && c.name == spec.name)
    {
        return Err(conflict().into());
    }
    let to_store = spec.clone();
    match &node.cluster {
        Some(c) => c.add_alert(&spec).await,
        None => {
            node.registry
                .change(None, move |c| store::create_alert(c, &to_store))
                .await
        }
    }
    .map_err(|e| match e {
        StoreError::Conflict => conflict(),
        StoreError::NotFound => ApiError::no_app(&spec.app),
        other => other.into(),
    })?;
    Ok(reply(StatusCode::CREATED, &rule_json(&spec, "api")))
}

/// The rule a `POST` asks for, on `app`; the fields a rule cannot do without are required.
fn spec(app: String, b: NewAlert) -> Result<RuleSpec, ApiError> {
    let nonempty = |o: Option<String>| o.filter(|s| !s.trim().is_empty());
    Ok(RuleSpec {
        name: b
            .name
            .ok_or_else(|| ApiError::invalid("A rule needs a \"name\"."))?,
        app,
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
    })
}

/// `DELETE /v2/channels/NAME/alerts/ALERT`: a rule added through the API. A rule of
/// `config.toml` (409), or one on every app asked of one app (409), is not removed.
pub async fn delete(
    State(node): State<Arc<Node>>,
    Params((app, name)): Params<(String, String)>,
) -> Result<Response, V2> {
    check_app(&node, &app).await?;
    let config = &node.config.alerts;
    if config.iter().any(|c| c.app == app && c.name == name) {
        return Err(ApiError::Conflict(Clash::ConfigAlert(name)).into());
    }
    let (a, n) = (app.clone(), name.clone());
    let found = match &node.cluster {
        Some(c) => c.remove_alert(&app, &name).await?,
        None => {
            node.registry
                .change(None, move |c| match store::delete_alert(c, &a, &n) {
                    Ok(()) => Ok(true),
                    Err(StoreError::NotFound) => Ok(false),
                    Err(e) => Err(e),
                })
                .await?
        }
    };
    if found {
        return Ok(no_content());
    }
    // A rule on every app is not removed through one app.
    let stored = node.registry.store().call(store::list_alerts).await?;
    if app != "*" && (config.iter().chain(stored.iter())).any(|c| c.app == "*" && c.name == name) {
        return Err(ApiError::Conflict(Clash::EveryAppAlert(name)).into());
    }
    Err(ApiError::NotFound(Missing::Alert { app, name }).into())
}
