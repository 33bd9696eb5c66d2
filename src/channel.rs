//! A channel at run time: its history ring (last N lines, capped in lines and bytes) and the
//! broadcast that feeds its tails, and its metrics from the logs when they are on. Ingest
//! pushes whole batches under one short lock, which also numbers the lines and hands them
//! to the durable log (when it is on) as one record, so the log holds each channel's lines
//! in the order of its ring.

mod rate;
mod received;
pub(crate) mod ring;

pub use rate::{LineRate, MINUTES as RATE_MINUTES};
pub use received::Seqs;

use crate::line::Line;
use crate::log::{Log, LogError, Lsn};
use crate::logmetrics::{self, LogMetrics};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The tap list of every channel without taps: one allocation for all of them.
fn no_taps() -> Arc<Vec<Arc<dyn Tap>>> {
    static EMPTY: OnceLock<Arc<Vec<Arc<dyn Tap>>>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::new(Vec::new())).clone()
}

/// The lines and bytes held in the histories of all of a node's channels, kept as they
/// change (each batch's net change added once, under its channel's lock), so that a metrics
/// scrape reads two numbers instead of visiting every channel (a million of them took tens
/// of milliseconds and every channel's lock).
#[derive(Debug, Default)]
pub struct HistoryTotals {
    lines: AtomicI64,
    bytes: AtomicI64,
}

impl HistoryTotals {
    fn add(&self, (lines, bytes): (i64, i64)) {
        if lines != 0 {
            self.lines.fetch_add(lines, Ordering::Relaxed);
        }
        if bytes != 0 {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Lines and bytes held now.
    pub fn get(&self) -> (usize, usize) {
        let get = |v: &AtomicI64| usize::try_from(v.load(Ordering::Relaxed)).unwrap_or(0);
        (get(&self.lines), get(&self.bytes))
    }
}

/// Limits of a channel's buffers, from `[buffers]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub history_lines: usize,
    pub history_bytes: usize,
    pub tail_lines: usize,
}

struct History {
    /// The lines held, made with the first: a channel that never had one carries 8 bytes.
    held: Option<Box<Held>>,
    next_seq: u64,
    /// Lines stored per minute, counted per batch (for the console and `GET /v2/stats`);
    /// made on the first live line, so a channel that never had one does not carry it.
    rate: Option<Box<LineRate>>,
    /// The broadcast that feeds the tails: made by the first tail, dropped with the last
    /// (a [`Tail`] going away), so an untailed channel does not hold its ring of slots.
    /// Under this lock, like the history, so a line is either in the history a new tail
    /// copies or sent to it, never neither.
    tail: Option<broadcast::Sender<Line>>,
    /// Metrics from the logs, when the channel has them on: every live line is observed
    /// here under the lock the push already holds. `None` costs one branch per batch.
    metrics: Option<Box<Metered>>,
}

/// A channel's metrics from the logs and what their saving needs.
struct Metered {
    m: LogMetrics,
    /// Which one this is: a new one each time metrics are turned on or put back, so that
    /// what was done for another (a run's lines ahead, a save) is not taken for its own.
    gen: u64,
    /// Lines `m` counts that are not stored yet: the later parts of paced runs whose sums
    /// were added with their first part (see [`MetricsSave::whole`]).
    ahead: usize,
    /// The seq `m` was last saved at (`u64::MAX`: not since it was made or put back).
    saved: u64,
    /// Saves in a row that found lines ahead (see [`Channel::metrics_to_save`]).
    skipped: u32,
}

/// The next [`Metered::gen`].
static METERED_GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many saves in a row keep a channel's previous save while it has lines ahead; the
/// next saves it anyway (the channel is that busy: its save must not grow stale).
const AHEAD_SKIPS: u32 = 4;

impl Metered {
    fn new(m: LogMetrics) -> Box<Metered> {
        Box::new(Metered {
            m,
            gen: METERED_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ahead: 0,
            saved: u64::MAX,
            skipped: 0,
        })
    }
}

/// A channel's lines and when they were received.
#[derive(Default)]
struct Held {
    /// The lines, their frames copied out of the buffer they came in, so a line pins only
    /// its own channel's memory (not the 64 KiB read buffer of whatever connection it came
    /// on), and stored compactly: a [`Line`] is made only when one is read.
    ring: ring::Ring,
    /// When the ring's lines were received, by batch.
    received: received::Received,
}

impl History {
    /// Lines and bytes held, for [`HistoryTotals`].
    fn size(&self) -> (i64, i64) {
        self.held
            .as_deref()
            .map_or((0, 0), |h| (h.ring.len() as i64, h.ring.bytes() as i64))
    }

    /// The lines held, made if there were none.
    fn held(&mut self) -> &mut Held {
        self.held.get_or_insert_with(Default::default)
    }

    /// Drops the oldest lines beyond the caps.
    fn trim(&mut self, limits: Limits) {
        if let Some(held) = self.held.as_deref_mut() {
            if let Some(first) = held.ring.trim(limits.history_lines, limits.history_bytes) {
                held.received.forget_before(first);
            }
        }
    }
}

/// Something that sees every line stored in a channel, as it is stored: a drain's buffer, an
/// alert rule's window. Called with the channel's history lock held, with the new lines in
/// place (no copy): it must not block (queue and return) and must not call back into the
/// channel.
pub trait Tap: Send + Sync {
    fn lines(&self, channel: &Channel, lines: &[Line]);

