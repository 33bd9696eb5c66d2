//! A running node: [`Node`], the state every part of the server shares, and [`start`],
//! which builds it in named phases, each a function below, in this order:
//!
//! 1. `lock_and_bind`: lock the data directory, bind every listener (nothing stored is
//!    touched before, so a start that fails on a taken port leaves the saved state alone);
//! 2. `open_store`: make the data directory private, open and migrate the store, settle
//!    the admin key, write the channels declared in config;
//! 3. `open_log`: open and recover the durable log (unless it is off);
//! 4. [`Registry::load`]: the routing snapshot from the store, channels writing to the log;
//! 5. `restore_history`: the rings refilled from the log (or from the history saved at
//!    the last stop when the log is off), saved metric roll-ups back into their channels;
//! 6. `start_outputs`: drains and alert rules (and, in cluster mode, the tap that puts
//!    lines into their channels' log streams in Redis), attached to the registry
//!    ([`Registry::attach`]);
//! 7. in cluster mode, [`Cluster::start`]: the replica follows Redis's change stream
//!    (caught up before serving when Redis answers);
//! 8. `serve`: intake and API tasks on the bound listeners.
//!
//! [`Server::wait`] stops in the reverse order: intake, then drains flush, then the API and
//! sessions, then metric roll-ups are saved, the log is closed (or, without it, history
//! saved), the channels are let go (freed on a thread of their own: [`Registry::release`])
//! and the lock released.

use crate::alert::Alerts;
use crate::channel::Limits;
use crate::cluster::Cluster;
use crate::config::{Config, Listen};
use crate::conns::{self, Caps};
use crate::drain::Drains;
use crate::line::Line;
use crate::log::{self, Log, Recovery};
use crate::metrics::Metrics;
use crate::registry::{Outputs, Registry};
use crate::store::{self, Store};
use crate::{admin_key, api, body, datadir, http, ingest, session};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The application state of a running node, shared by the API, intake and sessions.
pub struct Node {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub sessions: session::Sessions,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// What API requests are checked against (the key's hash). In cluster mode the
    /// cluster's key replaces this node's own when they differ.
    pub admin_key: Arc<ArcSwap<admin_key::AdminKey>>,
    pub api_addr: SocketAddr,
    /// The base of session URLs (`api.public_url`, or `http://` + `api_addr`).
    pub public_url: String,
    /// Where the HTTP log input is bound, if it is on (a drain to it may be a loop).
    pub http_addr: Option<SocketAddr>,
    /// The running drains, for their status.
    pub drains: Arc<Drains>,
    /// The alert rules, for their firing state.
    pub alerts: Arc<Alerts>,
    /// The deadline and shared byte budget of request bodies.
    pub bodies: body::Bodies,
    /// The durable log, `None` when `[log] path = "off"`.
    pub log: Option<Arc<Log>>,
    /// Cluster mode (`[cluster] redis`): config changes are made through Redis. `None`:
    /// a single node, changes made in the store directly.
    pub cluster: Option<Arc<Cluster>>,
}

impl Node {
    /// Before answering that channel `name` does not exist: in cluster mode, when this
    /// node does not know it, waits for the changes Redis already holds (at most 1 s), as
    /// it may have been made through another node a moment ago.
    pub async fn catch_up_on(&self, name: &str) {
        if let Some(c) = &self.cluster {
            if self.registry.snapshot().channel(name).is_none() {
                c.catch_up().await;
            }
        }
    }

    /// `normal`, or `degraded` while the durable log cannot write (lines still reach the
    /// rings, tails and drains, but are not kept) or, in cluster mode, while Redis cannot
    /// be reached (the config cannot change; everything else goes on).
    pub fn health(&self) -> &'static str {
        if self.cluster.as_ref().is_some_and(|c| !c.is_up()) {
            return "degraded";
        }
        match self.log.as_ref().map(|l| l.health()) {
            Some(crate::log::Health::Degraded { .. }) => "degraded",
            _ => "normal",
        }
    }
}

/// The addresses actually bound (port 0 in the config becomes a real port here).
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub api: SocketAddr,
    pub http: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
}

/// A started server.
pub struct Server {
    pub addrs: Addrs,
    node: Arc<Node>,
    /// Intake (listeners and their connections), stopped first on shutdown.
    intake: TaskTracker,
    /// Cancelled once intake has stopped: drains flush then.
    after_intake: CancellationToken,
    /// The data directory's lock, released once history is saved.
    lock: datadir::DirLock,
}

