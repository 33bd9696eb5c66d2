//! Connections of each TCP listener (the API, the HTTP input, syslog over TCP): every
//! listener has its own cap, and the caps together stay under the open-files limit with a
//! reserve left for drains, the store and the durable log, so no client can take the
//! descriptors the API and the healthcheck need. A listener at its cap closes the
//! connection idle longest to admit a new one (counted, logged at most once a minute), so a
//! crowd of silent connections can never lock out a new client. Listeners are bound with
//! the configured backlog.

use crate::config::Config;
use crate::metrics::Metrics;
use prometheus::{IntCounter, IntGauge};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the accept loop waits for an evicted connection to close before it refuses
/// the new one instead.
const EVICT_WAIT: Duration = Duration::from_secs(1);
/// At most one log line a minute about evictions, per listener.
const NOTICE_EVERY: Duration = Duration::from_secs(60);

/// The connection cap of each listener, as derived at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub api: usize,
    pub http: usize,
    pub tcp: usize,
    /// The open-files limit they were derived from.
    pub open_files: u64,
    /// Descriptors left for everything else: drains, the store, the log, UDP, stdio.
    pub reserve: usize,
    /// Whether the configured caps had to be lowered to fit.
    pub lowered: bool,
}

impl Caps {
    /// Fits the configured caps under `open_files`: an eighth of it (64 to 1024) is kept in
    /// reserve, the API gets its own cap (at most an eighth of the rest) and the ingest
    /// listeners share what remains, in proportion to their configured caps.
    pub fn derive(config: &Config, open_files: u64) -> Caps {
        let n = usize::try_from(open_files)
            .unwrap_or(usize::MAX)
            .min(1 << 24);
        let reserve = (n / 8).clamp(64, 1024);
        let usable = n.saturating_sub(reserve);
        let api = config.api.max_connections.min((usable / 8).max(1));
        let left = usable.saturating_sub(api).max(2);
        let want_http = if config.ingest.http.listen.addr().is_some() {
            config.ingest.http.max_connections
        } else {
            0
        };
        let want_tcp = if config.ingest.tcp.listen.addr().is_some() {
            config.ingest.max_connections
        } else {
            0
        };
        let total = want_http + want_tcp;
        let (http, tcp) = if total <= left {
            (want_http, want_tcp)
        } else {
            let share = |w: usize| match w {
                0 => 0,
                w => ((w as u128 * left as u128 / total as u128) as usize).max(1),
            };
            (share(want_http), share(want_tcp))
        };
        Caps {
            api,
            http,
            tcp,
            open_files,
            reserve,
            lowered: api < config.api.max_connections || http < want_http || tcp < want_tcp,
        }
    }
}

/// The soft open-files limit of this process (the binary raises it to the hard limit
/// before starting); 1024 when it cannot be read.
pub fn open_files_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Binds a TCP listener with `backlog` pending connections (the kernel caps it at
/// `net.core.somaxconn`).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(backlog)
}

