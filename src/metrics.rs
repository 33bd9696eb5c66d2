//! Prometheus metrics, registered once. Hot paths hold the resolved children
//! ([`InputCounters`]) and add per read or per batch, not per message.

mod apps;

pub use apps::AppSeries;

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every series logplex exports.
pub struct Metrics {
    registry: Registry,
    pub received: IntCounterVec,
    pub rejected: IntCounterVec,
    pub history_lines: IntGauge,
    pub history_bytes: IntGauge,
    pub channels: IntGauge,
    pub sessions_open: IntGauge,
    pub tail_dropped: IntCounter,
    pub tcp_connections: IntGauge,
    pub drain_sent: IntCounterVec,
    pub drain_dropped: IntCounterVec,
    pub drain_retried: IntCounterVec,
    pub drain_buffered: IntGaugeVec,
    pub drain_connected: IntGaugeVec,
    pub drains: IntGaugeVec,
    /// Alert rules that fired, by rule name (`logplex_alerts_fired_total{alert}`).
    pub alerts_fired: IntCounterVec,
    /// (rule, channel) pairs firing now, by rule name.
    pub alerts_firing: IntGaugeVec,
    /// Alert notifications dropped because their queue was full (drop-newest).
    pub alert_notices_dropped: IntCounter,
    /// Latency of the durable log's fsyncs.
    pub log_fsync_seconds: prometheus::Histogram,
    /// Webhook deliveries by result: `delivered`, `refused` (4xx), `failed` (gave up).
    pub alert_webhooks: IntCounterVec,
    /// Request bodies refused while being read, by listener (`api`, `http`) and reason
    /// (`over_budget`: 503; `timeout`, `too_slow`: 408).
    pub bodies_refused: IntCounterVec,
    /// Bytes reserved by request bodies being read now (out of
    /// `ingest.http.max_inflight_bytes`); set when `/metrics` is read.
    pub body_bytes_inflight: IntGauge,
    /// Connections open, by listener (`api`, `http`, `tcp`).
    pub connections_open: IntGaugeVec,
    /// Connections closed by logplex, by listener and reason (`evicted`: the one idle
    /// longest at the cap, to admit a new one; `idle`: silent for the idle timeout;
    /// `refused`: no room even after an eviction).
    pub connections_closed: IntCounterVec,
}

/// The series of one drain type (`syslog`, `syslog_tls`, `syslog_udp`, `http`, `https`),
/// resolved when a drain starts. Labels stay low-cardinality: no URLs, no tokens.
#[derive(Clone)]
pub struct DrainCounters {
    pub sent: IntCounter,
    pub dropped: IntCounter,
    pub retried: IntCounter,
    pub buffered: IntGauge,
    pub connected: IntGauge,
    pub drains: IntGauge,
}

/// Why a message was not stored (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Malformed,
    TooLong,
    UnknownToken,
    /// An implausible octet count on a syslog TCP stream (the bytes up to the next frame
    /// start are discarded): counted once per count, not per message.
    BadCount,
    /// An HTTP batch that a drain of the same channel sent (`Logplex-Drain-Token`): storing
    /// it would send it back to that drain forever.
    DrainLoop,
    /// An HTTP batch refused because the durable log cannot write (503).
    NotStored,
}

impl Reject {
    fn label(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::TooLong => "too_long",
            Reject::UnknownToken => "unknown_token",
            Reject::BadCount => "bad_count",
            Reject::DrainLoop => "drain_loop",
            Reject::NotStored => "not_stored",
        }
    }
}

/// The counters of one input (`tcp`, `udp`, `http`), resolved once.
#[derive(Clone)]
pub struct InputCounters {
    pub received: IntCounter,
    pub malformed: IntCounter,
    pub too_long: IntCounter,
    pub unknown_token: IntCounter,
    pub bad_count: IntCounter,
    pub drain_loop: IntCounter,
    pub not_stored: IntCounter,
}

