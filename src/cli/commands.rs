//! The request-and-print commands: `apps`, `tokens`, `drains` and `alerts` with their
//! `:create`/`:add`/`:remove` forms. Each is one or two API calls; listings print one
//! item per line so they can be piped, notes about empty listings go to stderr.

use super::client::{segment, CliError, Client};
use super::AlertAddArgs;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;

/// A channel as the API returns it.
#[derive(Deserialize)]
pub(crate) struct Channel {
    pub name: String,
    /// Token name → token.
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
}

/// A drain as the API returns it. The id is kept as raw JSON: it is only echoed back in
/// the DELETE path, whatever its type.
#[derive(Deserialize)]
struct Drain {
    id: Value,
    #[serde(default)]
    token: String,
    url: String,
    /// Present in listings (`GET …/drains`).
    #[serde(default)]
    status: Option<DrainStatus>,
}

/// A drain's status as the API lists it.
#[derive(Deserialize)]
struct DrainStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    last_error_at: Option<String>,
    #[serde(default)]
    sent: u64,
    #[serde(default)]
    dropped: u64,
    #[serde(default)]
    lag_lines: u64,
    #[serde(default)]
    lag_seconds: f64,
}

/// The drains as a table: URL, token, state, lines sent, dropped and waiting since the
/// drain started (with how far behind, in seconds, when the durable log is on), and the last
/// error with its time.
fn drains_table(drains: &[Drain]) -> String {
    let head = [
        "URL",
        "TOKEN",
        "STATE",
        "SENT",
        "DROPPED",
        "LAG",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 7]> = drains
        .iter()
        .map(|d| {
            let st = d.status.as_ref();
            let num = |f: fn(&DrainStatus) -> u64| st.map_or("-".into(), |s| f(s).to_string());
            let error = match st.and_then(|s| s.last_error.as_deref()) {
                None => "-".to_string(),
                Some(e) => match st.and_then(|s| s.last_error_at.as_deref()) {
                    Some(at) => format!("{at} {e}"),
                    None => e.to_string(),
                },
            };
            [
                d.url.clone(),
                d.token.clone(),
                st.map_or("-".into(), |s| s.state.clone()),
                num(|s| s.sent),
                num(|s| s.dropped),
                st.map_or("-".into(), |s| {
                    if s.lag_seconds >= 0.1 {
                        format!("{} ({:.1}s)", s.lag_lines, s.lag_seconds)
                    } else {
                        s.lag_lines.to_string()
                    }
                }),
                error,
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 7]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            match i {
                // Counts are right-aligned; the last column is not padded.
                3..=5 => l.push_str(&format!("{}{c}  ", " ".repeat(pad))),
                6 => l.push_str(c),
                _ => l.push_str(&format!("{c}{}  ", " ".repeat(pad))),
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
    }
    out
}

/// The path of an app.
pub(crate) fn app_path(app: &str) -> String {
    format!("/v2/channels/{}", segment(app))
}

/// Writes `text` to stdout. A reader that went away (`| head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::Io(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

fn token_lines(tokens: &BTreeMap<String, String>) -> String {
    tokens
        .iter()
        .map(|(name, token)| format!("{name} {token}\n"))
        .collect()
}

/// Channels asked for per request by `apps`.
const APPS_PAGE: usize = 1000;

pub async fn apps(c: &Client) -> Result<(), CliError> {
    // Page by page (by name), each starting after the last name of the one before.
    let mut channels: Vec<Channel> = Vec::new();
    loop {
        let after = channels.last().map(|c| c.name.as_str()).unwrap_or("");
        let page: Vec<Channel> = c
            .get(&format!("/v2/channels?limit={APPS_PAGE}&after={after}"))
            .await?;
        let full = page.len() == APPS_PAGE;
        channels.extend(page);
        if !full {
            break;
        }
    }
    if channels.is_empty() {
        eprintln!("No apps yet; create one with `logplex apps:create APP`.");
    }
    emit(
        &channels
            .iter()
            .map(|ch| format!("{}\n", ch.name))
            .collect::<String>(),
    )
}

pub async fn apps_create(c: &Client, app: &str) -> Result<(), CliError> {
    #[derive(Serialize)]
    struct Create<'a> {
        name: &'a str,
        tokens: [&'a str; 2],
    }
    let ch: Channel = c
        .post(
            "/v2/channels",
            &Create {
                name: app,
                tokens: ["app", "heroku"],
            },
        )
        .await?;
    emit(&format!("Created {}\n{}", ch.name, token_lines(&ch.tokens)))
}

pub async fn apps_destroy(c: &Client, app: &str) -> Result<(), CliError> {
    c.delete(&app_path(app)).await.map_err(|e| e.in_app(app))?;
    emit(&format!("Destroyed {app}\n"))
}

pub async fn tokens(c: &Client, app: &str) -> Result<(), CliError> {
    let ch: Channel = c.get(&app_path(app)).await.map_err(|e| e.in_app(app))?;
    emit(&token_lines(&ch.tokens))
}

/// Creates the token `name` on `app` and returns it.
pub(crate) async fn create_token(c: &Client, app: &str, name: &str) -> Result<String, CliError> {
    #[derive(Deserialize)]
    struct Created {
        token: String,
    }
    let path = format!("{}/tokens", app_path(app));
    let created: Created = c
        .post(&path, &serde_json::json!({ "name": name }))
        .await
        .map_err(|e| e.in_app(app))?;
    Ok(created.token)
}

pub async fn tokens_create(c: &Client, app: &str, name: &str) -> Result<(), CliError> {
    let token = create_token(c, app, name).await?;
    emit(&format!("{name} {token}\n"))
}

async fn list_drains(c: &Client, app: &str) -> Result<Vec<Drain>, CliError> {
    c.get(&format!("{}/drains", app_path(app)))
        .await
        .map_err(|e| e.in_app(app))
}

pub async fn drains(c: &Client, app: &str) -> Result<(), CliError> {
    let drains = list_drains(c, app).await?;
    if drains.is_empty() {
        eprintln!("{app} has no drains.");
        return Ok(());
    }
    emit(&drains_table(&drains))
}

pub async fn drains_add(c: &Client, app: &str, url: &str) -> Result<(), CliError> {
    let d: Drain = c
        .post(
            &format!("{}/drains", app_path(app)),
            &serde_json::json!({ "url": url }),
        )
        .await
        .map_err(|e| e.in_app(app))?;
    emit(&format!(
        "Successfully added drain {} ({})\n",
        d.url, d.token
    ))
}

pub async fn drains_remove(c: &Client, app: &str, which: &str) -> Result<(), CliError> {
    let drains = list_drains(c, app).await?;
    // The server shows URLs with the password as `***`: a URL given with its password
    // is compared in that form.
    let shown = logplex::drain::url::redact(which);
    let Some(d) = drains
        .iter()
        .find(|d| d.url == which || d.url == shown || d.token == which)
    else {
        return Err(CliError::NotFound(format!("no drain {which} on {app}")));
    };
    let id = match &d.id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    c.delete(&format!("{}/drains/{}", app_path(app), segment(&id)))
        .await?;
    emit(&format!("Successfully removed drain {}\n", d.url))
}

/// Renders one rule as `NAME key=value ...`: the rule's known fields in the order of
/// `docs/alerts.md`, then any other field the server adds, `null`s left out.
fn rule_line(rule: &Value) -> String {
    const ORDER: [&str; 12] = [
        "app",
        "source",
        "dyno",
        "where",
        "regex",
        "metric",
        "above",
        "threshold",
        "window",
        "cooldown",
        "webhook",
        "state",
    ];
    let Some(obj) = rule.as_object() else {
        return format!("{rule}");
    };
    let mut line = match obj.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => "(unnamed)".to_string(),
    };
    let known = ORDER.iter().filter_map(|k| obj.get_key_value(*k));
    let rest = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "name" && !ORDER.contains(&k.as_str()));
    for (k, v) in known.chain(rest) {
        let v = match v {
            Value::Null => continue,
            Value::String(s) if s.is_empty() || s.contains([' ', '"', '=', '\\']) => {
                format!("{s:?}")
            }
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        line.push_str(&format!(" {k}={v}"));
    }
    line
}

async fn list_alerts(c: &Client, app: &str) -> Result<Vec<Value>, CliError> {
    c.get(&format!("{}/alerts", app_path(app)))
        .await
        .map_err(|e| e.in_app(app))
}

pub async fn alerts(c: &Client, app: Option<&str>) -> Result<(), CliError> {
    let rules: Vec<Value> = match app {
        Some(app) => list_alerts(c, app).await?,
        None => c.get("/v2/alerts").await?,
    };
    if rules.is_empty() {
        eprintln!(
            "No alert rules{}.",
            app.map(|a| format!(" on {a}")).unwrap_or_default()
        );
    }
    emit(
        &rules
            .iter()
            .map(|r| rule_line(r) + "\n")
            .collect::<String>(),
    )
}

/// Checks what the server would only reject as 422, so that bad usage exits 2.
pub fn check_alert_args(a: &AlertAddArgs) -> Result<(), CliError> {
    for (flag, d) in [("--window", &a.window), ("--cooldown", &a.cooldown)] {
        if !matches!(logplex::config::parse_duration(d), Some(d) if !d.is_zero()) {
            return Err(CliError::Usage(format!(
                "{flag}: {d:?} is not a duration like 30s, 1m or 1h"
            )));
        }
    }
    if a.threshold == Some(0) {
        return Err(CliError::Usage("--threshold: must be at least 1".into()));
    }
    Ok(())
}

pub async fn alerts_add(c: &Client, a: &AlertAddArgs) -> Result<(), CliError> {
    #[derive(Serialize)]
    struct Rule<'a> {
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dyno: Option<&'a str>,
        #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
        where_: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        regex: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        metric: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        above: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        threshold: Option<u64>,
        window: &'a str,
        cooldown: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        webhook: Option<&'a str>,
    }
    let rule = Rule {
        name: &a.name,
        source: a.source.as_deref(),
        dyno: a.dyno.as_deref(),
        where_: a.where_.as_deref(),
        regex: a.regex.as_deref(),
        metric: a.metric.as_deref(),
        // A number as a JSON number, a duration (`500ms`) as text.
        above: a.above.as_deref().map(|t| match t.parse::<f64>() {
            Ok(n) => serde_json::json!(n),
            Err(_) => Value::String(t.to_string()),
        }),
        // A line rule fires on one matching line unless told otherwise.
        threshold: a.threshold.or(a.metric.is_none().then_some(1)),
        window: &a.window,
        cooldown: &a.cooldown,
        webhook: a.webhook.as_deref(),
    };
    let app = &a.app.app;
    let created: Value = c
        .post(&format!("{}/alerts", app_path(app)), &rule)
        .await
        .map_err(|e| e.in_app(app))?;
    emit(&format!("Added alert {}\n", rule_line(&created)))
}

