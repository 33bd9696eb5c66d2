//! logplex: a log router and drain service compatible with Heroku's Logplex.
//!
//! [`start`] locks the data directory, binds every listener of the config, then opens the
//! store and returns the bound addresses; [`Server::wait`] serves until the shutdown token
//! is cancelled, then stops intake, ends sessions and saves history. [`run`] does both; the
//! binary and the integration tests call it (tests bind port 0 and read the addresses from
//! [`start`]).

pub mod admin_key;
pub mod alert;
pub mod api;
pub mod body;
pub mod channel;
pub mod cli;
pub mod config;
pub mod conns;
pub mod console;
pub mod datadir;
pub mod drain;
pub mod http;
pub mod ingest;
pub mod line;
pub mod log;
pub mod logmetrics;
pub mod metrics;
pub mod registry;
pub mod session;
pub mod shutdown;
pub mod store;

use anyhow::Context as _;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every part of the running server shares.
pub struct Shared {
    pub config: config::Config,
    pub registry: Arc<registry::Registry>,
    pub metrics: Arc<metrics::Metrics>,
    pub sessions: session::Sessions,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// What API requests are checked against (the key's hash).
    pub admin_key: admin_key::AdminKey,
    pub api_addr: SocketAddr,
    /// The base of session URLs (`api.public_url`, or `http://` + `api_addr`).
    pub public_url: String,
    /// Where the HTTP log input is bound, if it is on (a drain to it may be a loop).
    pub http_addr: Option<SocketAddr>,
    /// The running drains, for their status.
    pub drains: Arc<drain::Drains>,
    /// The alert rules, for their firing state.
    pub alerts: Arc<alert::AlertManager>,
    /// The deadline and shared byte budget of request bodies.
    pub bodies: body::Bodies,
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
    shared: Arc<Shared>,
    /// Intake (listeners and their connections), stopped first on shutdown.
    intake: TaskTracker,
    after_intake: CancellationToken,
    /// The data directory's lock, released once history is saved.
    lock: datadir::DirLock,
}