    /// `Some` while a healthy consumer is merely behind (a drain whose receiver keeps up but
    /// which has not had the CPU yet) and `incoming` more lines would fill it past half:
    /// intake may wait on the `Notify`, briefly, before pushing them. A slow, stalled or
    /// disconnected consumer returns `None`: it never slows intake, it drops its oldest
    /// lines instead.
    fn pressure(&self, incoming: usize) -> Option<&tokio::sync::Notify> {
        let _ = incoming;
        None
    }

    /// The bound of the consumer's buffer, if it has one that intake should pace itself to.
    fn capacity(&self) -> Option<usize> {
        None
    }

    /// Intake waited the whole budget and the consumer did not catch up: treat it as slow.
    fn too_slow(&self) {}
}

/// One app's log stream.
pub struct Channel {
    /// The store's id: a channel destroyed and created again under the same name is another
    /// channel (another id), never this one.
    pub id: i64,
    pub name: Arc<str>,
    /// Cancelled when the channel is destroyed: its open sessions end. Made by the first
    /// who asks (a session), so a channel nobody watched does not carry one.
    destroyed: OnceLock<CancellationToken>,
    /// Set when the channel is destroyed, before the token (if any) is cancelled.
    gone: AtomicBool,
    limits: Limits,
    history: Mutex<History>,
    /// Drains and alert rules of this channel, swapped by the registry when they change.
    taps: ArcSwap<Vec<Arc<dyn Tap>>>,
    /// The node's durable log, `None` when it is off.
    log: Option<Arc<Log>>,
    /// Whether metrics from the logs are on (as last set; the metrics themselves live in the
    /// history, under its lock).
    metrics_on: std::sync::atomic::AtomicBool,
    /// The node's totals, which every change of this history's size goes into.
    totals: Arc<HistoryTotals>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        let h = self.history.get_mut().unwrap_or_else(|p| p.into_inner());
        let (lines, bytes) = h.size();
        self.totals.add((-lines, -bytes));
    }
}

/// What became of a pushed batch in the durable log.
#[derive(Debug)]
pub enum Logged {
    /// The log is off (or nothing was pushed).
    Off,
    /// Written at this position (on disk once [`Log::durable`] of it resolves).
    At(Lsn),
    /// The log refused the lines (degraded, or its pending memory is full): they are in the
    /// ring, tails and drains, but not on disk.
    Refused(LogError),
}

impl Logged {
    /// Folds the outcome of a later part of the same batch into this one: a refusal stays,
    /// else the later position (durability is monotonic: it covers the earlier ones).
    pub fn then(self, later: Logged) -> Logged {
        match (self, later) {
            (Logged::Refused(e), _) | (_, Logged::Refused(e)) => Logged::Refused(e),
            (Logged::At(a), Logged::At(b)) => Logged::At(a.max(b)),
            (Logged::At(a), Logged::Off) | (Logged::Off, Logged::At(a)) => Logged::At(a),
            (Logged::Off, Logged::Off) => Logged::Off,
        }
    }
}

/// What ingest read of a run of lines for the channel's metrics (see [`Channel::metered`]).
#[derive(Debug, Clone, Copy)]
pub enum Read<'a> {
    /// Read before the lock: under it only the run's sums are added.
    Done(&'a logmetrics::Reads),
    /// Read, and added with an earlier part of the same run.
    Added,
    /// Not read (the channel had metrics off when the run began): read under the lock if
    /// they are on.
    Not,
}

impl Channel {
    pub fn new(id: i64, name: &str, limits: Limits) -> Channel {
        Channel::with_log(id, name, limits, None, Arc::default())
    }

    /// A channel whose pushed lines are also written to `log`, its history counted in
    /// `totals`.
    pub fn with_log(
        id: i64,
        name: impl Into<Arc<str>>,
        limits: Limits,
        log: Option<Arc<Log>>,
        totals: Arc<HistoryTotals>,
    ) -> Channel {
        Channel {
            id,
            name: name.into(),
            destroyed: OnceLock::new(),
            gone: AtomicBool::new(false),
            limits,
            history: Mutex::new(History {
                // Grows with the lines held: an idle channel allocates nothing here.
                held: None,
                next_seq: 1,
                rate: None,
                metrics: None,
                tail: None,
            }),
            taps: ArcSwap::new(no_taps()),
            log,
            metrics_on: std::sync::atomic::AtomicBool::new(false),
            totals,
        }
    }

    /// The channel was destroyed: its drains and rules stop seeing lines at once (an HTTP
    /// batch may still hold its route while its body uploads) and its sessions end.
    pub fn destroy(&self) {
        self.set_taps(Vec::new());
        // The flag first: whoever makes the token after this sees it (see `destroyed`).
        self.gone.store(true, Ordering::SeqCst);
        if let Some(t) = self.destroyed.get() {
            t.cancel();
        }
    }

    /// Cancelled once the channel is destroyed.
    pub fn destroyed(&self) -> CancellationToken {
        let t = self.destroyed.get_or_init(CancellationToken::new);
        if self.gone.load(Ordering::SeqCst) {
            t.cancel();
        }
        t.clone()
    }

    /// Whether any drain or alert rule sees this channel's lines.
    pub fn has_taps(&self) -> bool {
        !self.taps.load().is_empty()
    }

    /// Replaces the taps (drains, alert rules) that see this channel's lines.
    pub fn set_taps(&self, taps: Vec<Arc<dyn Tap>>) {
        self.taps.store(Arc::new(taps));
    }

