//! Channels and their tokens.

use super::{conflict, now, ChannelRecord, Conn, StoreError};
use rusqlite::{params, OptionalExtension};

/// Every channel with its tokens, by name. Start-up reads a million channels this way, so
/// each row is read in place (borrowed) and only what is kept is allocated.
pub fn list_channels(conn: &mut Conn) -> Result<Vec<ChannelRecord>, StoreError> {
    let n: i64 = conn
        .0
        .query_row("SELECT count(*) FROM channels", [], |r| r.get(0))?;
    let mut out: Vec<ChannelRecord> = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut stmt = conn
        .0
        .prepare("SELECT id, name, created_at, metrics FROM channels ORDER BY name")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        out.push(ChannelRecord {
            id: r.get(0)?,
            name: text(r, 1)?.to_string(),
            tokens: Vec::new(),
            created_at: r.get(2)?,
            metrics: r.get(3)?,
        });
    }
    // In table order (no ORDER BY: SQLite would sort every token of the node on disk),
    // then sorted here by channel and, within one, by creation and name. Tokens made
    // together lie together in the table: the channel of the row before is tried first.
    let mut stmt = conn
        .0
        .prepare("SELECT channel, name, token, created_at FROM tokens")?;
    let mut rows = stmt.query([])?;
    let mut tokens = Vec::new();
    let mut last = usize::MAX;
    while let Some(r) = rows.next()? {
        let channel = text(r, 0)?;
        let i = match out.get(last) {
            Some(c) if c.name == channel => last,
            _ => match out.binary_search_by(|c| c.name.as_str().cmp(channel)) {
                Ok(i) => i,
                Err(_) => continue,
            },
        };
        last = i;
        let name = text(r, 1)?.to_string();
        let token = text(r, 2)?.to_string();
        tokens.push((i, r.get::<_, i64>(3)?, name, token));
    }
    tokens.sort_unstable_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    for (i, _, name, token) in tokens {
        out[i].tokens.push((name, token));
    }
    Ok(out)
}

/// Column `i` of `r` as text, borrowed from the row.
fn text<'a>(r: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a str> {
    r.get_ref(i)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// One channel with its tokens.
pub fn get_channel(conn: &mut Conn, name: &str) -> Result<ChannelRecord, StoreError> {
    let (id, created_at, metrics): (i64, i64, bool) = conn
        .0
        .query_row(
            "SELECT id, created_at, metrics FROM channels WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let mut stmt = conn
        .0
        .prepare("SELECT name, token FROM tokens WHERE channel = ?1 ORDER BY created_at, name")?;
    let tokens = stmt
        .query_map([name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChannelRecord {
        id,
        name: name.to_string(),
        tokens,
        created_at,
        metrics,
    })
}

/// Turns metrics from the logs on or off for a channel. `NotFound` if it does not exist.
/// Turning them off forgets the roll-ups saved for it.
pub fn set_channel_metrics(
    conn: &mut Conn,
    name: &str,
    on: bool,
) -> Result<ChannelRecord, StoreError> {
    let tx = conn.0.transaction()?;
    let n = tx.execute(
        "UPDATE channels SET metrics = ?2 WHERE name = ?1",
        params![name, on],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    if !on {
        tx.execute("DELETE FROM logmetrics WHERE channel = ?1", [name])?;
    }
    tx.commit()?;
    get_channel(conn, name)
}

/// Creates a channel with new tokens of the given names. `Conflict` if it exists.
pub fn create_channel(
    conn: &mut Conn,
    name: &str,
    token_names: &[String],
) -> Result<ChannelRecord, StoreError> {
    let tx = conn.0.transaction()?;
    let ts = now();
    tx.execute(
        "INSERT INTO channels (name, created_at) VALUES (?1, ?2)",
        params![name, ts],
    )
    .map_err(conflict)?;
    for t in token_names {
        let token = format!("t.{}", uuid::Uuid::new_v4());
        tx.execute(
            "INSERT INTO tokens (token, channel, name, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![token, name, t, ts],
        )?;
    }
    tx.commit()?;
    get_channel(conn, name)
}

/// Creates the channel if missing and sets the given fixed tokens (config channels).
pub fn upsert_channel(
    conn: &mut Conn,
    name: &str,
    tokens: &[(String, String)],
) -> Result<(), StoreError> {
    upsert_channels(conn, [(name, tokens)])
}

/// [`upsert_channel`] for many channels in one transaction (config channels at start, or
/// a bulk load): one commit, so one sync, whatever their number.
pub fn upsert_channels<'a>(
    conn: &mut Conn,
    channels: impl IntoIterator<Item = (&'a str, &'a [(String, String)])>,
) -> Result<(), StoreError> {
    let tx = conn.0.transaction()?;
    let ts = now();
    {
        let mut channel =
            tx.prepare_cached("INSERT OR IGNORE INTO channels (name, created_at) VALUES (?1, ?2)")?;
        let mut other = tx.prepare_cached(
            "DELETE FROM tokens WHERE channel = ?1 AND name = ?2 AND token != ?3",
        )?;
        let mut token = tx.prepare_cached(
            "INSERT INTO tokens (token, channel, name, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(token) DO UPDATE SET channel = excluded.channel, name = excluded.name",
        )?;
        for (name, tokens) in channels {
            channel.execute(params![name, ts])?;
            for (tname, t) in tokens {
                other.execute(params![name, tname, t])?;
                token.execute(params![t, name, tname, ts])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// Deletes a channel, its tokens, drains and saved history.
pub fn delete_channel(conn: &mut Conn, name: &str) -> Result<(), StoreError> {
    let tx = conn.0.transaction()?;
    let n = tx.execute("DELETE FROM channels WHERE name = ?1", [name])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    tx.execute("DELETE FROM history WHERE channel = ?1", [name])?;
    tx.commit()?;
    Ok(())
}

/// Adds a token named `token_name` to a channel. `Conflict` if the name is taken.
pub fn create_token(
    conn: &mut Conn,
    channel: &str,
    token_name: &str,
) -> Result<String, StoreError> {
    get_channel(conn, channel)?;
    let token = format!("t.{}", uuid::Uuid::new_v4());
    conn.0
        .execute(
            "INSERT INTO tokens (token, channel, name, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![token, channel, token_name, now()],
        )
        .map_err(conflict)?;
    Ok(token)
}
