//! Sessions: one-time URLs that stream a channel's history and, optionally, a
//! live tail, as chunked text or Server-Sent Events. A tail that cannot keep up loses its
//! oldest lines and is told with the L11 line; it never slows ingestion or other tails.

use crate::clock::now_micros;
use crate::cluster::logs::{self, Pos};
use crate::http::{Body, StreamBody};
use crate::line::Line;
use crate::server::Node;
use bytes::{Bytes, BytesMut};
use hyper::{header, Response, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

/// A session that is not opened, or not reopened after its last stream ended, within this
/// long is forgotten.
pub const SESSION_TTL: Duration = Duration::from_secs(300);
const CHUNK: usize = 32 * 1024;
const KEEPALIVE: Duration = Duration::from_secs(15);

/// What a session streams (kept in Redis as JSON in cluster mode).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    pub channel: String,
    /// The store id of the channel the session was made for: a session is bound to that
    /// channel, never to a later one of the same name.
    pub channel_id: i64,
    pub num: usize,
    pub tail: bool,
    pub source: Option<String>,
    pub dyno: Option<String>,
    pub grep: Option<String>,
    /// Only lines received at or after this time (µs since the epoch).
    pub since_us: Option<i64>,
    /// Only lines received before this time (µs since the epoch); never with `tail`.
    pub until_us: Option<i64>,
}

/// A point in time for `since`/`until`: RFC 3339 (`2026-11-27T14:00:00Z`) or a duration
/// back from `now_us` (`90s`, `30m`, `2h`, `7d`). The error says which forms are taken.
pub fn parse_instant(raw: &str, now_us: i64) -> Result<i64, String> {
    let raw = raw.trim();
    if let Ok(t) = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
    {
        return Ok((t.unix_timestamp_nanos() / 1_000) as i64);
    }
    match crate::config::parse_duration(raw) {
        Some(d) => Ok(now_us.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))),
        None => Err(format!(
            "{raw:?} is neither an RFC 3339 time (2026-11-27T14:00:00Z) nor a duration back \
             from now (90s, 30m, 2h, 7d)"
        )),
    }
}

impl Spec {
    /// Does `line` pass the session's filters? `dyno` `web` matches `web`, `web.1`, ...
    pub fn keep(&self, line: &Line) -> bool {
        if let Some(s) = &self.source {
            if line.source.as_ref() != s.as_bytes() {
                return false;
            }
        }
        if let Some(d) = &self.dyno {
            if !crate::names::dyno_matches(d.as_bytes(), line.procid()) {
                return false;
            }
        }
        if let Some(g) = &self.grep {
            if memchr::memmem::find(line.msg(), g.as_bytes()).is_none() {
                return false;
            }
        }
        true
    }
}

struct Entry {
    spec: Arc<Spec>,
    streams: usize,
    last_active: Instant,
}

/// The sessions created and not yet expired.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<Uuid, Entry>>,
}

impl Sessions {
    pub fn create(&self, spec: Spec) -> Uuid {
        let id = Uuid::new_v4();
        self.create_as(id, spec);
        id
    }

    /// Keeps a session another node made (read from Redis) in this node's table.
    pub fn adopt(&self, id: Uuid, spec: Spec) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id).or_insert(Entry {
            spec: Arc::new(spec),
            streams: 0,
            last_active: Instant::now(),
        });
    }

    /// Makes a session under `id` (in cluster mode the id is chosen before Redis is asked).
    pub fn create_as(&self, id: Uuid, spec: Spec) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(
            id,
            Entry {
                spec: Arc::new(spec),
                streams: 0,
                last_active: Instant::now(),
            },
        );
    }

    fn open(&self, id: &Uuid) -> Option<Arc<Spec>> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.get_mut(id)?;
        e.streams += 1;
        e.last_active = Instant::now();
        Some(e.spec.clone())
    }

    /// The spec of a session that exists, marking it active (its page was opened).
    pub fn touch(&self, id: &Uuid) -> Option<Arc<Spec>> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.get_mut(id)?;
        e.last_active = Instant::now();
        Some(e.spec.clone())
    }

    fn close(&self, id: &Uuid) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.get_mut(id) {
            e.streams = e.streams.saturating_sub(1);
            e.last_active = Instant::now();
        }
    }

    /// Forgets a session at once (its channel was destroyed).
    fn forget(&self, id: &Uuid) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(id);
    }

    /// Forgets sessions idle for longer than [`SESSION_TTL`]; returns how many remain.
    pub fn sweep(&self) -> usize {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, e| e.streams > 0 || e.last_active.elapsed() < SESSION_TTL);
        m.len()
    }
}

