//! Alerts (see `docs/alerts.md`): rules from `config.toml` and the API watch channels for matching lines and, when
//! `threshold` of them fall within `window`, put a line in the channel, POST a webhook and
//! move Prometheus series. A metric rule (`metric`, `above`) watches instead a metric from
//! the logs of channels with metrics on: the ticker reads its value over `window` each
//! second and fires while it is above `above`, with the same cooldown, line and webhook
//! (see `docs/metrics.md`).
//!
//! After every store change the registry hands [`Alerts::apply`] the stored rules; it
//! merges them with the config's (compiling only new or changed ones) and gives each channel that has rules one tap. A
//! channel without rules gets no tap and pays nothing. The tap runs on the ingest path with
//! each stored batch: it filters and matches without locks, then takes one short lock per
//! (rule, channel) with matches. Notifications leave through a bounded queue (full: the
//! newest is dropped and counted) to one task that writes the in-band line and starts the
//! webhook deliveries; a ticker resolves windows that emptied.
//!
//! Config rules are kept in memory and merged with the stored ones at each refresh (like
//! config channels, they come back from the config at every start); the API lists them with
//! `"origin":"config"` and refuses to change them.
//!
//! In cluster mode ([`Alerts::share`]) a line rule counts over every node: the tap also
//! keeps each window's matches by wall-clock bucket for the cluster's next round
//! (`cluster::alerts`, once a second), which adds them into Redis, reads the sum of every
//! node's and decides firing and resolving there, once for the cluster; the node whose
//! round made the change writes the line and sends the webhook ([`Alerts::settle`]).
//! While those rounds fail (Redis away) each node counts and fires on its own, as alone.
//! Metric rules stay per node.

pub mod rule;
pub mod spec;
pub mod webhook;
pub mod window;

pub use spec::RuleSpec;

use crate::channel::{Channel, Tap};
use crate::line::Line;
use crate::metrics::Metrics;
use bytes::{Bytes, BytesMut};
use prometheus::{IntCounter, IntGauge};
use rule::Rule;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use window::{Report, Transition, WindowState};

/// Notifications waiting for the notification task; beyond this the newest are dropped.
pub const QUEUE: usize = 1024;
/// Webhook deliveries in flight at once; beyond this a notification's POST is dropped.
pub const DELIVERIES: usize = 64;
/// How often firing windows are checked for resolving (and cooled-down ones for firing).
pub const TICK: Duration = Duration::from_secs(1);

/// One rule watching one channel: its window and the metric children it moves.
pub struct Watch {
    pub rule: Arc<Rule>,
    channel: Weak<Channel>,
    channel_name: Arc<str>,
    /// The channel's id: a channel made again under the same name is another window.
    channel_id: i64,
    state: Mutex<WindowState>,
    fired: IntCounter,
    firing: IntGauge,
    /// The `firing` gauge counts this window now (so it is raised and lowered once each,
    /// whichever node's round decided).
    gauge: AtomicBool,
    /// A metric rule on a channel with metrics off has said so once in the log.
    warned: AtomicBool,
    /// Cluster mode: this node follows the window in the cluster's rounds until then
    /// (wall clock, µs): a window later than its last match here.
    active_until_us: AtomicI64,
    /// Cluster mode: the cluster's count and firing state as the last round read them,
    /// and when (wall clock, µs; 0: never).
    cluster_count: AtomicU64,
    cluster_firing: AtomicBool,
    cluster_at_us: AtomicI64,
}

