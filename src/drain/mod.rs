//! Drains: every line of a channel goes to each of its drains. One task per drain with its
//! own bounded buffer; a slow or dead drain never slows ingestion, tails or other drains.
//! Without the durable log the buffer drops its oldest lines when full (announced with
//! L10); with it, a drain that falls behind its buffer reads the log from its [`cursor`]
//! and loses nothing within `drains.max_lag`. Every task runs the same delivery loop
//! ([`runner`]) over its transport ([`syslog`], [`http`]). Drains are added and removed at
//! run time: the registry hands the store's drains to [`Drains::apply`] after every change.

pub mod buffer;
pub mod cursor;
pub mod http;
pub mod lag;
pub mod runner;
pub mod syslog;
pub mod tls;
pub mod url;

use crate::channel::{Channel, Tap};
use crate::line::Line;
use crate::metrics::{DrainCounters, Metrics};
use crate::retry::Flush;
use crate::store::DrainRecord;
use buffer::Buffer;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
pub use url::{DrainUrl, Kind};

/// How long a drain may take to flush its buffer at shutdown.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// One running drain.
pub struct Drain {
    pub id: String,
    /// `d.` + UUID: the HOSTNAME of syslog frames, `Logplex-Drain-Token` of HTTP batches.
    pub token: Bytes,
    pub url: DrainUrl,
    pub buffer: Buffer,
    /// Its place in the durable log, when the log is on.
    pub cursor: Option<cursor::Cursor>,
    pub counters: DrainCounters,
    /// The channel's name (a drain belongs to one channel for its whole life).
    pub channel_name: String,
    /// Cancelled when the drain is removed (no flush).
    pub removed: CancellationToken,
    /// The channel, for in-band lines (L14).
    channel: Mutex<Weak<Channel>>,
    /// Flow state read by intake (see [`Tap::pressure`]): believed able to deliver (true
    /// from the start, false from a failed connect or write until the next success), when
    /// the write under way started (µs, 0 when none), marked slow by intake.
    pub healthy: AtomicBool,
    connected: AtomicBool,
    pub writing_since: AtomicI64,
    pub slow: AtomicBool,
    /// Signalled each time the drain takes lines out of its buffer.
    pub space: Notify,
    /// What `GET /v2/channels/NAME/drains` and `logplex drains` show (see [`Status`]).
    state: Mutex<StateNow>,
    sent: AtomicU64,
    dropped: AtomicU64,
}

/// Where a drain stands, as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started, and neither a connection nor a delivery has succeeded or failed yet.
    Connecting,
    /// The last connection or delivery succeeded.
    Connected,
    /// The last connection, delivery or name lookup failed (see `last_error`).
    Failing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Failing => "failing",
        }
    }
}

#[derive(Debug)]
struct StateNow {
    state: State,
    last_error: Option<(String, i64)>,
}

/// A running drain's status: state, last error (and when, µs) since it started, lines
/// delivered and lines dropped (with the log: since the drain was added, kept across
/// restarts with its cursor; without: since it started), lines not delivered yet (with the
/// log: from its cursor to the channel's newest line; without: in its buffer) and how far
/// behind that is in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub state: State,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub sent: u64,
    pub dropped: u64,
    pub lag_lines: usize,
    pub lag_seconds: f64,
}

impl Status {
    /// The status of a drain that delivered nothing yet (or does not run): `connecting`,
    /// zeros.
    pub fn connecting() -> Status {
        Status {
            state: State::Connecting,
            last_error: None,
            last_error_at: None,
            sent: 0,
            dropped: 0,
            lag_lines: 0,
            lag_seconds: 0.0,
        }
    }
}

/// A write pending longer than this means the receiver is slow, not that we are short of CPU.
const STALLED_WRITE_MICROS: i64 = 100_000;

impl Drain {
    /// Takes a batch out of the buffer, wakes intake waiting for room, and clears the slow
    /// mark once the buffer is mostly empty again.
    pub fn take(&self, max: usize, max_bytes: usize) -> (Vec<Line>, Option<buffer::Dropped>) {
        let r = self.buffer.take(max, max_bytes);
        self.took();
        r
    }

