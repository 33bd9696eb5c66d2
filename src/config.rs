//! Configuration: the `config.toml` schema (every key in `docs/config.md`), strict parsing and one
//! `validate()` that reports every problem at once, before anything listens.

use crate::names::{valid_channel_name, valid_token, valid_token_name};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration. Every section is optional; missing keys take the defaults,
/// which are also the values written in the root `config.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub api: ApiConfig,
    pub ingest: IngestConfig,
    pub buffers: BuffersConfig,
    pub drains: DrainsConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub cluster: ClusterConfig,
    pub channels: Vec<ChannelConfig>,
    pub alerts: Vec<crate::alert::RuleSpec>,
}

/// A listen address, or `"off"` to disable the listener. Parsed as the config is read; a
/// text that is neither is kept as written ([`Listen::Invalid`]) so that validation
/// reports it together with every other problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Off,
    Addr(SocketAddr),
    Invalid(String),
}

impl Listen {
    /// The address to bind, or `None` when the listener is off (or invalid, which
    /// validation refuses before anything binds).
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Listen::Addr(a) => Some(*a),
            Listen::Off | Listen::Invalid(_) => None,
        }
    }

    fn parse(s: &str) -> Listen {
        match s {
            "off" => Listen::Off,
            _ => s
                .parse()
                .map_or_else(|_| Listen::Invalid(s.to_string()), Listen::Addr),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Listen::parse(&String::deserialize(d)?))
    }
}

/// A duration setting written like `"10s"`, `"5m"` or `"500ms"`: parsed as the config is
/// read. A text that is not a duration is kept as written so that validation reports it
/// together with every other problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    text: String,
    value: Option<Duration>,
}

impl Span {
    /// The duration, or `None` when the text is not one.
    pub fn get(&self) -> Option<Duration> {
        self.value
    }

    /// As written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl From<&str> for Span {
    fn from(text: &str) -> Span {
        Span {
            text: text.to_string(),
            value: parse_duration(text),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Span::from(String::deserialize(d)?.as_str()))
    }
}

/// `[api]`: the API, sessions and metrics listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the API listens (default 127.0.0.1:8001).
    pub listen: Listen,
    /// The admin key. Empty: taken from `LOGPLEX_AUTH_KEY`, else the key whose hash the
    /// store keeps (readable in `admin.key` beside the database), else generated on first
    /// start and written to `admin.key`.
    pub auth_key: String,
    /// The base of the session URLs the API hands out (`PUBLIC_URL/sessions/UUID`), as
    /// clients reach the API (a proxy, a load balancer). Empty: `http://` + the API listen
    /// address as bound. Never taken from a request's Host header.
    pub public_url: String,
    /// Most API connections open at once (sessions and tails included). The API has its
    /// own cap so that ingest connections can never take the file descriptors it needs.
    pub max_connections: usize,
    /// The kernel's queue of connections not yet accepted (capped by `net.core.somaxconn`).
    pub backlog: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: Listen::Addr(([127, 0, 0, 1], 8001).into()),
            auth_key: String::new(),
            public_url: String::new(),
            max_connections: 1024,
            backlog: 1024,
        }
    }
}

impl ApiConfig {
    /// The base of session URLs, without a trailing `/`: `public_url`, or `http://` and the
    /// address the API listener is bound to.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        if self.public_url.is_empty() {
            format!("http://{bound}")
        } else {
            self.public_url.trim_end_matches('/').to_string()
        }
    }
}

/// Why `api.public_url` cannot be the base of session URLs, if it cannot.
fn check_public_url(s: &str) -> Option<String> {
    let u = match url::Url::parse(s) {
        Ok(u) => u,
        Err(e) => return Some(format!("{s:?} is not a URL ({e})")),
    };
    if !matches!(u.scheme(), "http" | "https") {
        Some(format!("{s:?} is not an http:// or https:// URL"))
    } else if u.host_str().unwrap_or("").is_empty() {
        Some(format!("{s:?} has no host"))
    } else if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        Some(format!(
            "{s:?} must be a base URL like \"https://logs.example.com\", without credentials, query or fragment"
        ))
    } else {
        None
    }
}

