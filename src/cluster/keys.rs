//! The cluster's keys in Redis and the values they hold (`docs/cluster.md` lays them out).
//! Every key of a channel carries the hash tag `{ch:NAME}`, so that in a Redis Cluster a
//! channel's keys share one slot (names are `[a-z0-9-]`, never a brace); the change stream
//! and the counters are single keys of their own.

use serde::{Deserialize, Serialize};

/// The change stream: one entry per change (`seq`, `id`, `node`, `c`).
pub const STREAM: &str = "logplex:changes";
/// The number of the last change (`INCR` once per change; entries carry it as `seq`).
pub const SEQ: &str = "logplex:changes:seq";
/// Made when Redis is first filled with a config; a node whose replica follows another
/// epoch loads the whole config again.
pub const EPOCH: &str = "logplex:epoch";
/// Held (a few seconds) by the node filling an empty Redis, so that only one does.
pub const SEEDING: &str = "logplex:seeding";
/// Every channel's name (a set): what a full load reads first.
pub const CHANNELS: &str = "logplex:channels";
/// The last channel id given (`INCR`): ids are never reused, cluster-wide.
pub const IDS: &str = "logplex:ids:channel";
/// Alert rules on every channel (`*`): rule name → rule.
pub const STAR_ALERTS: &str = "logplex:alerts";

/// The SHA-256 (hex) of the cluster's admin key: set by the first node to reach Redis,
/// taken by the others (unless their key is set in their config).
pub const ADMIN_KEY: &str = "logplex:admin_key_sha256";

/// Channel `name`: a hash of `id`, `created_at`, `metrics` (`0`/`1`).
pub fn channel(name: &str) -> String {
    format!("logplex:{{ch:{name}}}:channel")
}

/// The tokens of channel `name`: token name → [`TokenValue`].
pub fn tokens(name: &str) -> String {
    format!("logplex:{{ch:{name}}}:tokens")
}

/// The drains of channel `name`: drain id → [`DrainValue`].
pub fn drains(name: &str) -> String {
    format!("logplex:{{ch:{name}}}:drains")
}

/// The alert rules of channel `name`: rule name → rule (JSON).
pub fn alerts(name: &str) -> String {
    format!("logplex:{{ch:{name}}}:alerts")
}

/// A token in its channel's hash: `["t.…", created_at]`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenValue(pub String, pub i64);

/// A drain in its channel's hash (its id is the field).
#[derive(Debug, Serialize, Deserialize)]
pub struct DrainValue {
    pub token: String,
    pub url: String,
    pub created_at: i64,
}

/// The log stream of channel `name`: one entry per batch of lines a node ingested (see
/// `logs.rs`), trimmed to about the history size. Its entry ids are the SSE event ids of
/// cross-node sessions.
pub fn log(name: &str) -> String {
    format!("logplex:{{ch:{name}}}:log")
}

/// A session made on any node: its spec as JSON, expiring like a session does.
pub fn session(id: &uuid::Uuid) -> String {
    format!("logplex:session:{id}")
}