/// Runs the router until `shutdown` is cancelled.
pub async fn run(config: config::Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Locks the data directory, binds every listener, then opens the store, restores history
/// and starts serving. Nothing stored is touched before the lock is held and every
/// listener is bound, so a start that fails (another logplex on the directory, a port
/// taken) leaves the saved state as it was.
pub async fn start(config: config::Config, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let dir = config.store.data_dir();
    let db_name = config.store.file_name();
    let lock = tokio::task::spawn_blocking(move || datadir::lock(&dir, &db_name)).await??;

    let metrics = Arc::new(metrics::Metrics::new());
    let caps = conns::Caps::derive(&config, conns::open_files_limit());
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
    let api_listener = bind_tcp(config.api.listen.addr(), config.api.backlog, "api.listen")?
        .context("api.listen is off")?;
    let http_listener = bind_tcp(
        config.ingest.http.listen.addr(),
        config.ingest.http.backlog,
        "ingest.http.listen",
    )?;
    let tcp_listener = bind_tcp(
        config.ingest.tcp.listen.addr(),
        config.ingest.tcp.backlog,
        "ingest.tcp.listen",
    )?;
    let udp_socket = match config.ingest.udp.listen.addr() {
        Some(a) => Some(
            tokio::net::UdpSocket::bind(a)
                .await
                .with_context(|| format!("cannot bind ingest.udp.listen {a}"))?,
        ),
        None => None,
    };

    let tasks = TaskTracker::new();
    let after_intake = CancellationToken::new();
    let (drains, alerts, providers) = providers(&Context {
        config: &config,
        metrics: &metrics,
        tasks: &tasks,
        shutdown: &shutdown,
        after_intake: &after_intake,
        runtime: tokio::runtime::Handle::current(),
    })?;
    let cfg = config.clone();
    let (admin_key, registry) =
        tokio::task::spawn_blocking(move || open_store(&cfg, providers)).await??;
    let addrs = Addrs {
        api: api_listener.local_addr()?,
        http: http_listener.as_ref().map(|l| l.local_addr()).transpose()?,
        tcp: tcp_listener.as_ref().map(|l| l.local_addr()).transpose()?,
        udp: udp_socket.as_ref().map(|s| s.local_addr()).transpose()?,
    };
    let public_url = config.api.public_url(addrs.api);
    let bodies = body::Bodies::new(&config, &metrics);
    let shared = Arc::new(Shared {
        config,
        registry,
        metrics,
        sessions: session::Sessions::default(),
        tasks,
        shutdown: shutdown.clone(),
        admin_key,
        api_addr: addrs.api,
        public_url,
        http_addr: addrs.http,
        drains,
        alerts,
        bodies,
    });
    let table = |label, what, cap| conns::Table::new(label, what, cap, &shared.metrics);

    // Intake gets its own token, cancelled first so in-flight batches finish while the API
    // still answers.
    let intake = TaskTracker::new();
    let intake_stop = shutdown.child_token();
    if let Some(l) = http_listener {
        let s = shared.clone();
        let counters = shared.metrics.input("http");
        let handler = Arc::new(move |req| ingest::http::handle(s.clone(), counters.clone(), req));
        intake.spawn(http::serve(
            l,
            table("http", "the HTTP input", caps.http),
            intake.clone(),
            intake_stop.clone(),
            handler,
        ));
    }
    if let Some(l) = tcp_listener {
        intake.spawn(ingest::tcp::serve(
            l,
            table("tcp", "syslog TCP", caps.tcp),
            shared.clone(),
            intake_stop.clone(),
        ));
    }
    if let Some(s) = udp_socket {
        intake.spawn(ingest::udp::serve(s, shared.clone(), intake_stop.clone()));
    }
    {
        let s = shared.clone();
        let handler = Arc::new(move |req| api::handle(s.clone(), req));
        shared.tasks.spawn(http::serve(
            api_listener,
            table("api", "the API", caps.api),
            shared.tasks.clone(),
            shutdown.clone(),
            handler,
        ));
    }
    {
        let s = shared.clone();
        shared.tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = every.tick() => { s.sessions.sweep(); }
                    _ = s.shutdown.cancelled() => return,
                }
            }
        });
    }
    tracing::info!(
        api = %addrs.api,
        http = %addrs.http.map_or("off".into(), |a| a.to_string()),
        tcp = %addrs.tcp.map_or("off".into(), |a| a.to_string()),
        udp = %addrs.udp.map_or("off".into(), |a| a.to_string()),
        admin_key = %if shared.config.api.auth_key.is_empty() {
            let file = shared.config.store.data_dir().join(datadir::KEY_FILE);
            std::path::absolute(&file).unwrap_or(file).display().to_string()
        } else {
            "api.auth_key".to_string()
        },
        "logplex listening"
    );
    Ok(Server {
        addrs,
        shared,
        intake,
        after_intake,
        lock,
    })
}

impl Server {
    /// Serves until shutdown, then stops intake, ends sessions and saves history. A save
    /// that fails is an error saying how many lines could not be kept; the history saved
    /// before stays as it was.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.shared.shutdown.cancelled().await;
        self.intake.close();
        if tokio::time::timeout(Duration::from_secs(10), self.intake.wait())
            .await
            .is_err()
        {
            tracing::warn!("intake did not stop within 10s");
        }
        self.after_intake.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 10s");
        }
        let shared = self.shared.clone();
        let saved = tokio::task::spawn_blocking(move || save_history(&shared)).await??;
        tracing::info!(lines = saved, "history saved; bye");
        drop(self.lock);
        Ok(())
    }
}

/// What the parts that run beside ingest (drains, alerts) are built from.
pub struct Context<'a> {
    pub config: &'a config::Config,
    pub metrics: &'a Arc<metrics::Metrics>,
    /// Their tasks join this tracker, so shutdown waits for them.
    pub tasks: &'a TaskTracker,
    pub shutdown: &'a CancellationToken,
    /// Cancelled once intake has stopped after shutdown: drains flush then.
    pub after_intake: &'a CancellationToken,
    /// Taps are refreshed on the blocking pool; tasks are spawned onto this runtime.
    pub runtime: tokio::runtime::Handle,
}

