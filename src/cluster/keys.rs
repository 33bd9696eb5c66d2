//! The cluster's keys in Redis and the values they hold (`docs/cluster.md` lays them out).
//! In a Redis Cluster a script or a pipeline keeps to one slot, so the keys are laid out by
//! what is written together:
//! - the config (channels, tokens, drains, rules, the change stream, its counter, the
//!   epoch, the admin key's hash) all carries the hash tag `{cfg}`: one slot, so each
//!   change stays one atomic script that checks, writes and appends to the change stream,
//!   and a full load or a fill reads or writes it in one pipeline. Config is small and
//!   changes seldom; the load is in the log streams;
//! - a channel's log stream carries `{ch:NAME}` (names are `[a-z0-9-]`, never a brace), so
//!   the streams, where the lines go, spread over the slots and the masters;
//! - a session is a key of its own (its own slot).

use serde::{Deserialize, Serialize};

/// The change stream: one entry per change (`seq`, `id`, `node`, `c`).
pub const STREAM: &str = "logplex:{cfg}:changes";
/// The number of the last change (`INCR` once per change; entries carry it as `seq`).
pub const SEQ: &str = "logplex:{cfg}:changes:seq";
/// Made when Redis is first filled with a config; a node whose replica follows another
/// epoch loads the whole config again.
pub const EPOCH: &str = "logplex:{cfg}:epoch";
/// Held (a few seconds) by the node filling an empty Redis, so that only one does.
pub const SEEDING: &str = "logplex:{cfg}:seeding";
/// Every channel's name (a set): what a full load reads first.
pub const CHANNELS: &str = "logplex:{cfg}:channels";
/// The last channel id given (`INCR`): ids are never reused, cluster-wide.
pub const IDS: &str = "logplex:{cfg}:ids:channel";
/// Alert rules on every channel (`*`): rule name → rule.
pub const STAR_ALERTS: &str = "logplex:{cfg}:alerts";

/// The SHA-256 (hex) of the cluster's admin key: set by the first node to reach Redis,
/// taken by the others (unless their key is set in their config).
pub const ADMIN_KEY: &str = "logplex:{cfg}:admin_key_sha256";

/// The Redis Cluster slot of channel `name`'s keys: CRC16 (XMODEM) of its hash tag
/// `ch:NAME`, modulo 16384, as Redis computes it.
pub fn channel_slot(name: &str) -> u16 {
    let mut s = crc16::State::<crc16::XMODEM>::new();
    s.update(b"ch:");
    s.update(name.as_bytes());
    s.get() % 16384
}

/// Channel `name`: a hash of `id`, `created_at`, `metrics` (`0`/`1`).
pub fn channel(name: &str) -> String {
    format!("logplex:{{cfg}}:ch:{name}:channel")
}

/// The tokens of channel `name`: token name → [`TokenValue`].
pub fn tokens(name: &str) -> String {
    format!("logplex:{{cfg}}:ch:{name}:tokens")
}

/// The drains of channel `name`: drain id → [`DrainValue`].
pub fn drains(name: &str) -> String {
    format!("logplex:{{cfg}}:ch:{name}:drains")
}

/// The alert rules of channel `name`: rule name → rule (JSON).
pub fn alerts(name: &str) -> String {
    format!("logplex:{{cfg}}:ch:{name}:alerts")
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_channels_slot_is_the_one_redis_gives_its_keys() {
        // `CLUSTER KEYSLOT logplex:{ch:app}:log` and `... {ch:bench} ...` on Redis 7.0.
        assert_eq!(super::channel_slot("app"), 5342);
        assert_eq!(super::channel_slot("bench"), 1921);
    }
}