    /// Appends lines to the history (dropping the oldest beyond the caps), the tails and the
    /// taps (drains, alerts). Returns how many were appended.
    pub fn push<I: IntoIterator<Item = Line>>(&self, lines: I) -> usize {
        self.append(lines, Mode::Live).0
    }

    /// [`Channel::push`], also saying what the durable log did with the lines, with their
    /// metric lines already read by ingest (see [`Read`]), so that under the channel's lock
    /// only their sums are added: connections pushing to the same channel do not queue
    /// behind the parsing.
    pub fn push_read<I: IntoIterator<Item = Line>>(
        &self,
        lines: I,
        mut read: Read<'_>,
    ) -> (usize, Logged) {
        self.append_read(lines, Mode::Live, &mut read, None)
    }

    /// Whether metrics from the logs are on: ingest then reads router lines for
    /// [`Channel::push_read`] before pushing (a channel without them pays nothing).
    #[inline]
    pub fn metered(&self) -> bool {
        self.metrics_on.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Pushes `n` lines like [`Channel::push`], in chunks of an eighth of the smallest tap
    /// buffer, first giving taps that are behind but healthy (see [`Tap::pressure`]) time to
    /// make room, until `deadline` (one per read, whatever the number of channels in it). On a loaded machine this keeps a drain that is only
    /// short of CPU from dropping lines. The wait is bounded and a tap that uses it all is
    /// marked slow, so a slow receiver never holds intake back.
    pub async fn push_paced<I: Iterator<Item = Line>>(
        &self,
        lines: I,
        n: usize,
        deadline: tokio::time::Instant,
        mut read: Read<'_>,
    ) -> (usize, Logged) {
        let taps = self.taps.load_full();
        let Some(chunk) = taps
            .iter()
            .filter_map(|t| t.capacity())
            .min()
            .map(|c| (c / 8).max(1))
        else {
            return self.append_read(lines, Mode::Live, &mut read, None);
        };
        let mut lines = lines;
        let (mut left, mut stored, mut logged) = (n, 0, Logged::Off);
        // The run's lines the metrics count ahead; let go of if it ends without them.
        let mut ahead = Ahead {
            channel: self,
            gen: 0,
            later: 0,
            out: 0,
        };
        while left > 0 {
            let k = left.min(chunk);
            for tap in taps.iter() {
                while let Some(room) = tap.pressure(k) {
                    let wait = room.notified();
                    tokio::pin!(wait);
                    wait.as_mut().enable();
                    if tap.pressure(k).is_none() {
                        break;
                    }
                    if tokio::time::timeout_at(deadline, wait).await.is_err() {
                        tap.too_slow();
                        break;
                    }
                }
            }
            // The run's sums go with the first part that finds the metrics on, once.
            ahead.later = left - k;
            let (n, l) = self.append_read(
                lines.by_ref().take(k),
                Mode::Live,
                &mut read,
                Some(&mut ahead),
            );
            stored += n;
            logged = logged.then(l);
            left -= k;
        }
        (stored, logged)
    }

    /// Puts saved lines back into the history at start: no tails, drains or alerts see them
    /// again. They are numbered after the last line the log holds, and written to it (lines
    /// saved at a stop by a node without the log, now kept by it).
    pub fn restore<I: IntoIterator<Item = Line>>(&self, lines: I) -> (usize, Logged) {
        self.append(lines, Mode::Restore)
    }

    /// Puts lines read back from the durable log into the history at start, with their own
    /// seqs, and numbers new lines after `last_seq` (the last the log holds, which retention
    /// may have deleted).
    pub fn reload<I: IntoIterator<Item = (Line, i64)>>(&self, lines: I, last_seq: u64) -> usize {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let before = h.size();
        let mut n = 0;
        for (line, received_us) in lines {
            let held = h.held();
            held.received.mark(line.seq, received_us);
            held.ring.push(&line, line.seq);
            n += 1;
        }
        h.next_seq = h.next_seq.max(last_seq + 1);
        h.trim(self.limits);
        self.grew(before, h.size());
        n
    }

    /// Adds a change of the history's size (under its lock) to the node's totals.
    fn grew(&self, (lines, bytes): (i64, i64), (now_lines, now_bytes): (i64, i64)) {
        self.totals.add((now_lines - lines, now_bytes - bytes));
    }

    fn append<I: IntoIterator<Item = Line>>(&self, lines: I, mode: Mode) -> (usize, Logged) {
        self.append_read(lines, mode, &mut Read::Not, None)
    }

    /// [`Channel::append`] with what ingest read of `lines` for the metrics; `read` becomes
    /// [`Read::Added`] once the run's sums are added. For a part of a paced run, `ahead`
    /// keeps the lines of the run still to come counted in [`Metered::ahead`].
    fn append_read<I: IntoIterator<Item = Line>>(
        &self,
        lines: I,
        mode: Mode,
        read: &mut Read<'_>,
        ahead: Option<&mut Ahead<'_>>,
    ) -> (usize, Logged) {
        let live = mode == Mode::Live;
        // One clock read per batch, outside the lock, for the line rate and the log.
        let now = crate::clock::now_micros();
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock: a tail subscribes (in `read`) under it too, so a line is either
        // in the history it copies or sent to it, never neither.
        // Taken out for the loop (which needs the history whole) and put back after it.
        let tail = if live { h.tail.take() } else { None };
        let taps = self.taps.load();
        let tapped = live && !taps.is_empty();
        // Tails and taps get the lines themselves (each a slice of the ring's chunk);
        // otherwise only the ring's records are made.
        let lines = lines.into_iter();
        let mut made: Vec<Line> = if tail.is_some() || tapped {
            Vec::with_capacity(lines.size_hint().0)
        } else {
            Vec::new()
        };
        let before = h.size();
        let first = before.0 as usize;
        for mut line in lines {
            let seq = h.next_seq;
            h.next_seq += 1;
            h.held().ring.push(&line, seq);
            if tail.is_some() || tapped {
                line.seq = seq;
                made.push(line);
            }
        }
        let n = h.held.as_ref().map_or(0, |held| held.ring.len()) - first;
        if !made.is_empty() {
            let ring = &mut h.held().ring;
            ring.freeze();
            for (k, line) in made.iter_mut().enumerate() {
                line.frame = ring.frame(first + k);
            }
        }
        if let Some(tail) = &tail {
            for line in &made {
                // Err only means every receiver went away meanwhile.
                let _ = tail.send(line.clone());
            }
        }
        h.tail = tail;
        let h = &mut *h;
        let held = match h.held.as_deref_mut() {
            Some(held) if n > 0 => held,
            _ => return (0, Logged::Off),
        };
        if live {
            held.received.mark(held.ring.seq(first), now);
            h.rate
                .get_or_insert_with(Default::default)
                .add(now, n as u64);
            if let Some(mt) = h.metrics.as_deref_mut() {
                let secs = now.div_euclid(1_000_000);
                mt.m.roll(secs);
                let m = &mut mt.m;
                match *read {
                    Read::Done(r) => {
                        m.add_reads(secs, r);
                        *read = Read::Added;
                        if let Some(a) = ahead {
                            a.added(mt);
                        }
                    }
                    Read::Added => {
                        if let Some(a) = ahead {
                            a.stored(mt, n);
                        }
                    }
                    Read::Not => {
                        for i in 0..n {
                            let line = held.ring.view(first + i);
                            m.observe(secs, line.source, line.procid(), line.msg());
                        }
                    }
                }
            }
        }
        let logged = match &self.log {
            Some(log) if n > 0 => {
                let ring = &held.ring;
                let new = (first..first + n).map(|i| {
                    let v = ring.view(i);
                    (v.source, v.frame)
                });
                match log.append(self.id as u64, ring.seq(first), now, new) {
                    Ok(at) => Logged::At(at),
                    Err(e) => Logged::Refused(e),
                }
            }
            _ => Logged::Off,
        };
        if tapped && !made.is_empty() {
            // Under the lock, which gives every tap the channel's order.
            for tap in taps.iter() {
                tap.lines(self, &made);
            }
        }
        h.trim(self.limits);
        self.grew(before, h.size());
        (n, logged)
    }

    /// Which of the ring's lines were received at or after `since_us` and before `until_us`
    /// (to the millisecond). Lines put back from a stop without the durable log have no
    /// receive time and are in no window.
    pub fn received_between(&self, since_us: i64, until_us: i64) -> Seqs {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let now = crate::clock::now_micros();
        match h.held.as_deref() {
            Some(held) => held.received.seqs(since_us, until_us, h.next_seq, now),
            None => received::Received::default().seqs(since_us, until_us, h.next_seq, now),
        }
    }

    /// The last `num` history lines that pass `keep` and come after `after_seq`, oldest first,
    /// and a tail receiver subscribed at the same instant (so nothing falls in between).
    /// The first tail makes the channel's broadcast; the last one to go drops it.
    pub fn read(
        self: &Arc<Self>,
        num: usize,
        after_seq: u64,
        subscribe: bool,
        keep: impl Fn(&Line) -> bool,
    ) -> (Vec<Line>, Option<Tail>) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let rx = subscribe.then(|| {
            let tx = h
                .tail
                .get_or_insert_with(|| broadcast::channel(self.limits.tail_lines.max(1)).0);
            Tail {
                rx: tx.subscribe(),
                channel: self.clone(),
            }
        });
        let Some(held) = h.held.as_deref_mut() else {
            return (Vec::new(), rx);
        };
        let ring = &mut held.ring;
        ring.freeze();
        let mut out: Vec<Line> = Vec::with_capacity(num.min(ring.len()));
        for i in (0..ring.len()).rev() {
            if out.len() >= num || ring.seq(i) <= after_seq {
                break;
            }
            let line = ring.line(i);
            if keep(&line) {
                out.push(line);
            }
        }
        out.reverse();
        (out, rx)
    }