/// `[ingest]`: limits shared by every input, and one table per listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Longest accepted frame in bytes; longer frames are counted and skipped.
    pub max_frame: usize,
    /// Most TCP syslog connections open at once; at the cap the connection idle longest is
    /// closed to admit a new one.
    pub max_connections: usize,
    pub http: HttpIngestConfig,
    pub tcp: TcpIngestConfig,
    pub udp: UdpIngestConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_frame: 10240,
            max_connections: 10_000,
            http: HttpIngestConfig::default(),
            tcp: TcpIngestConfig::default(),
            udp: UdpIngestConfig::default(),
        }
    }
}

/// `[ingest.http]`: `POST /logs` with logplex-1 batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpIngestConfig {
    pub listen: Listen,
    /// Largest request body in bytes, after gzip decompression too (413 beyond).
    pub max_body: usize,
    /// Most `POST /logs` connections open at once; at the cap the connection idle longest
    /// is closed to admit a new one.
    pub max_connections: usize,
    /// The kernel's queue of connections not yet accepted.
    pub backlog: u32,
    /// A whole request body (here and on the API) must arrive within this (408 beyond), and
    /// at 64 KiB/s at least once its first 3 seconds are over.
    pub body_timeout: Span,
    /// Bytes of request bodies (here and on the API, gzip output included) held at once;
    /// a body that does not fit is refused with 503 and `Retry-After`.
    pub max_inflight_bytes: usize,
}

impl Default for HttpIngestConfig {
    fn default() -> Self {
        HttpIngestConfig {
            listen: Listen::Addr(([127, 0, 0, 1], 8601).into()),
            max_body: 4 * 1024 * 1024,
            max_connections: 4096,
            backlog: 1024,
            body_timeout: Span::from("10s"),
            max_inflight_bytes: 64 * 1024 * 1024,
        }
    }
}

impl HttpIngestConfig {
    /// `body_timeout` as a duration (validated at load).
    pub fn body_timeout(&self) -> Duration {
        self.body_timeout.get().unwrap_or(Duration::from_secs(10))
    }
}

/// `[ingest.tcp]`: RFC 6587 syslog over TCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpIngestConfig {
    pub listen: Listen,
    /// The kernel's queue of connections not yet accepted.
    pub backlog: u32,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Span,
}

impl Default for TcpIngestConfig {
    fn default() -> Self {
        TcpIngestConfig {
            listen: Listen::Addr(([127, 0, 0, 1], 6001).into()),
            backlog: 1024,
            idle_timeout: Span::from("5m"),
        }
    }
}

impl TcpIngestConfig {
    /// `idle_timeout` as a duration (validated at load).
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout.get().unwrap_or(Duration::from_secs(300))
    }
}

/// `[ingest.udp]`: one RFC 5424 message per datagram.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpIngestConfig {
    pub listen: Listen,
}

impl Default for UdpIngestConfig {
    fn default() -> Self {
        UdpIngestConfig {
            listen: Listen::Addr(([127, 0, 0, 1], 6001).into()),
        }
    }
}

/// `[buffers]`: in-memory history and tails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuffersConfig {
    /// Lines of history kept per channel (Logplex: 1500).
    pub history_lines: usize,
    /// Bytes of history kept per channel, so a channel of 10 KB lines cannot take 15 MB.
    pub history_bytes: usize,
    /// Lines a tail session may fall behind before its oldest are dropped (L11).
    pub tail_lines: usize,
}

impl Default for BuffersConfig {
    fn default() -> Self {
        BuffersConfig {
            history_lines: 1500,
            history_bytes: 1024 * 1024,
            tail_lines: 1024,
        }
    }
}

