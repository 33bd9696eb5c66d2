//! Cluster mode on Redis (`[cluster] redis`; `docs/cluster.md`). Redis is the source of
//! truth for the config (channels, tokens, drains, alert rules); each node keeps its store
//! as a replica of it and its routing snapshot built from that, so the hot path never
//! waits on Redis (Heroku's Logplex did the same with nsync, replicating Redis into ETS).
//!
//! A change asked of any node is decided in Redis by one script (`scripts.rs`) that
//! writes the object's keys and appends the change to one stream; every node, this one
//! included, follows the stream (`follow.rs`) and writes each change into its replica and
//! snapshot ([`Registry::change`]), saving its position in the same transaction, so a
//! restart or a reconnect resumes where it stopped and misses nothing (unlike pub/sub).
//! The asking node answers once its own follower has applied the change, so what it
//! answers it also serves.
//!
//! Every node takes the cluster's admin key (its hash in Redis, set by the first node that
//! reaches it) unless its own is set in its config.
//!
//! The Redis is one server or a Redis Cluster ([`Redis`], [`Conn`]: one connection type
//! for both). On a Redis Cluster every config key shares the slot of the tag `{cfg}`, so
//! a change is still one script; each channel's log stream has its own slot.
//!
//! Redis down: a change answers 503 (`Retry-After`), everything else (ingest, sessions,
//! tails, drains) goes on from the replica, the healthcheck says `degraded`, and the
//! follower reconnects by itself and catches up.

pub mod alerts;
mod change;
pub mod drains;
mod feed;
mod follow;
pub mod keys;
pub mod logs;
mod publish;
mod scripts;
pub mod sessions;

pub use change::Change;

use crate::admin_key::AdminKey;
use crate::alert::RuleSpec;
use crate::config::Config;
use crate::registry::Registry;
use crate::store::{AddDrain, ChannelRecord, DrainRecord, StoreError};
use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The `Retry-After` of a change refused while Redis cannot be reached.
pub const RETRY_AFTER_SECS: u64 = 2;

/// How long the asking node waits for its follower to apply a change it made before it
/// answers anyway (the change is made; only this node's view lags).
const APPLY_WAIT: Duration = Duration::from_secs(5);
/// How long a lookup that missed waits for the changes Redis already holds
/// ([`Cluster::catch_up`]).
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// The cluster's Redis: one server, or a Redis Cluster reached through its seed nodes
/// (`cluster.redis` a list). Every part of the cluster connects through this.
#[derive(Clone)]
pub enum Redis {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// A connection to the cluster's Redis, multiplexed (cloned to share it). On a Redis
/// Cluster it routes each command to the master of its key's slot and follows `MOVED` and
/// `ASK`; a pipeline or a script must then keep to one slot (see `docs/cluster.md`).
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    /// The group of a round's commands that channel `channel`'s go in: on a Redis Cluster
    /// its slot (a pipeline that crosses slots is refused there), on a single Redis one
    /// group for all.
    pub fn group(&self, channel: &str) -> u16 {
        match self {
            Conn::Single(_) => 0,
            Conn::Cluster(_) => keys::channel_slot(channel),
        }
    }

    /// Sends `pipes` (each within one [`group`](Conn::group)) at once, each on its own
    /// handle of this connection; the answers in the same order.
    pub async fn query_each<T: redis::FromRedisValue>(
        &self,
        pipes: Vec<redis::Pipeline>,
    ) -> Vec<redis::RedisResult<T>> {
        futures_util::future::join_all(pipes.into_iter().map(|p| {
            let mut conn = self.clone();
            async move { p.query_async(&mut conn).await }
        }))
        .await
    }
}

/// How long a connection may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

