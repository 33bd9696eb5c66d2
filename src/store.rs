//! The SQLite store: channels, tokens, drains, the admin key and saved history.
//!
//! One connection behind a mutex, used only from `spawn_blocking` (never on the async
//! runtime). Schema migrations are applied at open, by `PRAGMA user_version`.

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Errors at the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open the database at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store task failed: {0}")]
    Join(String),
}

/// A channel with its tokens (name → token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// Never reused (AUTOINCREMENT): a channel destroyed and created again under the same
    /// name has a new id, so what was bound to the old one (a session) cannot see the new.
    pub id: i64,
    pub name: String,
    pub tokens: Vec<(String, String)>,
    pub created_at: i64,
}

/// A drain of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRecord {
    pub id: String,
    pub channel: String,
    pub token: String,
    pub url: String,
    pub created_at: i64,
}

impl DrainRecord {
    /// Is this the drain `which` names: its id, its token, its URL, or its URL as shown to
    /// users (the password as `***`)?
    pub fn matches(&self, which: &str) -> bool {
        self.id == which
            || self.token == which
            || self.url == which
            || crate::drain::url::redact(&self.url) == which
    }
}

/// One saved history line: the frame as received and its source (token name).
#[derive(Debug, Clone)]
pub struct SavedLine {
    pub source: String,
    pub frame: Vec<u8>,
}

/// The database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

const MIGRATIONS: &[&str] = &[
    // 1: channels, tokens, drains, meta (admin key), history.
    "CREATE TABLE channels (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
     );
     CREATE TABLE tokens (
        token TEXT PRIMARY KEY,
        channel TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (channel, name)
     );
     CREATE TABLE drains (
        id TEXT PRIMARY KEY,
        channel TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
        token TEXT NOT NULL UNIQUE,
        url TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (channel, url)
     );
     CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE history (
        channel TEXT NOT NULL,
        seq INTEGER NOT NULL,
        source TEXT NOT NULL,
        frame BLOB NOT NULL,
        PRIMARY KEY (channel, seq)
     );",
    // 2: alert rules added through the API (config rules live in config.toml). `app` is a
    // channel name or `*`, so it cannot be a foreign key; a trigger removes a channel's rules
    // with it.
    "CREATE TABLE alerts (
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        source TEXT,
        dyno TEXT,
        cond TEXT,
        regex TEXT,
        threshold INTEGER NOT NULL,
        win TEXT NOT NULL,
        cooldown TEXT NOT NULL,
        webhook TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (app, name)
     );
     CREATE TRIGGER alerts_go_with_their_channel AFTER DELETE ON channels
     BEGIN DELETE FROM alerts WHERE app = OLD.name; END;",
    // 3: a stable id per channel, never reused. SQLite cannot add such a key to a table, so
    // the table is rebuilt (with foreign keys off: see `Store::open`); tokens and drains keep
    // referring to the unique name. Dropping the table dropped its trigger: made again.
    "CREATE TABLE channels_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
     );
     INSERT INTO channels_new (name, created_at)
        SELECT name, created_at FROM channels ORDER BY created_at, name;
     DROP TABLE channels;
     ALTER TABLE channels_new RENAME TO channels;
     CREATE TRIGGER alerts_go_with_their_channel AFTER DELETE ON channels
     BEGIN DELETE FROM alerts WHERE app = OLD.name; END;",
];

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A uniqueness violation is a `Conflict`; anything else stays a database error.
fn conflict(e: rusqlite::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict
    } else {
        e.into()
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl Store {
    /// Opens (creating the folder and file if needed) and migrates the database.
    /// Blocking: call at start, before serving, or from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
            }
        }
        let mut conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(open_err(format!(
                "schema version {version} is newer than this logplex knows ({})",
                MIGRATIONS.len()
            )));
        }
        // Foreign keys stay off while migrating: a table that others reference is rebuilt by
        // copy, drop and rename, and with them on the drop would cascade to its children.
        // (The pragma is a no-op inside a transaction, so it is set here.)
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(open_err(format!(
                    "migration {} left rows of {table} without their parent",
                    i + 1
                )));
            }
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Runs `f` with the connection on this thread (start-up and shutdown only).
    pub fn call_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