/// The session asked for does not exist: never made, expired, or its channel destroyed.
#[derive(Debug, thiserror::Error)]
#[error("unknown or expired session")]
pub struct UnknownSession;

/// Where a resumed SSE stream starts (`Last-Event-ID`): a line of this node's ring (`N`),
/// or a position in the channel's log stream in Redis (`MS-SEQ-INDEX`, cluster mode).
#[derive(Debug, Clone, Copy)]
pub enum EventId {
    Seq(u64),
    Pos(Pos),
}

impl EventId {
    pub fn parse(raw: &str) -> Option<EventId> {
        let raw = raw.trim();
        match raw.parse::<u64>() {
            Ok(n) => Some(EventId::Seq(n)),
            Err(_) => Pos::parse(raw).map(EventId::Pos),
        }
    }
}

/// Makes a session: in this node's table and, in cluster mode, in Redis, so its URL works
/// on every node (with Redis away it works on this node only).
pub async fn create(node: &Node, spec: Spec) -> Uuid {
    let id = Uuid::new_v4();
    if let Some(c) = &node.cluster {
        c.save_session(&id, &spec).await;
    }
    node.sessions.create_as(id, spec);
    id
}

/// Makes sure this node knows session `id`: in cluster mode one it does not know is read
/// from Redis (made by another node) and kept here. Its expiry in Redis is set again.
pub async fn adopt(node: &Node, id: &str) {
    let (Some(c), Ok(id)) = (&node.cluster, Uuid::parse_str(id)) else {
        return;
    };
    if let Some(spec) = c.open_session(&id).await {
        // Its channel may be younger than this node's replica.
        node.catch_up_on(&spec.channel).await;
        node.sessions.adopt(id, spec);
    }
}

