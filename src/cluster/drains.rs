//! Drain status across nodes. Each node delivers the lines it ingested itself, from its own
//! durable log (Heroku's Logplex did the same: a drain had a connection per node), so a
//! drain's status is spread over the nodes. Once a second each node writes the status of
//! each of its running drains into a hash of its own that expires ([`TTL_MS`]), so a dead
//! node's part goes away by itself; a drain's API status is the sum (counts, lag lines)
//! and the maximum (lag seconds) over the nodes whose hash is there, with each node's part
//! beside it. The writes run on their own task from the drains' counters, never on the
//! delivery path. Redis away: the node's own status, marked `"scope":"local"`.
//!
//! Keys (every one carries the channel's hash tag, so they share the channel's slot):
//! `logplex:{ch:NAME}:drain:ID:node:NODE` (a hash of the status fields, expiring) and
//! `logplex:{ch:NAME}:drain:ID:nodes` (a set of the nodes that wrote one; members whose
//! hash is gone are removed by readers).

use super::Cluster;
use crate::drain::{Drains, State, Status};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a node writes its drains' status.
pub const EVERY: Duration = Duration::from_secs(1);
/// How long a node's status of a drain lives without being written again: a node missing
/// this long (three writes) is no longer counted.
pub const TTL_MS: u64 = 3000;
/// The set of a drain's nodes lives this long after the last write of any node.
const NODES_TTL_MS: u64 = 60_000;
/// The most a status read waits for Redis before it answers with the node's own.
const READ_WAIT: Duration = Duration::from_secs(1);

/// The hash of node `node`'s status of drain `id` of channel `channel`.
pub fn node_key(channel: &str, id: &str, node: &str) -> String {
    format!("logplex:{{ch:{channel}}}:drain:{id}:node:{node}")
}

/// The set of the nodes that wrote a status of drain `id` of channel `channel`.
pub fn nodes_key(channel: &str, id: &str) -> String {
    format!("logplex:{{ch:{channel}}}:drain:{id}:nodes")
}

/// Writes this node's drains' status every [`EVERY`] until `shutdown`.
pub async fn run(cluster: Arc<Cluster>, drains: Arc<Drains>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let list = drains.statuses();
        if list.is_empty() {
            continue;
        }
        match write(&cluster, &list).await {
            Ok(()) => failing = false,
            Err(e) => {
                cluster.reader_failed();
                if !failing {
                    tracing::warn!("cluster: cannot write the drains' status to Redis: {e}");
                }
                failing = true;
            }
        }
    }
}

/// One round: for each drain an `HSET` and `PEXPIRE` of this node's hash and an `SADD`
/// and `PEXPIRE` of the set of its nodes, pipelined in one round trip (on a Redis Cluster,
/// one pipeline per slot, sent at once).
async fn write(cluster: &Cluster, list: &[(String, String, Status)]) -> redis::RedisResult<()> {
    let conn = cluster.reader().await?;
    let node = cluster.node();
    let mut groups: HashMap<u16, redis::Pipeline> = HashMap::new();
    for (id, channel, st) in list {
        let pipe = groups
            .entry(conn.group(channel))
            .or_insert_with(redis::pipe);
        let key = node_key(channel, id, node);
        pipe.cmd("HSET")
            .arg(&key)
            .arg("state")
            .arg(st.state.as_str())
            .arg("last_error")
            .arg(st.last_error.as_deref().unwrap_or(""))
            .arg("last_error_at")
            .arg(st.last_error_at.map_or(String::new(), |t| t.to_string()))
            .arg("sent")
            .arg(st.sent)
            .arg("dropped")
            .arg(st.dropped)
            .arg("lag_lines")
            .arg(st.lag_lines)
            .arg("lag_seconds")
            .arg(st.lag_seconds)
            .ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(TTL_MS).ignore();
        let nodes = nodes_key(channel, id);
        pipe.cmd("SADD").arg(&nodes).arg(node).ignore();
        pipe.cmd("PEXPIRE").arg(&nodes).arg(NODES_TTL_MS).ignore();
    }
    let sent = tokio::time::timeout(
        READ_WAIT * 3,
        conn.query_each::<()>(groups.into_values().collect()),
    )
    .await
    .map_err(|_| redis::RedisError::from((redis::ErrorKind::IoError, "timed out")))?;
    sent.into_iter().collect()
}

