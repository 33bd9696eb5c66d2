//! Drains: one row per drain of a channel, with its `d.` token.

use super::{get_channel, is_unique_violation, now, Conn, DrainRecord, StoreError};
use rusqlite::params;

/// Every drain, by channel then creation.
pub fn list_drains(conn: &mut Conn) -> Result<Vec<DrainRecord>, StoreError> {
    let mut stmt = conn.0.prepare_cached(
        "SELECT id, channel, token, url, created_at FROM drains ORDER BY channel, created_at, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(DrainRecord {
            id: r.get(0)?,
            channel: r.get(1)?,
            token: r.get(2)?,
            url: r.get(3)?,
            created_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Drains of one channel.
pub fn channel_drains(conn: &mut Conn, channel: &str) -> Result<Vec<DrainRecord>, StoreError> {
    get_channel(conn, channel)?;
    Ok(list_drains(conn)?
        .into_iter()
        .filter(|d| d.channel == channel)
        .collect())
}

/// Why a drain cannot be added.
#[derive(Debug)]
pub enum AddDrain {
    Store(StoreError),
    Duplicate,
    Limit(usize),
}

impl From<rusqlite::Error> for AddDrain {
    fn from(e: rusqlite::Error) -> Self {
        AddDrain::Store(e.into())
    }
}

/// Adds a drain (a new `d.` token) unless the URL is already a drain of the channel or the
/// channel has `max` drains.
pub fn create_drain(
    conn: &mut Conn,
    channel: &str,
    url: &str,
    max: usize,
) -> Result<DrainRecord, AddDrain> {
    let existing = channel_drains(conn, channel).map_err(AddDrain::Store)?;
    if existing.iter().any(|d| d.url == url) {
        return Err(AddDrain::Duplicate);
    }
    if existing.len() >= max {
        return Err(AddDrain::Limit(max));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let token = format!("d.{}", uuid::Uuid::new_v4());
    let created_at = now();
    conn.0
        .execute(
            "INSERT INTO drains (id, channel, token, url, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, channel, token, url, created_at],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                AddDrain::Duplicate
            } else {
                e.into()
            }
        })?;
    Ok(DrainRecord {
        id,
        channel: channel.to_string(),
        token,
        url: url.to_string(),
        created_at,
    })
}

/// Removes the drain of `channel` whose id, token or URL (or its URL as shown, password
/// `***`) is `which`; returns it.
pub fn delete_drain(
    conn: &mut Conn,
    channel: &str,
    which: &str,
) -> Result<DrainRecord, StoreError> {
    let d = channel_drains(conn, channel)?
        .into_iter()
        .find(|d| d.matches(which))
        .ok_or(StoreError::NotFound)?;
    conn.0
        .execute("DELETE FROM drains WHERE id = ?1", [&d.id])?;
    Ok(d)
}