/// `GET /sessions/UUID`: the session's history, then its tail if it has one, as chunked
/// text or (`sse`) Server-Sent Events resuming after `last_event_id`. In cluster mode,
/// with Redis reached, both come from the channel's log stream (lines ingested on every
/// node); otherwise from this node's ring and log.
pub fn stream(
    node: &Arc<Node>,
    id: &str,
    sse: bool,
    last_event_id: Option<EventId>,
) -> Result<Response<Body>, UnknownSession> {
    let id = Uuid::parse_str(id).map_err(|_| UnknownSession)?;
    let spec = node.sessions.open(&id).ok_or(UnknownSession)?;
    let snap = node.registry.snapshot();
    let Some(channel) = snap
        .channel_with_id(&spec.channel, spec.channel_id)
        .cloned()
    else {
        // Its channel was destroyed: the session is gone with it.
        node.sessions.forget(&id);
        return Err(UnknownSession);
    };
    let destroyed = channel.destroyed();
    let (tx, body) = StreamBody::channel(4);
    let w = Writer {
        tx,
        shutdown: node.shutdown.clone(),
        sse,
        buf: BytesMut::with_capacity(CHUNK),
        scratch: BytesMut::new(),
    };
    let cross = node
        .cluster
        .clone()
        .filter(|c| c.is_up() && !matches!(last_event_id, Some(EventId::Seq(_))));
    match cross {
        Some(cluster) => {
            let after = match last_event_id {
                Some(EventId::Pos(p)) => Some(p),
                _ => None,
            };
            let node2 = node.clone();
            node.tasks.spawn(async move {
                node2.metrics.sessions_open.inc();
                let mut w = w;
                tokio::select! {
                    _ = cross_node(&node2, &cluster, &id, &spec, &channel, &mut w, after) => {}
                    _ = destroyed.cancelled() => {}
                }
                node2.metrics.sessions_open.dec();
                node2.sessions.close(&id);
                cluster.touch_session(&id).await;
            });
        }
        None => {
            let after = match last_event_id {
                Some(EventId::Seq(n)) => Some(n),
                _ => None,
            };
            let (history, rx) = local(&channel, &spec, after);
            let node2 = node.clone();
            node.tasks.spawn(async move {
                node2.metrics.sessions_open.inc();
                let mut w = w;
                let history = history.lines(&node2).await;
                // The stream ends when its channel is destroyed.
                tokio::select! {
                    _ = run(&node2, &spec, &mut w, history, rx) => {}
                    _ = destroyed.cancelled() => {}
                }
                node2.metrics.sessions_open.dec();
                node2.sessions.close(&id);
            });
        }
    }
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    let ctype = if sse {
        "text/event-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}

/// This node's history for a session: the ring's lines, and the read of the durable log
/// still to make for older ones (on the blocking pool) when the ring has too few.
struct LocalHistory {
    ring: Vec<Line>,
    older: Option<(Arc<Spec>, u64, usize)>,
}

impl LocalHistory {
    /// The lines, oldest first (the ring's alone when no log read is needed).
    async fn lines(self, node: &Node) -> Vec<Line> {
        let (Some(log), Some((spec, after, num))) = (node.log.clone(), self.older) else {
            return self.ring;
        };
        let ring = self.ring;
        tokio::task::spawn_blocking(move || older_from_log(&log, &spec, after, num, ring))
            .await
            .unwrap_or_default()
    }
}

/// This node's part of a session: its history and, for a tail, a receiver subscribed at
/// once (so no line falls between the two).
fn local(
    channel: &Arc<crate::channel::Channel>,
    spec: &Arc<Spec>,
    after: Option<u64>,
) -> (LocalHistory, Option<crate::channel::Tail>) {
    let (num, after) = match after {
        Some(seq) => (usize::MAX, seq),
        None => (spec.num, 0),
    };
    // A window of receive time becomes a window of the ring's seqs.
    let window = (spec.since_us.is_some() || spec.until_us.is_some()).then(|| {
        channel.received_between(
            spec.since_us.unwrap_or(i64::MIN),
            spec.until_us.unwrap_or(i64::MAX),
        )
    });
    let in_window = |l: &Line| window.map_or(true, |w| w.from <= l.seq && l.seq < w.to);
    let (ring, rx) = channel.read(num, after, spec.tail, |l| in_window(l) && spec.keep(l));
    // Lines older than the ring holds come from the durable log, when it is on.
    // A resume the ring covers needs nothing older (and stays off the blocking pool).
    let covered = (after > 0 && ring.first().is_some_and(|l| l.seq <= after + 1))
        || window.is_some_and(|w| w.covers_start);
    let older = (ring.len() < num && !covered).then(|| (spec.clone(), after, num));
    (LocalHistory { ring, older }, rx)
}

/// A session from the channel's log stream in Redis: its history (lines received before
/// the stream's oldest entry, for a `since` that reaches back further, from this node's
/// own ring and log), then its tail from the node's feed of the channel. Redis failing
/// before the history is read: the session is served from this node alone.
async fn cross_node(
    node: &Arc<Node>,
    cluster: &Arc<crate::cluster::Cluster>,
    id: &Uuid,
    spec: &Arc<Spec>,
    channel: &Arc<crate::channel::Channel>,
    w: &mut Writer,
    after: Option<Pos>,
) -> Result<(), Gone> {
    let key = crate::cluster::keys::log(&spec.channel);
    let read = async {
        let mut conn = cluster.reader().await?;
        let h = logs::read_back(
            &mut conn,
            &key,
            spec.channel_id,
            spec.num,
            after,
            spec.since_us,
            spec.until_us,
            |l| spec.keep(l),
        )
        .await?;
        Ok::<_, redis::RedisError>((conn, h))
    };
    let (mut conn, h) = match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(r)) => r,
        failed => {
            if let Ok(Err(e)) = failed {
                cluster.reader_failed();
                tracing::warn!(channel = %spec.channel, "session served from this node only: {e}");
            }
            let (history, rx) = local(channel, spec, None);
            let history = history.lines(node).await;
            return run(node, spec, w, history, rx).await;
        }
    };
    // Lines older than the stream holds: this node's own.
    if let (Some(since), Some(start), None) = (spec.since_us, h.start_us, after) {
        if since < start && h.lines.len() < spec.num {
            let older = Arc::new(Spec {
                until_us: Some(spec.until_us.map_or(start, |u| u.min(start))),
                num: spec.num - h.lines.len(),
                tail: false,
                ..(**spec).clone()
            });
            let lines = local(channel, &older, None).0.lines(node).await;
            for line in &lines {
                w.line(line);
                w.maybe_flush().await?;
            }
        }
    }
    let mut pos = after.unwrap_or_default();
    for (p, line) in &h.lines {
        w.line_at(line, p);
        pos = *p;
        w.maybe_flush().await?;
    }
    if w.sse && w.buf.is_empty() {
        w.buf.extend_from_slice(b": open\n\n");
    }
    w.flush().await?;
    if !spec.tail {
        return Ok(());
    }
    // The tail goes on after the last entry the history read (or the resumed position).
    let from = h.last.max(pos.entry);
    if pos.entry < from {
        pos = Pos {
            entry: from,
            index: u32::MAX,
        };
    }
    let joined = cluster.feeds.join(&spec.channel, from, &mut conn).await;
    let Ok(mut joined) = joined else {
        cluster.reader_failed();
        return Ok(());
    };
    let mut last_ok = now_micros();
    let mut last_upto = 0u64;
    let missed = std::mem::take(&mut joined.missed);
    for e in &missed {
        tail_entry(node, spec, w, e, &mut pos, &mut last_upto, &mut last_ok);
        w.maybe_flush().await?;
    }
    w.flush().await?;
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    let mut refresh = tokio::time::interval(crate::cluster::sessions::REFRESH);
    refresh.reset();
    loop {
        tokio::select! {
            r = joined.rx.recv() => match r {
                Ok(e) => {
                    tail_entry(node, spec, w, &e, &mut pos, &mut last_upto, &mut last_ok);
                    while w.buf.len() < CHUNK {
                        match joined.rx.try_recv() {
                            Ok(e) => tail_entry(node, spec, w, &e, &mut pos, &mut last_upto, &mut last_ok),
                            Err(_) => break,
                        }
                    }
                    w.flush().await?;
                }
                // The next entry says how many lines went by (its `upto`).
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = keepalive.tick() => {
                if w.sse {
                    w.buf.extend_from_slice(b": keepalive\n\n");
                    w.flush().await?;
                }
            }
            _ = refresh.tick() => cluster.touch_session(id).await,
            _ = w.tx.closed() => return Err(Gone),
            _ = node.shutdown.cancelled() => { w.flush().await?; return Ok(()) }
        }
    }
}

/// One entry of a cross-node tail: the lines after `pos` that pass the session's filters,
/// after an L11 for lines its node could not put in the stream, or that this tail missed
/// by falling behind the feed.
fn tail_entry(
    node: &Node,
    spec: &Spec,
    w: &mut Writer,
    e: &logs::Entry,
    pos: &mut Pos,
    last_upto: &mut u64,
    last_ok: &mut i64,
) {
    if e.id < pos.entry {
        return;
    }
    if e.upto > 0 {
        let before = e.upto - e.lines.len() as u64;
        if *last_upto > 0 && before > *last_upto {
            let missed = before - *last_upto;
            node.metrics.tail_dropped.inc_by(missed);
            w.l11(missed, *last_ok);
        }
        *last_upto = e.upto;
    }
    if !e.of(spec.channel_id) {
        return;
    }
    if e.lost > 0 && e.id > pos.entry {
        w.l11(e.lost, e.lost_since_us);
    }
    for (i, line) in e.lines.iter().enumerate() {
        if !pos.before(e.id, i) {
            continue;
        }
        let p = Pos {
            entry: e.id,
            index: i as u32,
        };
        if spec.keep(line) {
            w.line_at(line, &p);
        }
        *pos = p;
    }
    if e.lines.is_empty() && e.id > pos.entry {
        *pos = Pos {
            entry: e.id,
            index: u32::MAX,
        };
    }
    *last_ok = now_micros();
}

/// The session's history when the ring holds fewer than `num` lines that pass its filters:
/// older lines (after `after`, before the ring's first) read back from the durable log,
/// then `ring`, at most `num` in all, oldest first. Reads at most
/// [`MAX_LOG_SCAN`] lines of the log. Blocking.
fn older_from_log(
    log: &crate::log::Log,
    spec: &Spec,
    after: u64,
    num: usize,
    ring: Vec<Line>,
) -> Vec<Line> {
    let before = ring.first().map_or(u64::MAX, |l| l.seq);
    let want = num.saturating_sub(ring.len());
    let filtered = spec.source.is_some()
        || spec.dyno.is_some()
        || spec.grep.is_some()
        || spec.until_us.is_some();
    // Unfiltered, the last `want` lines before the ring's are all it needs (plus the ring's
    // own, which the log holds too); filtered, it reads back until it has them or
    // MAX_LOG_SCAN lines.
    let limit = if filtered {
        MAX_LOG_SCAN
    } else {
        want.saturating_add(ring.len()).saturating_add(1024)
    };
    let q = crate::log::Query {
        after_seq: Some(after),
        since_us: spec.since_us,
        until_us: spec.until_us,
        limit,
        from_end: true,
    };
    let read = match log.read(spec.channel_id as u64, &q) {
        Ok(lines) => lines,
        Err(e) => {
            tracing::warn!(channel = %spec.channel, "history from the log: {e}");
            return ring;
        }
    };
    let mut older: Vec<Line> = read
        .into_iter()
        .filter(|l| l.seq < before)
        .filter_map(|l| {
            let seq = l.seq;
            Line::parse(l.frame, l.source).ok().map(|mut line| {
                line.seq = seq;
                line
            })
        })
        .filter(|l| spec.keep(l))
        .collect();
    let skip = older.len().saturating_sub(want);
    older.drain(..skip);
    older.extend(ring);
    older
}

/// The most lines of the durable log one session's history reads.
pub const MAX_LOG_SCAN: usize = 1_000_000;

struct Writer {
    tx: mpsc::Sender<Bytes>,
    shutdown: tokio_util::sync::CancellationToken,
    sse: bool,
    buf: BytesMut,
    /// SSE only: where a line is rendered before it is cut into `data:` lines (reused).
    scratch: BytesMut,
}

/// The client has gone.
struct Gone;

impl Writer {
    fn line(&mut self, line: &Line) {
        if self.sse {
            self.buf.extend_from_slice(b"id: ");
            logplex_proto::render::write_u64(&mut self.buf, line.seq);
            self.buf.extend_from_slice(b"\n");
            line.render(&mut self.scratch);
            self.sse_data();
        } else {
            line.render(&mut self.buf);
            self.buf.extend_from_slice(b"\n");
        }
    }

    /// A line of a channel's log stream: its SSE id is its position there.
    fn line_at(&mut self, line: &Line, pos: &Pos) {
        if self.sse {
            use std::fmt::Write as _;
            // Writing into a BytesMut cannot fail.
            let _ = writeln!(self.buf, "id: {pos}");
            line.render(&mut self.scratch);
            self.sse_data();
        } else {
            line.render(&mut self.buf);
            self.buf.extend_from_slice(b"\n");
        }
    }

    /// Turns the line rendered in `scratch` into `data:` lines (one per CR or LF in MSG, so a
    /// line can never start an SSE field of its own, such as `id:`).
    fn sse_data(&mut self) {
        for part in self.scratch[..].split(|b| *b == b'\n' || *b == b'\r') {
            self.buf.extend_from_slice(b"data: ");
            self.buf.extend_from_slice(part);
            self.buf.extend_from_slice(b"\n");
        }
        self.buf.extend_from_slice(b"\n");
        self.scratch.clear();
    }

    fn l11(&mut self, dropped: u64, since: i64) {
        if self.sse {
            logplex_proto::render::l11_line(&mut self.scratch, now_micros(), dropped, since);
            self.sse_data();
        } else {
            logplex_proto::render::l11_line(&mut self.buf, now_micros(), dropped, since);
            self.buf.extend_from_slice(b"\n");
        }
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        // A client that stops reading must not hold up shutdown.
        tokio::select! {
            r = self.tx.send(chunk) => r.map_err(|_| Gone),
            _ = self.shutdown.cancelled() => Err(Gone),
        }
    }

    async fn maybe_flush(&mut self) -> Result<(), Gone> {
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }
}

/// Renders `first` and what else is already queued on `rx`, up to a chunk. Lines lost to a
/// lag found on the way are counted and told with L11 in their place, exactly as a lag that
/// `recv` reports. `last_ok` is when the tail was last in step (L11's "since"): set when
/// `first` arrived, not per line (a clock read per line would cost the tail path).
fn take_queued(
    first: Line,
    rx: &mut broadcast::Receiver<Line>,
    spec: &Spec,
    w: &mut Writer,
    dropped: &prometheus::IntCounter,
    last_ok: &mut i64,
) {
    if spec.keep(&first) {
        w.line(&first);
    }
    *last_ok = now_micros();
    while w.buf.len() < CHUNK {
        match rx.try_recv() {
            Ok(line) => {
                if spec.keep(&line) {
                    w.line(&line);
                }
            }
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                dropped.inc_by(n);
                w.l11(n, *last_ok);
            }
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                break
            }
        }
    }
}