/// Every channel with its tokens, by name.
pub fn list_channels(conn: &mut Connection) -> Result<Vec<ChannelRecord>, StoreError> {
    let mut out: Vec<ChannelRecord> = Vec::new();
    let mut stmt = conn.prepare("SELECT id, name, created_at FROM channels ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (id, name, created_at) = row?;
        out.push(ChannelRecord {
            id,
            name,
            tokens: Vec::new(),
            created_at,
        });
    }
    let mut stmt =
        conn.prepare("SELECT channel, name, token FROM tokens ORDER BY channel, created_at, name")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (channel, name, token) = row?;
        if let Ok(i) = out.binary_search_by(|c| c.name.as_str().cmp(&channel)) {
            out[i].tokens.push((name, token));
        }
    }
    Ok(out)
}

/// One channel with its tokens.
pub fn get_channel(conn: &mut Connection, name: &str) -> Result<ChannelRecord, StoreError> {
    let (id, created_at): (i64, i64) = conn
        .query_row(
            "SELECT id, created_at FROM channels WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let mut stmt = conn
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
    })
}

/// Creates a channel with new tokens of the given names. `Conflict` if it exists.
pub fn create_channel(
    conn: &mut Connection,
    name: &str,
    token_names: &[String],
) -> Result<ChannelRecord, StoreError> {
    let tx = conn.transaction()?;
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
    conn: &mut Connection,
    name: &str,
    tokens: &[(String, String)],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let ts = now();
    tx.execute(
        "INSERT OR IGNORE INTO channels (name, created_at) VALUES (?1, ?2)",
        params![name, ts],
    )?;
    for (tname, token) in tokens {
        tx.execute(
            "DELETE FROM tokens WHERE channel = ?1 AND name = ?2 AND token != ?3",
            params![name, tname, token],
        )?;
        tx.execute(
            "INSERT INTO tokens (token, channel, name, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(token) DO UPDATE SET channel = excluded.channel, name = excluded.name",
            params![token, name, tname, ts],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Deletes a channel, its tokens, drains and saved history.
pub fn delete_channel(conn: &mut Connection, name: &str) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
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
    conn: &mut Connection,
    channel: &str,
    token_name: &str,
) -> Result<String, StoreError> {
    get_channel(conn, channel)?;
    let token = format!("t.{}", uuid::Uuid::new_v4());
    conn.execute(
        "INSERT INTO tokens (token, channel, name, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![token, channel, token_name, now()],
    )
    .map_err(conflict)?;
    Ok(token)
}

/// Every drain, by channel then creation.
pub fn list_drains(conn: &mut Connection) -> Result<Vec<DrainRecord>, StoreError> {
    let mut stmt = conn.prepare(
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

/// The admin key kept in the store, if any.
pub fn get_meta(conn: &mut Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Sets a meta value.
pub fn set_meta(conn: &mut Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Replaces the saved history with `channels` (name → lines, oldest first).
pub fn save_history(
    conn: &mut Connection,
    channels: &[(String, Vec<SavedLine>)],
) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
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

/// The saved history of every channel, oldest first, and clears it.
pub fn take_history(conn: &mut Connection) -> Result<Vec<(String, Vec<SavedLine>)>, StoreError> {
    let mut out: Vec<(String, Vec<SavedLine>)> = Vec::new();
    {
        let mut stmt =
            conn.prepare("SELECT channel, source, frame FROM history ORDER BY channel, seq")?;
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
    conn.execute("DELETE FROM history", [])?;
    Ok(out)
}

/// Every alert rule added through the API, by app then creation.
pub fn list_alerts(conn: &mut Connection) -> Result<Vec<crate::config::AlertConfig>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT app, name, source, dyno, cond, regex, threshold, win, cooldown, webhook
         FROM alerts ORDER BY app, created_at, name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(crate::config::AlertConfig {
            app: r.get(0)?,
            name: r.get(1)?,
            source: r.get(2)?,
            dyno: r.get(3)?,
            where_: r.get(4)?,
            regex: r.get(5)?,
            threshold: r.get::<_, i64>(6)?.max(0) as u64,
            window: r.get(7)?,
            cooldown: r.get(8)?,
            webhook: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Adds an alert rule (already validated). `NotFound` if its channel does not exist (unless
/// `app` is `*`), `Conflict` if the channel has a rule of that name.
pub fn create_alert(
    conn: &mut Connection,
    rule: &crate::config::AlertConfig,
) -> Result<(), StoreError> {
    if rule.app != "*" {
        get_channel(conn, &rule.app)?;
    }
    conn.execute(
        "INSERT INTO alerts (app, name, source, dyno, cond, regex, threshold, win, cooldown,
                             webhook, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            rule.app,
            rule.name,
            rule.source,
            rule.dyno,
            rule.where_,
            rule.regex,
            i64::try_from(rule.threshold).unwrap_or(i64::MAX),
            rule.window,
            rule.cooldown,
            rule.webhook,
            now()
        ],
    )
    .map_err(conflict)?;
    Ok(())
}

/// Removes the rule `name` of `app` (a channel or `*`). `NotFound` if there is none.
pub fn delete_alert(conn: &mut Connection, app: &str, name: &str) -> Result<(), StoreError> {
    let n = conn.execute(
        "DELETE FROM alerts WHERE app = ?1 AND name = ?2",
        params![app, name],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("sub/logplex.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn channels_and_tokens() {
        let (_d, s) = store();
        s.call_blocking(|c| {
            let ch = create_channel(c, "demo", &["app".into(), "heroku".into()])?;
            assert_eq!(ch.tokens.len(), 2);
            assert!(matches!(
                create_channel(c, "demo", &[]),
                Err(StoreError::Conflict)
            ));
            let t = create_token(c, "demo", "web")?;
            assert!(t.starts_with("t."));
            assert!(matches!(
                create_token(c, "demo", "web"),
                Err(StoreError::Conflict)
            ));
            assert!(matches!(
                create_token(c, "nope", "web"),
                Err(StoreError::NotFound)
            ));
            let all = list_channels(c)?;
            assert_eq!(all.len(), 1);
            assert_eq!(all[0].tokens.len(), 3);
            delete_channel(c, "demo")?;
            assert!(matches!(
                delete_channel(c, "demo"),
                Err(StoreError::NotFound)
            ));
            assert!(list_channels(c)?.is_empty());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn config_channels_are_upserted() {
        let (_d, s) = store();
        let tok = "t.00000000-0000-4000-8000-000000000001".to_string();
        s.call_blocking(|c| {
            upsert_channel(c, "bench", &[("app".into(), tok.clone())])?;
            upsert_channel(c, "bench", &[("app".into(), tok.clone())])?;
            let ch = get_channel(c, "bench")?;
            assert_eq!(ch.tokens, vec![("app".to_string(), tok.clone())]);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn channel_ids_are_never_reused() {
        let (_d, s) = store();
        s.call_blocking(|c| {
            let a = create_channel(c, "demo", &[])?;
            let b = create_channel(c, "other", &[])?;
            assert!(b.id > a.id);
            delete_channel(c, "other")?;
            delete_channel(c, "demo")?;
            let again = create_channel(c, "demo", &[])?;
            assert!(again.id > b.id, "{} reused", again.id);
            upsert_channel(c, "bench", &[])?;
            assert!(get_channel(c, "bench")?.id > again.id);
            Ok(())
        })
        .unwrap();
    }

    /// A database of schema 2 (before channel ids) keeps its channels, tokens, drains and
    /// alert rules, and its foreign keys and trigger still work afterwards.
    #[test]
    fn migrating_to_channel_ids_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "foreign_keys", "ON").unwrap();
            for sql in &MIGRATIONS[..2] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", 2).unwrap();
            c.execute_batch(
                "INSERT INTO channels VALUES ('zeta', 5), ('alpha', 7);
                 INSERT INTO tokens VALUES ('t.1', 'alpha', 'app', 7), ('t.2', 'zeta', 'app', 5);
                 INSERT INTO drains VALUES ('d1', 'alpha', 'd.1', 'syslog://h:1', 7);
                 INSERT INTO alerts VALUES ('alpha', 'r', NULL, NULL, 'a=1', NULL, 1, '1m', '5m', NULL, 7);",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        s.call_blocking(|c| {
            let all = list_channels(c)?;
            let ids: Vec<(&str, i64)> = all.iter().map(|r| (r.name.as_str(), r.id)).collect();
            // Ids in order of creation.
            assert_eq!(ids, [("alpha", 2), ("zeta", 1)]);
            assert_eq!(all[0].tokens, vec![("app".to_string(), "t.1".to_string())]);
            assert_eq!(list_drains(c)?.len(), 1);
            assert_eq!(list_alerts(c)?.len(), 1);
            // Cascades and the trigger still work.
            delete_channel(c, "alpha")?;
            assert!(list_drains(c)?.is_empty());
            assert!(list_alerts(c)?.is_empty());
            assert_eq!(list_channels(c)?.len(), 1);
            assert!(create_channel(c, "alpha", &[])?.id > 2);
            let fk: i64 = c.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
            assert_eq!(fk, 1);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn history_round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        {
            let s = Store::open(&path).unwrap();
            s.call_blocking(|c| {
                save_history(
                    c,
                    &[(
                        "demo".into(),
                        vec![SavedLine {
                            source: "app".into(),
                            frame: b"<1>1 x".to_vec(),
                        }],
                    )],
                )
            })
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let h = s.call_blocking(take_history).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].1[0].frame, b"<1>1 x");
        assert!(s.call_blocking(take_history).unwrap().is_empty());
    }
}

/// Drains of one channel.
pub fn channel_drains(
    conn: &mut Connection,
    channel: &str,
) -> Result<Vec<DrainRecord>, StoreError> {
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
    conn: &mut Connection,
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
    conn.execute(
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
    conn: &mut Connection,
    channel: &str,
    which: &str,
) -> Result<DrainRecord, StoreError> {
    let d = channel_drains(conn, channel)?
        .into_iter()
        .find(|d| d.matches(which))
        .ok_or(StoreError::NotFound)?;
    conn.execute("DELETE FROM drains WHERE id = ?1", [&d.id])?;
    Ok(d)
}

#[cfg(test)]
mod alert_tests {
    use super::*;
    use crate::config::AlertConfig;

    fn rule(app: &str, name: &str) -> AlertConfig {
        AlertConfig {
            name: name.into(),
            app: app.into(),
            source: Some("heroku".into()),
            dyno: None,
            where_: Some("status>=500".into()),
            regex: None,
            threshold: 5,
            window: "1m".into(),
            cooldown: "5m".into(),
            webhook: Some("http://127.0.0.1:9/hook".into()),
        }
    }

    #[test]
    fn alerts_round_trip_and_go_with_their_channel() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("l.db")).unwrap();
        s.call_blocking(|c| {
            create_channel(c, "demo", &[])?;
            create_alert(c, &rule("demo", "a"))?;
            create_alert(c, &rule("*", "a"))?;
            assert!(matches!(
                create_alert(c, &rule("demo", "a")),
                Err(StoreError::Conflict)
            ));
            assert!(matches!(
                create_alert(c, &rule("nope", "a")),
                Err(StoreError::NotFound)
            ));
            let all = list_alerts(c)?;
            assert_eq!(all, vec![rule("*", "a"), rule("demo", "a")]);
            delete_channel(c, "demo")?;
            assert_eq!(list_alerts(c)?, vec![rule("*", "a")]);
            delete_alert(c, "*", "a")?;
            assert!(matches!(
                delete_alert(c, "*", "a"),
                Err(StoreError::NotFound)
            ));
            Ok(())
        })
        .unwrap();
    }
}
