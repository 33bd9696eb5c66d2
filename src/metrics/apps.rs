//! The Prometheus series of metrics from the logs, for channels with metrics on: a custom
//! collector that reads each channel's cumulative counters (and a snapshot for the
//! quantiles) when `/metrics` is scraped, so the push path makes no Prometheus call.
//!
//! Labels are bounded: `app` (a channel with metrics on), `class` (`1xx` … `5xx`), `code`
//! (`H00` … `H99`), `quantile`; never a path or a dyno.
//!
//! | series | type | what |
//! |---|---|---|
//! | `logplex_app_requests_total{app,class}` | counter | router requests by status class |
//! | `logplex_app_h_codes_total{app,code}` | counter | router lines by H-code (codes seen) |
//! | `logplex_app_response_bytes_total{app}` | counter | `bytes` of router lines |
//! | `logplex_app_service_ms{app,quantile}` | gauge | service time over the last 5 minutes (0.5, 0.95, 0.99) |
//! | `logplex_app_connect_ms{app,quantile}` | gauge | connect time over the last 5 minutes |
//! | `logplex_app_l2met_names{app}` | gauge | l2met names kept |
//! | `logplex_app_l2met_names_over_limit_total{app}` | counter | values left out: their name was over the limit |
//! | `logplex_app_metric_values_malformed_total{app}` | counter | values left out: they did not parse |
//! | `logplex_app_metric_periods_evicted_total{app}` | counter | closed periods dropped to stay within the memory budget |
//! | `logplex_app_metrics_memory_bytes{app}` | gauge | memory the channel's metrics hold |
//!
//! Counters restart from zero when the node starts (roll-ups are restored, counters are not),
//! as Prometheus counters may.

use crate::logmetrics::Metric;
use crate::registry::Registry;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The window of the quantile gauges.
const QUANTILE_WINDOW: Duration = Duration::from_secs(300);

/// The collector; registered once, reading the registry's current snapshot at each scrape.
pub struct AppSeries {
    registry: Weak<Registry>,
    requests: IntCounterVec,
    h_codes: IntCounterVec,
    bytes: IntCounterVec,
    service: GaugeVec,
    connect: GaugeVec,
    names: IntGaugeVec,
    over_limit: IntCounterVec,
    malformed: IntCounterVec,
    evicted: IntCounterVec,
    memory: IntGaugeVec,
    /// (quantile label, service metric, connect metric).
    quantiles: Vec<(&'static str, Metric, Metric)>,
    /// One scrape at a time: the vectors are reset and refilled for each.
    scrape: Mutex<()>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl AppSeries {
    pub fn new(registry: &Arc<Registry>) -> AppSeries {
        let counter = |name, help, labels: &[&str]| {
            IntCounterVec::new(opts(name, help), labels).expect("static metric definition")
        };
        let gauge = |name, help| {
            GaugeVec::new(opts(name, help), &["app", "quantile"]).expect("static metric definition")
        };
        let int_gauge = |name, help| {
            IntGaugeVec::new(opts(name, help), &["app"]).expect("static metric definition")
        };
        let metric = |m: &str| m.parse::<Metric>().expect("a known metric name");
        AppSeries {
            registry: Arc::downgrade(registry),
            requests: counter(
                "logplex_app_requests_total",
                "Router requests of an app with metrics on, by status class",
                &["app", "class"],
            ),
            h_codes: counter(
                "logplex_app_h_codes_total",
                "Router lines of an app with metrics on, by Heroku error code",
                &["app", "code"],
            ),
            bytes: counter(
                "logplex_app_response_bytes_total",
                "Response bytes in the router lines of an app with metrics on",
                &["app"],
            ),
            service: gauge(
                "logplex_app_service_ms",
                "Router service time of an app over the last 5 minutes, by quantile (ms)",
            ),
            connect: gauge(
                "logplex_app_connect_ms",
                "Router connect time of an app over the last 5 minutes, by quantile (ms)",
            ),
            names: int_gauge(
                "logplex_app_l2met_names",
                "l2met names kept for an app (all kinds together)",
            ),
            over_limit: counter(
                "logplex_app_l2met_names_over_limit_total",
                "l2met values left out because their name was over the app's limit of names",
                &["app"],
            ),
            malformed: counter(
                "logplex_app_metric_values_malformed_total",
                "Metric values left out because they did not parse or changed unit",
                &["app"],
            ),
            evicted: counter(
                "logplex_app_metric_periods_evicted_total",
                "Closed metric periods dropped to keep an app's metrics within their memory budget",
                &["app"],
            ),
            memory: int_gauge(
                "logplex_app_metrics_memory_bytes",
                "Bytes held by an app's metrics from the logs",
            ),
            quantiles: [("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")]
                .into_iter()
                .map(|(label, p)| {
                    (
                        label,
                        metric(&format!("router.{p}_service")),
                        metric(&format!("router.{p}_connect")),
                    )
                })
                .collect(),
            scrape: Mutex::new(()),
        }
    }

    fn all(&self) -> [&dyn Collector; 10] {
        [
            &self.requests,
            &self.h_codes,
            &self.bytes,
            &self.service,
            &self.connect,
            &self.names,
            &self.over_limit,
            &self.malformed,
            &self.evicted,
            &self.memory,
        ]
    }

    fn fill(&self) {
        for c in [
            &self.requests,
            &self.h_codes,
            &self.bytes,
            &self.over_limit,
            &self.malformed,
            &self.evicted,
        ] {
            c.reset();
        }
        self.service.reset();
        self.connect.reset();
        self.names.reset();
        self.memory.reset();
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let now = crate::clock::now_secs();
        for ch in registry.snapshot().metered() {
            // Counters and a snapshot under the channel's lock; the quantiles without it.
            let Some((c, snap, memory)) =
                ch.with_metrics(|m| (m.counters(), m.snapshot(now, QUANTILE_WINDOW), m.memory()))
            else {
                continue;
            };
            let app = &*ch.name;
            for (class, n) in c.by_status() {
                self.requests.with_label_values(&[app, class]).inc_by(n);
            }
            for (code, n) in c.h_codes() {
                self.h_codes.with_label_values(&[app, code]).inc_by(n);
            }
            self.bytes.with_label_values(&[app]).inc_by(c.bytes);
            self.names.with_label_values(&[app]).set(c.names as i64);
            self.over_limit
                .with_label_values(&[app])
                .inc_by(c.names_over_limit);
            self.malformed.with_label_values(&[app]).inc_by(c.malformed);
            self.evicted.with_label_values(&[app]).inc_by(c.evicted);
            self.memory.with_label_values(&[app]).set(memory as i64);
            for (label, service, connect) in &self.quantiles {
                if let Some(v) = snap.value(service, QUANTILE_WINDOW) {
                    self.service.with_label_values(&[app, label]).set(v);
                }
                if let Some(v) = snap.value(connect, QUANTILE_WINDOW) {
                    self.connect.with_label_values(&[app, label]).set(v);
                }
            }
        }
    }
}

impl Collector for AppSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.all().into_iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.fill();
        self.all()
            .into_iter()
            .flat_map(|c| c.collect())
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}