    /// Whether the channel has a tail broadcast (that is, an open tail).
    pub fn tailed(&self) -> bool {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.tail.is_some()
    }

    /// Every history line, oldest first (for saving at shutdown).
    pub fn all_lines(&self) -> Vec<Line> {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = h.held.as_deref_mut() else {
            return Vec::new();
        };
        held.ring.freeze();
        (0..held.ring.len()).map(|i| held.ring.line(i)).collect()
    }

    /// The seq of the last line stored (0: none yet): where a drain reading the durable log
    /// knows it has caught up.
    pub fn last_seq(&self) -> u64 {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.next_seq - 1
    }

    /// Lines and bytes in the history.
    pub fn history_len(&self) -> (usize, usize) {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.held
            .as_deref()
            .map_or((0, 0), |held| (held.ring.len(), held.ring.bytes()))
    }

    /// Lines stored per minute lately and since start (restored lines are not counted).
    pub fn line_rate(&self) -> LineRate {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.rate.as_deref().cloned().unwrap_or_default()
    }

    /// Turns metrics from the logs on (empty, from now, unless they are on already) or off
    /// (forgetting them).
    pub fn set_metrics(&self, on: bool) {
        // Every store change sets it on every channel: unchanged, the history lock (the one
        // ingest holds) is not taken.
        if self
            .metrics_on
            .swap(on, std::sync::atomic::Ordering::Relaxed)
            == on
        {
            return;
        }
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        match (on, h.metrics.is_some()) {
            (true, false) => {
                let now = crate::clock::now_secs();
                h.metrics = Some(Metered::new(LogMetrics::new(
                    now,
                    logmetrics::Limits::default(),
                )));
            }
            (false, true) => h.metrics = None,
            _ => {}
        }
    }

