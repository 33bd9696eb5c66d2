//! Channels and their tokens.

use super::{conflict, now, ChannelRecord, Conn, StoreError};
use rusqlite::{params, OptionalExtension};
use std::sync::Arc;

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
    r.get_ref(i)?.as_str().map_err(|e| not_text(i, e))
}

/// [`text`] as bytes, not checked as UTF-8.
fn text_bytes<'a>(r: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    r.get_ref(i)?.as_bytes().map_err(|e| not_text(i, e))
}

fn not_text(i: usize, e: rusqlite::types::FromSqlError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

/// One channel with its tokens.
pub fn get_channel(conn: &mut Conn, name: &str) -> Result<ChannelRecord, StoreError> {
    let (id, created_at, metrics): (i64, i64, bool) = conn
        .0
        .prepare_cached("SELECT id, created_at, metrics FROM channels WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let mut stmt = conn.0.prepare_cached(
        "SELECT name, token FROM tokens WHERE channel = ?1 ORDER BY created_at, name",
    )?;
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
    // Statements kept prepared: an API create at a million channels is a fraction of a
    // millisecond, and parsing them again was a visible part of it.
    tx.prepare_cached("INSERT INTO channels (name, created_at) VALUES (?1, ?2)")?
        .execute(params![name, ts])
        .map_err(conflict)?;
    for t in token_names {
        let token = format!("t.{}", uuid::Uuid::new_v4());
        tx.prepare_cached(
            "INSERT INTO tokens (token, channel, name, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![token, name, t, ts])?;
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
             ON CONFLICT(token) DO UPDATE SET channel = excluded.channel, name = excluded.name
             WHERE channel != excluded.channel OR name != excluded.name",
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

/// A channel's tokens in one allocation, as the registry keeps them for a million channels
/// (a `Vec` of `String` pairs took five allocations for two tokens): each token's name then
/// the token, each a u32 length (little-endian) then its bytes, in the store's order (by
/// creation, then name).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PackedTokens(Box<[u8]>);

impl PackedTokens {
    /// Packs `(name, token)` pairs.
    pub fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> PackedTokens {
        let size = tokens
            .clone()
            .into_iter()
            .map(|(n, t)| 8 + n.len() + t.len())
            .sum();
        let mut out = Vec::with_capacity(size);
        for (n, t) in tokens {
            for s in [n.as_bytes(), t.as_bytes()] {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s);
            }
        }
        PackedTokens(out.into_boxed_slice())
    }

    /// The tokens of a channel's `packed` column: name then token, each as its length in
    /// bytes (decimal), `:` and its text. `None` if it is not that, or not UTF-8.
    pub fn from_packed(mut packed: &[u8]) -> Option<PackedTokens> {
        // Each "N:" becomes a 4-byte length: at most two bytes more per text.
        let mut out = Vec::with_capacity(packed.len() + packed.len() / 2);
        let mut texts = 0usize;
        while !packed.is_empty() {
            let colon = packed.iter().position(|&b| b == b':')?;
            let len: usize = std::str::from_utf8(&packed[..colon]).ok()?.parse().ok()?;
            let rest = &packed[colon + 1..];
            let text = rest.get(..len)?;
            std::str::from_utf8(text).ok()?;
            out.extend_from_slice(&u32::try_from(len).ok()?.to_le_bytes());
            out.extend_from_slice(text);
            packed = &rest[len..];
            texts += 1;
        }
        (texts % 2 == 0).then(|| PackedTokens(out.into_boxed_slice()))
    }

    /// (name, token) of each token, in the store's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let s = |b| std::str::from_utf8(b).unwrap_or_default();
        self.bytes().map(move |(n, t)| (s(n), s(t)))
    }

    /// [`PackedTokens::iter`] as bytes, not checked again as UTF-8 (they were text when
    /// packed): what the routes hash and compare, two million times at start.
    pub fn bytes(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = &self.0[..];
        let mut next = move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = (u32::from_le_bytes(*len) as usize).min(tail.len());
            let (s, tail) = tail.split_at(len);
            rest = tail;
            Some(s)
        };
        std::iter::from_fn(move || Some((next()?, next()?)))
    }

    /// As pairs of `String`s (a [`ChannelRecord`]'s tokens).
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }
}