/// `[drains]`: forwarding to syslog and HTTP receivers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainsConfig {
    /// Messages buffered per drain before the oldest are dropped (L10).
    pub buffer_lines: usize,
    /// Most drains one channel may have.
    pub max_per_channel: usize,
    /// A PEM file of extra CA certificates trusted by TLS drains.
    pub tls_ca_file: Option<PathBuf>,
    /// With the durable log: how far a drain may fall behind before it skips forward to the
    /// newest lines (L10). `""` (default): as far as the log's retention; `"2h"`: an age;
    /// `"512MiB"` or a plain number: bytes of frames not yet delivered.
    pub max_lag: String,
}

/// `drains.max_lag`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxLag {
    /// Only retention makes a drain skip.
    Retention,
    /// Skip once the oldest line not delivered is older than this.
    Age(Duration),
    /// Skip once the frames not delivered reach this many bytes.
    Bytes(u64),
}

impl DrainsConfig {
    /// `max_lag` parsed, `None` when it is neither empty, a duration nor a size.
    pub fn max_lag(&self) -> Option<MaxLag> {
        let t = self.max_lag.trim();
        if t.is_empty() || t == "retention" {
            return Some(MaxLag::Retention);
        }
        if let Some(d) = parse_duration(t) {
            return (!d.is_zero()).then_some(MaxLag::Age(d));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        };
        n.checked_mul(mul).filter(|&b| b > 0).map(MaxLag::Bytes)
    }
}

impl Default for DrainsConfig {
    fn default() -> Self {
        DrainsConfig {
            buffer_lines: 1024,
            max_per_channel: 5,
            tls_ca_file: None,
            max_lag: String::new(),
        }
    }
}

/// `[store]`: the SQLite database of channels, tokens, drains, alert rules and the admin key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// How often the metric roll-ups of channels with metrics on are saved (and at a stop):
    /// after a crash they come back from the last save, and with the durable log the lines
    /// logged since are read into them again.
    pub metrics_save_interval: Span,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("./data/logplex.db"),
            metrics_save_interval: Span::from("1m"),
        }
    }
}

impl StoreConfig {
    /// `metrics_save_interval` as a duration (validated at load).
    pub fn metrics_save_interval(&self) -> Duration {
        self.metrics_save_interval
            .get()
            .unwrap_or(Duration::from_secs(60))
    }

    /// The database's file name, without its folder.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The data directory: where the database, `admin.key` and saved history live.
    pub fn data_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// `[log]`: the durable log, where every line is kept on disk as it arrives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Its directory; empty: `log` in the data directory; `"off"`: memory only (history is
    /// then saved at a graceful stop only, and a crash loses it).
    pub path: String,
    /// `"interval"`: fsync at least every `fsync_interval`; `"batch"`: `POST /logs` is
    /// answered only once an fsync covers the batch.
    pub fsync: FsyncMode,
    pub fsync_interval: Span,
    /// Retention by size, in bytes: whole oldest segments are deleted beyond it.
    pub max_bytes: u64,
    /// Retention by age.
    pub max_age: Span,
    /// The most lines one session or `logs -n` may ask for.
    pub max_lines_per_session: usize,
}

/// `[log] fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    Interval,
    Batch,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            path: String::new(),
            fsync: FsyncMode::Interval,
            fsync_interval: Span::from("1s"),
            max_bytes: 10 << 30,
            max_age: Span::from("7d"),
            max_lines_per_session: 100_000,
        }
    }
}

impl LogConfig {
    /// The log's directory, `None` when it is off.
    pub fn dir(&self, data_dir: &Path) -> Option<PathBuf> {
        match self.path.as_str() {
            "off" => None,
            "" => Some(data_dir.join("log")),
            p => Some(PathBuf::from(p)),
        }
    }
}

