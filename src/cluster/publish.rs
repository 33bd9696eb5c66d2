//! The publisher: puts what this node ingests into each channel's log stream in Redis,
//! off the ingest path. A tap on every channel ([`Publisher`]) encodes each stored batch
//! into one buffer and queues it (bounded in bytes; never a wait, never a round trip); one
//! task per node takes everything queued, joins it per channel and appends one entry per
//! channel per round (per 64 KiB of lines of a busy channel), the round's `XADD`s
//! pipelined in one round trip, each trimmed with
//! `MAXLEN ~` to about the history size. At a stop, what is queued goes in one last round.
//!
//! While Redis is away the queue holds what comes (the task tries Redis again every
//! [`RETRY`]), so a short outage loses nothing from the streams. Lines that cannot go (the
//! queue is full, or a round failed when Redis went) stay in this node's history, log,
//! tails and drains; they are counted (`logplex_cluster_log_lines_unpublished_total`) and
//! the channel's next entry says how many and since when, so cross-node tails tell it with
//! L11.

use super::keys;
use super::logs;
use crate::channel::{Channel, Tap};
use crate::line::Line;
use bytes::{Bytes, BytesMut};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The most batches waiting for the publisher.
const QUEUE_BATCHES: usize = 16 * 1024;
/// About the most bytes of lines one entry carries (one batch bigger than this is one
/// entry of its own).
const ENTRY_BYTES: usize = 64 * 1024;
/// Batches taken into one round (one pipelined round trip).
const ROUND: usize = 4096;
/// How often the task tries Redis again while it is away.
const RETRY: Duration = Duration::from_millis(200);

/// One stored batch of a channel, encoded.
struct Batch {
    channel: Arc<str>,
    /// The channel's id: a channel made again under the same name is another channel.
    id: i64,
    lines: u32,
    at_us: i64,
    bytes: Bytes,
}

/// Lines of a channel that did not go into its stream, not yet told.
#[derive(Clone, Copy)]
struct Lost {
    lines: u64,
    since_us: i64,
}

/// The tap every channel carries in cluster mode (see the module's documentation).
pub struct Publisher {
    tx: mpsc::Sender<Batch>,
    /// Bytes queued and not yet taken by the task.
    queued: AtomicUsize,
    /// The last round reached Redis.
    up: AtomicBool,
    /// The most bytes of encoded lines waiting for the task (`cluster.log_queue_bytes`).
    max_bytes: usize,
    lost: Mutex<HashMap<(Arc<str>, i64), Lost>>,
    any_lost: AtomicBool,
    published: prometheus::IntCounter,
    unpublished: prometheus::IntCounter,
}

impl Publisher {
    /// The tap and its task's end of the queue.
    pub fn new(metrics: &crate::metrics::Metrics, max_bytes: usize) -> (Arc<Publisher>, Queue) {
        let counter = |name: &str, help: &str| {
            let c = prometheus::IntCounter::new(name, help).expect("static metric definition");
            metrics.register(Box::new(c.clone()));
            c
        };
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let p = Arc::new(Publisher {
            tx,
            queued: AtomicUsize::new(0),
            up: AtomicBool::new(true),
            max_bytes,
            lost: Mutex::new(HashMap::new()),
            any_lost: AtomicBool::new(false),
            published: counter(
                "logplex_cluster_log_lines_published_total",
                "Lines this node put into their channel's log stream in Redis",
            ),
            unpublished: counter(
                "logplex_cluster_log_lines_unpublished_total",
                "Lines this node kept local only: its queue to Redis was full or Redis was away",
            ),
        });
        (p, Queue(rx))
    }

    fn lose(&self, channel: &Arc<str>, id: i64, lines: u64, at_us: i64) {
        self.unpublished.inc_by(lines);
        let mut m = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry((channel.clone(), id)).or_insert(Lost {
            lines: 0,
            since_us: at_us,
        });
        e.lines += lines;
        self.any_lost.store(true, Ordering::Release);
    }