impl Redis {
    /// The Redis of `cluster.redis` (already validated).
    pub fn open(at: &crate::config::RedisAt) -> redis::RedisResult<Redis> {
        Ok(match at {
            crate::config::RedisAt::One(url) => Redis::Single(redis::Client::open(url.as_str())?),
            crate::config::RedisAt::Cluster(seeds) => Redis::Cluster(
                redis::cluster::ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                    // A master gone fails a command after about a second, not after the
                    // client's default 16 tries: a change answers 503 while it is away.
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(500)
                    .build()?,
            ),
        })
    }

    /// A new connection whose replies may take at most `response` (for a blocking read:
    /// its block and a little more). A blocking read needs a connection of its own: Redis
    /// answers nothing else on it meanwhile (on a Redis Cluster, the new connection's link
    /// to the master of the key's slot).
    pub async fn connect(&self, response: Duration) -> redis::RedisResult<Conn> {
        Ok(match self {
            Redis::Single(c) => {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(response);
                Conn::Single(c.get_multiplexed_async_connection_with_config(&cfg).await?)
            }
            Redis::Cluster(c) => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(response);
                Conn::Cluster(c.get_async_connection_with_config(cfg).await?)
            }
        })
    }

    /// Is it a Redis Cluster?
    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// One node's part of the cluster: the connection changes are written through, and the
/// follower's state.
pub struct Cluster {
    client: Redis,
    /// Written with every change (for people reading the stream).
    node: String,
    changes_kept: u64,
    registry: Arc<Registry>,
    /// The connection changes are written through; dropped on a connection error and made
    /// again by the next change.
    writer: ArcSwapOption<Conn>,
    scripts: scripts::Scripts,
    /// The last change applied to the replica (its `seq`).
    applied: watch::Sender<u64>,
    /// The follower is connected and caught up.
    up: AtomicBool,
    /// Channels declared in this node's config, written through Redis once it is reached.
    declared: Vec<crate::config::ChannelConfig>,
    /// What the API checks keys against: the cluster's key once Redis is reached.
    admin_key: Arc<ArcSwap<AdminKey>>,
    /// The key is set in this node's config (`api.auth_key`, `LOGPLEX_AUTH_KEY`): kept
    /// even when the cluster's differs.
    key_configured: bool,
    /// This node's `admin.key`, named in the warning when the cluster's key replaces it.
    key_file: std::path::PathBuf,
    series: Series,
    /// The tap that puts this node's lines into their channels' log streams.
    publisher: Arc<publish::Publisher>,
    /// The publisher tasks' ends of their queues, taken when the tasks start.
    publish_queues: std::sync::Mutex<Vec<publish::Queue>>,
    /// `buffers.history_lines`: what a channel's log stream keeps, about.
    history_lines: usize,
    /// The tails of channels' log streams this node follows, one reader per channel.
    pub feeds: feed::Feeds,
}

/// The cluster's Prometheus series, registered once when the node starts.
struct Series {
    /// `logplex_cluster_up`: 1 while connected to Redis and caught up.
    up: prometheus::IntGauge,
    /// `logplex_cluster_changes_applied_total`: changes of the stream applied here.
    applied: prometheus::IntCounter,
    /// `logplex_cluster_full_loads_total`: the whole config loaded (or Redis filled).
    full_loads: prometheus::IntCounter,
    /// `logplex_cluster_changes_refused_total`: changes answered 503 (Redis not reached).
    unavailable: prometheus::IntCounter,
}

impl Series {
    fn new(metrics: &crate::metrics::Metrics) -> Series {
        let counter = |name: &str, help: &str| {
            let c = prometheus::IntCounter::new(name, help).expect("static metric definition");
            metrics.register(Box::new(c.clone()));
            c
        };
        let up = prometheus::IntGauge::new(
            "logplex_cluster_up",
            "1 while this node is connected to the cluster's Redis and caught up with its changes",
        )
        .expect("static metric definition");
        metrics.register(Box::new(up.clone()));
        Series {
            up,
            applied: counter(
                "logplex_cluster_changes_applied_total",
                "Config changes of the cluster's stream applied on this node",
            ),
            full_loads: counter(
                "logplex_cluster_full_loads_total",
                "Times this node loaded the cluster's whole config (or filled an empty Redis)",
            ),
            unavailable: counter(
                "logplex_cluster_changes_refused_total",
                "Config changes answered 503 because Redis could not be reached",
            ),
        }
    }
}

