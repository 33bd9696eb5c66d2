//! [`RuleSpec`]: an alert rule as people write it, in config, API bodies and the store.

use serde::{Deserialize, Deserializer, Serialize};

/// An alert rule as written: one `[[alerts]]` table of the config, or the body of
/// `POST /v2/alerts`, and a row of the store. [`Rule::compile`](super::rule::Rule::compile)
/// checks it and makes the running rule; two rules are the same rule while their specs are
/// equal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    /// A channel name, or `*` for every channel.
    #[serde(default = "star")]
    pub app: String,
    pub source: Option<String>,
    pub dyno: Option<String>,
    /// A logfmt predicate on MSG, e.g. `status>=500 and at=error`.
    #[serde(rename = "where")]
    pub where_: Option<String>,
    /// A regular expression on MSG.
    pub regex: Option<String>,
    /// Instead of `where` or `regex`: a metric from the logs of channels with metrics on,
    /// e.g. `router.p95_service` or `router.5xx_ratio`; the rule fires while its value over
    /// `window` is above `above`.
    pub metric: Option<String>,
    /// The limit of `metric`: a number in the metric's unit (`0.05`, `500`), or a duration
    /// for a time in ms (`"500ms"`, `"2s"`). Kept as written.
    #[serde(default, deserialize_with = "number_or_text")]
    pub above: Option<String>,
    /// Matching lines in `window` that fire a line rule (0, or left out, for a metric rule).
    #[serde(default)]
    pub threshold: u64,
    /// A duration: `30s`, `1m`, `1h`.
    pub window: String,
    #[serde(default = "five_minutes")]
    pub cooldown: String,
    pub webhook: Option<String>,
}

/// `above = 0.05` and `above = "500ms"` alike, kept as text.
pub(crate) fn number_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(f64),
        Text(String),
    }
    Ok(Option::<NumberOrText>::deserialize(d)?.map(|v| match v {
        NumberOrText::Number(n) => n.to_string(),
        NumberOrText::Text(t) => t,
    }))
}

fn star() -> String {
    "*".into()
}
fn five_minutes() -> String {
    "5m".into()
}
