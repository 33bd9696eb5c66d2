//! [`RuleSpec`]: an alert rule as people write it, in config, API bodies and the store.

use serde::Deserialize;

/// An alert rule as written: one `[[alerts]]` table of the config, or the body of
/// `POST /v2/alerts`, and a row of the store. [`Rule::compile`](super::rule::Rule::compile)
/// checks it and makes the running rule; two rules are the same rule while their specs are
/// equal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    pub threshold: u64,
    /// A duration: `30s`, `1m`, `1h`.
    pub window: String,
    #[serde(default = "five_minutes")]
    pub cooldown: String,
    pub webhook: Option<String>,
}

fn star() -> String {
    "*".into()
}
fn five_minutes() -> String {
    "5m".into()
}