/// What a script answered.
enum Decided {
    /// Made: its change number and its channel's id (0 for none).
    Made { seq: u64, id: i64 },
    /// Refused: `conflict`, `not_found`, `duplicate` or `limit`, when the last change
    /// made was `seq`.
    Refused(String, u64),
}

impl Cluster {
    /// The cluster of `config` (`None` when `[cluster] redis` is not set). Nothing is
    /// connected until [`Cluster::start`].
    pub fn new(
        config: &Config,
        api_port: u16,
        registry: Arc<Registry>,
        admin_key: &Arc<ArcSwap<AdminKey>>,
        metrics: &crate::metrics::Metrics,
    ) -> anyhow::Result<Option<Arc<Cluster>>> {
        let c = &config.cluster;
        if !c.on() {
            return Ok(None);
        }
        let client = Redis::open(&c.redis)
            .map_err(|e| anyhow::anyhow!("cluster.redis {:?}: {e}", c.redis.urls()))?;
        let node = if c.node.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            let host = if host.is_empty() {
                "logplex".into()
            } else {
                host
            };
            format!("{host}:{api_port}")
        } else {
            c.node.clone()
        };
        let (publisher, queues) = publish::Publisher::new(metrics, c.log_queue_bytes, c.publishers);
        Ok(Some(Arc::new(Cluster {
            feeds: feed::Feeds::new(client.clone()),
            publisher,
            publish_queues: std::sync::Mutex::new(queues),
            history_lines: config.buffers.history_lines,
            client,
            node,
            changes_kept: c.changes_kept,
            registry,
            writer: ArcSwapOption::empty(),
            scripts: scripts::Scripts::new(),
            applied: watch::Sender::new(0),
            up: AtomicBool::new(false),
            declared: config.channels.clone(),
            admin_key: admin_key.clone(),
            key_configured: !config.api.auth_key.is_empty(),
            key_file: config.store.data_dir().join(crate::datadir::KEY_FILE),
            series: Series::new(metrics),
        })))
    }

    /// Starts following the change stream (a task on `tasks`, ended by `shutdown`) and
    /// waits, at most `wait`, until the replica has caught up, so that a node starting with
    /// Redis reachable serves the cluster's config from its first request. With Redis
    /// down, the node starts from its replica, degraded.
    pub async fn start(
        self: &Arc<Self>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
        wait: Duration,
    ) {
        let mut ready = self.applied.subscribe();
        tasks.spawn(follow::run(self.clone(), shutdown.clone()));
        let queues = std::mem::take(
            &mut *self
                .publish_queues
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        // The publishers run on a thread of their own (a current-thread runtime): on the
        // node's runtime, while ingest kept its workers busy, they hardly ran until
        // ingest paused, and their queue overflowed (`docs/cluster.md`, measured).
        let runs: Vec<_> = queues
            .into_iter()
            .map(|queue| {
                publish::run(
                    self.publisher.clone(),
                    queue,
                    self.client.clone(),
                    self.node.clone(),
                    self.history_lines,
                    shutdown.clone(),
                )
            })
            .collect();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|rt| {
                std::thread::Builder::new()
                    .name("logplex-publish".into())
                    .spawn(move || {
                        rt.block_on(futures_util::future::join_all(runs));
                        let _ = done_tx.send(());
                    })
            });
        match thread {
            // Tracked, so the node's stop waits for the last round.
            Ok(_) => {
                tasks.spawn(async move {
                    let _ = done_rx.await;
                });
            }
            Err(e) => tracing::error!(
                "cluster: cannot start the publishers' thread ({e}); lines stay on this node"
            ),
        }
        self.feeds.start(tasks, shutdown);
        let me = self.clone();
        let caught_up = async move {
            while !me.is_up() {
                if ready.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(wait, caught_up).await.is_err() {
            tracing::warn!(
                "cluster: Redis not reached within {wait:?}; serving the config of this node's replica until it is"
            );
        }
        if !self.declared.is_empty() {
            tasks.spawn(self.clone().declare_all(shutdown.clone()));
        }
    }

    /// The tap every channel carries: its lines go into its log stream in Redis.
    pub fn tap(&self) -> Arc<dyn crate::channel::Tap> {
        self.publisher.clone()
    }

    /// A connection for reads that do not block (history, sessions): the writer's.
    pub async fn reader(&self) -> redis::RedisResult<Conn> {
        if let Some(c) = self.writer.load_full() {
            return Ok((*c).clone());
        }
        let c = self.client.connect(Duration::from_secs(3)).await?;
        self.writer.store(Some(Arc::new(c.clone())));
        Ok(c)
    }

    /// Drops the shared connection after it failed, so the next use makes a new one.
    pub fn reader_failed(&self) {
        self.writer.store(None);
    }

    /// This node's name in the cluster (`cluster.node`, or HOSTNAME:API_PORT).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Connected to Redis and caught up with the change stream.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        self.series.up.set(i64::from(up));
        // Wake whoever waits for the first catch-up.
        self.applied.send_modify(|_| {});
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> StoreError {
        tracing::warn!("cluster: cannot write a change to Redis: {why}");
        self.series.unavailable.inc();
        StoreError::Unavailable(format!(
            "The cluster's config store (Redis) cannot be reached, so nothing can be changed \
             now (logs still flow); retry in {RETRY_AFTER_SECS} s."
        ))
    }

    /// The connection changes are written through, made when there is none.
    async fn writer(&self) -> Result<Conn, StoreError> {
        self.reader().await.map_err(|e| self.unavailable(e))
    }

    /// Runs `script` with the op's `keys` and `args` (after the common ones), then waits
    /// until this node's follower has applied the change.
    async fn decide(
        &self,
        script: &scripts::Lua,
        keys: &[String],
        change: &Change,
        args: &[String],
    ) -> Result<Decided, StoreError> {
        let mut conn = self.writer().await?;
        let mut all_keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        all_keys.extend([keys::EPOCH, keys::SEQ, keys::STREAM]);
        let (kept, json) = (self.changes_kept.to_string(), change.to_json());
        let mut all_args: Vec<&[u8]> = vec![kept.as_bytes(), self.node.as_bytes(), json.as_bytes()];
        all_args.extend(args.iter().map(String::as_bytes));
        let answer: Value = match script.run(&mut conn, &all_keys, &all_args).await {
            Ok(v) => v,
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.writer.store(None);
                }
                return Err(self.unavailable(e));
            }
        };
        let decided = parse(answer).ok_or_else(|| {
            StoreError::Cluster("a change was answered in an unexpected form".into())
        })?;
        match &decided {
            Decided::Refused(why, _) if why == "unseeded" => {
                return Err(StoreError::Unavailable(format!(
                    "The cluster's config store (Redis) is being filled by a node; retry in \
                     {RETRY_AFTER_SECS} s."
                )))
            }
            Decided::Made { seq, .. } | Decided::Refused(_, seq) => self.wait_applied(*seq).await,
        }
        Ok(decided)
    }

    /// Waits until this node has applied every change Redis holds now (at most
    /// 1 s in all), so that a lookup which missed here sees a change another
    /// node answered a moment ago: a client that creates an app through one node and at
    /// once asks another about it finds it. Redis away, or not caught up after a reconnect:
    /// returns at once (the replica is what there is).
    pub async fn catch_up(&self) {
        if !self.is_up() {
            return;
        }
        let last = async {
            let mut conn = self.reader().await.ok()?;
            let seq: Option<u64> = redis::AsyncCommands::get(&mut conn, keys::SEQ).await.ok()?;
            seq
        };
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        let Ok(Some(seq)) = tokio::time::timeout_at(deadline, last).await else {
            return;
        };
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|s| *s >= seq)).await;
    }

    /// Waits (at most [`APPLY_WAIT`]) until the replica holds change `seq`.
    async fn wait_applied(&self, seq: u64) {
        let mut rx = self.applied.subscribe();
        let applied = tokio::time::timeout(APPLY_WAIT, rx.wait_for(|s| *s >= seq)).await;
        if !matches!(applied, Ok(Ok(_))) {
            tracing::warn!(
                seq,
                "cluster: change made in Redis but not yet applied here after {APPLY_WAIT:?}"
            );
        }
    }

    /// `POST /v2/channels`: a channel with new tokens of `token_names`.
    pub async fn create_channel(
        &self,
        name: &str,
        token_names: &[String],
        metrics: bool,
    ) -> Result<ChannelRecord, StoreError> {
        let created_at = crate::clock::now_secs();
        let tokens: Vec<(String, String)> = token_names
            .iter()
            .map(|n| (n.clone(), format!("t.{}", uuid::Uuid::new_v4())))
            .collect();
        let change = Change::Create {
            name: name.into(),
            created_at,
            metrics,
            tokens: tokens.clone(),
        };
        let mut args = vec![
            name.to_string(),
            created_at.to_string(),
            u8::from(metrics).to_string(),
        ];
        for (n, t) in &tokens {
            args.push(n.clone());
            args.push(json(&keys::TokenValue(t.clone(), created_at)));
        }
        let k = [
            keys::channel(name),
            keys::tokens(name),
            keys::CHANNELS.into(),
            keys::IDS.into(),
        ];
        match self
            .decide(&self.scripts.create, &k, &change, &args)
            .await?
        {
            Decided::Made { id, .. } => Ok(ChannelRecord {
                id,
                name: name.into(),
                tokens,
                created_at,
                metrics,
            }),
            Decided::Refused(why, _) => Err(refused(&why)),
        }
    }

    /// A channel of this node's config: made if missing, its fixed tokens set, its
    /// metrics flag set when the config says.
    async fn declare(&self, ch: &crate::config::ChannelConfig) -> Result<(), StoreError> {
        let created_at = crate::clock::now_secs();
        let change = Change::Declare {
            name: ch.name.clone(),
        };
        let mut args = vec![
            ch.name.clone(),
            created_at.to_string(),
            ch.metrics
                .map_or(String::new(), |m| u8::from(m).to_string()),
        ];
        for (n, t) in &ch.tokens {
            args.push(n.clone());
            args.push(json(&keys::TokenValue(t.clone(), created_at)));
        }
        let k = [
            keys::channel(&ch.name),
            keys::tokens(&ch.name),
            keys::CHANNELS.into(),
            keys::IDS.into(),
        ];
        if let Decided::Refused(why, _) = self
            .decide(&self.scripts.declare, &k, &change, &args)
            .await?
        {
            return Err(refused(&why));
        }
        for url in &ch.drains {
            match self.add_drain(&ch.name, url, usize::MAX).await? {
                Ok(_) | Err(AddDrain::Duplicate) | Err(AddDrain::Limit(_)) => {}
                Err(AddDrain::Store(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes the channels of this node's config through Redis (retried until Redis takes
    /// them or the node stops).
    async fn declare_all(self: Arc<Self>, shutdown: CancellationToken) {
        for ch in &self.declared {
            loop {
                match self.declare(ch).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(channel = %ch.name, "cluster: cannot declare a config channel yet: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(RETRY_AFTER_SECS)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
            }
        }
    }

    /// `DELETE /v2/channels/NAME`.
    pub async fn destroy_channel(&self, name: &str) -> Result<(), StoreError> {
        let change = Change::Destroy { name: name.into() };
        let k = [
            keys::channel(name),
            keys::tokens(name),
            keys::drains(name),
            keys::alerts(name),
            keys::CHANNELS.into(),
        ];
        match self
            .decide(&self.scripts.destroy, &k, &change, &[name.into()])
            .await?
        {
            Decided::Made { .. } => {
                // Its log stream goes too (best effort: readers skip the entries of a
                // channel id that is not theirs anyway).
                if let Ok(mut conn) = self.reader().await {
                    let _: redis::RedisResult<i64> =
                        redis::AsyncCommands::del(&mut conn, keys::log(name)).await;
                }
                Ok(())
            }
            Decided::Refused(why, _) => Err(refused(&why)),
        }
    }

    /// `POST /v2/channels/NAME/tokens`: the new token.
    pub async fn create_token(&self, channel: &str, name: &str) -> Result<String, StoreError> {
        let token = format!("t.{}", uuid::Uuid::new_v4());
        let created_at = crate::clock::now_secs();
        let change = Change::Token {
            channel: channel.into(),
            name: name.into(),
            token: token.clone(),
            created_at,
        };
        let k = [keys::channel(channel), keys::tokens(channel)];
        let args = [
            name.to_string(),
            json(&keys::TokenValue(token.clone(), created_at)),
        ];
        match self.decide(&self.scripts.token, &k, &change, &args).await? {
            Decided::Made { .. } => Ok(token),
            Decided::Refused(why, _) => Err(refused(&why)),
        }
    }

    /// `PATCH /v2/channels/NAME {"metrics"}`: the channel as now stored.
    pub async fn set_metrics(&self, channel: &str, on: bool) -> Result<ChannelRecord, StoreError> {
        let change = Change::Metrics {
            channel: channel.into(),
            on,
        };
        let k = [keys::channel(channel)];
        let args = [u8::from(on).to_string()];
        match self
            .decide(&self.scripts.metrics, &k, &change, &args)
            .await?
        {
            Decided::Made { .. } => {
                let snap = self.registry.snapshot();
                let mut rec = snap.record(channel).ok_or(StoreError::NotFound)?;
                rec.metrics = on;
                Ok(rec)
            }
            Decided::Refused(why, _) => Err(refused(&why)),
        }
    }

    /// `POST /v2/channels/NAME/drains`, as [`crate::store::create_drain`] answers it.
    pub async fn add_drain(
        &self,
        channel: &str,
        url: &str,
        max: usize,
    ) -> Result<Result<DrainRecord, AddDrain>, StoreError> {
        let d = DrainRecord {
            id: uuid::Uuid::new_v4().to_string(),
            channel: channel.into(),
            token: format!("d.{}", uuid::Uuid::new_v4()),
            url: url.into(),
            created_at: crate::clock::now_secs(),
        };
        let change = Change::Drain {
            channel: channel.into(),
            drain: d.id.clone(),
            token: d.token.clone(),
            url: d.url.clone(),
            created_at: d.created_at,
        };
        let value = keys::DrainValue {
            token: d.token.clone(),
            url: d.url.clone(),
            created_at: d.created_at,
        };
        let k = [keys::channel(channel), keys::drains(channel)];
        let args = [d.id.clone(), json(&value), d.url.clone(), max.to_string()];
        Ok(
            match self.decide(&self.scripts.drain, &k, &change, &args).await? {
                Decided::Made { .. } => Ok(d),
                Decided::Refused(why, _) => Err(match why.as_str() {
                    "duplicate" => AddDrain::Duplicate,
                    "limit" => AddDrain::Limit(max),
                    _ => AddDrain::Store(refused(&why)),
                }),
            },
        )
    }

    /// `DELETE /v2/channels/NAME/drains/WHICH` (its id, token or URL, as
    /// [`DrainRecord::matches`] says): the drain removed.
    pub async fn remove_drain(
        &self,
        channel: &str,
        which: &str,
    ) -> Result<DrainRecord, StoreError> {
        let mut conn = self.writer().await?;
        let all: std::collections::HashMap<String, String> =
            redis::AsyncCommands::hgetall(&mut conn, keys::drains(channel))
                .await
                .map_err(|e| {
                    self.writer.store(None);
                    self.unavailable(e)
                })?;
        let d = all
            .into_iter()
            .filter_map(|(id, v)| {
                let v: keys::DrainValue = serde_json::from_str(&v).ok()?;
                Some(DrainRecord {
                    id,
                    channel: channel.into(),
                    token: v.token,
                    url: v.url,
                    created_at: v.created_at,
                })
            })
            .find(|d| d.matches(which))
            .ok_or(StoreError::NotFound)?;
        let change = Change::Undrain {
            channel: channel.into(),
            drain: d.id.clone(),
        };
        let k = [keys::channel(channel), keys::drains(channel)];
        match self
            .decide(
                &self.scripts.undrain,
                &k,
                &change,
                std::slice::from_ref(&d.id),
            )
            .await?
        {
            Decided::Made { .. } => Ok(d),
            Decided::Refused(why, _) => Err(refused(&why)),
        }
    }

    /// `POST /v2/channels/NAME/alerts` (already validated).
    pub async fn add_alert(&self, rule: &RuleSpec) -> Result<(), StoreError> {
        let star = rule.app == "*";
        let change = Change::Alert { rule: rule.clone() };
        let k = if star {
            [keys::STAR_ALERTS.to_string(), keys::STAR_ALERTS.to_string()]
        } else {
            [keys::channel(&rule.app), keys::alerts(&rule.app)]
        };
        let args = [
            rule.name.clone(),
            json(rule),
            if star { "1" } else { "0" }.to_string(),
        ];
        match self.decide(&self.scripts.alert, &k, &change, &args).await? {
            Decided::Made { .. } => Ok(()),
            Decided::Refused(why, _) => Err(refused(&why)),
        }
    }

    /// `DELETE /v2/channels/NAME/alerts/ALERT`: whether there was such a rule.
    pub async fn remove_alert(&self, app: &str, name: &str) -> Result<bool, StoreError> {
        let change = Change::Unalert {
            app: app.into(),
            name: name.into(),
        };
        let k = [if app == "*" {
            keys::STAR_ALERTS.to_string()
        } else {
            keys::alerts(app)
        }];
        match self
            .decide(&self.scripts.unalert, &k, &change, &[name.into()])
            .await?
        {
            Decided::Made { .. } => Ok(true),
            Decided::Refused(why, _) if why == "not_found" => Ok(false),
            Decided::Refused(why, _) => Err(refused(&why)),
        }
    }
}

/// A script's refusal as the store words it.
fn refused(why: &str) -> StoreError {
    match why {
        "conflict" | "duplicate" => StoreError::Conflict,
        "not_found" => StoreError::NotFound,
        other => StoreError::Cluster(format!("a change was refused: {other}")),
    }
}

/// `{"ok", seq, id}` or `{reason, seq}`.
fn parse(v: Value) -> Option<Decided> {
    let Value::Array(items) = v else {
        return None;
    };
    let word: String = redis::from_redis_value(items.first()?).ok()?;
    if word != "ok" {
        let seq: u64 = redis::from_redis_value(items.get(1)?).ok()?;
        return Some(Decided::Refused(word, seq));
    }
    let seq: u64 = redis::from_redis_value(items.get(1)?).ok()?;
    let id: i64 = redis::from_redis_value(items.get(2)?).ok()?;
    Some(Decided::Made { seq, id })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Plain data: serialising cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}
