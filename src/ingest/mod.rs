//! Ingest: the three inputs (syslog over TCP and UDP, logplex-1 over HTTP) and the routing
//! they share, from a parsed frame to its channel.

pub mod http;
pub mod tcp;
pub mod udp;

use crate::channel::Channel;
use crate::line::{Fields, Line};
use crate::metrics::{InputCounters, Reject};
use crate::registry::{Route, Snapshot};
use bytes::Bytes;
use std::sync::Arc;

/// Routes frames by their APP-NAME token and pushes runs of lines for the same channel
/// together. One per read (TCP) or datagram (UDP); `pending` is reused.
pub struct Router<'a> {
    snap: Arc<Snapshot>,
    counters: &'a InputCounters,
    pending: &'a mut Vec<Line>,
    /// Consecutive lines of one channel: the channel and how many.
    runs: Vec<(Arc<Channel>, usize)>,
    /// The last token seen and its route: a connection almost always sends one token, so
    /// this skips hashing it for every line.
    last: Option<(Vec<u8>, Route)>,
    unknown: u64,
    malformed: u64,
}

impl<'a> Router<'a> {
    pub fn new(
        snap: Arc<Snapshot>,
        counters: &'a InputCounters,
        pending: &'a mut Vec<Line>,
    ) -> Self {
        pending.clear();
        Router {
            snap,
            counters,
            pending,
            runs: Vec::new(),
            last: None,
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
        let hit = matches!(&self.last, Some((t, _)) if t[..] == *m.app_name);
        if !hit {
            let Some(route) = self.snap.route(m.app_name) else {
                self.unknown += 1;
                return;
            };
            self.last = Some((m.app_name.to_vec(), route.clone()));
        }
        let Some((_, route)) = &self.last else { return };
        match self.runs.last_mut() {
            Some((c, n)) if Arc::ptr_eq(c, &route.channel) => *n += 1,
            _ => self.runs.push((route.channel.clone(), 1)),
        }
        let fields = Fields::of(&frame, &m);
        self.pending.push(Line::new(frame, fields, route.source));
    }

    fn count(&self, stored: u64) {
        if stored > 0 {
            self.counters.received.inc_by(stored);
        }
        if self.unknown > 0 {
            self.counters.reject(Reject::UnknownToken, self.unknown);
        }
        if self.malformed > 0 {
            self.counters.reject(Reject::Malformed, self.malformed);
        }
    }

    /// Pushes what is queued and adds the counts to the input's metrics.
    pub fn finish(self) {
        let mut lines = self.pending.drain(..);
        let mut stored = 0;
        for (ch, n) in &self.runs {
            stored += ch.push(lines.by_ref().take(*n)) as u64;
        }
        drop(lines);
        self.count(stored);
    }

    /// Like [`Router::finish`], pacing each run to the channel's drains (see
    /// [`Channel::push_paced`]).
    pub async fn finish_paced(self, budget: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + budget;
        let mut lines = self.pending.drain(..);
        let mut stored = 0;
        for (ch, n) in &self.runs {
            stored += ch.push_paced(lines.by_ref().take(*n), *n, deadline).await.0 as u64;
        }
        drop(lines);
        self.count(stored);
    }
}