/// A drain's status over the cluster: the aggregate, each live node's part (this node's
/// first), and whether the other nodes could be read (`false`: Redis away, this node only).
#[derive(Debug, Clone)]
pub struct Spread {
    pub total: Status,
    pub nodes: Vec<(String, Status)>,
    pub cluster: bool,
}

/// The status of each drain of `ids` (of `channel`) over the live nodes, this node's part
/// being `local` (its status now, `None` when it does not run the drain). With Redis away
/// (or slower than a second), each is this node's own, marked so.
pub async fn spread(
    cluster: &Cluster,
    channel: &str,
    ids: &[String],
    local: impl Fn(&str) -> Status,
) -> Vec<Spread> {
    let me = cluster.node().to_string();
    let others = if cluster.is_up() {
        match tokio::time::timeout(READ_WAIT, read(cluster, channel, ids)).await {
            Ok(Ok(o)) => Some(o),
            Ok(Err(e)) => {
                cluster.reader_failed();
                tracing::warn!("cluster: cannot read the drains' status from Redis: {e}");
                None
            }
            Err(_) => {
                tracing::warn!(
                    "cluster: the drains' status not read from Redis within {READ_WAIT:?}"
                );
                None
            }
        }
    } else {
        None
    };
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let mut nodes = vec![(me.clone(), local(id))];
            if let Some(o) = &others {
                nodes.extend(o[i].iter().filter(|(n, _)| *n != me).cloned());
            }
            Spread {
                total: combine(nodes.iter().map(|(_, s)| s)),
                nodes,
                cluster: others.is_some(),
            }
        })
        .collect()
}

/// Every node's status of each drain of `ids`, read in two round trips (the sets, then the
/// hashes); the members whose hash expired are removed from their set.
async fn read(
    cluster: &Cluster,
    channel: &str,
    ids: &[String],
) -> redis::RedisResult<Vec<Vec<(String, Status)>>> {
    let mut conn = cluster.reader().await?;
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("SMEMBERS").arg(nodes_key(channel, id));
    }
    let members: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
    let mut pipe = redis::pipe();
    for (id, nodes) in ids.iter().zip(&members) {
        for n in nodes {
            pipe.cmd("HGETALL").arg(node_key(channel, id, n));
        }
    }
    let hashes: Vec<HashMap<String, String>> = if members.iter().all(|m| m.is_empty()) {
        Vec::new()
    } else {
        pipe.query_async(&mut conn).await?
    };
    let mut hashes = hashes.into_iter();
    let mut gone = redis::pipe();
    let mut any_gone = false;
    let out = ids
        .iter()
        .zip(members)
        .map(|(id, nodes)| {
            let mut got = Vec::with_capacity(nodes.len());
            for n in nodes {
                match hashes.next().and_then(|h| parse(&h)) {
                    Some(st) => got.push((n, st)),
                    None => {
                        gone.cmd("SREM")
                            .arg(nodes_key(channel, id))
                            .arg(&n)
                            .ignore();
                        any_gone = true;
                    }
                }
            }
            got.sort_by(|a, b| a.0.cmp(&b.0));
            got
        })
        .collect();
    if any_gone {
        // Best effort: the next reader removes them otherwise.
        let _: redis::RedisResult<()> = gone.query_async(&mut conn).await;
    }
    Ok(out)
}

