//! Single values (the admin key's hash), and the history and metric roll-ups saved at stop.

use super::{Conn, SavedLine, StoreError};
use rusqlite::{params, OptionalExtension};

/// A value of the `meta` table (e.g. the admin key's hash), if set.
pub fn get_meta(conn: &Conn, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .0
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Sets a meta value.
pub fn set_meta(conn: &Conn, key: &str, value: &str) -> Result<(), StoreError> {
    conn.0.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Replaces the saved history with `channels` (name → lines, oldest first), in one
/// transaction: when it fails (a full disk) the history saved before stays whole.
pub fn save_history(
    conn: &mut Conn,
    channels: &[(String, Vec<SavedLine>)],
) -> Result<usize, StoreError> {
    let tx = conn.0.transaction()?;
    tx.execute("DELETE FROM history", [])?;
    let mut n = 0;
    {
        let mut stmt = tx
            .prepare("INSERT INTO history (channel, seq, source, frame) VALUES (?1, ?2, ?3, ?4)")?;
        for (channel, lines) in channels {
            for (i, l) in lines.iter().enumerate() {
                stmt.execute(params![channel, i as i64, l.source, l.frame])?;
                n += 1;
            }
        }
    }
    tx.commit()?;
    Ok(n)
}

/// The saved history of every channel, oldest first. It stays saved until the next
/// successful [`save_history`] replaces it, so a start that fails or a stop that cannot
/// save loses nothing.
pub fn load_history(conn: &mut Conn) -> Result<Vec<(String, Vec<SavedLine>)>, StoreError> {
    let mut out: Vec<(String, Vec<SavedLine>)> = Vec::new();
    {
        let mut stmt = conn
            .0
            .prepare("SELECT channel, source, frame FROM history ORDER BY channel, seq")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        for row in rows {
            let (channel, source, frame) = row?;
            match out.last_mut() {
                Some((c, lines)) if *c == channel => lines.push(SavedLine { source, frame }),
                _ => out.push((channel, vec![SavedLine { source, frame }])),
            }
        }
    }
    Ok(out)
}

/// A channel's saved metric roll-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedMetrics {
    pub channel: String,
    /// The channel's id: a save is kept only while the channel of that name is this one
    /// and has metrics on (a channel deleted takes its row with it, so a row loaded is
    /// always its channel's, and loaded with its id).
    pub id: i64,
    /// `logmetrics::LogMetrics::encode`'s bytes.
    pub data: Vec<u8>,
    /// The seq of the channel's last line they count (its lines after it are not in them);
    /// `None` for roll-ups saved by a version that saved them at a stop only, which count
    /// every line before it.
    pub seq: Option<u64>,
}

/// Saves the metric roll-ups of `channels`, in one transaction, each replacing the one
/// saved before for its channel; the others saved before stay. A save for a channel that
/// meanwhile went away, was made anew or had its metrics turned off is not kept (what
/// deletes a channel or turns its metrics off deletes its saved roll-ups).
pub fn save_logmetrics(conn: &mut Conn, channels: &[SavedMetrics]) -> Result<(), StoreError> {
    let tx = conn.0.transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO logmetrics (channel, data, seq)
                SELECT ?1, ?2, ?3 WHERE EXISTS
                    (SELECT 1 FROM channels WHERE name = ?1 AND id = ?4 AND metrics = 1)
             ON CONFLICT (channel) DO UPDATE SET data = excluded.data, seq = excluded.seq",
        )?;
        for m in channels {
            let seq = m.seq.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
            stmt.execute(params![m.channel, m.data, seq, m.id])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The saved metric roll-ups, by channel name; kept until the next [`save_logmetrics`]
/// replaces them.
pub fn load_logmetrics(conn: &mut Conn) -> Result<Vec<SavedMetrics>, StoreError> {
    let mut stmt = conn.0.prepare(
        "SELECT l.channel, l.data, l.seq, c.id FROM logmetrics l JOIN channels c ON c.name = l.channel
            ORDER BY l.channel",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SavedMetrics {
            channel: r.get(0)?,
            data: r.get(1)?,
            seq: r.get::<_, Option<i64>>(2)?.map(|s| s.max(0) as u64),
            id: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Sets `new_key` to `value` and deletes `old_key` so that the old value is readable
/// nowhere in the database files: its row is overwritten on disk (`secure_delete`) and
/// the write-ahead log is emptied. For a secret an older version kept in plain text.
pub fn replace_meta_securely(
    conn: &mut Conn,
    old_key: &str,
    new_key: &str,
    value: &str,
) -> Result<(), StoreError> {
    let c = &mut conn.0;
    c.pragma_update(None, "secure_delete", true)?;
    {
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![new_key, value],
        )?;
        tx.execute("DELETE FROM meta WHERE key = ?1", [old_key])?;
        tx.commit()?;
    }
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    c.pragma_update(None, "secure_delete", false)?;
    Ok(())
}