    fn take_lost(&self) -> HashMap<(Arc<str>, i64), Lost> {
        if !self.any_lost.swap(false, Ordering::AcqRel) {
            return HashMap::new();
        }
        std::mem::take(&mut *self.lost.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Tap for Publisher {
    fn lines(&self, channel: &Channel, lines: &[Line]) {
        let at_us = crate::clock::now_micros();
        let len = logs::encoded_len(lines);
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.lose(&channel.name, channel.id, lines.len() as u64, at_us);
            return;
        }
        let mut b = BytesMut::with_capacity(len);
        logs::encode(&mut b, lines);
        let batch = Batch {
            channel: channel.name.clone(),
            id: channel.id,
            lines: lines.len() as u32,
            at_us,
            bytes: b.freeze(),
        };
        if let Err(e) = self.tx.try_send(batch) {
            let b = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.lose(&b.channel, b.id, u64::from(b.lines), at_us);
        }
    }
}

/// The task's end of the publisher's queue.
pub struct Queue(mpsc::Receiver<Batch>);

/// One channel's part of a round.
struct Part {
    lines: u64,
    at_us: i64,
    bytes: BytesMut,
    lost: Option<Lost>,
}

/// The publisher's task: rounds until `shutdown` (what is queued then is sent first).
pub async fn run(
    p: Arc<Publisher>,
    Queue(mut rx): Queue,
    client: redis::Client,
    node: String,
    history_lines: usize,
    shutdown: CancellationToken,
) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut batches: Vec<Batch> = Vec::with_capacity(ROUND);
    let mut stopping = false;
    loop {
        if conn.is_none() && !p.up.load(Ordering::Relaxed) {
            // Redis away: what comes waits in the queue until it is back (or the queue is
            // full and the taps count it).
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = shutdown.cancelled() => return,
                }
                if let Ok(mut c) = connect(&client).await {
                    if redis::cmd("PING").query_async::<()>(&mut c).await.is_ok() {
                        conn = Some(c);
                        break;
                    }
                }
            }
        }
        let first = if stopping {
            None
        } else if p.any_lost.load(Ordering::Acquire) {
            // Lost lines to tell: try again even when nothing new comes.
            tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => Some(b),
                    None => return,
                },
                _ = tokio::time::sleep(RETRY) => None,
                _ = shutdown.cancelled() => { stopping = true; None }
            }
        } else {
            tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => Some(b),
                    None => return,
                },
                _ = shutdown.cancelled() => { stopping = true; None }
            }
        };
        batches.extend(first);
        while batches.len() < ROUND {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let bytes: usize = batches.iter().map(|b| b.bytes.len()).sum();
        p.queued.fetch_sub(bytes, Ordering::Relaxed);
        // One part per channel, in the order of their first batch.
        let mut parts: Vec<((Arc<str>, i64), Part)> = Vec::new();
        let mut index: HashMap<(Arc<str>, i64), usize> = HashMap::new();
        for b in batches.drain(..) {
            let key = (b.channel.clone(), b.id);
            let i = match index.get(&key) {
                // An entry holds about ENTRY_BYTES at most (or one batch bigger than that):
                // history reads and trimming go by entries.
                Some(&i) if parts[i].1.bytes.len() < ENTRY_BYTES => i,
                _ => {
                    parts.push((
                        key.clone(),
                        Part {
                            lines: 0,
                            at_us: b.at_us,
                            bytes: BytesMut::new(),
                            lost: None,
                        },
                    ));
                    index.insert(key, parts.len() - 1);
                    parts.len() - 1
                }
            };
            let part = &mut parts[i].1;
            part.lines += u64::from(b.lines);
            part.bytes.extend_from_slice(&b.bytes);
        }
        for (channel, lost) in p.take_lost() {
            match index.get(&channel) {
                Some(&i) => parts[i].1.lost = Some(lost),
                None => parts.push((
                    channel,
                    Part {
                        lines: 0,
                        at_us: crate::clock::now_micros(),
                        bytes: BytesMut::new(),
                        lost: Some(lost),
                    },
                )),
            }
        }
        if parts.is_empty() {
            if stopping {
                return;
            }
            continue;
        }
        let sent = match &conn {
            Some(c) => send(c.clone(), &parts, &node, history_lines).await,
            None => match connect(&client).await {
                Ok(c) => {
                    conn = Some(c.clone());
                    send(c, &parts, &node, history_lines).await
                }
                Err(e) => Err(e),
            },
        };
        match sent {
            Ok(()) => {
                if !p.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("cluster: lines go into the channels' log streams again");
                }
                p.published
                    .inc_by(parts.iter().map(|(_, part)| part.lines).sum());
            }
            Err(e) => {
                conn = None;
                if p.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "cluster: cannot append to the log streams ({e}); lines stay on this \
                         node until Redis is back"
                    );
                }
                for (channel, part) in &parts {
                    let since = part.lost.map_or(part.at_us, |l| l.since_us);
                    let n = part.lines + part.lost.map_or(0, |l| l.lines);
                    // Counted once: the lost part was counted when it was lost.
                    p.unpublished.inc_by(part.lines);
                    let mut m = p.lost.lock().unwrap_or_else(|p| p.into_inner());
                    let e = m.entry(channel.clone()).or_insert(Lost {
                        lines: 0,
                        since_us: since,
                    });
                    e.lines += n;
                    e.since_us = e.since_us.min(since);
                    p.any_lost.store(true, Ordering::Release);
                }
            }
        }
        if stopping {
            // What was queued at the stop has had its one round.
            return;
        }
    }
}

async fn connect(client: &redis::Client) -> redis::RedisResult<MultiplexedConnection> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(3));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

/// The entries a stream keeps: about `history_lines` lines at entries of `lines` each
/// (twice that, so that batches smaller than this one still fill the history), at least
/// 16 and at most `history_lines` entries.
fn keep(history_lines: usize, lines: u64) -> usize {
    let per = usize::try_from(lines.max(1)).unwrap_or(usize::MAX);
    (history_lines.div_ceil(per) * 2).clamp(16, history_lines.max(16))
}

/// One round: an `XADD` per channel, pipelined.
async fn send(
    mut conn: MultiplexedConnection,
    parts: &[((Arc<str>, i64), Part)],
    node: &str,
    history_lines: usize,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for ((channel, id), part) in parts {
        let cmd = pipe
            .cmd("XADD")
            .arg(keys::log(channel))
            .arg("MAXLEN")
            .arg("~")
            .arg(keep(history_lines, part.lines))
            .arg("*")
            .arg("i")
            .arg(*id)
            .arg("n")
            .arg(node)
            .arg("t")
            .arg(part.at_us)
            .arg("c")
            .arg(part.lines);
        if let Some(l) = part.lost {
            cmd.arg("l").arg(l.lines).arg("ls").arg(l.since_us);
        }
        cmd.arg("b").arg(&part.bytes[..]).ignore();
    }
    pipe.query_async(&mut conn).await
}