/// How long a node in cluster mode waits at start for its replica to catch up with Redis
/// before it serves from the replica as it is (degraded).
const CLUSTER_START_WAIT: Duration = Duration::from_secs(3);

/// Runs the router until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Starts a node in the phases of the module's documentation and returns once every
/// listener is serving. `config` has been validated by [`Config::load`].
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let metrics = Arc::new(Metrics::new());
    let bound = lock_and_bind(&config).await?;
    let cfg = config.clone();
    let (store, admin_key) = tokio::task::spawn_blocking(move || open_store(&cfg)).await??;
    let limits = limits(&config);
    let cfg = config.clone();
    let m = metrics.clone();
    let (registry, log) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let log = open_log(&cfg, &m)?;
        let t = std::time::Instant::now();
        let registry = Registry::load(store, limits, log.as_ref().map(|(l, _)| l.clone()))?;
        let loaded = t.elapsed();
        restore_history(&registry, log.as_ref())?;
        tracing::info!(
            channels = registry.snapshot().len(),
            load_ms = loaded.as_millis() as u64,
            restore_ms = (t.elapsed() - loaded).as_millis() as u64,
            "channels loaded"
        );
        Ok((registry, log.map(|(l, _)| l)))
    })
    .await??;
    metrics.register(Box::new(crate::metrics::AppSeries::new(&registry)));
    let tasks = TaskTracker::new();
    let after_intake = CancellationToken::new();
    let outputs = start_outputs(&Deps {
        config: &config,
        metrics: &metrics,
        tasks: &tasks,
        shutdown: &shutdown,
        after_intake: &after_intake,
        runtime: tokio::runtime::Handle::current(),
        log: log.clone(),
    })?;
    let (drains, alerts) = (outputs.drains.clone(), outputs.alerts.clone());
    metrics.register(Box::new(crate::drain::lag::LagSeries::new(&drains)));
    let addrs = bound.addrs()?;
    let admin_key = Arc::new(ArcSwap::from_pointee(admin_key));
    let cluster = Cluster::new(
        &config,
        addrs.api.port(),
        registry.clone(),
        &admin_key,
        &metrics,
    )?;
    // In cluster mode every channel's lines also go into its log stream in Redis.
    let outputs = Outputs {
        stream: cluster.as_ref().map(|c| c.tap()),
        ..outputs
    };
    let r = registry.clone();
    let t = std::time::Instant::now();
    tokio::task::spawn_blocking(move || r.attach(outputs)).await??;
    tracing::info!(
        took_ms = t.elapsed().as_millis() as u64,
        "drains and rules attached"
    );
    if let Some(c) = &cluster {
        c.start(&tasks, &shutdown, CLUSTER_START_WAIT).await;
        // Each node's drains' status into Redis, so any node shows a drain over all.
        tasks.spawn(crate::cluster::drains::run(
            c.clone(),
            drains.clone(),
            shutdown.clone(),
        ));
        // Line rules counted over the cluster, each firing decided once.
        crate::cluster::alerts::start(c, &alerts, &tasks, &shutdown);
    }
    let node = Arc::new(Node {
        public_url: config.api.public_url(addrs.api),
        bodies: body::Bodies::new(&config, &metrics),
        config,
        registry,
        metrics,
        sessions: session::Sessions::default(),
        tasks,
        shutdown,
        admin_key,
        api_addr: addrs.api,
        http_addr: addrs.http,
        drains,
        alerts,
        log,
        cluster,
    });
    let (intake, lock) = serve(&node, bound);
    tracing::info!(
        api = %addrs.api,
        http = %shown(addrs.http),
        tcp = %shown(addrs.tcp),
        udp = %shown(addrs.udp),
        admin_key = %if node.config.api.auth_key.is_empty() {
            let file = node.config.store.data_dir().join(datadir::KEY_FILE);
            std::path::absolute(&file).unwrap_or(file).display().to_string()
        } else {
            "api.auth_key".to_string()
        },
        "logplex listening"
    );
    Ok(Server {
        addrs,
        node,
        intake,
        after_intake,
        lock,
    })
}

/// An address for the startup log: the address, or `off`.
fn shown(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "off".to_string(), |a| a.to_string())
}

