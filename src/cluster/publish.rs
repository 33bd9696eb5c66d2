//! The publisher: puts what this node ingests into each channel's log stream in Redis,
//! off the ingest path. A tap on every channel ([`Publisher`]) encodes each stored batch
//! into one buffer and queues it (bounded in bytes; never a wait, never a round trip) on
//! one of `cluster.publishers` shards, chosen by the channel's Redis Cluster slot (so a
//! channel's lines keep their order, and in a Redis Cluster a shard's channels spread no
//! wider than the slots it was given). Each shard's task, with its own connection, takes
//! everything queued on it, joins it per channel and appends one entry per channel per
//! round (per 64 KiB of lines of a busy channel), the round's `XADD`s pipelined in one
//! round trip, each trimmed with `MAXLEN ~` to about the history size. At a stop, what is
//! queued goes in one last round. The tasks run on a thread of their own (`mod.rs`), so
//! that ingest keeping the node's workers busy does not stall them.
//!
//! While Redis is away the queue holds what comes (the task tries Redis again every
//! [`RETRY`]), so a short outage loses nothing from the streams. Lines that cannot go (the
//! queue is full, or a round failed when Redis went) stay in this node's history, log,
//! tails and drains; they are counted (`logplex_cluster_log_lines_unpublished_total`) and
//! the channel's next entry says how many and since when, so cross-node tails tell it with
//! L11. A round that failed after it was sent may have been taken all the same (Redis
//! went between taking it and answering): its parts are in doubt until Redis is back,
//! then looked for among the last entries of their streams (by this node's name and the
//! part's time) and counted as lost only if missing, so that a tail is told only of lines
//! it did not get.

use super::keys;
use super::logs;
use super::{Conn, Redis};
use crate::channel::{Channel, Tap};
use crate::line::Line;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The most batches waiting for one publisher task.
const QUEUE_BATCHES: usize = 16 * 1024;
/// About the most bytes of lines one entry carries (one batch bigger than this is one
/// entry of its own).
const ENTRY_BYTES: usize = 64 * 1024;
/// Batches taken into one round (one pipelined round trip).
const ROUND: usize = 4096;
/// How often the task tries Redis again while it is away.
const RETRY: Duration = Duration::from_millis(200);
/// How many of a stream's last entries are searched for a part in doubt.
const LOOK_BACK: usize = 64;

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

impl Lost {
    /// These and `other`'s, since the earlier.
    fn and(self, other: Option<Lost>) -> Lost {
        match other {
            None => self,
            Some(o) => Lost {
                lines: self.lines + o.lines,
                since_us: self.since_us.min(o.since_us),
            },
        }
    }
}

/// The tap every channel carries in cluster mode (see the module's documentation).
pub struct Publisher {
    shards: Box<[Shard]>,
    /// Bytes queued on every shard and not yet taken by their tasks: one budget, so that
    /// one busy channel (one shard) may use all of it.
    queued: AtomicUsize,
    /// The most bytes of encoded lines waiting for the tasks (`cluster.log_queue_bytes`).
    max_bytes: usize,
    published: prometheus::IntCounter,
    unpublished: prometheus::IntCounter,
}

/// One publisher task's share of the work: its queue and its channels' lost lines.
pub struct Shard {
    tx: mpsc::Sender<Batch>,
    /// The last round reached Redis.
    up: AtomicBool,
    lost: Mutex<HashMap<(Arc<str>, i64), Lost>>,
    any_lost: AtomicBool,
}

impl Publisher {
    /// The tap and its `shards` tasks' ends of their queues, which share `max_bytes`
    /// (first come, first served).
    pub fn new(
        metrics: &crate::metrics::Metrics,
        max_bytes: usize,
        shards: usize,
    ) -> (Arc<Publisher>, Vec<Queue>) {
        let counter = |name: &str, help: &str| {
            let c = prometheus::IntCounter::new(name, help).expect("static metric definition");
            metrics.register(Box::new(c.clone()));
            c
        };
        let shards = shards.max(1);
        let (shards, queues): (Vec<Shard>, Vec<Queue>) = (0..shards)
            .map(|i| {
                let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
                let shard = Shard {
                    tx,
                    up: AtomicBool::new(true),
                    lost: Mutex::new(HashMap::new()),
                    any_lost: AtomicBool::new(false),
                };
                (shard, Queue(i, rx))
            })
            .unzip();
        let p = Arc::new(Publisher {
            shards: shards.into_boxed_slice(),
            queued: AtomicUsize::new(0),
            max_bytes,
            published: counter(
                "logplex_cluster_log_lines_published_total",
                "Lines this node put into their channel's log stream in Redis",
            ),
            unpublished: counter(
                "logplex_cluster_log_lines_unpublished_total",
                "Lines this node kept local only: its queue to Redis was full or Redis was away",
            ),
        });
        (p, queues)
    }