/// A channel as start-up loads it: what the registry keeps of it, and nothing more.
pub struct LoadedChannel {
    pub id: i64,
    pub name: Arc<str>,
    pub created_at: i64,
    pub metrics: bool,
    pub tokens: PackedTokens,
}

/// A token row read at start-up: its three texts lie one after the other in an arena
/// (channel, name, token), so reading two million tokens makes no allocation per token.
struct TokenRow {
    created_at: i64,
    start: usize,
    channel: u32,
    name: u32,
    token: u32,
}

/// Every channel with its tokens, by name, as start-up needs them (blocking; start-up
/// only, while nothing else writes the store). A node with a million channels reads them
/// here, so: each channel's tokens from its own row (`packed`, kept by triggers), not by
/// joining the tokens table (two million rows, 0.7 s, then grouped); the rows in table
/// order (the name index would cost a lookup in the table per channel), in two halves by
/// id read at the same time on two connections and threads, then sorted here. Without a
/// second connection (it cannot be opened) both halves are read on the one connection.
/// A `packed` column that cannot be read (not written by this schema's triggers) falls
/// back to the tokens table, with a warning.
///
/// Each channel is made into a `T` by `make` on the thread that read it (so what start-up
/// builds of a million channels is shared by the two threads too), then sorted by the
/// name `name` gives.
pub fn load_channels<T, F, N>(store: &super::Store, make: F, name: N) -> Result<Vec<T>, StoreError>
where
    T: Send,
    F: Fn(LoadedChannel) -> T + Sync,
    N: Fn(&T) -> &str,
{
    let (lo, hi): (Option<i64>, Option<i64>) = store.call_blocking(|c| {
        Ok(c.0
            .query_row("SELECT min(id), max(id) FROM channels", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?)
    })?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Vec::new());
    };
    let mid = ((i128::from(lo) + i128::from(hi)) / 2) as i64;
    // The upper half, empty when the lower one ends at the largest id.
    let (up, up_to) = match mid.checked_add(1) {
        Some(up) => (up, hi),
        None => (1, 0),
    };
    let make = &make;
    let (lower, upper) = std::thread::scope(|s| {
        let upper = s.spawn(|| match store.reader() {
            Ok(mut conn) => read_channels(&mut conn, up, up_to, make).map(Some),
            Err(e) => {
                tracing::debug!("channels read on the store's connection only: {e}");
                Ok(None)
            }
        });
        let lower = store.call_blocking(|c| read_channels(c, lo, mid, make));
        let upper = match upper.join() {
            Ok(t) => t,
            Err(p) => std::panic::resume_unwind(p),
        };
        (lower, upper)
    });
    let (mut channels, mut whole) = lower?;
    let (upper, upper_whole) = match upper? {
        Some(u) => u,
        None => store.call_blocking(|c| read_channels(c, up, up_to, make))?,
    };
    channels.extend(upper);
    whole &= upper_whole;
    if !whole {
        tracing::warn!(
            "some channels' packed tokens could not be read; all read from the tokens table"
        );
        drop(channels);
        let without_tokens = |c| LoadedChannel {
            tokens: PackedTokens::default(),
            ..c
        };
        let (mut plain, _) = store.call_blocking(|c| read_channels(c, lo, hi, &without_tokens))?;
        let (arena, rows) = store.call_blocking(read_tokens)?;
        plain.sort_by(|a, b| a.name.cmp(&b.name));
        attach_tokens(&mut plain, &arena, &rows);
        return Ok(plain.into_iter().map(make).collect());
    }
    // Channels are mostly made in order of their names (ids in table order), so the rows
    // come as a few long sorted runs: a stable sort merges runs (linear on sorted input),
    // where the unstable one fell back to a full quicksort of a million names.
    channels.sort_by(|a, b| name(a).cmp(name(b)));
    Ok(channels)
}

