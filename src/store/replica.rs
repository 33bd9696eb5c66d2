//! The store as a replica of the cluster's config (cluster mode): each change read from the
//! change stream is written here as it was decided in Redis, with the ids Redis gave
//! (channel ids, tokens, drain ids), never new ones. Every write is idempotent and checks
//! the channel's id, so replaying changes a node already has (after a full load, or a
//! change applied before a crash saved its position) changes nothing, and a change about
//! a channel since destroyed and made again under its name leaves the new one alone.

use super::{ChannelRecord, Conn, DrainRecord, State, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};

/// The id of channel `name` as stored here, if it exists.
fn channel_id(tx: &Transaction<'_>, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(tx
        .query_row("SELECT id FROM channels WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Makes channel `rec.name` the one of `rec`: same id, creation time, metrics flag and
/// tokens. One of that name but another id is deleted first, with all it had.
fn put_channel_tx(tx: &Transaction<'_>, rec: &ChannelRecord) -> Result<(), StoreError> {
    match channel_id(tx, &rec.name)? {
        Some(id) if id == rec.id => {
            tx.execute(
                "UPDATE channels SET created_at = ?2, metrics = ?3 WHERE name = ?1",
                params![rec.name, rec.created_at, rec.metrics],
            )?;
            if !rec.metrics {
                // As `set_channel_metrics`: off forgets the saved roll-ups.
                tx.execute("DELETE FROM logmetrics WHERE channel = ?1", [&rec.name])?;
            }
        }
        other => {
            if other.is_some() {
                delete_channel_tx(tx, &rec.name)?;
            }
            // The id is Redis's; one held here by a channel of another name (a replica
            // made before it joined the cluster) goes.
            let holder: Option<String> = tx
                .query_row("SELECT name FROM channels WHERE id = ?1", [rec.id], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(name) = holder {
                delete_channel_tx(tx, &name)?;
            }
            tx.execute(
                "INSERT INTO channels (id, name, created_at, metrics) VALUES (?1, ?2, ?3, ?4)",
                params![rec.id, rec.name, rec.created_at, rec.metrics],
            )?;
        }
    }
    tx.execute("DELETE FROM tokens WHERE channel = ?1", params![rec.name])?;
    for (name, token) in &rec.tokens {
        put_token_tx(tx, &rec.name, name, token, rec.created_at)?;
    }
    Ok(())
}

fn put_token_tx(
    tx: &Transaction<'_>,
    channel: &str,
    name: &str,
    token: &str,
    created_at: i64,
) -> Result<(), StoreError> {
    // A token value is unique: wherever it was, it is now here under this name.
    tx.execute("DELETE FROM tokens WHERE token = ?1", [token])?;
    tx.execute(
        "INSERT INTO tokens (token, channel, name, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(channel, name) DO UPDATE SET token = excluded.token",
        params![token, channel, name, created_at],
    )?;
    Ok(())
}

fn delete_channel_tx(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM channels WHERE name = ?1", [name])?;
    tx.execute("DELETE FROM history WHERE channel = ?1", [name])?;
    Ok(())
}

/// What one change of the stream does to the replica.
#[derive(Debug, Clone)]
pub enum ReplicaWrite<'a> {
    /// A channel as made (or declared), whole.
    Channel(&'a ChannelRecord),
    /// Channel `name` is gone, if it is still the one of id `id`.
    Destroy {
        name: &'a str,
        id: i64,
    },
    /// A token added to channel `channel` of id `id`.
    Token {
        channel: &'a str,
        id: i64,
        name: &'a str,
        token: &'a str,
        created_at: i64,
    },
    Metrics {
        channel: &'a str,
        id: i64,
        on: bool,
    },
    /// A drain added to its channel of id `id`.
    Drain {
        drain: &'a DrainRecord,
        id: i64,
    },
    /// The drain of this id is gone.
    Undrain {
        drain: &'a str,
    },
    /// An alert rule added (to its channel of id `id`, or `None` for `*`).
    Alert {
        rule: &'a crate::alert::RuleSpec,
        id: Option<i64>,
    },
    Unalert {
        app: &'a str,
        name: &'a str,
    },
    /// Nothing but the position (a change this node cannot read, or one about a channel
    /// gone since).
    Nothing,
}

/// Writes one change of the stream and, with it in the same transaction, the stream
/// position it brings the replica to (`meta` rows, read back by [`position`]).
pub fn replicate(
    conn: &mut Conn,
    write: ReplicaWrite<'_>,
    position: &Position,
) -> Result<(), StoreError> {
    let tx = conn.0.transaction()?;
    let is = |name: &str, id: i64| -> Result<bool, StoreError> {
        Ok(channel_id(&tx, name)? == Some(id))
    };
    match write {
        ReplicaWrite::Channel(rec) => put_channel_tx(&tx, rec)?,
        ReplicaWrite::Destroy { name, id } => {
            if is(name, id)? {
                delete_channel_tx(&tx, name)?;
            }
        }
        ReplicaWrite::Token {
            channel,
            id,
            name,
            token,
            created_at,
        } => {
            if is(channel, id)? {
                put_token_tx(&tx, channel, name, token, created_at)?;
            }
        }
        ReplicaWrite::Metrics { channel, id, on } => {
            if is(channel, id)? {
                tx.execute(
                    "UPDATE channels SET metrics = ?2 WHERE name = ?1",
                    params![channel, on],
                )?;
                if !on {
                    tx.execute("DELETE FROM logmetrics WHERE channel = ?1", [channel])?;
                }
            }
        }
        ReplicaWrite::Drain { drain: d, id } => {
            if is(&d.channel, id)? {
                insert_drain(&tx, d)?;
            }
        }
        ReplicaWrite::Undrain { drain } => {
            tx.execute("DELETE FROM drains WHERE id = ?1", [drain])?;
        }
        ReplicaWrite::Alert { rule, id } => {
            let there = match id {
                None => rule.app == "*",
                Some(id) => is(&rule.app, id)?,
            };
            if there {
                insert_alert(&tx, rule)?;
            }
        }
        ReplicaWrite::Unalert { app, name } => {
            tx.execute(
                "DELETE FROM alerts WHERE app = ?1 AND name = ?2",
                params![app, name],
            )?;
        }
        ReplicaWrite::Nothing => {}
    }
    write_position(&tx, position)?;
    tx.commit()?;
    Ok(())
}

fn insert_drain(tx: &Transaction<'_>, d: &DrainRecord) -> Result<(), StoreError> {
    // By id; a row of another id with the same token or URL (which Redis no longer has)
    // gives way.
    tx.execute(
        "DELETE FROM drains WHERE id != ?1 AND (token = ?2 OR (channel = ?3 AND url = ?4))",
        params![d.id, d.token, d.channel, d.url],
    )?;
    tx.execute(
        "INSERT INTO drains (id, channel, token, url, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET channel = excluded.channel, token = excluded.token,
             url = excluded.url, created_at = excluded.created_at",
        params![d.id, d.channel, d.token, d.url, d.created_at],
    )?;
    Ok(())
}

fn insert_alert(tx: &Transaction<'_>, rule: &crate::alert::RuleSpec) -> Result<(), StoreError> {
    super::alerts::write_alert(tx, "INSERT OR REPLACE", rule)?;
    Ok(())
}

/// Makes the replica exactly `state` (a full load from Redis), with `position`, in one
/// transaction: channels not in it, or there under another id, are deleted with all they
/// had; the others are written as they are in it.
pub fn replace_state(
    conn: &mut Conn,
    state: &State,
    position: &Position,
) -> Result<(), StoreError> {
    let tx = conn.0.transaction()?;
    {
        let keep: std::collections::HashMap<&str, i64> = state
            .channels
            .iter()
            .map(|c| (c.name.as_str(), c.id))
            .collect();
        let mut stmt = tx.prepare("SELECT name, id FROM channels")?;
        let here = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        for (name, id) in here {
            if keep.get(name.as_str()) != Some(&id) {
                delete_channel_tx(&tx, &name)?;
            }
        }
        for rec in &state.channels {
            put_channel_tx(&tx, rec)?;
        }
        tx.execute("DELETE FROM drains", [])?;
        for d in &state.drains {
            insert_drain(&tx, d)?;
        }
        tx.execute("DELETE FROM alerts", [])?;
        for rule in &state.alerts {
            insert_alert(&tx, rule)?;
        }
    }
    write_position(&tx, position)?;
    tx.commit()?;
    Ok(())
}

/// Where in the cluster's change stream the replica is: everything up to and including
/// change `seq` (stream entry `id`) of the config of `epoch` is in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// Made once per cluster config (when Redis was first filled); another epoch in Redis
    /// means another config: the replica is loaded again whole.
    pub epoch: String,
    pub seq: u64,
    /// The stream entry id of change `seq` (`0-0` before the first).
    pub id: String,
}

const EPOCH: &str = "cluster_epoch";
const SEQ: &str = "cluster_seq";
const ID: &str = "cluster_stream_id";

fn write_position(tx: &Transaction<'_>, p: &Position) -> Result<(), StoreError> {
    for (k, v) in [
        (EPOCH, p.epoch.clone()),
        (SEQ, p.seq.to_string()),
        (ID, p.id.clone()),
    ] {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![k, v],
        )?;
    }
    Ok(())
}

/// The replica's position, `None` when it never followed a cluster (or the row is damaged).
pub fn position(conn: &mut Conn) -> Result<Option<Position>, StoreError> {
    let get = |k: &str| super::get_meta(conn, k);
    let (Some(epoch), Some(seq), Some(id)) = (get(EPOCH)?, get(SEQ)?, get(ID)?) else {
        return Ok(None);
    };
    Ok(seq.parse().ok().map(|seq| Position { epoch, seq, id }))
}

/// The largest channel id the replica holds (0 with none): where Redis's id counter starts
/// when this node fills an empty Redis.
pub fn max_channel_id(conn: &mut Conn) -> Result<i64, StoreError> {
    Ok(conn
        .0
        .query_row("SELECT coalesce(max(id), 0) FROM channels", [], |r| {
            r.get(0)
        })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{create_channel, get_channel, list_channels, list_drains, Store};

    fn rec(name: &str, id: i64, tokens: &[(&str, &str)]) -> ChannelRecord {
        ChannelRecord {
            id,
            name: name.into(),
            tokens: tokens
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            created_at: 100,
            metrics: false,
        }
    }

    fn at(seq: u64) -> Position {
        Position {
            epoch: "e".into(),
            seq,
            id: format!("{seq}-0"),
        }
    }

    /// Replayed changes change nothing, a change about an older channel of the same name
    /// leaves the newer alone, and the position is kept with each change.
    #[test]
    fn writes_are_idempotent_and_check_the_channel_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("l.db")).unwrap();
        s.call_blocking(|c| {
            let a = rec("demo", 7, &[("app", "t.a")]);
            replicate(c, ReplicaWrite::Channel(&a), &at(1))?;
            replicate(c, ReplicaWrite::Channel(&a), &at(1))?;
            assert_eq!(get_channel(c, "demo")?, a);
            let d = DrainRecord {
                id: "d1".into(),
                channel: "demo".into(),
                token: "d.1".into(),
                url: "syslog://h:1".into(),
                created_at: 100,
            };
            replicate(c, ReplicaWrite::Drain { drain: &d, id: 7 }, &at(2))?;
            replicate(c, ReplicaWrite::Drain { drain: &d, id: 7 }, &at(2))?;
            assert_eq!(list_drains(c)?, vec![d.clone()]);
            // Destroyed and made again as id 9: changes about id 7 do nothing.
            let b = rec("demo", 9, &[("app", "t.b")]);
            replicate(c, ReplicaWrite::Channel(&b), &at(3))?;
            assert!(list_drains(c)?.is_empty());
            replicate(
                c,
                ReplicaWrite::Destroy {
                    name: "demo",
                    id: 7,
                },
                &at(4),
            )?;
            replicate(
                c,
                ReplicaWrite::Token {
                    channel: "demo",
                    id: 7,
                    name: "web",
                    token: "t.w",
                    created_at: 1,
                },
                &at(5),
            )?;
            assert_eq!(get_channel(c, "demo")?, b);
            assert_eq!(position(c)?, Some(at(5)));
            replicate(
                c,
                ReplicaWrite::Destroy {
                    name: "demo",
                    id: 9,
                },
                &at(6),
            )?;
            assert!(list_channels(c)?.is_empty());
            Ok(())
        })
        .unwrap();
    }

    /// A full load drops what Redis does not have, keeps ids as Redis gave them and takes
    /// an id a local channel of another name held.
    #[test]
    fn a_full_load_makes_the_replica_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("l.db")).unwrap();
        s.call_blocking(|c| {
            let local = create_channel(c, "local", &["app".into()])?;
            let state = State {
                channels: vec![rec("aa", local.id, &[("app", "t.aa")]), rec("bb", 40, &[])],
                drains: vec![],
                alerts: vec![],
            };
            replace_state(c, &state, &at(10))?;
            assert_eq!(list_channels(c)?, state.channels);
            assert_eq!(max_channel_id(c)?, 40);
            assert_eq!(position(c)?, Some(at(10)));
            Ok(())
        })
        .unwrap();
    }
}