    /// Lines left the buffer: wakes intake waiting for room, and clears the slow mark once
    /// the buffer is mostly empty again.
    pub fn took(&self) {
        if self.buffer.len() * 4 <= self.buffer.capacity() {
            self.slow.store(false, Ordering::Relaxed);
        }
        self.space.notify_waiters();
    }

    /// Runs a write or request, marking it under way for [`Tap::pressure`].
    pub async fn writing<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.writing_since
            .store(crate::clock::now_micros().max(1), Ordering::Relaxed);
        let r = f.await;
        self.writing_since.store(0, Ordering::Relaxed);
        r
    }

    /// A connection opened or a batch was delivered (the drain is healthy again), or a
    /// connection closed (for any reason: idleness and age are not failures, see
    /// [`Drain::failed`]).
    pub fn set_connected(&self, up: bool) {
        if up {
            self.healthy.store(true, Ordering::Relaxed);
            self.state.lock().unwrap_or_else(|p| p.into_inner()).state = State::Connected;
        }
        if self.connected.swap(up, Ordering::Relaxed) != up {
            if up {
                self.counters.connected.inc();
            } else {
                self.counters.connected.dec();
            }
        }
    }

    /// A name lookup, connect, write or request failed, for the reason `why`: the drain
    /// shows as failing with it, and intake stops pacing itself to this drain until it
    /// delivers again.
    pub fn failed(&self, why: impl std::fmt::Display) {
        self.healthy.store(false, Ordering::Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.state = State::Failing;
        st.last_error = Some((why.to_string(), crate::clock::now_micros()));
    }

    /// `n` lines were delivered.
    pub fn count_sent(&self, n: u64) {
        self.counters.sent.inc_by(n);
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` lines were dropped (buffer full, batch refused or given up, drain stopped).
    pub fn count_dropped(&self, n: u64) {
        self.counters.dropped.inc_by(n);
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Lines delivered and lines dropped (with the log: since the drain was added; without:
    /// since it started).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// The drain's status now.
    pub fn status(&self) -> Status {
        let (state, (last_error, last_error_at)) = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (st.state, st.last_error.clone().unzip())
        };
        let (sent, dropped) = self.counts();
        let (lines, secs) = self.lag();
        Status {
            state,
            last_error,
            last_error_at,
            sent,
            dropped,
            lag_lines: lines as usize,
            lag_seconds: secs,
        }
    }

    /// Lines not delivered yet and how far behind (seconds) that is.
    pub fn lag(&self) -> (u64, f64) {
        match (&self.cursor, self.channel()) {
            (Some(c), Some(ch)) => c.lag(ch.last_seq()),
            (Some(_), None) => (0, 0.0),
            (None, _) => (self.buffer.len() as u64, 0.0),
        }
    }

    /// The drain's channel, once the registry has given it its lines.
    pub fn channel(&self) -> Option<Arc<Channel>> {
        self.channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
    }

    /// Looks the drain's host up once at start, so that a name that does not resolve shows
    /// as failing (with the resolver's error) before any line is sent.
    pub async fn check_host(&self) {
        let lookup = tokio::net::lookup_host((self.url.host.as_str(), self.url.port));
        let r = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(10), lookup) => r,
            _ = self.removed.cancelled() => return,
        };
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.failed(format!("cannot resolve {}: {e}", self.url.host)),
            Err(_) => self.failed(format!("cannot resolve {}: timed out", self.url.host)),
        }
    }
}

impl Drain {
    /// Puts a line of logplex's own into the drain's channel (history, tails, drains).
    pub fn announce(&self, msg: &str) {
        if let Some(ch) = self.channel() {
            ch.push([Line::internal("heroku", "logplex", msg)]);
        }
    }
}

impl Tap for Drain {
    fn lines(&self, _channel: &Channel, lines: &[Line]) {
        let dropped = self.buffer.push(lines);
        match &self.cursor {
            // Lines that overflow a backed buffer are read back from the log.
            Some(c) => c.tapped(if c.counts_bytes() {
                lines.iter().map(|l| l.frame.len() as u64).sum()
            } else {
                0
            }),
            None if dropped > 0 => self.count_dropped(dropped),
            None => {}
        }
        self.counters
            .buffered
            .add(lines.len() as i64 - dropped as i64);
    }

    /// Intake paces itself to drains with the log too: one that overflows its buffer is
    /// fed from the log instead, which costs several times more per line than memory
    /// (measured: 0.26–0.37 M lines/s end to end without pacing, 1.5–2.9 M with).
    fn capacity(&self) -> Option<usize> {
        Some(self.buffer.capacity())
    }

    fn pressure(&self, incoming: usize) -> Option<&Notify> {
        if self.buffer.len() + incoming <= self.buffer.capacity() / 2
            || !self.healthy.load(Ordering::Relaxed)
            || self.slow.load(Ordering::Relaxed)
        {
            return None;
        }
        let since = self.writing_since.load(Ordering::Relaxed);
        if since != 0 && crate::clock::now_micros() - since > STALLED_WRITE_MICROS {
            tracing::trace!(drain = %String::from_utf8_lossy(&self.token), "write stalled; not pacing intake");
            return None;
        }
        Some(&self.space)
    }

    fn too_slow(&self) {
        tracing::debug!(drain = %String::from_utf8_lossy(&self.token), "drain did not catch up; marked slow");
        self.slow.store(true, Ordering::Relaxed);
    }
}

/// What every drain's task is given: metrics, TLS client configurations, the shutdown's
/// flush and the size of buffers.
pub struct DrainEnv {
    pub metrics: Arc<Metrics>,
    pub tls: tls::Tls,
    /// Starts once intake has stopped: drains then flush what they hold within
    /// [`FLUSH_DEADLINE`], every connect, send and wait of theirs capped by it.
    pub flush: Arc<Flush>,
    pub buffer_lines: usize,
    /// The durable log drains read from when behind, `None` when it is off.
    pub log: Option<Arc<crate::log::Log>>,
    pub max_lag: crate::config::MaxLag,
}

/// The drains of every channel, as the registry last applied them.
pub struct Drains {
    env: Arc<DrainEnv>,
    running: Mutex<HashMap<String, Arc<Drain>>>,
    /// Drains of the store that could not start (a URL this version refuses), by id: why.
    broken: Mutex<HashMap<String, String>>,
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
}

impl Drains {
    pub fn new(ctx: &crate::server::Deps<'_>) -> anyhow::Result<Drains> {
        let tls = tls::Tls::new(ctx.config.drains.tls_ca_file.as_deref())?;
        Ok(Drains {
            env: Arc::new(DrainEnv {
                metrics: ctx.metrics.clone(),
                tls,
                flush: Flush::new(ctx.after_intake.clone(), FLUSH_DEADLINE),
                buffer_lines: ctx.config.drains.buffer_lines,
                log: ctx.log.clone(),
                max_lag: ctx
                    .config
                    .drains
                    .max_lag()
                    .unwrap_or(crate::config::MaxLag::Retention),
            }),
            running: Mutex::new(HashMap::new()),
            broken: Mutex::new(HashMap::new()),
            tasks: ctx.tasks.clone(),
            runtime: ctx.runtime.clone(),
        })
    }

    fn start(&self, rec: &DrainRecord) -> Option<Arc<Drain>> {
        let url = match DrainUrl::parse(&rec.url) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(drain = %rec.token, "drain not started: {e}");
                self.broken
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(rec.id.clone(), format!("not started: {e}"));
                return None;
            }
        };
        let counters = self.env.metrics.drain(url.kind.label());
        counters.drains.inc();
        // With the log, the counts go on from those saved with the cursor.
        let (cursor, (sent, dropped)) = match &self.env.log {
            Some(log) => {
                let (c, counts) = cursor::Cursor::open(log.clone(), &rec.id, self.env.max_lag);
                (Some(c), counts)
            }
            None => (None, (0, 0)),
        };
        let d = Arc::new(Drain {
            id: rec.id.clone(),
            token: Bytes::from(rec.token.clone()),
            url,
            buffer: Buffer::with_backing(self.env.buffer_lines, self.env.log.is_some()),
            cursor,
            counters,
            channel_name: rec.channel.clone(),
            removed: CancellationToken::new(),
            channel: Mutex::new(Weak::new()),
            healthy: AtomicBool::new(true),
            connected: AtomicBool::new(false),
            writing_since: AtomicI64::new(0),
            slow: AtomicBool::new(false),
            space: Notify::new(),
            state: Mutex::new(StateNow {
                state: State::Connecting,
                last_error: None,
            }),
            sent: AtomicU64::new(sent),
            dropped: AtomicU64::new(dropped),
        });
        tracing::info!(drain = %rec.token, url = %d.url.redacted, channel = %rec.channel, "drain started");
        let env = self.env.clone();
        let task = d.clone();
        self.tasks.spawn_on(
            async move {
                task.check_host().await;
                match task.url.kind {
                    Kind::Syslog | Kind::SyslogTls => {
                        runner::run(&task, &env, syslog::Stream).await
                    }
                    Kind::SyslogUdp => runner::run(&task, &env, syslog::Datagrams).await,
                    Kind::Http | Kind::Https => {
                        runner::run(&task, &env, http::Http::new(&task)).await
                    }
                }
                task.set_connected(false);
                task.counters.drains.dec();
                // Lines still queued (flush deadline passed, or removed): dropped. The buffer
                // is closed, so lines stored later by a stale tap list are not kept either.
                // With the log they are not lost: the next start reads them from the cursor,
                // unless the drain was removed (then its cursor goes too).
                let left = task.buffer.close();
                task.counters.buffered.sub(left as i64);
                match &task.cursor {
                    None => task.count_dropped(left as u64),
                    Some(c) if task.removed.is_cancelled() => c.remove().await,
                    Some(_) => {}
                }
            },
            &self.runtime,
        );
        Some(d)
    }
}

impl Drains {
    /// The status of the drain with store id `id`: running, or why it could not start.
    pub fn status(&self, id: &str) -> Option<Status> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = running.get(id) {
            return Some(d.status());
        }
        drop(running);
        let broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        broken.get(id).map(|why| Status {
            state: State::Failing,
            last_error: Some(why.clone()),
            last_error_at: None,
            sent: 0,
            dropped: 0,
            lag_lines: 0,
            lag_seconds: 0.0,
        })
    }
}

impl Drains {
    /// Makes the running drains those of `records` (the store's, after a change): drains no
    /// longer there are stopped, new ones started, the others left running as they are.
    pub fn apply(&self, records: &[DrainRecord]) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| records.iter().any(|r| &r.id == id));
        running.retain(|id, d| {
            let keep = records.iter().any(|r| &r.id == id);
            if !keep {
                tracing::info!(drain = %String::from_utf8_lossy(&d.token), "drain removed");
                d.removed.cancel();
            }
            keep
        });
        for rec in records {
            if !running.contains_key(&rec.id) {
                if let Some(d) = self.start(rec) {
                    running.insert(rec.id.clone(), d);
                }
            }
        }
    }

    /// Every running drain's id, channel and status now (what cluster mode writes to
    /// Redis each second, so any node can show the drain's status over all of them).
    pub fn statuses(&self) -> Vec<(String, String, Status)> {
        self.running_now()
            .iter()
            .map(|d| (d.id.clone(), d.channel_name.clone(), d.status()))
            .collect()
    }

    /// Each running drain's type and lag (lines, seconds), for the metrics.
    pub fn lags(&self) -> Vec<(&'static str, (u64, f64))> {
        self.running_now()
            .iter()
            .map(|d| (d.url.kind.label(), d.lag()))
            .collect()
    }

    /// The running drains, taken out of the lock (their status and lag take locks of their
    /// own).
    fn running_now(&self) -> Vec<Arc<Drain>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The taps of `channel`: one per drain of it.
    pub fn taps(&self, channel: &Arc<Channel>) -> Vec<Arc<dyn Tap>> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .values()
            .filter(|d| *d.channel_name == *channel.name)
            .map(|d| {
                *d.channel.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(channel);
                // A drain with a cursor may have lines to read from the log (after a
                // restart) before any new one arrives: wake it now it knows its channel.
                if let Some(c) = &d.cursor {
                    c.attach(channel, d.counts());
                    d.buffer.notify.notify_one();
                }
                d.clone() as Arc<dyn Tap>
            })
            .collect()
    }
}