/// `[cluster]`: cluster mode on Redis (`docs/cluster.md`). Left out (no `redis`), the node
/// runs alone exactly as without the section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Redis that holds the cluster's config: `redis://host:port`, with an optional
    /// `:PASSWORD@` and `/DB` (TLS, `rediss://`, and unix sockets are not taken yet); or a
    /// list of such URLs, the seed nodes of a Redis Cluster. Empty: single node.
    pub redis: RedisAt,
    /// This node's name, written with every change it makes (for people reading the change
    /// stream). Empty: the host name and the API port, like `web-1:8001`.
    pub node: String,
    /// About how many changes the change stream keeps (Redis trims it beyond, in whole
    /// blocks). A node away for longer than this many changes loads the whole config again
    /// when it returns.
    pub changes_kept: u64,
    /// The most bytes of lines waiting to go into their channels' log streams in Redis
    /// (while Redis is slow or away). Beyond, lines stay on this node only, are counted
    /// and cross-node tails are told with L11.
    pub log_queue_bytes: usize,
    /// How many publisher tasks put this node's lines into the log streams, each with its
    /// own connection, drawing on one `log_queue_bytes` budget; a channel always goes
    /// through the same one (by its Redis Cluster slot), so its lines keep their order.
    pub publishers: usize,
}

/// `cluster.redis`: one Redis, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RedisAt {
    /// One Redis server (`""`: cluster mode off).
    One(String),
    /// A Redis Cluster, reached through any of these nodes (it tells the others).
    Cluster(Vec<String>),
}

impl RedisAt {
    /// The URLs given (none when cluster mode is off).
    pub fn urls(&self) -> Vec<&str> {
        match self {
            RedisAt::One(u) if u.is_empty() => Vec::new(),
            RedisAt::One(u) => vec![u.as_str()],
            RedisAt::Cluster(seeds) => seeds.iter().map(String::as_str).collect(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: RedisAt::One(String::new()),
            node: String::new(),
            changes_kept: 100_000,
            log_queue_bytes: 32 << 20,
            publishers: 2,
        }
    }
}

impl ClusterConfig {
    /// Is cluster mode on?
    pub fn on(&self) -> bool {
        !self.redis.urls().is_empty()
    }
}

/// `[[channels]]`: a channel declared in config, created or updated at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    /// Token name → fixed token (`t.<uuid>`).
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
    /// Drain URLs of this channel.
    #[serde(default)]
    pub drains: Vec<String>,
    /// Metrics from the logs for this channel: `true` turns them on at every start, `false`
    /// off; left out, the stored setting (from the API or the CLI) stays as it is.
    #[serde(default)]
    pub metrics: Option<bool>,
}

/// Every problem found in a config, reported together.
#[derive(Debug)]
pub struct ConfigError {
    pub source: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config {}:", self.source)?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Parses a duration such as `500ms`, `30s`, `1m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86400)?),
        _ => return None,
    };
    Some(d)
}