/// The tap providers: every line stored in a channel is also given to these. The drains
/// and the alert rules are also returned as themselves, for their status.
#[allow(clippy::type_complexity)]
fn providers(
    ctx: &Context<'_>,
) -> anyhow::Result<(
    Arc<drain::Drains>,
    Arc<alert::AlertManager>,
    Vec<Arc<dyn registry::TapProvider>>,
)> {
    let drains = Arc::new(drain::Drains::new(ctx)?);
    let alerts = alert::AlertManager::start(ctx)?;
    let taps: Vec<Arc<dyn registry::TapProvider>> = vec![drains.clone(), alerts.clone()];
    Ok((drains, alerts, taps))
}

/// Binds a TCP listener of the config with its backlog; `None` when it is off.
fn bind_tcp(
    addr: Option<&str>,
    backlog: u32,
    key: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(a) = addr else { return Ok(None) };
    let parsed: SocketAddr = a
        .parse()
        .with_context(|| format!("{key} {a:?} is not an address"))?;
    Ok(Some(
        conns::bind(parsed, backlog).with_context(|| format!("cannot bind {key} {a}"))?,
    ))
}

/// Makes the data directory's files private, opens and migrates the store, settles the
/// admin key, applies config channels and restores saved history (which stays saved until
/// the next save replaces it). Blocking; the data directory is locked by then.
fn open_store(
    config: &config::Config,
    providers: Vec<Arc<dyn registry::TapProvider>>,
) -> anyhow::Result<(admin_key::AdminKey, Arc<registry::Registry>)> {
    let dir = config.store.data_dir();
    datadir::make_private(&dir, &config.store.file_name())?;
    let st = store::Store::open(&config.store.path)?;
    let key_file = dir.join(datadir::KEY_FILE);
    let admin_key =
        st.call_blocking(|c| Ok(admin_key::settle(c, &config.api.auth_key, &key_file)))??;
    st.call_blocking(|c| {
        for ch in &config.channels {
            let tokens: Vec<(String, String)> = ch
                .tokens
                .iter()
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect();
            store::upsert_channel(c, &ch.name, &tokens)?;
            for url in &ch.drains {
                match store::create_drain(c, &ch.name, url, usize::MAX) {
                    Ok(_) | Err(store::AddDrain::Duplicate) => {}
                    Err(store::AddDrain::Limit(_)) => {}
                    Err(store::AddDrain::Store(e)) => return Err(e),
                }
            }
        }
        Ok(())
    })?;
    let limits = channel::Limits {
        history_lines: config.buffers.history_lines,
        history_bytes: config.buffers.history_bytes,
        tail_lines: config.buffers.tail_lines,
    };
    let registry = registry::Registry::load(st.clone(), limits, providers)?;
    let saved = st.call_blocking(store::load_history)?;
    let snap = registry.snapshot();
    let mut restored = 0;
    for (name, lines) in saved {
        let Some(ch) = snap.channel(&name) else {
            continue;
        };
        let lines = lines.into_iter().filter_map(|l| {
            line::Line::parse(Bytes::from(l.frame), Bytes::from(l.source.into_bytes())).ok()
        });
        restored += ch.restore(lines);
    }
    if restored > 0 {
        tracing::info!(lines = restored, "history restored");
    }
    Ok((admin_key, registry))
}

fn save_history(shared: &Shared) -> anyhow::Result<usize> {
    let snap = shared.registry.snapshot();
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
        .collect();
    let total: usize = channels.iter().map(|(_, l)| l.len()).sum();
    shared
        .registry
        .store()
        .call_blocking(|c| store::save_history(c, &channels))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot save history ({e}): {total} lines of history could not be kept; \
                 the history saved before, if any, is kept as it was"
            )
        })
}
