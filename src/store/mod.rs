//! The SQLite store: channels, tokens, drains, the admin key's hash, saved history and
//! saved metric roll-ups.
//!
//! One connection behind a mutex, used only from `spawn_blocking` (never on the async
//! runtime). Schema migrations are applied at open, by `PRAGMA user_version`. A new
//! database is made whole under a temporary name (mode 0600, which SQLite gives its `-wal`
//! and `-shm` too) and then renamed into place, so an existing file that is empty or not
//! ours is an error at open, never mistaken for a fresh install.

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

mod alerts;
mod channels;
mod drains;
mod meta;
mod replica;

pub use alerts::{create_alert, delete_alert, list_alerts};
pub use channels::{
    create_channel, create_token, delete_channel, get_channel, list_channels, load_channels,
    set_channel_metrics, upsert_channel, upsert_channels, LoadedChannel, PackedTokens,
};
pub use drains::{channel_drains, create_drain, delete_drain, list_drains, AddDrain};
pub use meta::{
    get_meta, load_history, load_logmetrics, replace_meta_securely, save_history, save_logmetrics,
    set_meta, SavedMetrics,
};
pub use replica::{max_channel_id, position, replace_state, replicate, Position, ReplicaWrite};

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
    /// Cluster mode: the cluster's config (in Redis) cannot be reached, so it cannot be
    /// changed now; the reason is for the client.
    #[error("{0}")]
    Unavailable(String),
    /// Cluster mode: Redis answered something this version does not expect (a 500).
    #[error("the cluster's config store (Redis): {0}")]
    Cluster(String),
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
    /// Metrics from the logs are kept for this channel (opt-in: off by default).
    pub metrics: bool,
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

/// Everything the running router is configured from, as stored: read after every change
/// and handed to the registry, which rebuilds its routes and passes the drains and the
/// alert rules on to those who run them.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// By name.
    pub channels: Vec<ChannelRecord>,
    /// By channel, then creation.
    pub drains: Vec<DrainRecord>,
    /// The rules added through the API (config rules are not stored).
    pub alerts: Vec<crate::alert::RuleSpec>,
}

/// Reads the whole [`State`].
pub fn state(conn: &mut Conn) -> Result<State, StoreError> {
    Ok(State {
        channels: list_channels(conn)?,
        drains: list_drains(conn)?,
        alerts: list_alerts(conn)?,
    })
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
    conn: Arc<Mutex<Conn>>,
    /// Where it is, for a second, read-only connection ([`Store::reader`]).
    path: std::path::PathBuf,
}

/// The open connection, lent to the closures of [`Store::call`]. Only this module's
/// functions read and write through it, so every SQL statement lives in `store`.
pub struct Conn(Connection);

