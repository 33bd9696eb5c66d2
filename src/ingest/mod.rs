//! Ingest: the three inputs (syslog over TCP and UDP, logplex-1 over HTTP) and the routing
//! they share, from a parsed frame to its channel.

pub mod http;
pub mod tcp;
pub mod udp;

use crate::channel::Channel;
use crate::line::Line;
use crate::metrics::{InputCounters, Reject};
use crate::registry::Snapshot;
use bytes::Bytes;
use std::sync::Arc;

/// Routes frames by their APP-NAME token and pushes runs of lines for the same channel
/// under one lock. One per read (TCP) or datagram burst (UDP); `pending` is reused.
pub struct Router<'a> {
    snap: &'a Snapshot,
    counters: &'a InputCounters,
    channel: Option<Arc<Channel>>,
    pending: &'a mut Vec<Line>,
    stored: u64,
    unknown: u64,
    malformed: u64,
}

impl<'a> Router<'a> {
    pub fn new(
        snap: &'a Snapshot,
        counters: &'a InputCounters,
        pending: &'a mut Vec<Line>,
    ) -> Self {
        pending.clear();
        Router {
            snap,
            counters,
            channel: None,
            pending,
            stored: 0,
            unknown: 0,
            malformed: 0,
        }
    }

    /// Parses one frame and queues it for its token's channel; counts what it cannot route.
    pub fn frame(&mut self, frame: Bytes) {
        let m = match logplex_proto::parse_lenient(&frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("malformed frame: {e}");
                self.malformed += 1;
                return;
            }
        };
        let Some(route) = self.snap.route(m.app_name) else {
            self.unknown += 1;
            return;
        };
        match &self.channel {
            Some(c) if Arc::ptr_eq(c, &route.channel) => {}
            _ => {
                self.flush();
                self.channel = Some(route.channel.clone());
            }
        }
        self.pending
            .push(Line::from_parsed(&frame, &m, &route.source));
    }

    fn flush(&mut self) {
        if let Some(c) = &self.channel {
            if !self.pending.is_empty() {
                self.stored += c.push(self.pending.drain(..)) as u64;
            }
        }
    }

    /// Pushes what is queued and adds the counts to the input's metrics.
    pub fn finish(mut self) {
        self.flush();
        if self.stored > 0 {
            self.counters.received.inc_by(self.stored);
        }
        if self.unknown > 0 {
            self.counters.reject(Reject::UnknownToken, self.unknown);
        }
        if self.malformed > 0 {
            self.counters.reject(Reject::Malformed, self.malformed);
        }
    }
}
