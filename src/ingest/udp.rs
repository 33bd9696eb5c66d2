//! Syslog over UDP: one RFC 5424 message per datagram.

use super::{Pending, Router};
use crate::metrics::Reject;
use crate::server::Node;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Receives datagrams until shutdown.
pub async fn serve(sock: UdpSocket, node: Arc<Node>, shutdown: CancellationToken) {
    let counters = node.metrics.input("udp");
    let max_frame = node.config.ingest.max_frame;
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut pending = Pending::default();
    loop {
        if buf.capacity() < 65536 {
            buf.reserve(256 * 1024);
        }
        let r = tokio::select! {
            r = sock.recv_buf_from(&mut buf) => r,
            _ = shutdown.cancelled() => return,
        };
        let n = match r {
            Ok((n, _)) => n,
            Err(e) => {
                tracing::debug!("syslog udp recv: {e}");
                buf.clear();
                continue;
            }
        };
        let datagram = buf.split_to(n).freeze();
        if datagram.len() > max_frame {
            counters.reject(Reject::TooLong, 1);
            continue;
        }
        let mut router = Router::new(node.registry.snapshot(), &counters, &mut pending);
        router.frame(datagram);
        // UDP has no flow control: no pacing to drains here.
        router.finish();
    }
}