/// The `packed` column of channel `$channel` (an SQL expression) made from its tokens.
macro_rules! packed_of {
    ($channel:literal) => {
        concat!(
            "coalesce((SELECT group_concat(length(CAST(t.name AS BLOB)) || ':' || t.name
                || length(CAST(t.token AS BLOB)) || ':' || t.token, '' ORDER BY t.created_at, t.name)
             FROM tokens t WHERE t.channel = ",
            $channel,
            "), '')"
        )
    };
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
    // 4: metrics from the logs, opt-in per channel, and their roll-ups saved at stop
    // (postcard bytes of `logmetrics::LogMetrics::encode`); a trigger removes a channel's
    // saved roll-ups with it.
    "ALTER TABLE channels ADD COLUMN metrics INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE logmetrics (
        channel TEXT PRIMARY KEY,
        data BLOB NOT NULL
     );
     CREATE TRIGGER logmetrics_go_with_their_channel AFTER DELETE ON channels
     BEGIN DELETE FROM logmetrics WHERE channel = OLD.name; END;",
    // 5: alert rules on a metric from the logs (`metric`, `above` as written; `cond` and
    // `regex` empty, `threshold` 0).
    "ALTER TABLE alerts ADD COLUMN metric TEXT;
     ALTER TABLE alerts ADD COLUMN above TEXT;",
    // 6: each channel's tokens also in its own row (`packed`: name then token, each as its
    // length in bytes, ':' and the text, by creation then name), kept by triggers whatever
    // writes the tokens, so a start reads one table of a million rows instead of joining
    // two million tokens to their channels. The triggers use `group_concat(… ORDER BY …)`,
    // so from here on the database opens only in SQLite 3.44 or later (the bundled one is
    // newer; an older `sqlite3` shell cannot read the schema).
    concat!(
        "ALTER TABLE channels ADD COLUMN packed TEXT NOT NULL DEFAULT '';
         CREATE TRIGGER tokens_packed_on_insert AFTER INSERT ON tokens BEGIN
            UPDATE channels SET packed = ",
        packed_of!("NEW.channel"),
        " WHERE name = NEW.channel;
         END;
         CREATE TRIGGER tokens_packed_on_delete AFTER DELETE ON tokens BEGIN
            UPDATE channels SET packed = ",
        packed_of!("OLD.channel"),
        " WHERE name = OLD.channel;
         END;
         CREATE TRIGGER tokens_packed_on_update AFTER UPDATE ON tokens BEGIN
            UPDATE channels SET packed = ",
        packed_of!("OLD.channel"),
        " WHERE name = OLD.channel;
            UPDATE channels SET packed = ",
        packed_of!("NEW.channel"),
        "
                WHERE name = NEW.channel AND NEW.channel != OLD.channel;
         END;
         UPDATE channels SET packed = ",
        packed_of!("channels.name"),
        ";"
    ),
    // 7: saved roll-ups are saved every `store.metrics_save_interval` too, with the seq of
    // the channel's last line they count (NULL: saved at a stop by an older version); the
    // rows of channels without metrics on, which an older version's replica writes could
    // leave, go once here (every write that turns metrics off now deletes its row).
    "ALTER TABLE logmetrics ADD COLUMN seq INTEGER;
     DELETE FROM logmetrics WHERE NOT EXISTS
        (SELECT 1 FROM channels c WHERE c.name = logmetrics.channel AND c.metrics = 1);",
];

/// `PRAGMA application_id` of a logplex database ("LPLX"). Databases made before it was
/// set are recognised by their schema and marked at open.
const APPLICATION_ID: i32 = 0x4c50_4c58;

use crate::clock::now_secs as now;

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
    /// Opens (creating the folder and the database when there is no file) and migrates the
    /// database. A file that is empty or not a logplex database is an error.
    /// Blocking: call at start, before serving, or from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| open_err(e.to_string()))?;
            }
        }
        match std::fs::metadata(path) {
            Ok(m) if m.len() == 0 && !has_wal(path) => {
                return Err(open_err(
                    "the file is empty (0 bytes), not a logplex database; a first start needs \
                     no file, so move it away to start afresh, or put back the right one"
                        .into(),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create(path).map_err(|e| open_err(format!("cannot create it: {e}")))?
            }
            Err(e) => return Err(open_err(e.to_string())),
        }
        // Never SQLITE_OPEN_CREATE: the file exists (made just above when it did not).
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_err(e.to_string()))?;
        let foreign = |why: String| {
            open_err(format!(
                "{why}: not a logplex database; point store.path elsewhere or move the file away"
            ))
        };
        let app: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|e| foreign(e.to_string()))?;
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| foreign(e.to_string()))?;
        if app != APPLICATION_ID {
            let known = app == 0 && version >= 1 && has_table(&conn, "channels")?;
            if !known {
                return Err(foreign(format!(
                    "application_id {app:#x}, schema version {version}"
                )));
            }
            conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
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
            conn: Arc::new(Mutex::new(Conn(conn))),
            path: path.to_path_buf(),
        })
    }

    /// A second connection, read-only, for a bulk read on another thread beside the
    /// store's own (start-up: [`load_channels`]). Blocking.
    pub(crate) fn reader(&self) -> Result<Conn, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Conn(conn))
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
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
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