    /// The shard of channel `name`: by its Redis Cluster slot.
    fn shard(&self, name: &str) -> &Shard {
        let i = usize::from(keys::channel_slot(name)) % self.shards.len();
        &self.shards[i]
    }

    /// `lines` of channel `key` (stored at `at_us`) that do not go into its stream, and
    /// the lost lines a part `carried` (counted when they were lost): counted, and told
    /// by the channel's next entry.
    fn lose(
        &self,
        shard: &Shard,
        key: (Arc<str>, i64),
        lines: u64,
        at_us: i64,
        carried: Option<Lost>,
    ) {
        self.unpublished.inc_by(lines);
        let these = Lost {
            lines,
            since_us: at_us,
        }
        .and(carried);
        let mut m = shard.lost.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key)
            .and_modify(|e| *e = these.and(Some(*e)))
            .or_insert(these);
        shard.any_lost.store(true, Ordering::Release);
    }
}

impl Shard {
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
        let shard = self.shard(&channel.name);
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            let key = (channel.name.clone(), channel.id);
            self.lose(shard, key, lines.len() as u64, at_us, None);
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
        if let Err(e) = shard.tx.try_send(batch) {
            let b = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.lose(shard, (b.channel, b.id), u64::from(b.lines), at_us, None);
        }
    }
}

/// A task's end of its shard's queue (the shard's index beside it).
pub struct Queue(usize, mpsc::Receiver<Batch>);

/// A channel (its name and id) and its part of a round.
type Keyed = ((Arc<str>, i64), Part);

/// A part of a failed round, to go first in the next one. `sent`: the round reached
/// Redis, which may hold it all the same (looked for before it goes again).
struct Held {
    part: Keyed,
    sent: bool,
}

/// One channel's part of a round.
struct Part {
    lines: u64,
    at_us: i64,
    bytes: BytesMut,
    lost: Option<Lost>,
}