impl InputCounters {
    pub fn reject(&self, why: Reject, n: u64) {
        match why {
            Reject::Malformed => self.malformed.inc_by(n),
            Reject::TooLong => self.too_long.inc_by(n),
            Reject::UnknownToken => self.unknown_token.inc_by(n),
            Reject::BadCount => self.bad_count.inc_by(n),
            Reject::DrainLoop => self.drain_loop.inc_by(n),
            Reject::NotStored => self.not_stored.inc_by(n),
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let received = IntCounterVec::new(
            Opts::new(
                "logplex_messages_received_total",
                "Messages received and stored, by input",
            ),
            &["input"],
        )
        .expect("static metric definition");
        let rejected = IntCounterVec::new(
            Opts::new(
                "logplex_messages_rejected_total",
                "Messages not stored, by input and reason",
            ),
            &["input", "reason"],
        )
        .expect("static metric definition");
        let history_lines =
            IntGauge::new("logplex_history_lines", "Lines held in channel histories")
                .expect("static");
        let history_bytes =
            IntGauge::new("logplex_history_bytes", "Bytes held in channel histories")
                .expect("static");
        let channels = IntGauge::new("logplex_channels", "Channels").expect("static");
        let sessions_open =
            IntGauge::new("logplex_sessions_open", "Session streams open").expect("static");
        let tail_dropped = IntCounter::new(
            "logplex_tail_dropped_total",
            "Lines dropped by tails that could not keep up (L11)",
        )
        .expect("static");
        let tcp_connections =
            IntGauge::new("logplex_tcp_connections", "Open syslog TCP connections")
                .expect("static");
        let by_type = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["type"]).expect("static")
        };
        let gauge_by_type = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["type"]).expect("static")
        };
        let drain_sent = by_type(
            "logplex_drain_sent_total",
            "Messages delivered to drains, by drain type",
        );
        let drain_dropped = by_type(
            "logplex_drain_dropped_total",
            "Messages drains dropped (buffer full, or batch refused), by type (L10)",
        );
        let drain_retried = by_type(
            "logplex_drain_retried_total",
            "Drain deliveries retried or reconnects, by type",
        );
        let drain_buffered = gauge_by_type(
            "logplex_drain_buffered",
            "Messages waiting in drain buffers, by type",
        );
        let drain_connected = gauge_by_type(
            "logplex_drain_connected",
            "Drains with an open connection, by type",
        );
        let drains = gauge_by_type("logplex_drains", "Drains running, by type");
        let alerts_fired = IntCounterVec::new(
            Opts::new(
                "logplex_alerts_fired_total",
                "Alert rules that fired, by rule",
            ),
            &["alert"],
        )
        .expect("static metric definition");
        let alerts_firing = IntGaugeVec::new(
            Opts::new(
                "logplex_alerts_firing",
                "Channels on which an alert rule is firing now, by rule",
            ),
            &["alert"],
        )
        .expect("static metric definition");
        let alert_notices_dropped = IntCounter::new(
            "logplex_alert_notifications_dropped_total",
            "Alert notifications dropped because the notification queue was full",
        )
        .expect("static");
        let alert_webhooks = IntCounterVec::new(
            Opts::new(
                "logplex_alert_webhooks_total",
                "Alert webhook deliveries, by result (delivered, refused, failed)",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let bodies_refused = IntCounterVec::new(
            Opts::new(
                "logplex_http_bodies_refused_total",
                "Request bodies refused while being read, by listener and reason \
                 (over_budget: 503; timeout, too_slow: 408)",
            ),
            &["listener", "reason"],
        )
        .expect("static metric definition");
        let body_bytes_inflight = IntGauge::new(
            "logplex_http_body_bytes_inflight",
            "Bytes reserved by request bodies being read now",
        )
        .expect("static");
        let connections_open = IntGaugeVec::new(
            Opts::new("logplex_connections_open", "Connections open, by listener"),
            &["listener"],
        )
        .expect("static metric definition");
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "logplex_connections_closed_total",
                "Connections closed by logplex, by listener and reason \
                 (evicted at the cap, idle, refused)",
            ),
            &["listener", "reason"],
        )
        .expect("static metric definition");
        let log_fsync_seconds = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "logplex_log_fsync_seconds",
                "Latency of the durable log's fsyncs",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).expect("static buckets")),
        )
        .expect("static metric definition");
        for c in [
            Box::new(received.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(log_fsync_seconds.clone()),
            Box::new(rejected.clone()),
            Box::new(history_lines.clone()),
            Box::new(history_bytes.clone()),
            Box::new(channels.clone()),
            Box::new(sessions_open.clone()),
            Box::new(tail_dropped.clone()),
            Box::new(tcp_connections.clone()),
            Box::new(drain_sent.clone()),
            Box::new(drain_dropped.clone()),
            Box::new(drain_retried.clone()),
            Box::new(drain_buffered.clone()),
            Box::new(drain_connected.clone()),
            Box::new(drains.clone()),
            Box::new(alerts_fired.clone()),
            Box::new(alerts_firing.clone()),
            Box::new(alert_notices_dropped.clone()),
            Box::new(alert_webhooks.clone()),
            Box::new(bodies_refused.clone()),
            Box::new(body_bytes_inflight.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_closed.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        #[cfg(target_os = "linux")]
        {
            let _ = registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        Metrics {
            registry,
            received,
            rejected,
            history_lines,
            history_bytes,
            channels,
            sessions_open,
            tail_dropped,
            tcp_connections,
            drain_sent,
            drain_dropped,
            drain_retried,
            drain_buffered,
            drain_connected,
            drains,
            alerts_fired,
            alerts_firing,
            alert_notices_dropped,
            log_fsync_seconds,
            alert_webhooks,
            bodies_refused,
            body_bytes_inflight,
            connections_open,
            connections_closed,
        }
    }

    /// The series of one drain type.
    pub fn drain(&self, kind: &str) -> DrainCounters {
        DrainCounters {
            sent: self.drain_sent.with_label_values(&[kind]),
            dropped: self.drain_dropped.with_label_values(&[kind]),
            retried: self.drain_retried.with_label_values(&[kind]),
            buffered: self.drain_buffered.with_label_values(&[kind]),
            connected: self.drain_connected.with_label_values(&[kind]),
            drains: self.drains.with_label_values(&[kind]),
        }
    }

    /// The counters of one input.
    pub fn input(&self, input: &str) -> InputCounters {
        let r = |why: Reject| self.rejected.with_label_values(&[input, why.label()]);
        InputCounters {
            received: self.received.with_label_values(&[input]),
            malformed: r(Reject::Malformed),
            too_long: r(Reject::TooLong),
            unknown_token: r(Reject::UnknownToken),
            bad_count: r(Reject::BadCount),
            drain_loop: r(Reject::DrainLoop),
            not_stored: r(Reject::NotStored),
        }
    }

    /// The Prometheus text exposition.
    /// Adds a collector read at every scrape (such as [`AppSeries`]); a second one of the
    /// same series is refused and logged.
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::error!("a metrics collector was not registered: {e}");
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The durable log's counters and sizes as Prometheus series, read from [`Log::stats`] at
/// each scrape (no per-line cost).
///
/// [`Log::stats`]: crate::log::Log::stats
struct LogCollector {
    log: std::sync::Arc<crate::log::Log>,
    counters: Vec<(IntCounter, StatOf)>,
    gauges: Vec<(IntGauge, StatOf)>,
    degraded: IntGauge,
}

/// Reads one number of the log's stats.
type StatOf = fn(&crate::log::Stats) -> u64;

impl LogCollector {
    fn new(log: std::sync::Arc<crate::log::Log>) -> LogCollector {
        type Get = StatOf;
        let counter = |name: &str, help: &str, get: Get| {
            (
                IntCounter::new(name, help).expect("static metric definition"),
                get,
            )
        };
        let gauge = |name: &str, help: &str, get: Get| {
            (
                IntGauge::new(name, help).expect("static metric definition"),
                get,
            )
        };
        LogCollector {
            log,
            counters: vec![
                counter("logplex_log_appended_lines_total", "Lines appended to the durable log", |s| s.appended_lines),
                counter("logplex_log_written_bytes_total", "Bytes written to the durable log's segments", |s| s.written_bytes),
                counter("logplex_log_fsyncs_total", "Fsyncs of the durable log", |s| s.fsyncs),
                counter("logplex_log_write_failures_total", "Failed writes and fsyncs of the durable log (each made it degraded)", |s| s.write_failures),
                counter("logplex_log_lost_lines_total", "Lines appended, then lost by a failed write or fsync", |s| s.lost_lines),
                counter("logplex_log_rejected_lines_total", "Lines the durable log refused (degraded, or its pending memory full): in memory only", |s| s.rejected_full_lines + s.rejected_failed_lines),
                counter("logplex_log_corrupt_records_total", "Corrupt records found by reads and skipped", |s| s.read_corrupt_records),
                counter("logplex_log_deleted_segments_total", "Segments deleted by retention", |s| s.deleted_segments),
            ],
            gauges: vec![
                gauge("logplex_log_bytes", "Bytes of the durable log's segments", |s| s.bytes),
                gauge("logplex_log_segments", "Segments of the durable log", |s| s.segments),
                gauge("logplex_log_pending_bytes", "Bytes appended to the durable log and not written yet", |s| s.pending_bytes),
            ],
            degraded: IntGauge::new("logplex_log_degraded", "1 while the durable log cannot write")
                .expect("static metric definition"),
        }
    }
}

impl prometheus::core::Collector for LogCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d: Vec<&prometheus::core::Desc> = Vec::new();
        for (c, _) in &self.counters {
            d.extend(c.desc());
        }
        for (g, _) in &self.gauges {
            d.extend(g.desc());
        }
        d.extend(self.degraded.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let s = self.log.stats();
        let mut out = Vec::new();
        for (c, get) in &self.counters {
            c.reset();
            c.inc_by(get(&s));
            out.extend(c.collect());
        }
        for (g, get) in &self.gauges {
            g.set(i64::try_from(get(&s)).unwrap_or(i64::MAX));
            out.extend(g.collect());
        }
        let degraded = matches!(self.log.health(), crate::log::Health::Degraded { .. });
        self.degraded.set(i64::from(degraded));
        out.extend(self.degraded.collect());
        out
    }
}

impl Metrics {
    /// Exports the durable log's series (once, at start).
    pub fn watch_log(&self, log: std::sync::Arc<crate::log::Log>) {
        if let Err(e) = self.registry.register(Box::new(LogCollector::new(log))) {
            tracing::warn!("the durable log's metrics are not exported: {e}");
        }
    }
}