impl Config {
    /// Loads `path`, or `./config.toml` when `None` and it exists, else the built-in
    /// defaults. Applies environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (source, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    source: p.display().to_string(),
                    problems: vec![format!("cannot read it: {e}")],
                })?;
                (p.display().to_string(), Some(text))
            }
            None => match std::fs::read_to_string("config.toml") {
                Ok(t) => ("./config.toml".to_string(), Some(t)),
                Err(_) => ("(built-in defaults)".to_string(), None),
            },
        };
        let mut config = match text {
            Some(t) => Config::from_toml(&t).map_err(|mut e| {
                e.source = source.clone();
                e
            })?,
            None => Config::default(),
        };
        config.apply_env();
        config
            .validate()
            .map_err(|problems| ConfigError { source, problems })?;
        Ok(config)
    }

    /// Parses TOML text (no validation, no environment).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            source: "(text)".into(),
            problems: vec![e.to_string().trim_end().to_string()],
        })
    }

    /// Secrets from the environment win over the file: `LOGPLEX_AUTH_KEY`.
    pub fn apply_env(&mut self) {
        if let Ok(k) = std::env::var("LOGPLEX_AUTH_KEY") {
            if !k.is_empty() {
                self.api.auth_key = k;
            }
        }
    }

    /// Checks every field; returns all problems found.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        self.check_listeners(&mut p);
        self.check_limits(&mut p);
        self.check_log(&mut p);
        self.check_cluster(&mut p);
        self.check_channels(&mut p);
        self.check_alerts(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }

    /// `api`, `ingest.*.listen` and `api.public_url`.
    fn check_listeners(&self, p: &mut Vec<String>) {
        let listeners = [
            ("api.listen", &self.api.listen),
            ("ingest.http.listen", &self.ingest.http.listen),
            ("ingest.tcp.listen", &self.ingest.tcp.listen),
            ("ingest.udp.listen", &self.ingest.udp.listen),
        ];
        for (key, l) in listeners {
            if let Listen::Invalid(a) = l {
                p.push(format!(
                    "{key}: {a:?} is not an address like \"127.0.0.1:8001\" or \"off\""
                ));
            }
        }
        if self.api.listen == Listen::Off {
            p.push("api.listen: the API cannot be \"off\"".into());
        }
        if !self.api.public_url.is_empty() {
            if let Some(why) = check_public_url(&self.api.public_url) {
                p.push(format!("api.public_url: {why}"));
            }
        }
    }

    /// Sizes, counts and durations of `ingest`, `buffers`, `drains` and `store`.
    fn check_limits(&self, p: &mut Vec<String>) {
        if !(64..=1 << 20).contains(&self.ingest.max_frame) {
            p.push(format!(
                "ingest.max_frame: {} is not between 64 and 1048576",
                self.ingest.max_frame
            ));
        }
        for (key, n) in [
            ("api.max_connections", self.api.max_connections),
            ("ingest.max_connections", self.ingest.max_connections),
            (
                "ingest.http.max_connections",
                self.ingest.http.max_connections,
            ),
        ] {
            if !(1..=1_000_000).contains(&n) {
                p.push(format!("{key}: {n} is not between 1 and 1000000"));
            }
        }
        for (key, n) in [
            ("api.backlog", self.api.backlog),
            ("ingest.http.backlog", self.ingest.http.backlog),
            ("ingest.tcp.backlog", self.ingest.tcp.backlog),
        ] {
            if !(1..=65535).contains(&n) {
                p.push(format!("{key}: {n} is not between 1 and 65535"));
            }
        }
        match self.ingest.http.body_timeout.get() {
            Some(d) if d >= Duration::from_secs(1) => {}
            _ => p.push(format!(
                "ingest.http.body_timeout: {:?} is not a duration of 1s or more like \"10s\"",
                self.ingest.http.body_timeout.text()
            )),
        }
        match self.ingest.tcp.idle_timeout.get() {
            Some(d) if d >= Duration::from_secs(1) => {}
            _ => p.push(format!(
                "ingest.tcp.idle_timeout: {:?} is not a duration of 1s or more like \"5m\"",
                self.ingest.tcp.idle_timeout.text()
            )),
        }
        if self.ingest.http.max_inflight_bytes < self.ingest.http.max_body
            || self.ingest.http.max_inflight_bytes > 1 << 40
        {
            p.push(format!(
                "ingest.http.max_inflight_bytes: {} is not between ingest.http.max_body ({}) and 1 TiB",
                self.ingest.http.max_inflight_bytes, self.ingest.http.max_body
            ));
        }
        if self.ingest.http.max_body < self.ingest.max_frame {
            p.push("ingest.http.max_body: must be at least ingest.max_frame".into());
        }
        if self.buffers.history_lines == 0 || self.buffers.history_lines > 1_000_000 {
            p.push(format!(
                "buffers.history_lines: {} is not between 1 and 1000000",
                self.buffers.history_lines
            ));
        }
        // A stored line weighs its frame plus its record: the ring must hold the largest.
        let line_max = self.ingest.max_frame + crate::channel::ring::LINE_OVERHEAD;
        if self.buffers.history_bytes < line_max {
            p.push(format!(
                "buffers.history_bytes: must be at least ingest.max_frame + {} ({line_max})",
                crate::channel::ring::LINE_OVERHEAD
            ));
        }
        if self.buffers.tail_lines == 0 {
            p.push("buffers.tail_lines: must be at least 1".into());
        }
        if self.drains.buffer_lines == 0 {
            p.push("drains.buffer_lines: must be at least 1".into());
        }
        if self.drains.max_lag().is_none() {
            p.push(format!(
                "drains.max_lag: {:?} is neither a duration like \"2h\" nor a size like \"512MiB\"",
                self.drains.max_lag
            ));
        }
        if let Some(f) = &self.drains.tls_ca_file {
            if !f.exists() {
                p.push(format!(
                    "drains.tls_ca_file: {} does not exist",
                    f.display()
                ));
            }
        }
        if self.store.path.as_os_str().is_empty() {
            p.push("store.path: must not be empty".into());
        }
        match self.store.metrics_save_interval.get() {
            Some(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(86_400) => {}
            _ => p.push(format!(
                "store.metrics_save_interval: {:?} is not a duration from 1s to 1d like \"1m\"",
                self.store.metrics_save_interval.text()
            )),
        }
    }

    /// `[cluster]`.
    fn check_cluster(&self, p: &mut Vec<String>) {
        let c = &self.cluster;
        if matches!(&c.redis, RedisAt::Cluster(seeds) if seeds.is_empty()) {
            p.push("cluster.redis: an empty list: give one \"redis://host:port\" or the seed nodes of a Redis Cluster".into());
        }
        for url in c.redis.urls() {
            match redis::Client::open(url) {
                Ok(client) => {
                    if !matches!(
                        client.get_connection_info().addr,
                        redis::ConnectionAddr::Tcp(_, _)
                    ) {
                        p.push(format!(
                            "cluster.redis: {url:?} is not a redis://host:port URL (TLS and unix sockets are not taken yet)"
                        ));
                    }
                }
                Err(e) => p.push(format!(
                    "cluster.redis: {url:?} is not a Redis URL like \"redis://127.0.0.1:6379\": {e}"
                )),
            }
        }
        if !(100..=100_000_000).contains(&c.changes_kept) {
            p.push(format!(
                "cluster.changes_kept: {} is not between 100 and 100000000",
                c.changes_kept
            ));
        }
        if !(1..=64).contains(&c.publishers) {
            p.push(format!(
                "cluster.publishers: {} is not between 1 and 64",
                c.publishers
            ));
        }
        if !(1024..=(1 << 34)).contains(&c.log_queue_bytes) {
            p.push(format!(
                "cluster.log_queue_bytes: {} is not between 1024 and 17179869184",
                c.log_queue_bytes
            ));
        }
        if c.node.len() > 200 || c.node.chars().any(char::is_control) {
            p.push("cluster.node: must be at most 200 printable characters".into());
        }
    }

    /// `[log]`.
    fn check_log(&self, p: &mut Vec<String>) {
        match self.log.fsync_interval.get() {
            Some(d) if d >= Duration::from_millis(1) && d <= Duration::from_secs(60) => {}
            _ => p.push(format!(
                "log.fsync_interval: {:?} is not a duration from 1ms to 60s like \"1s\"",
                self.log.fsync_interval.text()
            )),
        }
        match self.log.max_age.get() {
            Some(d) if d >= Duration::from_secs(60) => {}
            _ => p.push(format!(
                "log.max_age: {:?} is not a duration of a minute or more like \"7d\"",
                self.log.max_age.text()
            )),
        }
        if self.log.max_bytes < 64 << 20 {
            p.push(format!(
                "log.max_bytes: {} is below the least useful size, 67108864 (64 MiB)",
                self.log.max_bytes
            ));
        }
        if !(1..=10_000_000).contains(&self.log.max_lines_per_session) {
            p.push(format!(
                "log.max_lines_per_session: {} is not between 1 and 10000000",
                self.log.max_lines_per_session
            ));
        }
    }

    /// `[[channels]]`: names, token names and tokens, each declared once.
    fn check_channels(&self, p: &mut Vec<String>) {
        let mut names = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            let at = format!("channels[{i}]");
            if !valid_channel_name(&c.name) {
                p.push(format!(
                    "{at}.name: {:?} is not a channel name (^[a-z][a-z0-9-]{{1,62}}$)",
                    c.name
                ));
            }
            if !names.insert(c.name.as_str()) {
                p.push(format!("{at}.name: {:?} is declared twice", c.name));
            }
            for (name, token) in &c.tokens {
                if !valid_token_name(name) {
                    p.push(format!(
                        "{at}.tokens: {name:?} is not a token name ({})",
                        crate::names::TOKEN_NAME_RULE
                    ));
                }
                if !valid_token(token, "t.") {
                    p.push(format!(
                        "{at}.tokens.{name}: {token:?} is not \"t.\" followed by a UUID"
                    ));
                }
                if !tokens.insert(token.as_str()) {
                    p.push(format!("{at}.tokens.{name}: {token:?} is used twice"));
                }
            }
            for (j, url) in c.drains.iter().enumerate() {
                if let Err(e) = crate::drain::DrainUrl::parse(url) {
                    p.push(format!("{at}.drains[{j}]: {e}"));
                }
            }
            if c.drains.len() > self.drains.max_per_channel {
                p.push(format!(
                    "{at}.drains: more than drains.max_per_channel ({})",
                    self.drains.max_per_channel
                ));
            }
        }
    }

    /// `[[alerts]]`: unique names, then every problem of each rule (see `Rule::compile`).
    fn check_alerts(&self, p: &mut Vec<String>) {
        let mut alert_names = std::collections::HashSet::new();
        for (i, a) in self.alerts.iter().enumerate() {
            let at = format!("alerts[{i}]");
            if a.name.is_empty() {
                p.push(format!("{at}.name: must not be empty"));
            }
            if !alert_names.insert(a.name.as_str()) {
                p.push(format!("{at}.name: {:?} is declared twice", a.name));
            }
            if let Err(errors) = crate::alert::rule::Rule::compile(a, "config") {
                for e in errors {
                    match (e.field(), &e) {
                        // An empty name is said once, above.
                        (_, crate::alert::rule::RuleError::Name(_)) if a.name.is_empty() => {}
                        (Some(f), _) => p.push(format!("{at}.{f}: {e}")),
                        (None, _) => p.push(format!("{at}: {e}")),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn the_shipped_config_toml_is_valid() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let c = Config::from_toml(&text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.api.listen, Listen::Addr(([127, 0, 0, 1], 8001).into()));
        assert_eq!(c.buffers.history_lines, 1500);
    }

    #[test]
    fn cluster_keys_are_checked_together() {
        let ok = Config::from_toml("[cluster]\nredis = \"redis://127.0.0.1:6379\"\n").unwrap();
        ok.validate().unwrap();
        assert!(ok.cluster.on() && !Config::default().cluster.on());
        let c = Config::from_toml(
            "[cluster]\nredis = \"http://x\"\nchanges_kept = 5\nnode = \"a\\u0007b\"\n",
        )
        .unwrap();
        let all = c.validate().unwrap_err().join("\n");
        for needle in ["cluster.redis", "cluster.changes_kept", "cluster.node"] {
            assert!(all.contains(needle), "{needle} not in {all}");
        }
        let c = Config::from_toml("[cluster]\nredis = \"rediss://127.0.0.1:6379\"\n").unwrap();
        assert!(c.validate().unwrap_err()[0].contains("TLS"));
        let c =
            Config::from_toml("[cluster]\nredis = [\"redis://a:1\", \"redis://b:1\"]\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.cluster.redis.urls(), ["redis://a:1", "redis://b:1"]);
        let c = Config::from_toml("[cluster]\nredis = [\"redis://a:1\", \"http://b\"]\n").unwrap();
        assert!(c.validate().unwrap_err()[0].contains("\"http://b\""));
        let c = Config::from_toml("[cluster]\nredis = []\npublishers = 0\n").unwrap();
        let all = c.validate().unwrap_err().join("\n");
        assert!(
            all.contains("an empty list") && all.contains("cluster.publishers"),
            "{all}"
        );
    }

    #[test]
    fn unknown_keys_are_an_error() {
        let e = Config::from_toml("[api]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(e.problems[0].contains("lisen"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = Config::from_toml(
            "[ingest.tcp]\nlisten = \"nowhere\"\n[buffers]\nhistory_lines = 0\n\
             [[channels]]\nname = \"Bad_Name\"\ntokens = { app = \"t.nope\" }\n\
             [[alerts]]\nname = \"a\"\nthreshold = 0\nwindow = \"0s\"\nwebhook = \"ftp://x\"\n",
        )
        .unwrap();
        let p = c.validate().unwrap_err();
        let all = p.join("\n");
        for needle in [
            "ingest.tcp.listen",
            "history_lines",
            "channels[0].name",
            "tokens.app",
            "threshold",
            "window",
            "webhook",
            "needs \"where\"",
        ] {
            assert!(all.contains(needle), "missing {needle} in {all}");
        }
    }

    #[test]
    fn public_url() {
        let bound: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let mut c = Config::default();
        assert_eq!(c.api.public_url(bound), "http://127.0.0.1:8001");
        c.api.public_url = "https://logs.example.com/logplex/".into();
        c.validate().unwrap();
        assert_eq!(c.api.public_url(bound), "https://logs.example.com/logplex");
        for bad in [
            "logs.example.com",
            "ftp://logs.example.com",
            "https://u:p@logs.example.com",
            "https://logs.example.com/?x=1",
        ] {
            c.api.public_url = bad.into();
            let p = c.validate().unwrap_err();
            assert!(p[0].starts_with("api.public_url: "), "{bad}: {p:?}");
        }
    }

    #[test]
    fn limits_are_validated_together() {
        let c = Config::from_toml(
            "[api]\nmax_connections = 0\nbacklog = 0\n\
             [ingest.http]\nbody_timeout = \"500ms\"\nmax_inflight_bytes = 1024\n\
             [ingest.tcp]\nidle_timeout = \"forever\"\nbacklog = 70000\n",
        )
        .unwrap();
        let all = c.validate().unwrap_err().join("\n");
        for needle in [
            "api.max_connections",
            "api.backlog",
            "ingest.http.body_timeout",
            "ingest.http.max_inflight_bytes",
            "ingest.tcp.idle_timeout",
            "ingest.tcp.backlog",
        ] {
            assert!(all.contains(needle), "missing {needle} in {all}");
        }
        let d = Config::default();
        assert_eq!(d.ingest.http.body_timeout(), Duration::from_secs(10));
        assert_eq!(d.ingest.tcp.idle_timeout(), Duration::from_secs(300));
    }

    #[test]
    fn off_disables_a_listener() {
        let c = Config::from_toml("[ingest.udp]\nlisten = \"off\"\n").unwrap();
        assert_eq!(c.ingest.udp.listen.addr(), None);
        c.validate().unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
    }

    #[test]
    fn drains_max_lag_is_an_age_or_a_size() {
        let lag = |t: &str| {
            DrainsConfig {
                max_lag: t.into(),
                ..DrainsConfig::default()
            }
            .max_lag()
        };
        assert_eq!(lag(""), Some(MaxLag::Retention));
        assert_eq!(lag("2h"), Some(MaxLag::Age(Duration::from_secs(7200))));
        assert_eq!(lag("512MiB"), Some(MaxLag::Bytes(512 << 20)));
        assert_eq!(lag("1GB"), Some(MaxLag::Bytes(1_000_000_000)));
        assert_eq!(lag("4096"), Some(MaxLag::Bytes(4096)));
        assert_eq!(lag("0s"), None);
        assert_eq!(lag("lots"), None);
        let mut c = Config::default();
        c.drains.max_lag = "soon".into();
        let e = c.validate().unwrap_err().join("\n");
        assert!(e.contains("drains.max_lag: \"soon\""), "{e}");
    }
}
