//! Ingest: the three inputs (syslog over TCP and UDP, logplex-1 over HTTP) and the routing
//! they share, from a parsed frame to its channel.

pub mod http;
pub mod tcp;
pub mod udp;

use crate::channel::{Channel, Read};
use crate::line::{Fields, Line};
use crate::logmetrics::Reads;
use crate::metrics::{InputCounters, Reject};
use crate::registry::{Route, Snapshot};
use bytes::Bytes;
use std::sync::Arc;

/// The lines of one read on their way to their channels, and what the runs of channels
/// with metrics on add to them; kept by a connection from read to read so that neither is
/// allocated each time.
#[derive(Default)]
pub struct Pending {
    lines: Vec<Line>,
    /// One for each metered run of the read (`Run::reads`), the first `Router::metered`
    /// of them in use.
    reads: Vec<Reads>,
}

/// How many [`Reads`] a connection keeps from read to read.
const READS_KEPT: usize = 16;

/// Consecutive lines of one channel.
struct Run {
    channel: Arc<Channel>,
    /// How many lines.
    n: usize,
    /// Its entry of [`Pending::reads`], if the channel had metrics on when the run began
    /// (its lines are then read here, out of the channel's lock).
    reads: Option<usize>,
}

/// Routes frames by their APP-NAME token and pushes runs of lines for the same channel
/// together. One per read (TCP) or datagram (UDP); `pending` is reused.
pub struct Router<'a> {
    snap: Arc<Snapshot>,
    counters: &'a InputCounters,
    pending: &'a mut Pending,
    runs: Vec<Run>,
    /// Entries of [`Pending::reads`] taken by this read's runs.
    metered: usize,
    /// The last token seen and its route: a connection almost always sends one token, so
    /// this skips hashing it for every line.
    last: Option<(Vec<u8>, Route)>,
    unknown: u64,
    malformed: u64,
}

impl<'a> Router<'a> {
    pub fn new(snap: Arc<Snapshot>, counters: &'a InputCounters, pending: &'a mut Pending) -> Self {
        pending.lines.clear();
        Router {
            snap,
            counters,
            pending,
            runs: Vec::new(),
            metered: 0,
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
        let reads = match self.runs.last_mut() {
            Some(r) if Arc::ptr_eq(&r.channel, &route.channel) => {
                r.n += 1;
                r.reads
            }
            _ => {
                let reads = route.channel.metered().then(|| {
                    let k = self.metered;
                    self.metered += 1;
                    match self.pending.reads.get_mut(k) {
                        Some(r) => r.clear(),
                        None => self.pending.reads.push(Reads::default()),
                    }
                    k
                });
                self.runs.push(Run {
                    channel: route.channel.clone(),
                    n: 1,
                    reads,
                });
                reads
            }
        };
        if let Some(k) = reads {
            self.pending.reads[k].line(&route.source, m.procid, m.msg, &frame);
        }
        let fields = Fields::of(&frame, &m);
        self.pending
            .lines
            .push(Line::new(frame, fields, route.source));
    }

    /// After the runs are pushed: lets go of the frames of l2met lines the reads hold (now,
    /// not at the next read), keeps at most [`READS_KEPT`] of them for the next read (a read
    /// alternating channels line by line takes one a run), and adds the counts to the
    /// input's metrics.
    fn end(self, stored: u64) {
        let reads = &mut self.pending.reads;
        for r in reads.iter_mut().take(self.metered) {
            r.clear();
        }
        reads.truncate(READS_KEPT);
        self.count(stored);
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
        let Pending { lines, reads } = &mut *self.pending;
        let mut lines = lines.drain(..);
        let mut stored = 0;
        for r in &self.runs {
            let read = run_read(reads, r);
            stored += r.channel.push_read(lines.by_ref().take(r.n), read).0 as u64;
        }
        drop(lines);
        self.end(stored);
    }

    /// Like [`Router::finish`], pacing each run to the channel's drains (see
    /// [`Channel::push_paced`]).
    pub async fn finish_paced(self, budget: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + budget;
        let Pending { lines, reads } = &mut *self.pending;
        let mut lines = lines.drain(..);
        let mut stored = 0;
        for r in &self.runs {
            let read = run_read(reads, r);
            stored += r
                .channel
                .push_paced(lines.by_ref().take(r.n), r.n, deadline, read)
                .await
                .0 as u64;
        }
        drop(lines);
        self.end(stored);
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

/// What ingest read of run `r`'s lines.
fn run_read<'r>(reads: &'r [Reads], r: &Run) -> Read<'r> {
    match r.reads.and_then(|k| reads.get(k)) {
        Some(read) => Read::Done(read),
        None => Read::Not,
    }
}