/// The listeners of the config, bound, and the data directory's lock.
struct Bound {
    lock: datadir::DirLock,
    caps: Caps,
    api: TcpListener,
    http: Option<TcpListener>,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
}

impl Bound {
    fn addrs(&self) -> std::io::Result<Addrs> {
        Ok(Addrs {
            api: self.api.local_addr()?,
            http: self.http.as_ref().map(|l| l.local_addr()).transpose()?,
            tcp: self.tcp.as_ref().map(|l| l.local_addr()).transpose()?,
            udp: self.udp.as_ref().map(|s| s.local_addr()).transpose()?,
        })
    }
}

/// Phase 1: locks the data directory (one node per directory), derives the connection caps
/// from the open-files limit and binds every listener.
async fn lock_and_bind(config: &Config) -> anyhow::Result<Bound> {
    let dir = config.store.data_dir();
    let db_name = config.store.file_name();
    let lock = tokio::task::spawn_blocking(move || datadir::lock(&dir, &db_name)).await??;
    let caps = Caps::derive(config, conns::open_files_limit());
    if caps.lowered {
        tracing::warn!(
            "the open-files limit ({}) lowers the connection caps: api {}, http {}, syslog tcp {} \
             ({} kept for drains, the store and the log); raise `ulimit -n` to lift them",
            caps.open_files,
            caps.api,
            caps.http,
            caps.tcp,
            caps.reserve
        );
    }
    let api = bind_tcp(&config.api.listen, config.api.backlog, "api.listen")?
        .context("api.listen is off")?;
    let http = bind_tcp(
        &config.ingest.http.listen,
        config.ingest.http.backlog,
        "ingest.http.listen",
    )?;
    let tcp = bind_tcp(
        &config.ingest.tcp.listen,
        config.ingest.tcp.backlog,
        "ingest.tcp.listen",
    )?;
    let udp = match listen_addr(&config.ingest.udp.listen, "ingest.udp.listen")? {
        Some(a) => Some(
            UdpSocket::bind(a)
                .await
                .with_context(|| format!("cannot bind ingest.udp.listen {a}"))?,
        ),
        None => None,
    };
    Ok(Bound {
        lock,
        caps,
        api,
        http,
        tcp,
        udp,
    })
}

/// Binds a TCP listener of the config with its backlog; `None` when it is off.
fn bind_tcp(listen: &Listen, backlog: u32, key: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(a) = listen_addr(listen, key)? else {
        return Ok(None);
    };
    Ok(Some(
        conns::bind(a, backlog).with_context(|| format!("cannot bind {key} {a}"))?,
    ))
}

/// The address of a listener, `None` when it is off; an invalid one (a config that was not
/// validated) is an error.
fn listen_addr(listen: &Listen, key: &str) -> anyhow::Result<Option<SocketAddr>> {
    match listen {
        Listen::Invalid(a) => anyhow::bail!("{key} {a:?} is not an address"),
        l => Ok(l.addr()),
    }
}

/// Phase 2 (blocking; the data directory is locked by then): makes the data directory's
/// files private, opens and migrates the store, settles the admin key and writes the
/// channels (with their fixed tokens and drains) declared in config (in cluster mode they
/// go through Redis instead).
fn open_store(config: &Config) -> anyhow::Result<(Store, admin_key::AdminKey)> {
    let dir = config.store.data_dir();
    datadir::make_private(&dir, &config.store.file_name())?;
    let st = Store::open(&config.store.path)?;
    let key_file = dir.join(datadir::KEY_FILE);
    let admin_key =
        st.call_blocking(|c| Ok(admin_key::settle(c, &config.api.auth_key, &key_file)))??;
    if config.cluster.on() {
        // The replica holds what Redis decided; config channels are written through Redis
        // once it is reached (`Cluster::start`).
        return Ok((st, admin_key));
    }
    st.call_blocking(|c| {
        let tokens: Vec<Vec<(String, String)>> = config
            .channels
            .iter()
            .map(|ch| {
                ch.tokens
                    .iter()
                    .map(|(n, t)| (n.clone(), t.clone()))
                    .collect()
            })
            .collect();
        // All in one transaction: one commit whatever their number.
        store::upsert_channels(
            c,
            config
                .channels
                .iter()
                .zip(&tokens)
                .map(|(ch, t)| (ch.name.as_str(), t.as_slice())),
        )?;
        for ch in &config.channels {
            if let Some(on) = ch.metrics {
                store::set_channel_metrics(c, &ch.name, on)?;
            }
            for url in &ch.drains {
                match store::create_drain(c, &ch.name, url, usize::MAX) {
                    Ok(_) | Err(store::AddDrain::Duplicate) | Err(store::AddDrain::Limit(_)) => {}
                    Err(store::AddDrain::Store(e)) => return Err(e),
                }
            }
        }
        Ok(())
    })?;
    Ok((st, admin_key))
}