    /// Puts the roll-ups saved last back (start-up only), if metrics are on.
    pub fn restore_metrics(&self, saved: LogMetrics) -> bool {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        match h.metrics.as_mut() {
            Some(m) => {
                *m = Metered::new(saved);
                true
            }
            None => false,
        }
    }

    /// The metrics to save, if they are on and a line was stored since they were last
    /// saved ([`Channel::metrics_saved`]); taken under the lock that adds lines to them.
    /// With the durable log (`logged`), `None` too while they count lines not stored yet
    /// (see [`MetricsSave::whole`]), for up to `AHEAD_SKIPS` saves in a row: the save
    /// before stays, and it plus the lines logged after it are right.
    pub fn metrics_to_save(&self, logged: bool) -> Option<MetricsSave> {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let seq = h.next_seq - 1;
        let mt = h.metrics.as_deref_mut().filter(|mt| mt.saved != seq)?;
        let whole = mt.ahead == 0;
        if logged && !whole {
            mt.skipped += 1;
            if mt.skipped <= AHEAD_SKIPS {
                return None;
            }
        }
        let (saving, gen) = (mt.m.to_save(), mt.gen);
        drop(h);
        // The bytes (up to the roll-ups' bound of memory) are made out of the lock.
        Some(MetricsSave {
            data: saving.bytes(),
            seq,
            whole,
            gen,
        })
    }

    /// Records that the metrics `save` was taken from are saved, if they are still on.
    pub fn metrics_saved(&self, save: &MetricsSave) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mt) = h.metrics.as_deref_mut().filter(|mt| mt.gen == save.gen) {
            mt.saved = save.seq;
            mt.skipped = 0;
        }
    }

    /// Numbers new lines after `seq` at least (start-up only: the seq of restored metrics,
    /// which may count lines the log did not keep).
    pub fn number_after(&self, seq: u64) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.next_seq = h.next_seq.max(seq.saturating_add(1));
    }

    /// Adds lines read back from the durable log (start-up only, after
    /// [`Channel::restore_metrics`]): each `(received, source, frame)` is observed at the
    /// second it was received, as if it had just arrived then. Lines that do not parse are
    /// skipped. How many were observed.
    pub fn replay_metrics<'a>(
        &self,
        lines: impl IntoIterator<Item = (i64, &'a [u8], &'a [u8])>,
    ) -> usize {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Metered { m, .. }) = h.metrics.as_deref_mut() else {
            return 0;
        };
        let mut n = 0;
        for (at, source, frame) in lines {
            if let Ok(p) = logplex_proto::parse_lenient(frame) {
                m.observe(at, source, p.procid, p.msg);
                n += 1;
            }
        }
        n
    }

    /// Runs `f` on the metrics under the channel's lock, if they are on. Keep `f` short:
    /// take a [`logmetrics::Snapshot`] or the counters and compute without the lock.
    pub fn with_metrics<T>(&self, f: impl FnOnce(&mut LogMetrics) -> T) -> Option<T> {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.metrics.as_deref_mut().map(|mt| f(&mut mt.m))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// A channel's metrics as [`Channel::metrics_to_save`] takes them.
pub struct MetricsSave {
    /// `LogMetrics::encode`'s bytes.
    pub data: Vec<u8>,
    /// The seq of the channel's last stored line.
    pub seq: u64,
    /// Whether they count no line numbered after `seq`. They do while a paced run is
    /// being stored: its sums were added with its first part, and its later parts will be
    /// numbered after `seq`, so read again from the log after a crash they would be
    /// counted twice.
    pub whole: bool,
    /// The [`Metered::gen`] they were taken from.
    gen: u64,
}

/// A paced run's lines that [`Metered::ahead`] counts for it: added with the part its sums
/// go with, taken off as the later parts are stored, and whatever is left taken off when
/// the run ends, stored whole or not (dropped part-way, its lines fewer than said, a
/// panic).
struct Ahead<'c> {
    channel: &'c Channel,
    /// The [`Metered::gen`] the lines were added to.
    gen: u64,
    /// The run's lines after the part being stored.
    later: usize,
    /// The lines added and not taken off yet.
    out: usize,
}

impl Ahead<'_> {
    /// The run's sums were added to `mt` with the part being stored (under the lock).
    fn added(&mut self, mt: &mut Metered) {
        self.gen = mt.gen;
        self.out = self.later;
        mt.ahead += self.later;
    }

    /// `n` more of the run's lines are stored (under the lock).
    fn stored(&mut self, mt: &mut Metered, n: usize) {
        if mt.gen == self.gen {
            let n = n.min(self.out);
            mt.ahead = mt.ahead.saturating_sub(n);
            self.out -= n;
        }
    }
}

