//! Ingest: the three inputs (syslog over TCP and UDP, logplex-1 over HTTP) and the routing
//! they share, from a parsed frame to its channel.

pub mod http;
pub mod tcp;
pub mod udp;

use crate::channel::Channel;
use crate::line::{Fields, Line};
use crate::logmetrics::{self, RouterLine};
use crate::metrics::{InputCounters, Reject};
use crate::registry::{Route, Snapshot};
use bytes::Bytes;
use std::sync::Arc;

/// The lines of one read on their way to their channels, and the router lines among them
/// already read for channels with metrics on; kept by a connection from read to read so
/// that neither is allocated each time.
#[derive(Default)]
pub struct Pending {
    lines: Vec<Line>,
    reads: Vec<Option<RouterLine>>,
}

/// Consecutive lines of one channel.
struct Run {
    channel: Arc<Channel>,
    /// How many lines.
    n: usize,
    /// Where their reads start in [`Pending::reads`], if the channel had metrics on when
    /// the run began (they are then read here, out of the channel's lock).
    reads: Option<usize>,
}

/// Routes frames by their APP-NAME token and pushes runs of lines for the same channel
/// together. One per read (TCP) or datagram (UDP); `pending` is reused.
pub struct Router<'a> {
    snap: Arc<Snapshot>,
    counters: &'a InputCounters,
    pending: &'a mut Pending,
    runs: Vec<Run>,
    /// The last token seen and its route: a connection almost always sends one token, so
    /// this skips hashing it for every line.
    last: Option<(Vec<u8>, Route)>,
    unknown: u64,
    malformed: u64,
}

impl<'a> Router<'a> {
    pub fn new(snap: Arc<Snapshot>, counters: &'a InputCounters, pending: &'a mut Pending) -> Self {
        pending.lines.clear();
        pending.reads.clear();
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
        let metered = match self.runs.last_mut() {
            Some(r) if Arc::ptr_eq(&r.channel, &route.channel) => {
                r.n += 1;
                r.reads.is_some()
            }
            _ => {
                let reads = route.channel.metered().then_some(self.pending.reads.len());
                self.runs.push(Run {
                    channel: route.channel.clone(),
                    n: 1,
                    reads,
                });
                reads.is_some()
            }
        };
        if metered {
            let r = logmetrics::read_router(&route.source, m.procid, m.msg);
            self.pending.reads.push(r);
        }
        let fields = Fields::of(&frame, &m);
        self.pending
            .lines
            .push(Line::new(frame, fields, route.source));
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
        let mut lines = self.pending.lines.drain(..);
        let mut stored = 0;
        for r in &self.runs {
            let read = run_reads(&self.pending.reads, r);
            stored += r.channel.push_read(lines.by_ref().take(r.n), read).0 as u64;
        }
        drop(lines);
        self.count(stored);
    }

    /// Like [`Router::finish`], pacing each run to the channel's drains (see
    /// [`Channel::push_paced`]).
    pub async fn finish_paced(self, budget: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + budget;
        let mut lines = self.pending.lines.drain(..);
        let mut stored = 0;
        for r in &self.runs {
            let read = run_reads(&self.pending.reads, r);
            stored += r
                .channel
                .push_paced(lines.by_ref().take(r.n), r.n, deadline, read)
                .await
                .0 as u64;
        }
        drop(lines);
        self.count(stored);
    }
}

/// The longest [`wait_for_log`] holds a sender back for the durable log to take its pending
/// memory (64 MiB by default, written at hundreds of MB/s: a disk that leaves it full this
/// long is failing or far slower than intake, and lines then go on in memory).
pub const LOG_ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// While the node's durable log has its pending memory over half full (the disk is slower
/// than intake), waits for the log to take it, up to [`LOG_ROOM_WAIT`]. TCP and HTTP input
/// call it once per read or request, before pushing and before the drains' pacing deadline
/// is set: the sender is held back, as TCP and HTTP allow, instead of its lines being
/// refused by the log and kept in memory only. Past that wait the push goes on and the log
/// may refuse the lines (counted; HTTP answers 503). UDP does not wait.
pub async fn wait_for_log(log: Option<&crate::log::Log>) {
    if let Some(log) = log {
        if !log.has_room() {
            let _ = tokio::time::timeout(LOG_ROOM_WAIT, log.writable()).await;
        }
    }
}

/// The reads of run `r` among `reads` (none if its channel was not metered).
fn run_reads<'r>(reads: &'r [Option<RouterLine>], r: &Run) -> &'r [Option<RouterLine>] {
    match r.reads {
        Some(from) => reads.get(from..from + r.n).unwrap_or(&[]),
        None => &[],
    }
}