/// A node's status from its hash; `None` when the hash is gone (expired) or not one.
fn parse(h: &HashMap<String, String>) -> Option<Status> {
    let num = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok());
    let state = match h.get("state")?.as_str() {
        "connected" => State::Connected,
        "failing" => State::Failing,
        _ => State::Connecting,
    };
    Some(Status {
        state,
        last_error: h.get("last_error").filter(|e| !e.is_empty()).cloned(),
        last_error_at: h.get("last_error_at").and_then(|v| v.parse().ok()),
        sent: num("sent")?,
        dropped: num("dropped").unwrap_or(0),
        lag_lines: num("lag_lines").unwrap_or(0) as usize,
        lag_seconds: h
            .get("lag_seconds")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite())
            .unwrap_or(0.0),
    })
}

/// The drain over `nodes`: counts and lag lines summed, lag seconds the largest, the
/// state `failing` when some node fails, else `connected` when some node delivered, else
/// `connecting`; the last error the newest of any node.
pub fn combine<'a>(nodes: impl Iterator<Item = &'a Status>) -> Status {
    let mut total = Status::connecting();
    for s in nodes {
        total.sent += s.sent;
        total.dropped += s.dropped;
        total.lag_lines += s.lag_lines;
        total.lag_seconds = total.lag_seconds.max(s.lag_seconds);
        total.state = match (total.state, s.state) {
            (State::Failing, _) | (_, State::Failing) => State::Failing,
            (State::Connected, _) | (_, State::Connected) => State::Connected,
            _ => State::Connecting,
        };
        if s.last_error.is_some() && s.last_error_at >= total.last_error_at {
            total.last_error = s.last_error.clone();
            total.last_error_at = s.last_error_at;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: State, sent: u64, lag: f64, err: Option<(&str, i64)>) -> Status {
        Status {
            state,
            last_error: err.map(|(e, _)| e.to_string()),
            last_error_at: err.map(|(_, t)| t),
            sent,
            dropped: sent / 10,
            lag_lines: sent as usize / 2,
            lag_seconds: lag,
        }
    }

    #[test]
    fn sums_counts_takes_the_furthest_lag_the_worst_state_and_the_newest_error() {
        let a = st(State::Connected, 100, 0.5, Some(("refused", 10)));
        let b = st(State::Connecting, 20, 2.0, None);
        let c = st(State::Connected, 30, 1.0, Some(("reset", 20)));
        let t = combine([&a, &b, &c].into_iter());
        assert_eq!((t.sent, t.dropped, t.lag_lines), (150, 15, 75));
        assert_eq!(t.lag_seconds, 2.0);
        assert_eq!(t.state, State::Connected);
        assert_eq!(t.last_error.as_deref(), Some("reset"));
        assert_eq!(t.last_error_at, Some(20));
        let f = st(State::Failing, 0, 0.0, Some(("timed out", 5)));
        assert_eq!(combine([&a, &f].into_iter()).state, State::Failing);
        assert_eq!(combine([&b].into_iter()).state, State::Connecting);
    }

    #[test]
    fn a_hash_round_trips_and_a_gone_one_is_none() {
        let mut h = HashMap::new();
        for (k, v) in [
            ("state", "failing"),
            ("last_error", "connection refused"),
            ("last_error_at", "1700000000000000"),
            ("sent", "12"),
            ("dropped", "3"),
            ("lag_lines", "40"),
            ("lag_seconds", "1.25"),
        ] {
            h.insert(k.to_string(), v.to_string());
        }
        let s = parse(&h).unwrap();
        assert_eq!(s.state, State::Failing);
        assert_eq!(s.last_error.as_deref(), Some("connection refused"));
        assert_eq!(s.last_error_at, Some(1_700_000_000_000_000));
        assert_eq!((s.sent, s.dropped, s.lag_lines), (12, 3, 40));
        assert_eq!(s.lag_seconds, 1.25);
        assert!(parse(&HashMap::new()).is_none());
    }
}