fn limits(config: &Config) -> Limits {
    Limits {
        history_lines: config.buffers.history_lines,
        history_bytes: config.buffers.history_bytes,
        tail_lines: config.buffers.tail_lines,
    }
}

/// Phase 3a (blocking): opens the durable log (unless `[log] path = "off"`), recovering
/// it: a torn tail is cut, corrupt records skipped, each counted and logged once.
fn open_log(config: &Config, metrics: &Metrics) -> anyhow::Result<Option<(Arc<Log>, Recovery)>> {
    let Some(dir) = config.log.dir(&config.store.data_dir()) else {
        return Ok(None);
    };
    let opts = log::Options {
        fsync: match config.log.fsync {
            crate::config::FsyncMode::Interval => log::Fsync::Interval,
            crate::config::FsyncMode::Batch => log::Fsync::Batch,
        },
        fsync_interval: config
            .log
            .fsync_interval
            .get()
            .unwrap_or(Duration::from_secs(1)),
        max_bytes: config.log.max_bytes,
        // Retention deletes whole segments: at least 16 of them fit in `max_bytes`, so a
        // small log keeps close to its size (64 MiB segments from 1 GiB up).
        segment_bytes: (config.log.max_bytes / 16).clamp(1 << 20, 64 << 20),
        max_age: config
            .log
            .max_age
            .get()
            .unwrap_or(Duration::from_secs(7 * 86400)),
        fsync_seconds: Some(metrics.log_fsync_seconds.clone()),
        ..log::Options::default()
    };
    // Group commit needs no coalescing window of its own: what arrives while the I/O thread
    // writes and fsyncs is written together right after, so waiting `flush_delay` more only
    // adds to every batch's 204, and on a loaded machine a timed wait wakes late (measured
    // with 4 HTTP connections: 0.24-0.29 M lines/s with the 2 ms window, 0.59-0.73 M
    // without; README, Performance).
    let opts = match opts.fsync {
        log::Fsync::Batch => log::Options {
            flush_delay: Duration::ZERO,
            // Every write waits for its fsync: where writes go through the page cache,
            // allocate the segment's blocks ahead, so that fsyncs do not commit the file's
            // growth each time (direct writes need none: `Options::preallocate`).
            preallocate: 8 << 20,
            ..opts
        },
        log::Fsync::Interval => opts,
    };
    let (log, rec) =
        Log::open(&dir, opts).with_context(|| format!("cannot open the log {}", dir.display()))?;
    let log = Arc::new(log);
    metrics.watch_log(log.clone());
    tracing::info!(
        dir = %dir.display(),
        segments = rec.segments,
        bytes = rec.bytes,
        channels = rec.last_seq.len(),
        took_ms = rec.took.as_millis() as u64,
        "durable log open"
    );
    Ok(Some((log, rec)))
}