impl Drop for Ahead<'_> {
    fn drop(&mut self) {
        if self.out > 0 {
            let mut h = self
                .channel
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(mt) = h.metrics.as_deref_mut().filter(|mt| mt.gen == self.gen) {
                mt.ahead = mt.ahead.saturating_sub(self.out);
            }
        }
    }
}

/// A tail of a channel: its lines as they are stored. A tail that falls behind loses its
/// oldest lines (L11), never holds the sender up. The last one dropped drops the channel's
/// broadcast, so a channel nobody tails keeps no ring for it.
pub struct Tail {
    rx: broadcast::Receiver<Line>,
    channel: Arc<Channel>,
}

impl std::ops::Deref for Tail {
    type Target = broadcast::Receiver<Line>;
    fn deref(&self) -> &Self::Target {
        &self.rx
    }
}

impl std::ops::DerefMut for Tail {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.rx
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Tails subscribe under this lock, so a count of one (this receiver) is exact.
        let mut h = self
            .channel
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if h.tail.as_ref().is_some_and(|t| t.receiver_count() <= 1) {
            h.tail = None;
        }
    }
}

/// Why lines are appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Received: tails, taps and the line rate see them.
    Live,
    /// Saved history put back at start: only the ring (and the log) get them.
    Restore,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn line(i: usize) -> Line {
        let f = format!("<190>1 2016-03-08T02:43:26.693600+00:00 h t.x web.1 - - line {i}");
        Line::parse(Bytes::from(f), Bytes::from_static(b"app")).unwrap()
    }

    #[tokio::test]
    async fn paced_chunks_add_a_runs_reads_once() {
        // A tap with an 8-line buffer makes intake push in chunks of one line.
        struct Small;
        impl Tap for Small {
            fn lines(&self, _: &Channel, _: &[Line]) {}
            fn capacity(&self) -> Option<usize> {
                Some(8)
            }
        }
        let c = Channel::new(
            1,
            "demo",
            Limits {
                history_lines: 100,
                history_bytes: 1 << 20,
                tail_lines: 4,
            },
        );
        c.set_metrics(true);
        c.set_taps(vec![Arc::new(Small)]);
        let router = |i: u64| {
            let f = format!(
                "<158>1 2016-03-08T02:43:26.693600+00:00 h heroku router - - at=info \
                 method=GET path=\"/\" host=a.herokuapp.com dyno=web.1 connect=1ms \
                 service={i}ms status={} bytes={i} protocol=https",
                if i % 3 == 0 { 503 } else { 200 }
            );
            Line::parse(Bytes::from(f), Bytes::from_static(b"heroku")).unwrap()
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        // Read ahead, as ingest does.
        let lines: Vec<Line> = (1..=10).map(router).collect();
        let mut reads = logmetrics::Reads::default();
        for l in &lines {
            reads.line(&l.source, l.procid(), l.msg(), &l.frame);
        }
        let (n, _) = c
            .push_paced(lines.into_iter(), 10, deadline, Read::Done(&reads))
            .await;
        assert_eq!(n, 10);
        // Not read ahead (the run began before metrics were on): read under the lock.
        let lines: Vec<Line> = (11..=20).map(router).collect();
        let (n, _) = c
            .push_paced(lines.into_iter(), 10, deadline, Read::Not)
            .await;
        assert_eq!(n, 10);
        let counted = c.with_metrics(|m| m.counters()).unwrap();
        // Each line counted once, with its own values: bytes 1 + 2 + … + 20.
        assert_eq!(counted.bytes, 210);
        assert_eq!(counted.requests[1], 14);
        assert_eq!(counted.requests[4], 6);
    }

    /// While a paced run is stored in parts, its sums (added with the first part) count
    /// lines not stored yet: the metrics are not whole to save until the last part is in,
    /// or the push is dropped part-way.
    #[tokio::test]
    async fn metrics_are_not_whole_to_save_while_a_paced_run_is_stored() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        // Chunks of one line; after the first part, intake waits for room until released.
        #[derive(Default)]
        struct Held {
            parts: AtomicUsize,
            released: AtomicBool,
            room: tokio::sync::Notify,
        }
        impl Tap for Held {
            fn lines(&self, _: &Channel, _: &[Line]) {
                self.parts.fetch_add(1, SeqCst);
            }
            fn capacity(&self) -> Option<usize> {
                Some(8)
            }
            fn pressure(&self, _: usize) -> Option<&tokio::sync::Notify> {
                (self.parts.load(SeqCst) > 0 && !self.released.load(SeqCst)).then_some(&self.room)
            }
        }
        let c = with_tail_of_4();
        c.set_metrics(true);
        let tap = Arc::new(Held::default());
        c.set_taps(vec![tap.clone()]);
        let lines: Vec<Line> = (0..5).map(line).collect();
        let reads = logmetrics::Reads::default();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        // Without the log every save is taken; `whole` says whether it counts lines ahead.
        let whole = || c.metrics_to_save(false).map(|m| m.whole);
        let wait = std::time::Duration::from_millis(50);

        let push = c.push_paced(lines.clone().into_iter(), 5, deadline, Read::Done(&reads));
        tokio::pin!(push);
        assert!(tokio::time::timeout(wait, &mut push).await.is_err());
        assert_eq!(whole(), Some(false), "1 of 5 lines stored, all counted");
        // With the log, the save before is kept for a few saves, then it is taken anyway.
        for _ in 0..AHEAD_SKIPS {
            assert!(c.metrics_to_save(true).is_none());
        }
        let forced = c.metrics_to_save(true).unwrap();
        assert!(!forced.whole);
        tap.released.store(true, SeqCst);
        tap.room.notify_waiters();
        assert_eq!(push.await.0, 5);
        assert_eq!(whole(), Some(true));
        // Saved: nothing to save until a line comes, and a save of metrics since turned
        // off and on again does not count as theirs.
        let save = c.metrics_to_save(true).unwrap();
        c.metrics_saved(&save);
        assert!(c.metrics_to_save(true).is_none());
        c.set_metrics(false);
        c.set_metrics(true);
        c.metrics_saved(&save);
        assert!(c.metrics_to_save(true).is_some());

        // Dropped part-way: the lines it will not store are no longer counted ahead.
        tap.parts.store(0, SeqCst);
        tap.released.store(false, SeqCst);
        let mut push = Box::pin(c.push_paced(lines.into_iter(), 5, deadline, Read::Done(&reads)));
        assert!(tokio::time::timeout(wait, &mut push).await.is_err());
        assert_eq!(whole(), Some(false));
        drop(push);
        assert_eq!(whole(), Some(true));

        // A run with fewer lines than it said: none left counted ahead at its end.
        tap.released.store(true, SeqCst);
        let three: Vec<Line> = (0..3).map(line).collect();
        c.push_paced(three.into_iter(), 5, deadline, Read::Done(&reads))
            .await;
        assert_eq!(whole(), Some(true));
    }

    /// After restored metrics' seq, new lines are numbered after it, never back.
    #[test]
    fn new_lines_are_numbered_after_a_restored_seq() {
        let c = with_tail_of_4();
        c.number_after(41);
        c.push([line(0)]);
        assert_eq!(c.last_seq(), 42);
        c.number_after(10);
        c.push([line(1)]);
        assert_eq!(c.last_seq(), 43);
    }

    /// The node's totals follow every change of a history's size (push, trim beyond the
    /// caps, reload at start, the channel dropped), for a metrics scrape that visits none.
    #[test]
    fn history_totals_follow_pushes_trims_reloads_and_drops() {
        let totals = Arc::new(HistoryTotals::default());
        let limits = Limits {
            history_lines: 10,
            history_bytes: 1 << 20,
            tail_lines: 4,
        };
        let a = Channel::with_log(1, "a", limits, None, totals.clone());
        let b = Channel::with_log(2, "b", limits, None, totals.clone());
        let size = |c: &Channel| c.history_len();
        a.push((0..4).map(line));
        b.push((0..25).map(line));
        assert_eq!(size(&b).0, 10, "b is trimmed to its cap");
        let sum = |x: (usize, usize), y: (usize, usize)| (x.0 + y.0, x.1 + y.1);
        assert_eq!(totals.get(), sum(size(&a), size(&b)));
        let c = Channel::with_log(3, "c", limits, None, totals.clone());
        c.reload((0..3).map(|i| (line(i), 0)), 3);
        assert_eq!(totals.get(), sum(sum(size(&a), size(&b)), size(&c)));
        drop(b);
        assert_eq!(totals.get(), sum(size(&a), size(&c)));
        drop((a, c));
        assert_eq!(totals.get(), (0, 0));
    }

    /// An idle channel (no lines, tails, drains or metrics) is its struct and nothing else:
    /// the history is made with the first line.
    #[test]
    fn an_idle_channel_allocates_nothing_beyond_itself() {
        assert!(
            std::mem::size_of::<Channel>() <= 144,
            "{}",
            std::mem::size_of::<Channel>()
        );
        let c = with_tail_of_4();
        let h = c.history.lock().unwrap();
        assert!(h.held.is_none() && h.rate.is_none() && h.tail.is_none());
        drop(h);
        c.push([line(1)]);
        assert!(c.history.lock().unwrap().held.is_some());
    }

    #[test]
    fn ring_keeps_the_last_lines() {
        let c = Arc::new(Channel::new(
            1,
            "demo",
            Limits {
                history_lines: 3,
                history_bytes: 1 << 20,
                tail_lines: 4,
            },
        ));
        c.push((0..5).map(line));
        let (h, _) = c.read(10, 0, false, |_| true);
        let msgs: Vec<_> = h
            .iter()
            .map(|l| String::from_utf8_lossy(l.msg()).into_owned())
            .collect();
        assert_eq!(msgs, ["line 2", "line 3", "line 4"]);
        assert_eq!(h[0].seq, 3);
        let (h, _) = c.read(10, 4, false, |_| true);
        assert_eq!(h.len(), 1);
        let (h, _) = c.read(2, 0, false, |_| true);
        assert_eq!(h[0].seq, 4);
    }

    /// Reloaded lines keep their seqs, new ones follow the log's last, and a tail and a
    /// read see the same numbers across the jump and after trimming.
    #[tokio::test]
    async fn seqs_hold_across_a_reload_and_a_jump() {
        let c = Arc::new(Channel::new(
            1,
            "demo",
            Limits {
                history_lines: 4,
                history_bytes: 1 << 20,
                tail_lines: 16,
            },
        ));
        let reloaded = [10u64, 11, 12].map(|s| {
            let mut l = line(s as usize);
            l.seq = s;
            (l, 1_000)
        });
        assert_eq!(c.reload(reloaded, 20), 3);
        let (h, rx) = c.read(10, 0, true, |_| true);
        assert_eq!(h.iter().map(|l| l.seq).collect::<Vec<_>>(), [10, 11, 12]);
        let mut rx = rx.unwrap();
        c.push((0..3).map(line));
        let seqs: Vec<u64> = c
            .read(10, 0, false, |_| true)
            .0
            .iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(seqs, [12, 21, 22, 23]);
        let after: Vec<u64> = c
            .read(10, 12, false, |_| true)
            .0
            .iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(after, [21, 22, 23]);
        for want in [21, 22, 23] {
            let got = rx.recv().await.unwrap();
            assert_eq!(got.seq, want);
            assert_eq!(got.msg(), format!("line {}", want - 21).as_bytes());
        }
        assert_eq!(c.last_seq(), 23);
        assert_eq!(
            c.history_len(),
            (4, c.all_lines().iter().map(|l| l.frame.len() + 32).sum())
        );
    }

    #[test]
    fn ring_keeps_to_its_byte_cap() {
        let c = Arc::new(Channel::new(
            1,
            "demo",
            Limits {
                history_lines: 100,
                history_bytes: 400,
                tail_lines: 4,
            },
        ));
        c.push((0..50).map(line));
        let (n, bytes) = c.history_len();
        assert!(bytes <= 400 && n >= 1, "{n} {bytes}");
    }

    #[test]
    fn pushed_lines_are_counted_per_minute_and_restored_ones_are_not() {
        let c = Arc::new(Channel::new(
            1,
            "demo",
            Limits {
                history_lines: 4,
                history_bytes: 1 << 20,
                tail_lines: 4,
            },
        ));
        c.restore((0..3).map(line));
        c.push((0..5).map(line));
        c.push((0..2).map(line));
        let r = c.line_rate();
        assert_eq!(r.total(), 7);
        // The minute may have turned between the pushes and the read.
        let m = r.minutes(crate::clock::now_micros());
        assert_eq!(m[RATE_MINUTES - 1] + m[RATE_MINUTES - 2], 7);
    }

    /// A channel of 100 lines whose tails hold 4.
    fn with_tail_of_4() -> Arc<Channel> {
        Arc::new(Channel::new(
            1,
            "demo",
            Limits {
                history_lines: 100,
                history_bytes: 1 << 20,
                tail_lines: 4,
            },
        ))
    }

    #[tokio::test]
    async fn a_lagging_tail_is_told_how_many_it_lost() {
        let c = with_tail_of_4();
        let (_, rx) = c.read(0, 0, true, |_| true);
        let mut rx = rx.unwrap();
        c.push((0..10).map(line));
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.recv().await.unwrap().seq, 7);
    }

    /// The broadcast exists only while a tail is open: the first makes it, the last one
    /// dropped drops it, and lines pushed meanwhile reach the tail that is still open.
    #[tokio::test]
    async fn the_broadcast_lives_only_while_a_tail_is_open() {
        let c = with_tail_of_4();
        assert!(!c.tailed());
        c.push((0..2).map(line));
        assert!(!c.tailed());
        let (h, a) = c.read(10, 0, true, |_| true);
        assert_eq!(h.len(), 2);
        assert!(c.tailed());
        let (_, b) = c.read(0, 0, true, |_| true);
        drop(a);
        assert!(c.tailed(), "one tail is still open");
        c.push([line(2)]);
        let mut b = b.unwrap();
        assert_eq!(b.recv().await.unwrap().seq, 3);
        drop(b);
        assert!(!c.tailed(), "the last tail took the broadcast with it");
        // Pushing with no tail makes none; a new tail sees what came before in its history.
        c.push([line(3)]);
        assert!(!c.tailed());
        let (h, mut t) = c.read(10, 0, true, |_| true);
        assert_eq!(h.last().map(|l| l.seq), Some(4));
        c.push([line(4)]);
        assert_eq!(t.as_mut().unwrap().recv().await.unwrap().seq, 5);
        drop(t);
        assert!(!c.tailed());
        // The tail held the channel; with it gone the channel is the test's alone.
        assert_eq!(Arc::strong_count(&c), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paced_pushes_wait_for_the_logs_room_instead_of_being_refused() {
        // 64 KiB of pending memory and an fsync after every write: intake from four tasks
        // outruns the log many times over, so pushes must wait for it to be written.
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::log::Options {
            fsync: crate::log::Fsync::Batch,
            flush_delay: std::time::Duration::ZERO,
            max_pending_bytes: 64 << 10,
            ..crate::log::Options::default()
        };
        let (log, _) = Log::open(dir.path(), opts).unwrap();
        let log = Arc::new(log);
        let limits = Limits {
            history_lines: 100,
            history_bytes: 1 << 20,
            tail_lines: 4,
        };
        let (tasks, pushes, per) = (4, 100, 50);
        let mut set = tokio::task::JoinSet::new();
        for t in 0..tasks {
            let c = Channel::with_log(t, "demo", limits, Some(log.clone()), Arc::default());
            set.spawn(async move {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                for p in 0..pushes {
                    crate::ingest::wait_for_log(c.log.as_deref()).await;
                    let lines = (0..per).map(|i| line(p * per + i));
                    let (n, logged) = c.push_paced(lines, per, deadline, Read::Not).await;
                    assert_eq!(n, per);
                    assert!(matches!(logged, Logged::At(_)), "push {p} of task {t}");
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let st = log.stats();
        assert_eq!(st.rejected_full_lines, 0, "{st:?}");
        assert_eq!(st.appended_lines, (tasks as usize * pushes * per) as u64);
        assert!(st.writes > 10, "the log was written many times: {st:?}");
    }
}