/// A shard's task: rounds until `shutdown` (what is queued then is sent first).
pub async fn run(
    pb: Arc<Publisher>,
    Queue(shard, mut rx): Queue,
    client: Redis,
    node: String,
    history_lines: usize,
    shutdown: CancellationToken,
) {
    let p = &pb.shards[shard];
    let mut conn: Option<Conn> = None;
    let mut batches: Vec<Batch> = Vec::with_capacity(ROUND);
    let mut stopping = false;
    // The parts of failed rounds, to go first when Redis is back, and their bytes.
    let mut held: Vec<Held> = Vec::new();
    let mut held_bytes = 0;
    loop {
        if conn.is_none() && !p.up.load(Ordering::Relaxed) {
            // Redis away: what comes waits in the queue until it is back (or the queue is
            // full and the taps count it).
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = shutdown.cancelled() => {
                        pb.unpublished.inc_by(held.iter().map(|h| h.part.1.lines).sum());
                        return;
                    }
                }
                let Ok(mut c) = connect(&client).await else {
                    continue;
                };
                if redis::cmd("PING").query_async::<()>(&mut c).await.is_err() {
                    continue;
                }
                // Before anything goes: which of the parts in doubt Redis took.
                let Ok(found) = find(&mut c, &held, &node).await else {
                    continue;
                };
                let mut found = found.into_iter();
                held.retain_mut(|h| {
                    if !std::mem::take(&mut h.sent) || !found.next().unwrap_or(false) {
                        return true;
                    }
                    pb.published.inc_by(h.part.1.lines);
                    held_bytes -= h.part.1.bytes.len();
                    false
                });
                conn = Some(c);
                break;
            }
        }
        let first = if stopping || !held.is_empty() {
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
        pb.queued.fetch_sub(bytes, Ordering::Relaxed);
        // One part per channel, in the order of their first batch, after what was held
        // (older than anything queued, so each channel keeps its order).
        let mut parts: Vec<Keyed> = held.drain(..).map(|h| h.part).collect();
        held_bytes = 0;
        let mut index: HashMap<(Arc<str>, i64), usize> = parts
            .iter()
            .enumerate()
            .map(|(i, (key, _))| (key.clone(), i))
            .collect();
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
                Some(&i) => {
                    let part = &mut parts[i].1;
                    part.lost = Some(lost.and(part.lost));
                }
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
        // Whether the round reached a connection (so that a failure leaves it in doubt).
        let mut tried = true;
        let sent = match &conn {
            Some(c) => send(c.clone(), &parts, &node, history_lines).await,
            None => match connect(&client).await {
                Ok(c) => {
                    conn = Some(c.clone());
                    send(c, &parts, &node, history_lines).await
                }
                Err(e) => {
                    tried = false;
                    Err(e)
                }
            },
        };
        match sent {
            Ok(()) => {
                if !p.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("cluster: lines go into the channels' log streams again");
                }
                pb.published
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
                // Kept to go again, within one queue's worth of bytes; the rest is told.
                for part in parts {
                    let len = part.1.bytes.len();
                    if stopping || held_bytes + len > pb.max_bytes {
                        let (key, part) = part;
                        pb.lose(p, key, part.lines, part.at_us, part.lost);
                    } else {
                        held_bytes += len;
                        held.push(Held { part, sent: tried });
                    }
                }
            }
        }
        if stopping {
            // What was queued at the stop has had its one round.
            return;
        }
    }
}

/// Whether Redis holds each part of `held` that was sent (in their order): an entry of
/// `node` with the part's time among the last [`LOOK_BACK`] of its channel's stream (one
/// command per part: they are one failed round's, and on a Redis Cluster their streams
/// are in different slots).
async fn find(conn: &mut Conn, held: &[Held], node: &str) -> redis::RedisResult<Vec<bool>> {
    let mut found = Vec::new();
    for (key, part) in held.iter().filter(|h| h.sent).map(|h| &h.part) {
        let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(keys::log(&key.0))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(LOOK_BACK)
            .query_async(conn)
            .await?;
        found.push(last.ids.iter().any(|e| {
            e.get::<String>("n").as_deref() == Some(node) && e.get::<i64>("t") == Some(part.at_us)
        }));
    }
    Ok(found)
}

async fn connect(client: &Redis) -> redis::RedisResult<Conn> {
    client.connect(Duration::from_secs(3)).await
}

/// The entries a stream keeps: about `history_lines` lines at entries of `lines` each
/// (twice that, so that batches smaller than this one still fill the history), at least
/// 16 and at most `history_lines` entries.
fn keep(history_lines: usize, lines: u64) -> usize {
    let per = usize::try_from(lines.max(1)).unwrap_or(usize::MAX);
    (history_lines.div_ceil(per) * 2).clamp(16, history_lines.max(16))
}

/// One round: an `XADD` per channel, pipelined. On a Redis Cluster a pipeline keeps to
/// one slot (the client refuses one that crosses slots), so the round is one pipeline per
/// slot, all sent at once on the multiplexed connection (each to its slot's master).
async fn send(
    conn: Conn,
    parts: &[Keyed],
    node: &str,
    history_lines: usize,
) -> redis::RedisResult<()> {
    if let Conn::Single(_) = conn {
        return pipeline(conn, parts.iter(), node, history_lines).await;
    }
    let mut slots: HashMap<u16, Vec<&Keyed>> = HashMap::new();
    for part in parts {
        slots
            .entry(keys::channel_slot(&part.0 .0))
            .or_default()
            .push(part);
    }
    let sent = futures_util::future::join_all(
        slots
            .into_values()
            .map(|group| pipeline(conn.clone(), group.into_iter(), node, history_lines)),
    )
    .await;
    sent.into_iter().collect()
}

/// The `XADD`s of `parts` in one pipeline.
async fn pipeline<'a>(
    mut conn: Conn,
    parts: impl Iterator<Item = &'a Keyed>,
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