/// Phase 4 (blocking, start-up only): fills the rings. With the log, each channel's last
/// lines are read back from it and numbering resumes after its last line; history a stop
/// saved in the store (a node run without the log, or an older version) is put back for
/// channels the log knows nothing of, written to the log, then dropped from the store.
/// Without the log, the history saved at the last stop is put back; it stays saved until
/// the next stop replaces it, so a start that fails later loses nothing.
fn restore_history(registry: &Registry, log: Option<&(Arc<Log>, Recovery)>) -> anyhow::Result<()> {
    let snap = registry.snapshot();
    let reloaded = match log {
        Some((log, rec)) => reload_from_log(&snap, log, rec, registry.limits().history_lines)?,
        None => 0,
    };
    let saved = registry.store().call_blocking(store::load_history)?;
    let (mut restored, mut logged) = (0, crate::channel::Logged::Off);
    for (name, lines) in saved {
        let Some(ch) = snap.channel(&name) else {
            continue;
        };
        if log.is_some_and(|(_, rec)| rec.last_seq.contains_key(&(ch.id as u64))) {
            continue;
        }
        let lines = lines.into_iter().filter_map(|l| {
            Line::parse(Bytes::from(l.frame), Bytes::from(l.source.into_bytes())).ok()
        });
        let (n, l) = ch.restore(lines);
        restored += n;
        logged = logged.then(l);
    }
    if let Some((log, _)) = log {
        // On disk before the store forgets them (this runs on the blocking pool).
        match logged {
            crate::channel::Logged::Off => {}
            crate::channel::Logged::At(at) => tokio::runtime::Handle::current()
                .block_on(tokio::time::timeout(
                    Duration::from_secs(30),
                    log.durable(at),
                ))
                .map_err(|_| {
                    anyhow::anyhow!("the log did not write the saved history in 30 s")
                })??,
            crate::channel::Logged::Refused(e) => return Err(e.into()),
        }
        registry
            .store()
            .call_blocking(|c| store::save_history(c, &[]))?;
    }
    if reloaded + restored > 0 {
        tracing::info!(
            from_log = reloaded,
            from_store = restored,
            "history restored"
        );
    }
    restore_logmetrics(registry, &snap, log.map(|(log, _)| &**log))
}

/// Refills the ring of every channel the log has lines of with its last `limit` lines; the
/// number of lines. Several threads at once: the reads overlap their waits on the disk
/// (a cold start reads each channel's tail from wherever it lies) and parsing the lines
/// uses every core (measured with 1,000 channels over a 10 GiB log: 2.3 s on one thread
/// with a cold page cache; README, Performance).
fn reload_from_log(
    snap: &crate::registry::Snapshot,
    log: &Log,
    rec: &Recovery,
    limit: usize,
) -> anyhow::Result<usize> {
    let todo: Vec<_> = snap
        .channels()
        .filter_map(|ch| Some((rec.last_seq.get(&(ch.id as u64)).copied()?, ch)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
        .min(todo.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let reload_one = |(last, ch): &(u64, &Arc<crate::channel::Channel>)| -> anyhow::Result<usize> {
        let q = log::Query {
            limit,
            from_end: true,
            ..Default::default()
        };
        let lines = log.read(ch.id as u64, &q)?.into_iter().filter_map(|l| {
            let (seq, received) = (l.seq, l.recv_us);
            Line::parse(l.frame, l.source).ok().map(|mut line| {
                line.seq = seq;
                (line, received)
            })
        });
        Ok(ch.reload(lines, *last))
    };
    let worker = || -> anyhow::Result<usize> {
        let mut n = 0;
        while let Some(job) = todo.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
            n += reload_one(job)?;
        }
        Ok(n)
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles.into_iter().try_fold(0, |sum, h| {
            let n = h
                .join()
                .map_err(|_| anyhow::anyhow!("a thread refilling the rings panicked"))??;
            Ok(sum + n)
        })
    })
}

/// Part of phase 4: the metric roll-ups saved last (every `store.metrics_save_interval` and
/// at a stop), back into the channels that still have metrics on; with the durable log,
/// the lines a channel logged after the last one they count are read into them again, so
/// that a crash loses none of the lines the log kept (docs/metrics.md, Restarts, lists
/// what it can). Roll-ups that do not decode are left out with a warning (the channel
/// starts empty); they stay saved until the next save replaces them.
fn restore_logmetrics(
    registry: &Registry,
    snap: &crate::registry::Snapshot,
    log: Option<&Log>,
) -> anyhow::Result<()> {
    let saved = registry.store().call_blocking(store::load_logmetrics)?;
    let started = std::time::Instant::now();
    let (mut restored, mut replayed) = (0, 0);
    for s in saved {
        let Some(ch) = snap.channel(&s.channel) else {
            continue;
        };
        match crate::logmetrics::LogMetrics::decode(&s.data, crate::logmetrics::Limits::default()) {
            Ok(m) => {
                if !ch.restore_metrics(m) {
                    continue;
                }
                restored += 1;
            }
            Err(e) => {
                tracing::warn!(channel = %s.channel, "saved metrics left out: {e}");
                continue;
            }
        }
        if let (Some(log), Some(seq)) = (log, s.seq) {
            // Lines they count that the log did not keep (a crash before their write) keep
            // their seqs: new lines come after, and are read again after another crash.
            ch.number_after(seq);
            match replay_logmetrics(log, ch, seq) {
                Ok(n) => replayed += n,
                Err(e) => tracing::warn!(
                    channel = %s.channel,
                    "metric roll-ups restored, but not all the lines logged since their save: {e:#}"
                ),
            }
        }
    }
    if restored > 0 {
        tracing::info!(
            channels = restored,
            lines_replayed = replayed,
            took_ms = started.elapsed().as_millis() as u64,
            "metric roll-ups restored"
        );
    }
    Ok(())
}

/// Observes the lines channel `ch` logged after `seq` into its metrics, a page at a time;
/// how many. A read that fails stops there (the lines before it stay counted).
fn replay_logmetrics(log: &Log, ch: &crate::channel::Channel, seq: u64) -> anyhow::Result<usize> {
    const PAGE: usize = 10_000;
    let (mut after, mut n) = (seq, 0);
    loop {
        let q = log::Query {
            after_seq: Some(after),
            limit: PAGE,
            ..Default::default()
        };
        let page = log.read(ch.id as u64, &q)?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = last.seq;
        n += ch.replay_metrics(
            page.iter()
                .map(|l| (l.recv_us.div_euclid(1_000_000), &l.source[..], &l.frame[..])),
        );
        if page.len() < PAGE {
            return Ok(n);
        }
    }
}

/// What drains and alert rules are started with.
pub struct Deps<'a> {
    pub config: &'a Config,
    pub metrics: &'a Arc<Metrics>,
    /// Their tasks join this tracker, so shutdown waits for them.
    pub tasks: &'a TaskTracker,
    pub shutdown: &'a CancellationToken,
    /// Cancelled once intake has stopped after shutdown: drains flush then.
    pub after_intake: &'a CancellationToken,
    /// Changes are applied on the blocking pool; tasks are spawned onto this runtime.
    pub runtime: tokio::runtime::Handle,
    /// The durable log (drains read it when behind), `None` when it is off.
    pub log: Option<Arc<Log>>,
}

