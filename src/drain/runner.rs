//! The delivery loop every drain runs, whatever its transport: wait for lines, take a batch
//! out of the drain's buffer, render it (the L10 notice first when lines were dropped),
//! connect and send through the [`Transport`], retry by the transport's [`Policy`], close
//! idle connections and reopen aged ones. It owns the flush deadline at shutdown: every
//! await (connect, TLS handshake, send, backoff sleep) is capped by the drain's
//! [`Deadline`], so a receiver that never answers cannot hold a stop up.
//!
//! Transports implement only connect and send. A policy with a limit of tries (HTTP) holds a
//! failing batch and sends it again as it is, then drops it (counted, and announced by the
//! next L10); a policy without one (syslog's reconnect) puts the batch back in front of the
//! buffer, so that drop-oldest applies to it like to any queued line. With the durable log
//! a batch comes from the drain's buffer or from the log at its cursor (`cursor.rs`); one
//! that fails for a reason worth retrying is never dropped (its lines stay in the log and
//! the cursor stays before them), and the cursor is saved after each delivered batch.

use super::buffer::Dropped;
use super::cursor::Next;
use super::{Drain, DrainEnv};
use crate::clock::now_micros;
use crate::line::Line;
use crate::retry::{self, Backoff, Deadline, Policy};
use bytes::{Bytes, BytesMut};
use logplex_proto::render;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// A connection with nothing to send for this long is closed.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// A connection older than this is replaced (lets DNS and load balancers move us).
const MAX_AGE: Duration = Duration::from_secs(3600);

/// How a batch's frames are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Syslog over a stream: octet-counted frames, one after the other.
    Octets,
    /// Syslog over UDP: one unframed message per datagram (see [`Batch::frames`]).
    Datagrams,
    /// An `application/logplex-1` body: Heroku's HTTPS-drain frames.
    Logplex1,
}

/// A rendered batch.
#[derive(Debug, Default)]
pub struct Batch {
    pub body: Bytes,
    /// Where each frame ends in `body`.
    ends: Vec<usize>,
    /// Lines of the drain's buffer in it (the L10 notice not included).
    pub lines: u64,
    /// Frames in it, the L10 notice included.
    pub count: usize,
}

impl Batch {
    /// Each frame on its own (for datagrams).
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        self.ends.iter().map(move |&end| {
            let f = &self.body[at..end];
            at = end;
            f
        })
    }

    /// Does it start with the L10 notice?
    pub fn has_notice(&self) -> bool {
        self.count as u64 > self.lines
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// A name lookup, a connect, a handshake that failed (or timed out).
    Io(String),
    /// The receiver's certificate was refused: announced in-band as L14.
    Certificate(String),
}

/// Why a batch was not delivered.
#[derive(Debug)]
pub struct SendError {
    /// For the drain's status and the logs.
    pub why: String,
    /// Worth another try (a network error, 429, 5xx), or refused for good.
    pub retry: bool,
    /// The connection cannot be used again.
    pub broken: bool,
    /// When refused for good: the lines of the batch that were not delivered (the others
    /// were, as datagrams can be).
    pub lost: u64,
}

/// A way to deliver a drain's batches: connect and send, nothing else.
pub trait Transport: Send {
    /// An open connection (or what stands for one: an HTTP client with its pool).
    type Conn: Send;
    const FRAMING: Framing;
    /// Most lines and bytes in one batch.
    const BATCH_LINES: usize;
    const BATCH_BYTES: usize;
    /// How failed connects and sends are retried.
    const POLICY: Policy;
    /// Does a successful connect mean the drain is connected (syslog), or only ready to
    /// send (HTTP, whose client connects per request)?
    const CONNECTS: bool;

    fn connect(
        &mut self,
        d: &Drain,
        env: &DrainEnv,
    ) -> impl Future<Output = Result<Self::Conn, ConnectError>> + Send;

    /// Sends `batch`; `attempt` counts the tries of this batch, from 1.
    fn send(
        &mut self,
        conn: &mut Self::Conn,
        d: &Drain,
        batch: &Batch,
        attempt: u32,
    ) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Is the connection known to be gone? Checked before each batch.
    fn closed(_conn: &Self::Conn) -> bool {
        false
    }
}

/// What [`wait_for_work`] found.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    Work,
    Idle,
    Stop,
}

