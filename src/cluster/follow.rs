//! The follower: one task per node that reads the change stream with `XREAD BLOCK` from
//! the replica's saved position and applies each change to the replica and the routing
//! snapshot, in order. On (re)connecting it first makes sure the position still means
//! something: another epoch in Redis, or changes trimmed out of the stream since, and the
//! whole config is loaded again; an empty Redis is filled from this node's replica (one
//! node does it, under a short lock).

use super::keys::{self, DrainValue, TokenValue};
use super::Conn;
use super::{Change, Cluster};
use crate::admin_key::AdminKey;
use crate::alert::RuleSpec;
use crate::store::{self, ChannelRecord, DrainRecord, Position, ReplicaWrite, State, StoreError};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one `XREAD` blocks (the connection's own timeout is a little longer).
const BLOCK: Duration = Duration::from_secs(10);
/// Changes read at once.
const BATCH: usize = 500;
/// Channels read per round trip of a full load.
const LOAD_CHUNK: usize = 500;
/// The reconnect backoff's bounds (with jitter).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a full load reads first, at once: the epoch, the change counter, the last change,
/// every channel's name and the rules on every channel.
type Head = (
    Option<String>,
    Option<u64>,
    StreamRangeReply,
    Vec<String>,
    HashMap<String, String>,
);

/// Why following stopped (it starts again after a backoff).
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

/// Follows until `shutdown`: reconnects with backoff after any failure, marking the node
/// degraded meanwhile.
pub async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    loop {
        let err = tokio::select! {
            e = follow(&cluster) => e,
            _ = shutdown.cancelled() => return,
        };
        if cluster.is_up() {
            // It had caught up: a fresh outage.
            backoff = BACKOFF_MIN;
            warned = false;
        }
        cluster.set_up(false);
        // The writer's connection went with Redis too, most likely: the next change makes a
        // new one instead of failing once on the old.
        cluster.writer.store(None);
        if !warned {
            tracing::warn!(
                "cluster: cannot follow Redis ({err}); config changes are refused until it is back"
            );
            warned = true;
        }
        let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Connects, catches up, then applies changes as they come; returns only on failure.
async fn follow(cluster: &Arc<Cluster>) -> FollowError {
    let conn = match cluster.client.connect(BLOCK + Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let mut f = Follower { cluster, conn };
    match f.follow().await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

struct Follower<'a> {
    cluster: &'a Arc<Cluster>,
    conn: Conn,
}

impl Follower<'_> {
    async fn follow(&mut self) -> Result<std::convert::Infallible, FollowError> {
        let mut pos = self.sync().await?;
        self.settle_admin_key().await?;
        // Caught up: what the stream holds after the position is applied before the node
        // says it is up.
        while self.read(&mut pos, false).await? > 0 {}
        self.cluster.set_up(true);
        tracing::info!(seq = pos.seq, "cluster: following the change stream");
        loop {
            self.read(&mut pos, true).await?;
        }
    }

    /// Reads the changes after `pos` (waiting for some, at most [`BLOCK`], when `block`)
    /// and applies them; how many were read.
    async fn read(&mut self, pos: &mut Position, block: bool) -> Result<usize, FollowError> {
        let mut opts = StreamReadOptions::default().count(BATCH);
        if block {
            opts = opts.block(BLOCK.as_millis() as usize);
        }
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[keys::STREAM], &[&pos.id], &opts)
            .await?;
        let entries: Vec<StreamId> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        let n = entries.len();
        for entry in entries {
            let seq: u64 = entry.get("seq").unwrap_or(0);
            if seq != pos.seq + 1 {
                // A gap (changes trimmed away while reading) or a stream started anew:
                // load everything again.
                tracing::warn!(
                    have = pos.seq,
                    next = seq,
                    "cluster: the change stream does not follow on; loading the whole config"
                );
                *pos = self.full_load().await?;
                break;
            }
            *pos = self.apply(pos, entry).await?;
            self.cluster.series.applied.inc();
        }
        self.cluster.applied.send_replace(pos.seq);
        Ok(n)
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Sets the cluster's admin key to this node's when Redis has none, and takes the
    /// cluster's when it differs (kept in the store, so a restart with Redis down keeps
    /// it), unless this node's key is set in its config.
    async fn settle_admin_key(&mut self) -> Result<(), FollowError> {
        let mine = self.cluster.admin_key.load_full();
        let _: Option<String> = redis::cmd("SET")
            .arg(keys::ADMIN_KEY)
            .arg(mine.hash_hex())
            .arg("NX")
            .query_async(&mut self.conn)
            .await?;
        let theirs: Option<String> = self.conn.get(keys::ADMIN_KEY).await?;
        let Some(theirs) = theirs.as_deref().and_then(AdminKey::from_hash_hex) else {
            tracing::warn!(
                "cluster: {} in Redis is not a SHA-256; this node keeps its own admin key",
                keys::ADMIN_KEY
            );
            return Ok(());
        };
        if theirs.hash_hex() == mine.hash_hex() {
            return Ok(());
        }
        if self.cluster.key_configured {
            tracing::warn!(
                "cluster: api.auth_key (or LOGPLEX_AUTH_KEY) is not the cluster's admin key; this node takes only its own"
            );
            return Ok(());
        }
        let keep = theirs.clone();
        self.cluster
            .registry
            .store()
            .call(move |c| crate::admin_key::keep(c, &keep))
            .await?;
        self.cluster.admin_key.store(Arc::new(theirs));
        tracing::warn!(
            "cluster: this node now takes the cluster's admin key; {} no longer holds it: copy admin.key from the first node of the cluster, or set LOGPLEX_AUTH_KEY",
            self.cluster.key_file.display()
        );
        Ok(())
    }

    /// Where to follow from: the replica's position if Redis still has everything after
    /// it; else the whole config loaded again (or Redis filled from the replica when it
    /// holds none).
    async fn sync(&mut self) -> Result<Position, FollowError> {
        let local = self.cluster.registry.store().call(store::position).await?;
        let (epoch, seq): (Option<String>, Option<u64>) = redis::pipe()
            .get(keys::EPOCH)
            .get(keys::SEQ)
            .query_async(self.conn())
            .await?;
        let Some(epoch) = epoch else {
            return self.seed(local).await;
        };
        let Some(local) = local.filter(|p| p.epoch == epoch) else {
            tracing::info!(
                "cluster: this node's replica is not of this cluster's config; loading it whole"
            );
            return self.full_load().await;
        };
        let next: StreamRangeReply = self
            .conn()
            .xrange_count(keys::STREAM, format!("({}", local.id), "+", 1)
            .await?;
        let follows = match next.ids.first() {
            Some(e) => e.get::<u64>("seq") == Some(local.seq + 1),
            None => seq.unwrap_or(0) == local.seq,
        };
        if follows {
            Ok(local)
        } else {
            tracing::info!(
                have = local.seq,
                "cluster: changes since this node's position were trimmed from the stream; loading the whole config"
            );
            self.full_load().await
        }
    }

    /// Fills a Redis that holds no config with this node's replica (its channels, tokens,
    /// drains and rules; ids kept), under a short lock so one node does it; the others
    /// load it once the epoch is set.
    async fn seed(&mut self, local: Option<Position>) -> Result<Position, FollowError> {
        let node = self.cluster.node.clone();
        let got: Option<String> = redis::cmd("SET")
            .arg(keys::SEEDING)
            .arg(&node)
            .arg("NX")
            .arg("EX")
            .arg(30)
            .query_async(self.conn())
            .await?;
        if got.is_none() {
            return Err(FollowError::Other(
                "another node is filling the empty Redis; waiting for it".into(),
            ));
        }
        let (state, max_id) = self
            .cluster
            .registry
            .store()
            .call(|c| Ok((store::state(c)?, store::max_channel_id(c)?)))
            .await?;
        if local.is_some() {
            tracing::warn!(
                channels = state.channels.len(),
                "cluster: Redis holds no config (emptied or replaced?); filling it from this node's replica"
            );
        } else {
            tracing::info!(
                channels = state.channels.len(),
                "cluster: Redis holds no config yet; filling it from this node's store"
            );
        }
        // What a failed seed may have left.
        let old: Vec<String> = self.conn().smembers(keys::CHANNELS).await?;
        for names in old.chunks(LOAD_CHUNK) {
            let mut p = redis::pipe();
            for n in names {
                p.del(&[
                    keys::channel(n),
                    keys::tokens(n),
                    keys::drains(n),
                    keys::alerts(n),
                ])
                .ignore();
            }
            p.query_async::<()>(self.conn()).await?;
        }
        let mut p = redis::pipe();
        p.del(&[keys::CHANNELS, keys::STAR_ALERTS, keys::STREAM, keys::SEQ])
            .ignore();
        p.query_async::<()>(self.conn()).await?;
        let mut drains: HashMap<&str, Vec<&DrainRecord>> = HashMap::new();
        for d in &state.drains {
            drains.entry(d.channel.as_str()).or_default().push(d);
        }
        let mut alerts: HashMap<&str, Vec<&RuleSpec>> = HashMap::new();
        for r in &state.alerts {
            alerts.entry(r.app.as_str()).or_default().push(r);
        }
        for chunk in state.channels.chunks(LOAD_CHUNK) {
            let mut p = redis::pipe();
            for c in chunk {
                p.hset_multiple(
                    keys::channel(&c.name),
                    &[
                        ("id", c.id.to_string()),
                        ("created_at", c.created_at.to_string()),
                        ("metrics", u8::from(c.metrics).to_string()),
                    ],
                )
                .ignore();
                p.sadd(keys::CHANNELS, &c.name).ignore();
                for (n, t) in &c.tokens {
                    p.hset(
                        keys::tokens(&c.name),
                        n,
                        super::json(&TokenValue(t.clone(), c.created_at)),
                    )
                    .ignore();
                }
                for d in drains.get(c.name.as_str()).into_iter().flatten() {
                    let v = DrainValue {
                        token: d.token.clone(),
                        url: d.url.clone(),
                        created_at: d.created_at,
                    };
                    p.hset(keys::drains(&c.name), &d.id, super::json(&v))
                        .ignore();
                }
                for r in alerts.get(c.name.as_str()).into_iter().flatten() {
                    p.hset(keys::alerts(&c.name), &r.name, super::json(r))
                        .ignore();
                }
            }
            p.query_async::<()>(self.conn()).await?;
        }
        let epoch = uuid::Uuid::new_v4().to_string();
        let mut p = redis::pipe();
        for r in alerts.get("*").into_iter().flatten() {
            p.hset(keys::STAR_ALERTS, &r.name, super::json(r)).ignore();
        }
        // Ids go on from the highest either side has given.
        let ids: Option<i64> = self.conn().get(keys::IDS).await?;
        p.set(keys::IDS, ids.unwrap_or(0).max(max_id)).ignore();
        p.set(keys::SEQ, 1).ignore();
        p.cmd("XADD")
            .arg(keys::STREAM)
            .arg("*")
            .arg("seq")
            .arg(1)
            .arg("id")
            .arg(0)
            .arg("node")
            .arg(&node)
            .arg("c")
            .arg(Change::Reload.to_json());
        p.set(keys::EPOCH, &epoch).ignore();
        p.del(keys::SEEDING).ignore();
        let (id,): (String,) = p.atomic().query_async(self.conn()).await?;
        let pos = Position { epoch, seq: 1, id };
        self.install(state, &pos).await?;
        Ok(pos)
    }

    /// Makes `state` the whole of the replica's config (and the snapshot's), at `pos`.
    async fn install(&self, state: State, pos: &Position) -> Result<(), FollowError> {
        self.cluster.series.full_loads.inc();
        let at = pos.clone();
        self.cluster
            .registry
            .change_all(move |c| store::replace_state(c, &state, &at))
            .await?;
        Ok(())
    }

    /// Reads the whole config from Redis and makes it the replica's (and the snapshot's),
    /// at the position of the last change it reflects. Changes made while it reads are
    /// applied again after it, which changes nothing where the read already had them.
    async fn full_load(&mut self) -> Result<Position, FollowError> {
        let t = std::time::Instant::now();
        let (epoch, seq, last, names, star): Head = redis::pipe()
            .atomic()
            .get(keys::EPOCH)
            .get(keys::SEQ)
            .xrevrange_count(keys::STREAM, "+", "-", 1)
            .smembers(keys::CHANNELS)
            .hgetall(keys::STAR_ALERTS)
            .query_async(self.conn())
            .await?;
        let epoch = epoch.ok_or_else(|| FollowError::Other("Redis holds no config".into()))?;
        let pos = match last.ids.first() {
            Some(e) => Position {
                epoch,
                seq: e.get("seq").unwrap_or(0),
                id: e.id.clone(),
            },
            None => Position {
                epoch,
                seq: seq.unwrap_or(0),
                id: "0-0".into(),
            },
        };
        let mut state = State::default();
        for (_, v) in star {
            match serde_json::from_str::<RuleSpec>(&v) {
                Ok(r) => state.alerts.push(r),
                Err(e) => tracing::warn!("cluster: a rule on every app in Redis is left out: {e}"),
            }
        }
        let mut names = names;
        names.sort();
        for chunk in names.chunks(LOAD_CHUNK) {
            let mut p = redis::pipe();
            for n in chunk {
                p.hgetall(keys::channel(n))
                    .hgetall(keys::tokens(n))
                    .hgetall(keys::drains(n))
                    .hgetall(keys::alerts(n));
            }
            type Hash = HashMap<String, String>;
            let got: Vec<(Hash, Hash, Hash, Hash)> = {
                let flat: Vec<Hash> = p.query_async(self.conn()).await?;
                let mut it = flat.into_iter();
                let mut out = Vec::with_capacity(chunk.len());
                while let (Some(a), Some(b), Some(c), Some(d)) =
                    (it.next(), it.next(), it.next(), it.next())
                {
                    out.push((a, b, c, d));
                }
                out
            };
            for (name, (ch, toks, drains, alerts)) in chunk.iter().zip(got) {
                // Destroyed since the names were read.
                let Some(rec) = channel_record(name, &ch, &toks) else {
                    continue;
                };
                state.channels.push(rec);
                for (id, v) in drains {
                    if let Ok(v) = serde_json::from_str::<DrainValue>(&v) {
                        state.drains.push(DrainRecord {
                            id,
                            channel: name.clone(),
                            token: v.token,
                            url: v.url,
                            created_at: v.created_at,
                        });
                    }
                }
                for (_, v) in alerts {
                    if let Ok(r) = serde_json::from_str::<RuleSpec>(&v) {
                        state.alerts.push(r);
                    }
                }
            }
        }
        state.drains.sort_by(|a, b| {
            (&a.channel, a.created_at, &a.id).cmp(&(&b.channel, b.created_at, &b.id))
        });
        state
            .alerts
            .sort_by(|a, b| (&a.app, &a.name).cmp(&(&b.app, &b.name)));
        let n = state.channels.len();
        self.install(state, &pos).await?;
        tracing::info!(
            channels = n,
            seq = pos.seq,
            took_ms = t.elapsed().as_millis() as u64,
            "cluster: loaded the whole config from Redis"
        );
        Ok(pos)
    }

    /// Applies one change to the replica and the snapshot; the new position.
    async fn apply(&mut self, pos: &Position, entry: StreamId) -> Result<Position, FollowError> {
        let next = Position {
            epoch: pos.epoch.clone(),
            seq: pos.seq + 1,
            id: entry.id.clone(),
        };
        let id: i64 = entry.get("id").unwrap_or(0);
        let text: String = entry.get("c").unwrap_or_default();
        let change: Change = match serde_json::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                // Written by a newer version, perhaps: skipped, loudly, and the position
                // kept moving so the rest still applies.
                tracing::error!(
                    seq = next.seq,
                    "cluster: a change this node cannot read is skipped: {e}"
                );
                let at = next.clone();
                self.cluster
                    .registry
                    .change(None, move |c| {
                        store::replicate(c, ReplicaWrite::Nothing, &at)
                    })
                    .await?;
                return Ok(next);
            }
        };
        let reg = &self.cluster.registry;
        let at = next.clone();
        match change {
            Change::Create {
                name,
                created_at,
                metrics,
                tokens,
            } => {
                let rec = ChannelRecord {
                    id,
                    name: name.clone(),
                    tokens,
                    created_at,
                    metrics,
                };
                reg.change(Some(&name), move |c| {
                    store::replicate(c, ReplicaWrite::Channel(&rec), &at)
                })
                .await?;
            }
            Change::Declare { name } => {
                let (ch, toks): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
                    .hgetall(keys::channel(&name))
                    .hgetall(keys::tokens(&name))
                    .query_async(self.conn())
                    .await?;
                // Destroyed since: a later change says so.
                match channel_record(&name, &ch, &toks).filter(|r| r.id == id) {
                    Some(rec) => {
                        reg.change(Some(&name), move |c| {
                            store::replicate(c, ReplicaWrite::Channel(&rec), &at)
                        })
                        .await?
                    }
                    None => {
                        reg.change(None, move |c| {
                            store::replicate(c, ReplicaWrite::Nothing, &at)
                        })
                        .await?
                    }
                }
            }
            Change::Destroy { name } => {
                let n = name.clone();
                reg.change(Some(&name), move |c| {
                    store::replicate(c, ReplicaWrite::Destroy { name: &n, id }, &at)
                })
                .await?;
            }
            Change::Token {
                channel,
                name,
                token,
                created_at,
            } => {
                let ch = channel.clone();
                reg.change(Some(&channel), move |c| {
                    let w = ReplicaWrite::Token {
                        channel: &ch,
                        id,
                        name: &name,
                        token: &token,
                        created_at,
                    };
                    store::replicate(c, w, &at)
                })
                .await?;
            }
            Change::Metrics { channel, on } => {
                let ch = channel.clone();
                reg.change(Some(&channel), move |c| {
                    let w = ReplicaWrite::Metrics {
                        channel: &ch,
                        id,
                        on,
                    };
                    store::replicate(c, w, &at)
                })
                .await?;
            }
            Change::Drain {
                channel,
                drain,
                token,
                url,
                created_at,
            } => {
                let d = DrainRecord {
                    id: drain,
                    channel,
                    token,
                    url,
                    created_at,
                };
                reg.change(None, move |c| {
                    store::replicate(c, ReplicaWrite::Drain { drain: &d, id }, &at)
                })
                .await?;
            }
            Change::Undrain { drain, .. } => {
                reg.change(None, move |c| {
                    store::replicate(c, ReplicaWrite::Undrain { drain: &drain }, &at)
                })
                .await?;
            }
            Change::Alert { rule } => {
                let id = (rule.app != "*").then_some(id);
                reg.change(None, move |c| {
                    store::replicate(c, ReplicaWrite::Alert { rule: &rule, id }, &at)
                })
                .await?;
            }
            Change::Unalert { app, name } => {
                reg.change(None, move |c| {
                    store::replicate(
                        c,
                        ReplicaWrite::Unalert {
                            app: &app,
                            name: &name,
                        },
                        &at,
                    )
                })
                .await?;
            }
            Change::Reload => return self.full_load().await,
        }
        Ok(next)
    }
}

/// A channel as Redis holds it (its hash and its tokens'), `None` when it has no id (gone).
fn channel_record(
    name: &str,
    ch: &HashMap<String, String>,
    toks: &HashMap<String, String>,
) -> Option<ChannelRecord> {
    let id: i64 = ch.get("id")?.parse().ok()?;
    let mut tokens: Vec<(i64, String, String)> = toks
        .iter()
        .filter_map(|(n, v)| {
            let TokenValue(t, at) = serde_json::from_str(v).ok()?;
            Some((at, n.clone(), t))
        })
        .collect();
    tokens.sort();
    Some(ChannelRecord {
        id,
        name: name.to_string(),
        tokens: tokens.into_iter().map(|(_, n, t)| (n, t)).collect(),
        created_at: ch
            .get("created_at")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        metrics: ch.get("metrics").is_some_and(|v| v == "1"),
    })
}