/// Gives each of `channels` (by name) its tokens of `rows`, whose texts lie in `arena`.
fn attach_tokens(channels: &mut [LoadedChannel], arena: &[u8], rows: &[TokenRow]) {
    // Each token to its channel (by name: tokens refer to channels by name). Tokens made
    // together lie together in the table: the channel of the row before is tried first,
    // then the one after it (channels made in order of their names), then a search.
    let text = |start: usize, len: u32| &arena[start..start + len as usize];
    let mut owner: Vec<u32> = Vec::with_capacity(rows.len());
    let mut last = usize::MAX;
    for r in rows {
        let name = text(r.start, r.channel);
        let is = |i: usize| channels.get(i).is_some_and(|c| c.name.as_bytes() == name);
        let i = if is(last) {
            last
        } else if is(last.wrapping_add(1)) {
            last.wrapping_add(1)
        } else {
            channels
                .binary_search_by(|c| c.name.as_bytes().cmp(name))
                .unwrap_or(usize::MAX)
        };
        last = i;
        owner.push(i as u32);
    }
    // Grouped by channel (a counting sort: linear), then each channel's few by creation
    // and name.
    let mut first = vec![0u32; channels.len() + 1];
    for &o in &owner {
        if let Some(n) = first.get_mut(o as usize + 1) {
            *n += 1;
        }
    }
    for i in 1..first.len() {
        first[i] += first[i - 1];
    }
    let mut order = vec![0u32; first[channels.len()] as usize];
    let mut fill = first.clone();
    for (row, &o) in owner.iter().enumerate() {
        if let Some(at) = fill.get_mut(o as usize) {
            order[*at as usize] = row as u32;
            *at += 1;
        }
    }
    for (i, c) in channels.iter_mut().enumerate() {
        let mine = &mut order[first[i] as usize..first[i + 1] as usize];
        if mine.is_empty() {
            continue;
        }
        mine.sort_unstable_by(|&a, &b| {
            let (a, b) = (&rows[a as usize], &rows[b as usize]);
            let name = |r: &TokenRow| text(r.start + r.channel as usize, r.name);
            (a.created_at, name(a)).cmp(&(b.created_at, name(b)))
        });
        let pairs = mine.iter().map(|&r| {
            let r = &rows[r as usize];
            let at = r.start + r.channel as usize;
            let s = |at: usize, len: u32| std::str::from_utf8(text(at, len)).unwrap_or_default();
            (s(at, r.name), s(at + r.name as usize, r.token))
        });
        c.tokens = PackedTokens::new(pairs);
    }
}

/// The channels of ids `from..=to` with their packed tokens, in table order, and whether
/// every `packed` column could be read (those that could not have no tokens).
fn read_channels<T>(
    conn: &mut Conn,
    from: i64,
    to: i64,
    make: &impl Fn(LoadedChannel) -> T,
) -> Result<(Vec<T>, bool), StoreError> {
    // Sized by the ids (mostly dense) rather than by a count, which is one more walk of
    // the range's rows; capped, as ids may be sparse.
    let span = usize::try_from(i128::from(to) - i128::from(from) + 1).unwrap_or(0);
    let mut out = Vec::with_capacity(span.min(1 << 21));
    let mut whole = true;
    let mut stmt = conn.0.prepare(
        "SELECT id, name, created_at, metrics, packed FROM channels WHERE id BETWEEN ?1 AND ?2",
    )?;
    let mut rows = stmt.query([from, to])?;
    while let Some(r) = rows.next()? {
        let tokens = PackedTokens::from_packed(text_bytes(r, 4)?);
        whole &= tokens.is_some();
        out.push(make(LoadedChannel {
            id: r.get(0)?,
            name: Arc::from(text(r, 1)?),
            created_at: r.get(2)?,
            metrics: r.get(3)?,
            tokens: tokens.unwrap_or_default(),
        }));
    }
    Ok((out, whole))
}

/// Every token row, in table order, its texts in one arena.
fn read_tokens(conn: &mut Conn) -> Result<(Vec<u8>, Vec<TokenRow>), StoreError> {
    let mut arena = Vec::new();
    let mut out = Vec::new();
    let mut stmt = conn
        .0
        .prepare("SELECT channel, name, token, created_at FROM tokens")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let start = arena.len();
        let mut len = [0u32; 3];
        // As bytes: the texts are checked as UTF-8 once, when packed.
        for (i, l) in len.iter_mut().enumerate() {
            let s = text_bytes(r, i)?;
            arena.extend_from_slice(s);
            *l = s.len() as u32;
        }
        out.push(TokenRow {
            created_at: r.get(3)?,
            start,
            channel: len[0],
            name: len[1],
            token: len[2],
        });
    }
    Ok((arena, out))
}