pub async fn alerts_remove(c: &Client, app: &str, name: &str) -> Result<(), CliError> {
    let rules = list_alerts(c, app).await?;
    if !rules
        .iter()
        .any(|r| r.get("name").and_then(Value::as_str) == Some(name))
    {
        return Err(CliError::NotFound(format!("no alert {name:?} on {app}")));
    }
    c.delete(&format!("{}/alerts/{}", app_path(app), segment(name)))
        .await?;
    emit(&format!("Removed alert {name} from {app}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_print_as_a_table() {
        let drains: Vec<Drain> = serde_json::from_value(serde_json::json!([
            {"id": "1", "token": "d.a", "url": "syslog://logs.example.com:514",
             "status": {"state": "connected", "last_error": null, "last_error_at": null,
                        "sent": 1200, "dropped": 0, "lag_lines": 3}},
            {"id": "2", "token": "d.b", "url": "https://u:***@nowhere.invalid/logs",
             "status": {"state": "failing", "last_error": "cannot resolve nowhere.invalid: nope",
                        "last_error_at": "2026-01-02T03:04:05.000000+00:00",
                        "sent": 0, "dropped": 15, "lag_lines": 15}},
            {"id": "3", "token": "d.c", "url": "syslog://old:1"}
        ]))
        .unwrap();
        assert_eq!(
            drains_table(&drains),
            "URL                                 TOKEN  STATE      SENT  DROPPED  LAG  LAST ERROR\n\
             syslog://logs.example.com:514       d.a    connected  1200        0    3  -\n\
             https://u:***@nowhere.invalid/logs  d.b    failing       0       15   15  2026-01-02T03:04:05.000000+00:00 cannot resolve nowhere.invalid: nope\n\
             syslog://old:1                      d.c    -             -        -    -  -\n"
        );
    }

    #[test]
    fn rules_print_on_one_line() {
        let rule = serde_json::json!({
            "name": "http-5xx", "app": "demo", "where": "status>=500", "regex": null,
            "threshold": 5, "window": "1m", "cooldown": "5m", "source": "heroku", "origin": "api"
        });
        assert_eq!(
            rule_line(&rule),
            r#"http-5xx app=demo source=heroku where="status>=500" threshold=5 window=1m cooldown=5m origin=api"#
        );
        let rule = serde_json::json!({"name": "slow", "regex": "took \\d+ms"});
        assert_eq!(rule_line(&rule), r#"slow regex="took \\d+ms""#);
    }
}