async fn run(
    node: &Node,
    spec: &Spec,
    w: &mut Writer,
    history: Vec<Line>,
    rx: Option<crate::channel::Tail>,
) -> Result<(), Gone> {
    // L11's "since": when the tail was last in step with the channel.
    let mut last_ok = now_micros();
    for line in &history {
        w.line(line);
        w.maybe_flush().await?;
    }
    if w.sse && w.buf.is_empty() {
        // An SSE client learns the stream is open before the first line.
        w.buf.extend_from_slice(b": open\n\n");
    }
    w.flush().await?;
    let Some(mut rx) = rx else { return Ok(()) };
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(line) => {
                    take_queued(line, &mut rx, spec, w, &node.metrics.tail_dropped, &mut last_ok);
                    w.flush().await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    node.metrics.tail_dropped.inc_by(n);
                    w.l11(n, last_ok);
                    w.flush().await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = keepalive.tick() => {
                if w.sse {
                    w.buf.extend_from_slice(b": keepalive\n\n");
                    w.flush().await?;
                }
            }
            _ = w.tx.closed() => return Err(Gone),
            _ = node.shutdown.cancelled() => { w.flush().await?; return Ok(()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> Line {
        let f = format!("<190>1 2016-03-08T02:43:26.693600+00:00 h t.x web.1 - - line {i}");
        Line::parse(Bytes::from(f), Bytes::from_static(b"app")).unwrap()
    }

    /// A tail that falls behind between `recv` and the lines it takes without waiting is
    /// told, in place, how many it lost, and they are counted.
    #[test]
    fn a_lag_among_the_queued_lines_is_counted_and_told() {
        let (tail, mut rx) = broadcast::channel(4);
        tail.send(line(0)).unwrap();
        let first = rx.try_recv().unwrap();
        for i in 1..=10 {
            tail.send(line(i)).unwrap();
        }
        let (tx, _rx) = mpsc::channel(1);
        let mut w = Writer {
            tx,
            shutdown: tokio_util::sync::CancellationToken::new(),
            sse: false,
            buf: BytesMut::new(),
            scratch: BytesMut::new(),
        };
        let spec = Spec {
            channel: "demo".into(),
            channel_id: 1,
            num: 0,
            tail: true,
            source: None,
            dyno: None,
            grep: None,
            since_us: None,
            until_us: None,
        };
        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        let mut last_ok = 0;
        take_queued(first, &mut rx, &spec, &mut w, &dropped, &mut last_ok);
        let text = String::from_utf8(w.buf.to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[0].ends_with("app[web.1]: line 0"), "{text}");
        assert!(
            lines[1].contains(
                " heroku[logplex]: Error L11 (Tail buffer overflow) -> This tail session dropped 6 messages since "
            ),
            "{text}"
        );
        for (k, i) in (7..=10).enumerate() {
            assert!(lines[2 + k].ends_with(&format!("]: line {i}")), "{text}");
        }
        assert_eq!(dropped.get(), 6);
    }
}
