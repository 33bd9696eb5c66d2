//! Drain lag as Prometheus series, read from the running drains when `/metrics` is scraped
//! (nothing on the delivery path):
//!
//! | series | type | what |
//! |---|---|---|
//! | `logplex_drain_lag_lines{type}` | gauge | lines not delivered yet, summed over the drains of the type |
//! | `logplex_drain_lag_seconds{type}` | gauge | how far behind the furthest drain of the type is |
//!
//! With the durable log a drain's lag runs from its cursor to its channel's newest line;
//! without it, it is the lines in its buffer (and the seconds are 0).

use super::Drains;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntGaugeVec, Opts};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// The collector, registered once.
pub struct LagSeries {
    drains: Weak<Drains>,
    lines: IntGaugeVec,
    seconds: GaugeVec,
    /// One scrape at a time: the vectors are reset and refilled for each.
    scrape: Mutex<()>,
}

impl LagSeries {
    pub fn new(drains: &Arc<Drains>) -> LagSeries {
        LagSeries {
            drains: Arc::downgrade(drains),
            lines: IntGaugeVec::new(
                Opts::new(
                    "logplex_drain_lag_lines",
                    "Lines drains have not delivered yet, by drain type",
                ),
                &["type"],
            )
            .expect("static metric definition"),
            seconds: GaugeVec::new(
                Opts::new(
                    "logplex_drain_lag_seconds",
                    "How far behind (seconds) the furthest drain of a type is",
                ),
                &["type"],
            )
            .expect("static metric definition"),
            scrape: Mutex::new(()),
        }
    }
}

impl Collector for LagSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.lines
            .desc()
            .into_iter()
            .chain(self.seconds.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.lines.reset();
        self.seconds.reset();
        if let Some(drains) = self.drains.upgrade() {
            let mut by: HashMap<&'static str, (u64, f64)> = HashMap::new();
            for (kind, (lines, secs)) in drains.lags() {
                let e = by.entry(kind).or_default();
                e.0 += lines;
                e.1 = e.1.max(secs);
            }
            for (kind, (lines, secs)) in by {
                self.lines
                    .with_label_values(&[kind])
                    .set(lines.min(i64::MAX as u64) as i64);
                self.seconds.with_label_values(&[kind]).set(secs);
            }
        }
        self.lines
            .collect()
            .into_iter()
            .chain(self.seconds.collect())
            .collect()
    }
}
