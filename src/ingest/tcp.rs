//! Syslog over TCP: RFC 6587 octet-counted or newline-delimited frames, many connections,
//! capped by a semaphore taken before `accept`. A bad frame is counted and skipped; after an
//! implausible octet count the codec resynchronises at the next frame start (counted, logged
//! once per connection); the connection is closed only when the stream cannot resynchronise.

use super::Router;
use crate::line::Line;
use crate::metrics::{InputCounters, Reject};
use crate::Shared;
use bytes::BytesMut;
use logplex_proto::{Decoded, FrameError, SyslogCodec};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

const READ_CHUNK: usize = 64 * 1024;
/// Longest a read waits for healthy drains to catch up (see `Channel::make_room`).
const ROOM_BUDGET: std::time::Duration = std::time::Duration::from_millis(100);

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(shared.config.ingest.max_connections));
    let counters = shared.metrics.input("tcp");
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
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
        let _ = sock.set_nodelay(true);
        let shared = shared.clone();
        let counters = counters.clone();
        let shutdown = shutdown.clone();
        shared.clone().tasks.spawn(async move {
            shared.metrics.tcp_connections.inc();
            if let Err(e) = connection(sock, peer, &shared, &counters, &shutdown).await {
                tracing::info!(%peer, "syslog tcp connection closed: {e}");
            }
            shared.metrics.tcp_connections.dec();
            drop(permit);
        });
    }
}

async fn connection(
    mut sock: TcpStream,
    peer: std::net::SocketAddr,
    shared: &Shared,
    counters: &InputCounters,
    shutdown: &CancellationToken,
) -> Result<(), FrameError> {
    let mut codec = SyslogCodec::new(shared.config.ingest.max_frame);
    // An implausible octet count is logged once per connection (a broken sender would
    // otherwise fill the log); every one is counted.
    let mut told_bad_count = false;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut pending: Vec<Line> = Vec::with_capacity(256);
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let n = tokio::select! {
            r = sock.read_buf(&mut buf) => r?,
            _ = shutdown.cancelled() => 0,
        };
        let eof = n == 0;
        let mut router = Router::new(shared.registry.snapshot(), counters, &mut pending);
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
        router.finish_paced(ROOM_BUDGET).await;
        if let Some(e) = fatal {
            return Err(e);
        }
        if eof {
            return Ok(());
        }
    }
}