impl Watch {
    fn new(rule: &Arc<Rule>, channel: &Arc<Channel>, metrics: &Metrics) -> Watch {
        Watch {
            rule: rule.clone(),
            channel: Arc::downgrade(channel),
            channel_name: channel.name.clone(),
            channel_id: channel.id,
            state: Mutex::new(WindowState::new(rule.window, rule.threshold, rule.cooldown)),
            fired: metrics.alerts_fired.with_label_values(&[&rule.spec.name]),
            firing: metrics.alerts_firing.with_label_values(&[&rule.spec.name]),
            gauge: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            active_until_us: AtomicI64::new(0),
            cluster_count: AtomicU64::new(0),
            cluster_firing: AtomicBool::new(false),
            cluster_at_us: AtomicI64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raises or lowers the `firing` gauge for this window, once each way.
    fn set_gauge(&self, on: bool) {
        if self.gauge.swap(on, Ordering::Relaxed) != on {
            if on {
                self.firing.inc();
            } else {
                self.firing.dec();
            }
        }
    }

    /// The channel this window watches.
    pub fn channel_name(&self) -> &str {
        &self.channel_name
    }

    /// The id of the channel watched.
    pub fn channel_id(&self) -> i64 {
        self.channel_id
    }

    /// `CHANNEL APP RULE`: the window's name in the cluster's set of firing windows.
    pub fn index_name(&self) -> String {
        format!(
            "{} {} {}",
            self.channel_name, self.rule.spec.app, self.rule.spec.name
        )
    }
}

/// Whether line rules count over the cluster, and whether its last round reached Redis.
#[derive(Default)]
struct Sharing {
    on: AtomicBool,
    live: AtomicBool,
}

impl Sharing {
    /// The cluster counts and decides (cluster mode, and its last round reached Redis).
    fn live(&self) -> bool {
        self.on.load(Ordering::Relaxed) && self.live.load(Ordering::Relaxed)
    }
}

/// A state change on its way to the notification task.
struct Notice {
    watch: Arc<Watch>,
    snap: Report,
}

/// Where transitions are reported: metrics at once, the rest through the queue.
#[derive(Clone)]
struct Notifier {
    tx: mpsc::Sender<Notice>,
    dropped: IntCounter,
}

impl Notifier {
    fn notify(&self, watch: &Arc<Watch>, snap: Report) {
        match snap.transition {
            Transition::Fire => {
                watch.fired.inc();
                watch.set_gauge(true);
            }
            Transition::Resolve => watch.set_gauge(false),
        }
        let notice = Notice {
            watch: watch.clone(),
            snap,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(notice) {
            self.dropped.inc();
        }
    }
}

/// The rules and their windows.
pub struct Alerts {
    config_rules: Vec<RuleSpec>,
    inner: Mutex<Inner>,
    notifier: Notifier,
    metrics: Arc<Metrics>,
    sharing: Arc<Sharing>,
}

#[derive(Default)]
struct Inner {
    rules: Vec<Arc<Rule>>,
    /// (app, rule name, channel) → watch; kept across refreshes while the rule's definition
    /// and the channel stay the same, so windows are not reset by unrelated changes.
    watches: HashMap<(String, String, Arc<str>), Arc<Watch>>,
}

impl Alerts {
    /// Compiles the config rules and starts the notification task and the ticker.
    pub fn start(ctx: &crate::server::Deps<'_>) -> anyhow::Result<Arc<Alerts>> {
        for (i, a) in ctx.config.alerts.iter().enumerate() {
            Rule::compile(a, "config").map_err(|e| anyhow::anyhow!("alerts[{i}]: {}", e[0]))?;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let mgr = Arc::new(Alerts {
            config_rules: ctx.config.alerts.clone(),
            inner: Mutex::new(Inner::default()),
            notifier: Notifier {
                tx,
                dropped: ctx.metrics.alert_notices_dropped.clone(),
            },
            metrics: ctx.metrics.clone(),
            sharing: Arc::default(),
        });
        let deliveries = Deliveries {
            clients: webhook::Clients::new(&crate::drain::tls::Tls::new(
                ctx.config.drains.tls_ca_file.as_deref(),
            )?),
            slots: Arc::new(Semaphore::new(DELIVERIES)),
            tasks: ctx.tasks.clone(),
            shutdown: ctx.shutdown.clone(),
            delivered: ctx.metrics.alert_webhooks.with_label_values(&["delivered"]),
            refused: ctx.metrics.alert_webhooks.with_label_values(&["refused"]),
            failed: ctx.metrics.alert_webhooks.with_label_values(&["failed"]),
        };
        ctx.tasks
            .spawn_on(notify_loop(rx, deliveries), &ctx.runtime);
        ctx.tasks.spawn_on(
            tick_loop(Arc::downgrade(&mgr), ctx.shutdown.clone()),
            &ctx.runtime,
        );
        Ok(mgr)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every (rule, channel) window checked once: resolves the ones that emptied, fires
    /// the ones whose cooldown ended while still over threshold.
    pub fn tick(&self) {
        let watches: Vec<Arc<Watch>> = self.inner().watches.values().cloned().collect();
        let now = Instant::now();
        let shared = self.sharing.live();
        for w in &watches {
            let snap = match &w.rule.metric {
                // The cluster's rounds decide.
                None if shared => None,
                None => w.lock().check(now),
                Some(m) => self.check_metric(w, m, now),
            };
            if let Some(s) = snap {
                self.notifier.notify(w, s);
            }
        }
    }

    /// A metric rule's value over its window on its channel, checked against its limit.
    /// A channel with metrics off is skipped (with a warning, once).
    fn check_metric(&self, w: &Watch, m: &rule::MetricRule, now: Instant) -> Option<Report> {
        let ch = w.channel.upgrade()?;
        let window = w.rule.window;
        let wall = crate::clock::now_secs();
        let Some(snap) = ch.with_metrics(|lm| lm.snapshot(wall, window)) else {
            if !w.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    alert = %w.rule.spec.name, app = %w.channel_name,
                    "metric alert rule skipped: the app has metrics off"
                );
            }
            // Metrics turned off while firing: resolve.
            return w.lock().check_metric(now, None, m.above);
        };
        let value = snap.value(&m.metric, window);
        w.lock().check_metric(now, value, m.above)
    }
}

/// The state of one rule on one channel, for the API and the console.
#[derive(Debug, Clone)]
pub struct WatchState {
    pub channel: Arc<str>,
    pub firing: bool,
    /// Matching lines in the window now.
    pub count: u64,
    /// When it last fired (wall clock, µs) since the server started.
    pub last_fired_us: Option<i64>,
}

impl Alerts {
    /// The state of rule `name` of `app` (`*` for every app) on each channel it watches,
    /// by channel name.
    pub fn states(&self, app: &str, name: &str) -> Vec<WatchState> {
        let watches: Vec<Arc<Watch>> = self
            .inner()
            .watches
            .iter()
            .filter(|((a, n, _), _)| a == app && n == name)
            .map(|(_, w)| w.clone())
            .collect();
        let now = Instant::now();
        // The cluster's view when a round read it lately.
        let fresh = self
            .sharing
            .live()
            .then(|| crate::clock::now_micros() - 3_000_000);
        let mut out: Vec<WatchState> = watches
            .iter()
            .map(|w| {
                let st = w.lock();
                let mut ws = WatchState {
                    channel: w.channel_name.clone(),
                    firing: st.firing(),
                    count: st.count(now),
                    last_fired_us: st.last_fired_us(),
                };
                if fresh.is_some_and(|f| w.cluster_at_us.load(Ordering::Relaxed) > f) {
                    ws.firing = w.cluster_firing.load(Ordering::Relaxed);
                    ws.count = w.cluster_count.load(Ordering::Relaxed);
                }
                ws
            })
            .collect();
        out.sort_by(|a, b| a.channel.cmp(&b.channel));
        out
    }
}

impl Alerts {
    /// Makes the running rules the config's plus `stored` (the store's, after a change):
    /// unchanged rules keep their windows, new or changed ones are compiled, windows of
    /// removed rules and of channels that no longer exist are dropped.
    pub fn apply(&self, stored: &[RuleSpec], channel_exists: &dyn Fn(&str) -> bool) {
        let mut inner = self.inner();
        let mut rules: Vec<Arc<Rule>> = Vec::with_capacity(self.config_rules.len() + stored.len());
        let specs = self
            .config_rules
            .iter()
            .map(|s| (s, "config"))
            .chain(stored.iter().map(|s| (s, "api")));
        for (spec, origin) in specs {
            if origin == "api"
                && self
                    .config_rules
                    .iter()
                    .any(|c| c.app == spec.app && c.name == spec.name)
            {
                tracing::warn!(
                    alert = %spec.name, app = %spec.app,
                    "a stored alert rule has the name of a config rule; the config rule wins"
                );
                continue;
            }
            if let Some(r) = inner
                .rules
                .iter()
                .find(|r| r.origin == origin && r.spec == *spec)
            {
                rules.push(r.clone());
                continue;
            }
            match Rule::compile(spec, origin) {
                Ok(r) => rules.push(Arc::new(r)),
                Err(e) => {
                    let why: Vec<String> = e.iter().map(|e| e.to_string()).collect();
                    tracing::error!(
                        alert = %spec.name, app = %spec.app,
                        "alert rule skipped: {}", why.join(" ")
                    )
                }
            }
        }
        inner.watches.retain(|_, w| {
            let keep = channel_exists(&w.channel_name)
                && w.rule.watches(&w.channel_name)
                && rules.iter().any(|r| Arc::ptr_eq(r, &w.rule));
            if !keep {
                w.set_gauge(false);
            }
            keep
        });
        inner.rules = rules;
    }

    /// The taps of `channel`: one for all the rules watching it, none without rules.
    pub fn taps(&self, channel: &Arc<Channel>) -> Vec<Arc<dyn Tap>> {
        let mut inner = self.inner();
        let Inner { rules, watches } = &mut *inner;
        let mut lines = Vec::new();
        for r in rules.iter().filter(|r| r.watches(&channel.name)) {
            let key = (
                r.spec.app.clone(),
                r.spec.name.clone(),
                channel.name.clone(),
            );
            let weak = Arc::downgrade(channel);
            let current = watches
                .get(&key)
                .filter(|w| Arc::ptr_eq(&w.rule, r) && Weak::ptr_eq(&w.channel, &weak))
                .cloned();
            let w = match current {
                Some(w) => w,
                None => {
                    let w = Arc::new(Watch::new(r, channel, &self.metrics));
                    if let Some(old) = watches.insert(key, w.clone()) {
                        old.set_gauge(false);
                    }
                    w
                }
            };
            // Metric rules are read by the ticker: only line rules see lines.
            if r.metric.is_none() {
                lines.push(w);
            }
        }
        if lines.is_empty() {
            return Vec::new();
        }
        let prefilter = prefilter(&lines);
        vec![Arc::new(AlertTap {
            watches: lines,
            prefilter,
            notifier: self.notifier.clone(),
            sharing: self.sharing.clone(),
        })]
    }
}

/// One scan for every literal some rule of the channel needs: a line with none of them
/// cannot match any rule, and most lines are dropped by it (measured with 3 rules on the
/// benchmark channel: 22% -> see the note of the commit). `None` when some rule has no
/// required literal.
fn prefilter(watches: &[Arc<Watch>]) -> Option<aho_corasick::packed::Searcher> {
    let mut lits = Vec::new();
    for w in watches {
        lits.extend(w.rule.matcher.required_literals()?);
    }
    // The SIMD (Teddy) searcher; `None` where the CPU lacks it or there are too many.
    aho_corasick::packed::Config::new()
        .builder()
        .extend(&lits)
        .build()
}

/// The alert rules of one channel, called with every stored batch.
struct AlertTap {
    watches: Vec<Arc<Watch>>,
    prefilter: Option<aho_corasick::packed::Searcher>,
    notifier: Notifier,
    sharing: Arc<Sharing>,
}

impl Tap for AlertTap {
    fn lines(&self, _channel: &Channel, lines: &[Line]) {
        let mut now: Option<(Instant, i64)> = None;
        // The lines that could match some rule (all of them without a prefilter).
        let candidates: Vec<usize> = match &self.prefilter {
            Some(ac) => (0..lines.len())
                .filter(|&i| ac.find(lines[i].msg()).is_some())
                .collect(),
            None => (0..lines.len()).collect(),
        };
        if candidates.is_empty() {
            return;
        }
        for w in &self.watches {
            // The last SAMPLES matching lines, by index, in a small ring: no allocation.
            let mut ring = [0usize; window::SAMPLES];
            let mut n = 0usize;
            for &i in &candidates {
                let l = &lines[i];
                if w.rule.counts(l) {
                    ring[n % window::SAMPLES] = i;
                    n += 1;
                }
            }
            if n == 0 {
                continue;
            }
            let (t, wall) =
                *now.get_or_insert_with(|| (Instant::now(), crate::clock::now_micros()));
            let kept = n.min(window::SAMPLES);
            let start = if n > window::SAMPLES {
                n % window::SAMPLES
            } else {
                0
            };
            let samples = (0..kept).map(|k| lines[ring[(start + k) % window::SAMPLES]].clone());
            let mut st = w.lock();
            let snap = if self.sharing.on.load(Ordering::Relaxed) {
                st.pend(wall, n as u64);
                if self.sharing.live.load(Ordering::Relaxed) {
                    st.add(t, wall, n as u64, samples);
                    None
                } else {
                    // Redis away: this node fires on its own count meanwhile.
                    st.record(t, wall, n as u64, samples)
                }
            } else {
                st.record(t, wall, n as u64, samples)
            };
            drop(st);
            if let Some(s) = snap {
                self.notifier.notify(w, s);
            }
        }
    }
}

/// One window's part of a cluster round (see `cluster::alerts`).
pub struct Tally {
    pub watch: Arc<Watch>,
    /// The matches counted on this node since the last round, by wall-clock bucket.
    pub counts: Vec<(u64, u64)>,
    /// The width of those buckets (µs): the rule's window over [`window::BUCKETS`].
    pub width_us: u64,
}

/// What a cluster round found for one window.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The change this node's round made (at most one node's round makes each).
    pub transition: Option<Transition>,
    /// Matches in the window, summed over the nodes.
    pub count: u64,
    /// The cluster's state after the round.
    pub firing: bool,
    /// The start of the oldest bucket with matches and the end of the newest (wall clock, µs).
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
}

/// How long after its last match here a node keeps a window in the cluster's rounds
/// beyond the window itself, so that it sees the window empty and resolve.
const FOLLOW_AFTER: i64 = 2_000_000;

impl Alerts {
    /// Cluster mode: line rules count and fire over the cluster from now on (once a
    /// round reaches Redis; until then, and whenever a round fails, on this node alone).
    pub fn share(&self) {
        self.sharing.on.store(true, Ordering::Relaxed);
    }

    /// A round reached Redis (`true`) or failed: whether the cluster decides. Returns
    /// the previous value.
    pub fn set_live(&self, live: bool) -> bool {
        self.sharing.live.swap(live, Ordering::Relaxed)
    }

    /// Some line rule watches some channel here (else the rounds have nothing to do).
    pub fn watches_lines(&self) -> bool {
        self.inner()
            .watches
            .values()
            .any(|w| w.rule.metric.is_none())
    }

    /// The windows for the next cluster round, each with the matches counted here since
    /// the last one: those with matches here within their window (and a little after),
    /// those the cluster showed firing here, and those of `firing` (the cluster's set of
    /// firing windows, by [`Watch::index_name`]) so that a window fired by a node that died
    /// is still resolved.
    pub fn tallies(&self, firing: &HashSet<String>) -> Vec<Tally> {
        let watches: Vec<Arc<Watch>> = self
            .inner()
            .watches
            .values()
            .filter(|w| w.rule.metric.is_none())
            .cloned()
            .collect();
        let now = crate::clock::now_micros();
        let mut out = Vec::new();
        for w in watches {
            let (counts, width_us) = {
                let mut st = w.lock();
                (st.take_pending(), st.wall_width_us())
            };
            if !counts.is_empty() {
                let follow = i64::try_from(w.rule.window.as_micros()).unwrap_or(i64::MAX / 2);
                w.active_until_us
                    .store(now + follow + FOLLOW_AFTER, Ordering::Relaxed);
            }
            let follow = !counts.is_empty()
                || w.active_until_us.load(Ordering::Relaxed) > now
                || w.gauge.load(Ordering::Relaxed)
                || (!firing.is_empty() && firing.contains(&w.index_name()));
            if follow {
                out.push(Tally {
                    watch: w,
                    counts,
                    width_us,
                });
            }
        }
        out
    }

    /// Takes what a cluster round found: the cluster's count and state for the API, the
    /// `firing` gauge, and for the change this node's round made, the in-band line and
    /// the webhook (with this node's samples).
    pub fn settle(&self, outcomes: Vec<(Arc<Watch>, Outcome)>) {
        let now = crate::clock::now_micros();
        for (w, o) in outcomes {
            w.cluster_count.store(o.count, Ordering::Relaxed);
            w.cluster_firing.store(o.firing, Ordering::Relaxed);
            w.cluster_at_us.store(now, Ordering::Relaxed);
            let Some(transition) = o.transition else {
                w.set_gauge(o.firing);
                continue;
            };
            let samples = {
                let mut st = w.lock();
                if transition == Transition::Fire {
                    st.fired_at(now);
                }
                st.samples()
            };
            let report = Report {
                transition,
                count: o.count,
                first_us: o.first_us,
                last_us: o.last_us,
                samples,
                value: None,
            };
            self.notifier.notify(&w, report);
        }
    }
}

/// What the notification task needs to start webhook deliveries.
struct Deliveries {
    clients: webhook::Clients,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    delivered: IntCounter,
    refused: IntCounter,
    failed: IntCounter,
}

/// A time (µs since the epoch) as RFC 3339 JSON, or `null`.
pub(crate) fn rfc3339(us: Option<i64>) -> serde_json::Value {
    match us {
        Some(us) => {
            let mut b = BytesMut::with_capacity(32);
            logplex_proto::render::rfc3339_micros(&mut b, us);
            serde_json::Value::String(String::from_utf8_lossy(&b).into_owned())
        }
        None => serde_json::Value::Null,
    }
}

/// The in-band line's text: `Alert http-5xx firing: 7 matching lines in 60s`.
pub fn message(rule: &Rule, transition: Transition, count: u64) -> String {
    let state = match transition {
        Transition::Fire => "firing",
        Transition::Resolve => "resolved",
    };
    format!(
        "Alert {} {state}: {count} matching lines in {}",
        rule.spec.name,
        rule.window_text()
    )
}

/// The in-band line of a metric rule:
/// `Alert slow firing: router.p95_service 812 over 60s, above 500`.
pub fn metric_message(
    rule: &Rule,
    m: &rule::MetricRule,
    transition: Transition,
    value: Option<f64>,
) -> String {
    let state = match transition {
        Transition::Fire => "firing",
        Transition::Resolve => "resolved",
    };
    let value = value.map_or("none".to_string(), |v| format!("{}", round4(v)));
    format!(
        "Alert {} {state}: {} {value} over {}, above {}",
        rule.spec.name,
        m.metric,
        rule.window_text(),
        round4(m.above)
    )
}

/// Four significant digits, for the in-band line.
fn round4(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// The webhook body: `{"alert","app","state","count","threshold","window_seconds",
/// "first_at","last_at","samples"}`. For a metric rule `count` is the metric's value over
/// the window (`null` when it had nothing to compute from), `threshold` its `above`, and
/// `metric` names it; `samples` is empty.
fn webhook_body(w: &Watch, snap: &Report) -> Bytes {
    let r = &w.rule;
    let window_seconds = if r.window.subsec_nanos() == 0 {
        serde_json::json!(r.window.as_secs())
    } else {
        serde_json::json!(r.window.as_secs_f64())
    };
    let samples: Vec<String> = snap
        .samples
        .iter()
        .map(|l| {
            let mut b = BytesMut::with_capacity(l.frame.len() + 16);
            l.render(&mut b);
            String::from_utf8_lossy(&b).into_owned()
        })
        .collect();
    if let Some(m) = &r.metric {
        let body = serde_json::json!({
            "alert": r.spec.name,
            "app": &*w.channel_name,
            "state": match snap.transition { Transition::Fire => "firing", Transition::Resolve => "resolved" },
            "count": snap.value,
            "threshold": m.above,
            "metric": m.metric.to_string(),
            "window_seconds": window_seconds,
            "first_at": rfc3339(snap.first_us),
            "last_at": rfc3339(snap.last_us),
            "samples": [],
        });
        return Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    }
    let body = serde_json::json!({
        "alert": r.spec.name,
        "app": &*w.channel_name,
        "state": match snap.transition { Transition::Fire => "firing", Transition::Resolve => "resolved" },
        "count": snap.count,
        "threshold": r.threshold,
        "window_seconds": window_seconds,
        "first_at": rfc3339(snap.first_us),
        "last_at": rfc3339(snap.last_us),
        "samples": samples,
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Writes each notification's line into its channel and starts its webhook delivery.
async fn notify_loop(mut rx: mpsc::Receiver<Notice>, d: Deliveries) {
    loop {
        let n = tokio::select! {
            n = rx.recv() => match n { Some(n) => n, None => return },
            _ = d.shutdown.cancelled() => return,
        };
        let rule = n.watch.rule.clone();
        let text = match &rule.metric {
            None => message(&rule, n.snap.transition, n.snap.count),
            Some(m) => metric_message(&rule, m, n.snap.transition, n.snap.value),
        };
        tracing::info!(app = %n.watch.channel_name, "{text}");
        if let Some(ch) = n.watch.channel.upgrade() {
            ch.push([Line::internal("heroku", "alerts", &text)]);
        }
        let Some(target) = rule.webhook.clone() else {
            continue;
        };
        // Deliveries run beside each other, so a dead webhook delays no other alert.
        let Ok(slot) = d.slots.clone().try_acquire_owned() else {
            tracing::warn!(alert = %rule.spec.name, "too many webhook deliveries in flight; this one is dropped");
            d.failed.inc();
            continue;
        };
        let body = webhook_body(&n.watch, &n.snap);
        let (clients, stop) = (d.clients.clone(), d.shutdown.clone());
        let (ok, refused, failed) = (d.delivered.clone(), d.refused.clone(), d.failed.clone());
        d.tasks.spawn(async move {
            let _slot = slot;
            let url = &target.redacted;
            match webhook::deliver(&clients, &target, body, &stop).await {
                webhook::Delivery::Delivered { .. } => ok.inc(),
                webhook::Delivery::Refused(status) => {
                    refused.inc();
                    tracing::warn!(alert = %rule.spec.name, %url, "webhook refused the notification: {status}");
                }
                webhook::Delivery::GaveUp { attempts, last_error } => {
                    failed.inc();
                    tracing::warn!(alert = %rule.spec.name, %url, "webhook failed {attempts} times; last: {last_error}");
                }
                webhook::Delivery::Cancelled => {}
            }
        });
    }
}

/// Checks every window once per [`TICK`] until shutdown.
async fn tick_loop(mgr: Weak<Alerts>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match mgr.upgrade() {
            Some(m) => m.tick(),
            None => return,
        }
    }
}