/// Phase 5: the drains and the alert rules (config rules compiled, a bad one is an error),
/// with their tasks; the registry hands them the stored ones once attached.
fn start_outputs(deps: &Deps<'_>) -> anyhow::Result<Outputs> {
    Ok(Outputs {
        drains: Arc::new(Drains::new(deps)?),
        alerts: Alerts::start(deps)?,
        stream: None,
    })
}

/// Phase 6: spawns the intake listeners (on their own tracker and token, stopped first so
/// in-flight batches finish while the API still answers), the API and the session sweeper.
/// Returns the intake tracker and the data directory's lock.
fn serve(node: &Arc<Node>, bound: Bound) -> (TaskTracker, datadir::DirLock) {
    let Bound {
        lock,
        caps,
        api,
        http: http_listener,
        tcp,
        udp,
    } = bound;
    let table = |label, what, cap| conns::Table::new(label, what, cap, &node.metrics);
    let intake = TaskTracker::new();
    let intake_stop = node.shutdown.child_token();
    if let Some(l) = http_listener {
        let n = node.clone();
        let counters = node.metrics.input("http");
        let handler = Arc::new(move |req| ingest::http::handle(n.clone(), counters.clone(), req));
        intake.spawn(http::serve(
            l,
            table("http", "the HTTP input", caps.http),
            intake.clone(),
            intake_stop.clone(),
            handler,
        ));
    }
    if let Some(l) = tcp {
        intake.spawn(ingest::tcp::serve(
            l,
            table("tcp", "syslog TCP", caps.tcp),
            node.clone(),
            intake_stop.clone(),
        ));
    }
    if let Some(s) = udp {
        intake.spawn(ingest::udp::serve(s, node.clone(), intake_stop.clone()));
    }
    let router = api::router(node.clone());
    let handler = Arc::new(move |req| api::handle(router.clone(), req));
    node.tasks.spawn(http::serve(
        api,
        table("api", "the API", caps.api),
        node.tasks.clone(),
        node.shutdown.clone(),
        handler,
    ));
    let n = node.clone();
    node.tasks.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = every.tick() => { n.sessions.sweep(); }
                _ = n.shutdown.cancelled() => return,
            }
        }
    });
    let n = node.clone();
    node.tasks.spawn(async move {
        let period = n.config.store.metrics_save_interval();
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = n.shutdown.cancelled() => return,
            }
            let node = n.clone();
            match tokio::task::spawn_blocking(move || save_logmetrics(&node)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("{e:#}"),
                Err(e) => tracing::warn!("saving metrics failed: {e}"),
            }
        }
    });
    (intake, lock)
}