/// Waits until the drain has something to send, its connection has idled for `idle`, or
/// it should stop: removed, past the deadline, or flushing with nothing left.
async fn wait_for_work(d: &Drain, deadline: &Deadline, idle: Option<Duration>) -> Wait {
    loop {
        if deadline.passed() {
            return Wait::Stop;
        }
        if d.buffer.pending() || d.cursor.as_ref().is_some_and(|c| c.behind(d)) {
            return Wait::Work;
        }
        if deadline.flushing() {
            return Wait::Stop;
        }
        let idle_sleep = async {
            match idle {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = d.buffer.notify.notified() => {}
            _ = deadline.flush_started() => {}
            _ = idle_sleep => return Wait::Idle,
        }
    }
}

/// Runs the drain `d` through `transport` until it is removed, or flushed at shutdown.
pub async fn run<T: Transport>(d: &Drain, env: &DrainEnv, mut transport: T) {
    let deadline = Deadline::with_flush(d.removed.clone(), env.flush.clone());
    let mut conn: Option<(T::Conn, Instant)> = None;
    let mut backoff = match d.cursor {
        Some(_) => T::POLICY.capped(retry::LOGGED_DRAIN_MAX).backoff(),
        None => T::POLICY.backoff(),
    };
    let mut out = BytesMut::with_capacity(T::BATCH_BYTES + 4096);
    let mut ends = Vec::new();
    let mut cert_announced = false;
    loop {
        match wait_for_work(d, &deadline, conn.as_ref().map(|_| IDLE_CLOSE)).await {
            Wait::Stop => break,
            Wait::Idle => {
                conn = None;
                d.set_connected(false);
                continue;
            }
            Wait::Work => {}
        }
        if conn
            .as_ref()
            .is_some_and(|(c, at)| at.elapsed() > MAX_AGE || T::closed(c))
        {
            conn = None;
            d.set_connected(false);
        }
        if conn.is_none() {
            let Some(opened) = deadline.cap(transport.connect(d, env)).await else {
                break;
            };
            match opened {
                Ok(c) => {
                    conn = Some((c, Instant::now()));
                    if T::CONNECTS {
                        d.set_connected(true);
                    }
                    cert_announced = false;
                }
                Err(e) => {
                    connect_failed(d, e, &mut cert_announced);
                    d.counters.retried.inc();
                    // Flushing, a receiver that cannot be reached is not waited for.
                    if deadline.flushing() || !deadline.sleep(backoff.pace()).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let taken = match &d.cursor {
            None => {
                let (lines, dropped) = d.take(T::BATCH_LINES, T::BATCH_BYTES);
                Taken {
                    lines,
                    dropped,
                    from: From::Buffer,
                }
            }
            Some(c) => match c.next(d, T::BATCH_LINES, T::BATCH_BYTES).await {
                Next::Again => continue,
                Next::Idle | Next::Later(_) if d.buffer.has_dropped() => Taken {
                    lines: Vec::new(),
                    dropped: d.buffer.take_dropped(),
                    from: From::Buffer,
                },
                Next::Idle => {
                    // Caught up: wait for lines (or the flush's end).
                    let n = d.buffer.notify.notified();
                    tokio::pin!(n);
                    n.as_mut().enable();
                    if !d.buffer.pending() && !c.behind(d) {
                        if deadline.flushing() {
                            break;
                        }
                        tokio::select! {
                            _ = n => {}
                            _ = deadline.flush_started() => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
                Next::Later(t) => {
                    if !deadline.sleep(t).await {
                        break;
                    }
                    continue;
                }
                Next::Memory(lines) => {
                    let through = lines.last().map_or(0, |l| l.seq);
                    Taken {
                        lines,
                        dropped: d.buffer.take_dropped(),
                        from: From::Memory(through),
                    }
                }
                Next::Log(lines, through, recv_us) => Taken {
                    lines,
                    dropped: d.buffer.take_dropped(),
                    from: From::Log(through, recv_us),
                },
            },
        };
        let batch = render_batch::<T>(&mut out, &mut ends, d, &taken.lines, taken.dropped);
        if !deliver(
            d,
            &mut transport,
            &mut conn,
            &batch,
            taken,
            &deadline,
            &mut backoff,
        )
        .await
        {
            break;
        }
        // Keep the ends' allocation for the next batch.
        ends = batch.ends;
        ends.clear();
    }
    d.set_connected(false);
}

/// Where a batch's lines came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    /// The buffer, without the log.
    Buffer,
    /// The buffer of a drain with a cursor, through this seq.
    Memory(u64),
    /// The log, through this seq (the last line received at this time, µs).
    Log(u64, i64),
}

/// A batch's lines, the drops it announces first, and where they came from.
struct Taken {
    lines: Vec<Line>,
    dropped: Option<Dropped>,
    from: From,
}

impl Taken {
    /// The batch was delivered (or refused for good, or given up): the drain's cursor moves
    /// past it and is saved.
    async fn done(&self, d: &Drain) {
        let (Some(c), Some(through), recv_us) = (&d.cursor, self.through(), self.recv_us()) else {
            return;
        };
        let bytes = self.lines.iter().map(|l| l.frame.len() as u64).sum();
        let caught_up =
            !d.buffer.pending() && d.channel().map_or(true, |ch| ch.last_seq() <= through);
        c.delivered(through, recv_us, bytes, caught_up, d.counts())
            .await;
    }

    fn through(&self) -> Option<u64> {
        match self.from {
            From::Buffer => None,
            From::Memory(0) => None,
            From::Memory(t) | From::Log(t, _) => Some(t),
        }
    }

    fn recv_us(&self) -> i64 {
        match self.from {
            From::Log(_, at) => at,
            _ => 0,
        }
    }

    /// Lines counted in the buffer's gauge.
    fn buffered(&self) -> i64 {
        match self.from {
            From::Log(..) => 0,
            _ => self.lines.len() as i64,
        }
    }

    /// Not delivered, to be tried again: lines from memory go back in front of the buffer,
    /// lines from the log are read again (the cursor did not move).
    fn requeue(self, d: &Drain) {
        match self.from {
            From::Log(..) => {
                d.buffer.unshift(Vec::new(), self.dropped);
            }
            _ => requeue(d, self.lines, self.dropped),
        }
    }
}

/// Sends one batch by the transport's policy; false when the drain should stop.
async fn deliver<T: Transport>(
    d: &Drain,
    transport: &mut T,
    conn: &mut Option<(T::Conn, Instant)>,
    batch: &Batch,
    taken: Taken,
    deadline: &Deadline,
    backoff: &mut Backoff,
) -> bool {
    let n = batch.lines;
    let dropped = taken.dropped;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some((c, _)) = conn.as_mut() else {
            taken.requeue(d);
            return true;
        };
        let sent = deadline
            .cap(d.writing(transport.send(c, d, batch, attempt)))
            .await;
        let e = match sent {
            // Past the deadline: what is left is dropped (counted when the task ends).
            None => {
                taken.requeue(d);
                return false;
            }
            Some(Ok(())) => {
                d.set_connected(true);
                d.count_sent(n);
                d.counters.buffered.sub(taken.buffered());
                backoff.reset();
                taken.done(d).await;
                return true;
            }
            Some(Err(e)) => e,
        };
        tracing::debug!(drain = %String::from_utf8_lossy(&d.token), url = %d.url.redacted, attempt, "batch not delivered: {}", e.why);
        if e.broken {
            *conn = None;
        }
        if e.broken || (e.retry && !T::CONNECTS) {
            d.set_connected(false);
        }
        if !e.retry {
            tracing::warn!(drain = %String::from_utf8_lossy(&d.token), url = %d.url.redacted, "{} of {n} lines dropped: {}", e.lost, e.why);
            // Counted before the status shows the refusal.
            lose(d, batch, e.lost.min(n), dropped, taken.buffered());
            taken.done(d).await;
            d.failed(&e.why);
            // The next delivery (at least the L10 of this one) waits a backoff: a receiver
            // that refuses everything must not be sent batch after batch. Flushing there is
            // no waiting, so a refused L10 alone ends the flush.
            if deadline.flushing() {
                return n > 0;
            }
            return deadline.sleep(backoff.pace()).await;
        }
        d.failed(&e.why);
        let Some(tries) = T::POLICY.attempts else {
            // Retried without a limit: the lines go back in front of the buffer (or stay in
            // the log), and the next connection sends them.
            taken.requeue(d);
            d.counters.retried.inc();
            return !deadline.flushing() && deadline.sleep(backoff.pace()).await;
        };
        if d.cursor.is_some() && attempt >= tries && !deadline.passed() {
            // With the log, a batch worth retrying is never given up: its lines stay there,
            // and are sent again (a new batch) after a backoff.
            taken.requeue(d);
            return !deadline.flushing() && deadline.sleep(backoff.pace()).await;
        }
        if attempt >= tries || deadline.passed() {
            lose(d, batch, n, dropped, taken.buffered());
            // Flushing, and only an L10 was left: nothing more to deliver.
            return !(n == 0 && deadline.flushing());
        }
        d.counters.retried.inc();
        // Flushing, tries follow at once (within the deadline and the tries).
        if !deadline.flushing() && !deadline.sleep(backoff.pace()).await {
            lose(d, batch, n, dropped, taken.buffered());
            return false;
        }
    }
}

/// Tells of a failed connect: the drain's status, the logs, and L14 (once per failing
/// streak) for a refused certificate.
fn connect_failed(d: &Drain, e: ConnectError, cert_announced: &mut bool) {
    let token = String::from_utf8_lossy(&d.token);
    match e {
        ConnectError::Certificate(why) => {
            tracing::warn!(drain = %token, url = %d.url.redacted, "TLS certificate refused: {why}");
            if !*cert_announced {
                let mut text = BytesMut::with_capacity(128 + why.len());
                render::l14_text(&mut text, &d.token, &d.url.host, d.url.port, &why);
                d.announce(&String::from_utf8_lossy(&text));
                *cert_announced = true;
            }
            d.failed(format_args!("TLS certificate refused: {why}"));
        }
        ConnectError::Io(why) => {
            tracing::debug!(drain = %token, url = %d.url.redacted, "connect: {why}");
            d.failed(why);
        }
    }
}

/// Puts a batch that was not delivered back in front of the buffer. Lines pushed out of a
/// full buffer are lost without the log; with it they are not (the drain reads them back
/// from the log, as it does those the channel's overflow pushes out), so only the gauge of
/// buffered lines counts them.
fn requeue(d: &Drain, lines: Vec<Line>, dropped: Option<Dropped>) {
    let out = d.buffer.unshift(lines, dropped);
    if d.cursor.is_none() {
        d.count_dropped(out);
    }
    d.counters.buffered.sub(out as i64);
}

/// `lost` lines of a batch will not be delivered (the rest were): counted, and announced by
/// the next L10, with the drops the batch's own L10 was announcing when the whole batch
/// went (its L10 with it).
fn lose(d: &Drain, batch: &Batch, lost: u64, dropped: Option<Dropped>, buffered: i64) {
    let delivered = batch.lines - lost;
    if delivered > 0 {
        d.count_sent(delivered);
    }
    if lost == batch.lines {
        d.buffer.unshift(Vec::new(), dropped);
    }
    d.buffer.lost(lost);
    d.count_dropped(lost);
    d.counters.buffered.sub(buffered);
}

/// Renders a batch in the transport's framing: the L10 notice first if lines were dropped,
/// then each line.
fn render_batch<T: Transport>(
    out: &mut BytesMut,
    ends: &mut Vec<usize>,
    d: &Drain,
    lines: &[Line],
    dropped: Option<Dropped>,
) -> Batch {
    out.clear();
    ends.clear();
    let mut count = 0;
    if let Some(dr) = dropped {
        match T::FRAMING {
            Framing::Octets | Framing::Datagrams => render::l10_syslog(
                out,
                T::FRAMING == Framing::Octets,
                now_micros(),
                &d.token,
                dr.count,
                dr.since,
            ),
            Framing::Logplex1 => render::l10_http(out, now_micros(), dr.count, dr.since),
        }
        ends.push(out.len());
        count += 1;
    }
    for l in lines {
        match T::FRAMING {
            Framing::Octets | Framing::Datagrams => render::syslog_drain(
                out,
                T::FRAMING == Framing::Octets,
                l.pri,
                l.timestamp(),
                &d.token,
                &l.source,
                l.procid(),
                l.msg(),
            ),
            Framing::Logplex1 => render::http_drain(
                out,
                l.pri,
                l.timestamp(),
                b"host",
                &l.source,
                l.procid(),
                l.msg(),
            ),
        }
        if T::FRAMING == Framing::Datagrams {
            ends.push(out.len());
        }
        count += 1;
    }
    Batch {
        body: out.split().freeze(),
        ends: std::mem::take(ends),
        lines: lines.len() as u64,
        count,
    }
}