/// Makes a new, empty logplex database at `path`: written whole under `NAME.new` (mode
/// 0600) and renamed into place, so `path` never exists half made.
fn create(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().ok_or("no file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!("{name}.new"));
    for leftover in [
        tmp.clone(),
        path.with_file_name(format!("{name}.new-journal")),
    ] {
        match std::fs::remove_file(&leftover) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    {
        let conn = Connection::open(&tmp)?;
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Whether a write-ahead log with content sits beside `path` (an empty main file with one
/// is a database SQLite can still recover).
fn has_wal(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).is_ok_and(|m| m.len() > 0)
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("sub/logplex.db")).unwrap();
        (dir, s)
    }

    /// The bulk read of start-up finds what `list_channels` does: every channel by name,
    /// each with its tokens by creation then name, whatever order the rows lie in (channels
    /// made out of name order, tokens added to an older channel later, tokens of one
    /// creation time out of name order, a channel with none).
    #[test]
    fn the_bulk_load_reads_what_the_list_does() {
        let (_d, s) = store();
        s.call_blocking(|c| {
            create_channel(c, "zeta", &["web".into(), "app".into()])?;
            create_channel(c, "alpha", &[])?;
            upsert_channels(
                c,
                [
                    (
                        "mid",
                        &[
                            ("z".to_string(), "t.z".to_string()),
                            ("a".to_string(), "t.a".to_string()),
                        ][..],
                    ),
                    ("beta", &[("app".to_string(), "t.b".to_string())][..]),
                ],
            )?;
            create_token(c, "zeta", "late")?;
            set_channel_metrics(c, "beta", true)?;
            // A token moved from one channel to another (both rows' packed tokens change),
            // and a channel with tokens gone.
            create_channel(c, "gone", &["app".into()])?;
            upsert_channels(
                c,
                [("beta", &[("moved".to_string(), "t.z".to_string())][..])],
            )?;
            delete_channel(c, "gone")?;
            Ok(())
        })
        .unwrap();
        let listed = s.call_blocking(list_channels).unwrap();
        let loaded = loaded_records(&s);
        assert_eq!(loaded, listed);
        let names: Vec<&str> = loaded.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "mid", "zeta"]);
        let mid: Vec<&str> = loaded[2].tokens.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(mid, ["a"]);
        assert_eq!(loaded[1].tokens.len(), 2);
        assert_eq!(loaded[3].tokens.len(), 3);
        assert!(loaded[1].metrics);
        // The tokens come from the channels' rows; one that cannot be read sends the whole
        // load to the tokens table, which finds the same.
        s.call_blocking(|c| {
            let packed: String =
                c.0.query_row("SELECT packed FROM channels WHERE name = 'mid'", [], |r| {
                    r.get(0)
                })?;
            assert_eq!(packed, "1:a3:t.a");
            c.0.execute("UPDATE channels SET packed = '9:x' WHERE name = 'zeta'", [])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(loaded_records(&s), listed);
    }

    fn loaded_records(s: &Store) -> Vec<ChannelRecord> {
        load_channels(s, |c| c, |c| &c.name)
            .unwrap()
            .into_iter()
            .map(|l| ChannelRecord {
                id: l.id,
                name: l.name.to_string(),
                tokens: l.tokens.to_vec(),
                created_at: l.created_at,
                metrics: l.metrics,
            })
            .collect()
    }

    #[test]
    fn packed_tokens_are_read_only_when_whole() {
        for bad in [
            &b"3:ab"[..],
            b"x:abc",
            b"3:abc",
            b"1:a1",
            b"2:\xff\xfe1:t",
            b":a",
        ] {
            assert!(PackedTokens::from_packed(bad).is_none(), "{bad:?}");
        }
        assert_eq!(PackedTokens::from_packed(b"").unwrap().to_vec(), vec![]);
        let two = PackedTokens::from_packed("3:web4:t.ab2:\u{e9}1:t".as_bytes()).unwrap();
        assert_eq!(
            two.to_vec(),
            vec![
                ("web".to_string(), "t.ab".to_string()),
                ("\u{e9}".to_string(), "t".to_string())
            ]
        );
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
    fn metrics_are_off_until_turned_on_and_their_rollups_go_with_the_channel() {
        let (_d, s) = store();
        s.call_blocking(|c| {
            assert!(!create_channel(c, "demo", &[])?.metrics);
            assert!(set_channel_metrics(c, "demo", true)?.metrics);
            assert!(list_channels(c)?[0].metrics);
            assert!(matches!(
                set_channel_metrics(c, "nope", true),
                Err(StoreError::NotFound)
            ));
            let id = get_channel(c, "demo")?.id;
            let saved = |seq| SavedMetrics {
                channel: "demo".into(),
                id,
                data: vec![1, 2, 3],
                seq,
            };
            save_logmetrics(c, &[saved(Some(42))])?;
            assert_eq!(load_logmetrics(c)?, vec![saved(Some(42))]);
            save_logmetrics(c, &[saved(None)])?;
            assert_eq!(load_logmetrics(c)?, vec![saved(None)]);
            // Off forgets them, and a save made after is not kept.
            set_channel_metrics(c, "demo", false)?;
            assert!(load_logmetrics(c)?.is_empty());
            save_logmetrics(c, &[saved(Some(1))])?;
            assert!(load_logmetrics(c)?.is_empty());
            // On again: a save stays until the next of its channel replaces it.
            set_channel_metrics(c, "demo", true)?;
            save_logmetrics(c, &[saved(Some(2))])?;
            save_logmetrics(c, &[])?;
            assert_eq!(load_logmetrics(c)?, vec![saved(Some(2))]);
            // Deleting the channel forgets them; a save of the old one is not kept for a
            // new channel of its name.
            delete_channel(c, "demo")?;
            assert!(load_logmetrics(c)?.is_empty());
            create_channel(c, "demo", &[])?;
            set_channel_metrics(c, "demo", true)?;
            save_logmetrics(c, &[saved(Some(3))])?;
            assert!(load_logmetrics(c)?.is_empty());
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
            // The tokens packed into the channels' rows by the migration that added them.
            let packed: Vec<String> =
                c.0.prepare("SELECT packed FROM channels ORDER BY name")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
            assert_eq!(packed, ["3:app3:t.1", "3:app3:t.2"]);
            assert_eq!(list_drains(c)?.len(), 1);
            assert_eq!(list_alerts(c)?.len(), 1);
            // Cascades and the trigger still work.
            delete_channel(c, "alpha")?;
            assert!(list_drains(c)?.is_empty());
            assert!(list_alerts(c)?.is_empty());
            assert_eq!(list_channels(c)?.len(), 1);
            assert!(create_channel(c, "alpha", &[])?.id > 2);
            let fk: i64 = c.0.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
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
        let h = s.call_blocking(load_history).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].1[0].frame, b"<1>1 x");
        // Kept until the next save replaces it.
        assert_eq!(s.call_blocking(load_history).unwrap().len(), 1);
        s.call_blocking(|c| save_history(c, &[])).unwrap();
        assert!(s.call_blocking(load_history).unwrap().is_empty());
    }

    #[test]
    fn new_databases_are_private_and_odd_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        drop(Store::open(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("l.db.new").exists());
        drop(Store::open(&path).unwrap());

        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let e = Store::open(&empty).err().unwrap().to_string();
        assert!(e.contains("empty (0 bytes)"), "{e}");
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

        let text = dir.path().join("text.db");
        std::fs::write(&text, b"hello, not a database at all, just some text\n").unwrap();
        let e = Store::open(&text).err().unwrap().to_string();
        assert!(e.contains("not a logplex database"), "{e}");

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 1;")
            .unwrap();
        let e = Store::open(&other).err().unwrap().to_string();
        assert!(e.contains("not a logplex database"), "{e}");
    }

    #[test]
    fn databases_made_before_the_application_id_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            let tx_sql: String = MIGRATIONS.join(";\n");
            c.execute_batch(&tx_sql).unwrap();
            c.pragma_update(None, "user_version", MIGRATIONS.len())
                .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let app: i32 = s
            .call_blocking(|c| {
                Ok(c.0.pragma_query_value(None, "application_id", |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(app, APPLICATION_ID);
    }
}
