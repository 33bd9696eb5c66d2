//! Syslog over TCP: RFC 6587 octet-counted or newline-delimited frames, many connections.
//! A bad frame is counted and skipped; after an implausible octet count the codec
//! resynchronises at the next frame start (counted, logged once per connection); the
//! connection is closed only when the stream cannot resynchronise. Connections are capped by
//! a [`Table`] (at the cap the one idle longest makes room for a new one) and closed after
//! `ingest.tcp.idle_timeout` of silence; an idle connection holds no read buffer.

use super::{Pending, Router};
use crate::conns::{Conn, Table};
use crate::metrics::{InputCounters, Reject};
use crate::server::Node;
use bytes::BytesMut;
use logplex_proto::{Decoded, FrameError, SyslogCodec};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

const READ_CHUNK: usize = 64 * 1024;
/// Longest a read waits for healthy drains to catch up (see [`Channel::push_paced`](crate::channel::Channel::push_paced)).
const ROOM_BUDGET: std::time::Duration = std::time::Duration::from_millis(100);
/// A connection silent this long gives its (empty) read buffer back.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Accepts connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    table: Arc<Table>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) {
    let counters = node.metrics.input("tcp");
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("syslog tcp accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Some(conn) = table.admit().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let node = node.clone();
        let counters = counters.clone();
        let shutdown = shutdown.clone();
        node.clone().tasks.spawn(async move {
            node.metrics.tcp_connections.inc();
            match connection(sock, peer, &conn, &node, &counters, &shutdown).await {
                Ok(Closed::Eof) => {}
                Ok(Closed::Idle) => {
                    conn.closed_idle();
                    tracing::debug!(%peer, "syslog tcp connection closed: idle");
                }
                Ok(Closed::Evicted) => {
                    tracing::debug!(%peer, "syslog tcp connection closed to admit a new one")
                }
                Err(e) => tracing::info!(%peer, "syslog tcp connection closed: {e}"),
            }
            node.metrics.tcp_connections.dec();
            drop(conn);
        });
    }
}

/// How a connection ended without an error.
enum Closed {
    Eof,
    Idle,
    Evicted,
}

async fn connection(
    sock: TcpStream,
    peer: std::net::SocketAddr,
    conn: &Conn,
    node: &Node,
    counters: &InputCounters,
    shutdown: &CancellationToken,
) -> Result<Closed, FrameError> {
    let idle_timeout = node.config.ingest.tcp.idle_timeout();
    let mut codec = SyslogCodec::new(node.config.ingest.max_frame);
    // An implausible octet count is logged once per connection (a broken sender would
    // otherwise fill the log); every one is counted.
    let mut told_bad_count = false;
    // Allocated when bytes are ready to read and given back after a second of silence, so
    // thousands of idle connections hold no buffers.
    let mut buf = BytesMut::new();
    let mut pending = Pending::default();
    let check = tokio::time::sleep(idle_timeout);
    tokio::pin!(check);
    loop {
        let n = tokio::select! {
            r = sock.readable() => {
                r?;
                if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                    if buf.capacity() == 0 {
                        let release = tokio::time::Instant::now() + RELEASE_AFTER;
                        if check.deadline() > release {
                            check.as_mut().reset(release);
                        }
                    }
                    buf.reserve(READ_CHUNK);
                }
                match sock.try_read_buf(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            _ = shutdown.cancelled() => 0,
            _ = conn.close.cancelled() => return Ok(Closed::Evicted),
            _ = &mut check => {
                let idle = conn.activity.idle();
                if idle >= idle_timeout {
                    return Ok(Closed::Idle);
                }
                let mut next = idle_timeout - idle;
                if buf.is_empty() && buf.capacity() > 0 {
                    if idle >= RELEASE_AFTER {
                        buf = BytesMut::new();
                        pending = Pending::default();
                    } else {
                        next = RELEASE_AFTER - idle;
                    }
                }
                check.as_mut().reset(tokio::time::Instant::now() + next);
                continue;
            }
        };
        if n > 0 {
            conn.activity.touch();
        }
        let eof = n == 0;
        let mut router = Router::new(node.registry.snapshot(), counters, &mut pending);
        let mut fatal = None;
        loop {
            let step = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match step {
                Ok(Some(Decoded::Frame(f))) => router.frame(f),
                Ok(Some(Decoded::Skipped(e))) => {
                    let why = match e {
                        FrameError::TooLong { .. } => Reject::TooLong,
                        FrameError::ImplausibleCount { .. } => Reject::BadCount,
                        _ => Reject::Malformed,
                    };
                    counters.reject(why, 1);
                    if why == Reject::BadCount && !told_bad_count {
                        told_bad_count = true;
                        tracing::warn!(%peer, "syslog tcp: {e} (said once per connection)");
                    } else {
                        tracing::debug!("skipped a frame: {e}");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    counters.reject(Reject::Malformed, 1);
                    fatal = Some(e);
                    break;
                }
            }
        }
        super::wait_for_log(node.log.as_deref()).await;
        router.finish_paced(ROOM_BUDGET).await;
        if let Some(e) = fatal {
            return Err(e);
        }
        if eof {
            return Ok(Closed::Eof);
        }
    }
}