/// When a connection last moved bytes, in milliseconds since its table's epoch: written on
/// every read that got bytes (and, for HTTP, every write); read by the idle timeout and by
/// eviction.
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    /// Notes that bytes moved now.
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since bytes last arrived.
    pub fn idle(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

struct Entry {
    activity: Arc<Activity>,
    close: CancellationToken,
}

#[derive(Default)]
struct Notice {
    last: Option<Instant>,
    since: u64,
}

/// The open connections of one listener and its cap.
pub struct Table {
    /// The `listener` label: `api`, `http`, `tcp`.
    label: &'static str,
    /// What the log calls it.
    what: &'static str,
    cap: usize,
    slots: Arc<Semaphore>,
    conns: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    epoch: Instant,
    open: IntGauge,
    evicted: IntCounter,
    idle: IntCounter,
    refused: IntCounter,
    notice: Mutex<Notice>,
}

/// A connection admitted by a [`Table`]; it leaves the table when dropped.
pub struct Conn {
    table: Arc<Table>,
    id: u64,
    _slot: OwnedSemaphorePermit,
    /// Touch on every read that gets bytes.
    pub activity: Arc<Activity>,
    /// Cancelled when the table evicts this connection: close it at once.
    pub close: CancellationToken,
}

impl Conn {
    /// Counts a close for the idle timeout.
    pub fn closed_idle(&self) {
        self.table.idle.inc();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.table
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.table.open.dec();
    }
}

impl Table {
    /// A table of at most `cap` connections; `label` is the metrics label (`api`, `http`,
    /// `tcp`) and `what` the listener's name in the log.
    pub fn new(
        label: &'static str,
        what: &'static str,
        cap: usize,
        metrics: &Metrics,
    ) -> Arc<Table> {
        let closed = |reason: &str| {
            metrics
                .connections_closed
                .with_label_values(&[label, reason])
        };
        Arc::new(Table {
            label,
            what,
            cap: cap.max(1),
            slots: Arc::new(Semaphore::new(cap.max(1))),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            open: metrics.connections_open.with_label_values(&[label]),
            evicted: closed("evicted"),
            idle: closed("idle"),
            refused: closed("refused"),
            notice: Mutex::new(Notice::default()),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn label(&self) -> &'static str {
        self.label
    }

    /// Admits a connection just accepted. At the cap, the connection idle longest is told
    /// to close and this waits (at most a second) for its slot; `None` when no slot came
    /// free, and the new connection should be dropped.
    pub async fn admit(self: &Arc<Self>) -> Option<Conn> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                self.evict_idlest();
                match tokio::time::timeout(EVICT_WAIT, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        self.refused.inc();
                        return None;
                    }
                }
            }
        };
        let activity = Arc::new(Activity {
            epoch: self.epoch,
            last_ms: AtomicU64::new(0),
        });
        activity.touch();
        let close = CancellationToken::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            Entry {
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        self.open.inc();
        Some(Conn {
            table: self.clone(),
            id,
            _slot: slot,
            activity,
            close,
        })
    }

    /// Tells the connection idle longest (of those not already told) to close.
    fn evict_idlest(&self) {
        let victim = {
            let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns
                .values()
                .filter(|e| !e.close.is_cancelled())
                .map(|e| (e.activity.last_ms.load(Ordering::Relaxed), e))
                .min_by_key(|(last, _)| *last)
                .map(|(_, e)| (e.activity.idle(), e.close.clone()))
        };
        let Some((idle, close)) = victim else { return };
        close.cancel();
        self.evicted.inc();
        let mut n = self.notice.lock().unwrap_or_else(|p| p.into_inner());
        n.since += 1;
        let now = Instant::now();
        if n.last
            .map_or(true, |t| now.duration_since(t) >= NOTICE_EVERY)
        {
            tracing::warn!(
                "{} is at its cap of {} connections: closed the one idle longest ({} ms idle) \
                 to admit a new one; {} closed so since the last notice",
                self.what,
                self.cap,
                idle.as_millis(),
                n.since
            );
            n.last = Some(now);
            n.since = 0;
        }
    }
}

/// A socket whose reads and writes touch its connection's [`Activity`] (for hyper, which
/// does the reading and writing of HTTP connections).
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }

    /// A response being streamed (a tail, a session) is activity too: such a connection
    /// is not idle even though its client sends nothing.
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.touch();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            me.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write(cx, buf);
        me.wrote(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        me.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Listen;

    #[test]
    fn caps_fit_under_the_open_files_limit() {
        let c = Config::default();
        let big = Caps::derive(&c, 1 << 20);
        assert_eq!((big.api, big.http, big.tcp), (1024, 4096, 10_000));
        assert!(!big.lowered);
        for n in [256u64, 1024, 4096, 20_000] {
            let caps = Caps::derive(&c, n);
            assert!(
                caps.api + caps.http + caps.tcp + caps.reserve <= n as usize,
                "{caps:?}"
            );
            assert!(caps.api >= 1 && caps.http >= 1 && caps.tcp >= 1, "{caps:?}");
            assert!(caps.reserve >= 64, "{caps:?}");
        }
        let small = Caps::derive(&c, 1024);
        assert!(small.lowered);
        assert!(small.tcp > small.http, "{small:?}");
        let mut no_http = Config::default();
        no_http.ingest.http.listen = Listen::Off;
        let caps = Caps::derive(&no_http, 4096);
        assert_eq!(caps.http, 0);
        assert!(caps.tcp > 2000, "{caps:?}");
    }

    #[tokio::test]
    async fn at_the_cap_the_connection_idle_longest_is_evicted() {
        let m = Metrics::new();
        let t = Table::new("tcp", "syslog TCP", 2, &m);
        let a = t.admit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = t.admit().await.unwrap();
        b.activity.touch();
        let closer = {
            let a_close = a.close.clone();
            tokio::spawn(async move {
                a_close.cancelled().await;
                drop(a);
            })
        };
        let c = t.admit().await.expect("admitted by evicting a");
        closer.await.unwrap();
        assert!(!b.close.is_cancelled());
        assert_eq!(t.evicted.get(), 1);
        assert_eq!(t.open.get(), 2);
        drop((b, c));
        assert_eq!(t.open.get(), 0);
    }
}