impl Server {
    /// Serves until shutdown, then stops intake, lets drains flush, ends sessions and closes
    /// the durable log (without it, saves history in the store: a save that fails is an
    /// error saying how many lines could not be kept, and the history saved before stays).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.node.shutdown.cancelled().await;
        self.intake.close();
        if tokio::time::timeout(Duration::from_secs(10), self.intake.wait())
            .await
            .is_err()
        {
            tracing::warn!("intake did not stop within 10s");
        }
        self.after_intake.cancel();
        self.node.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.node.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 10s");
        }
        let node = self.node.clone();
        let log = self.node.log.clone();
        tokio::task::spawn_blocking(move || {
            // Metric roll-ups are kept in the store at stop, log or not (after history).
            match log {
                // Every line is in the log already: what is pending is written and fsynced.
                Some(log) => {
                    log.close()?;
                    tracing::info!("durable log closed; bye");
                }
                None => {
                    let saved = save_history(&node)?;
                    tracing::info!(lines = saved, "history saved; bye");
                }
            }
            save_logmetrics(&node)
        })
        .await??;
        // Everything is saved: the channels' memory goes back without holding up the stop.
        self.node.registry.release();
        drop(self.lock);
        Ok(())
    }
}

/// Saves the roll-ups of every channel with metrics on that counted a line since its last
/// save (their bytes and seq are taken under the channel's lock, one channel at a time),
/// each replacing its channel's saved before. With the durable log the seq is saved too,
/// and a channel in the middle of storing a paced run keeps its save before for a few
/// saves (see [`crate::channel::Channel::metrics_to_save`]). Blocking.
fn save_logmetrics(node: &Node) -> anyhow::Result<()> {
    let snap = node.registry.snapshot();
    let logged = node.log.is_some();
    let mut saved = Vec::new();
    let channels: Vec<store::SavedMetrics> = snap
        .metered()
        .filter_map(|c| {
            let mut m = c.metrics_to_save(logged)?;
            if logged && !m.whole {
                tracing::warn!(
                    channel = %c.name,
                    "metric roll-ups saved while a batch is stored in parts, after saves in a \
                     row found it so: after a crash, that batch's lines stored later may be \
                     counted twice"
                );
            }
            let row = store::SavedMetrics {
                channel: c.name.to_string(),
                id: c.id,
                data: std::mem::take(&mut m.data),
                seq: logged.then_some(m.seq),
            };
            saved.push((c.clone(), m));
            Some(row)
        })
        .collect();
    let n = channels.len();
    if n == 0 {
        return Ok(());
    }
    node.registry
        .store()
        .call_blocking(|c| store::save_logmetrics(c, &channels))
        .map(|()| {
            for (c, m) in &saved {
                c.metrics_saved(m);
            }
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot save metrics ({e}): the roll-ups of {n} channels could not be kept; \
                 those saved before, if any, are kept as they were"
            )
        })
}

fn save_history(node: &Node) -> anyhow::Result<usize> {
    let snap = node.registry.snapshot();
    let channels: Vec<(String, Vec<store::SavedLine>)> = snap
        .channels()
        .map(|c| {
            let lines = c
                .all_lines()
                .into_iter()
                .map(|l| store::SavedLine {
                    source: String::from_utf8_lossy(&l.source).into_owned(),
                    frame: l.frame.to_vec(),
                })
                .collect();
            (c.name.to_string(), lines)
        })
        // Most channels of a big node are idle: nothing to save for them.
        .filter(|(_, lines): &(String, Vec<store::SavedLine>)| !lines.is_empty())
        .collect();
    let total: usize = channels.iter().map(|(_, l)| l.len()).sum();
    node.registry
        .store()
        .call_blocking(|c| store::save_history(c, &channels))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot save history ({e}): {total} lines of history could not be kept; \
                 the history saved before, if any, is kept as it was"
            )
        })
}
