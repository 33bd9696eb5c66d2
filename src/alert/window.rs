//! The sliding window of one (rule, channel): match counts in a ring of time buckets, the
//! last few matching lines, and the firing state with its cooldown.
//!
//! Counts are kept in [`BUCKETS`] buckets of `window / BUCKETS` each, so memory is fixed
//! whatever the match rate, and a match leaves the window between `window - window/60` and
//! `window` after it arrived. Time is tokio's, so tests pause and advance it.

use crate::line::Line;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Buckets per window.
pub const BUCKETS: u64 = 60;
/// Sample lines kept for notifications.
pub const SAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    id: u64,
    count: u64,
    /// Wall-clock time (µs) of the first match in this bucket.
    first_us: i64,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Fire,
    Resolve,
}

/// A notification's numbers, taken under the state lock.
#[derive(Debug, Clone)]
pub struct Report {
    pub transition: Transition,
    pub count: u64,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
    pub samples: Vec<Line>,
    /// A metric rule's value over its window (`None` for a line rule, or when the metric
    /// had nothing to compute from).
    pub value: Option<f64>,
}

/// Window, samples and firing state of one (rule, channel).
#[derive(Debug)]
pub struct WindowState {
    width_ns: u128,
    origin: Instant,
    /// Allocated on the first match, so rules on quiet channels cost nothing.
    buckets: Vec<Bucket>,
    last_us: Option<i64>,
    samples: VecDeque<Line>,
    firing: bool,
    last_fired: Option<Instant>,
    /// Wall-clock time (µs) of the last firing, for the API and the console.
    last_fired_us: Option<i64>,
    threshold: u64,
    cooldown: Duration,
    /// In cluster mode, the matches counted here since the cluster's last round, by
    /// wall-clock bucket (µs since the epoch / [`WindowState::wall_width_us`]), oldest
    /// first; at most [`PENDING`] buckets (older ones are dropped: the round is late).
    pending: Vec<(u64, u64)>,
}

/// The most wall-clock buckets of matches waiting for the cluster's next round.
pub const PENDING: usize = BUCKETS as usize + 4;

impl WindowState {
    pub fn new(window: Duration, threshold: u64, cooldown: Duration) -> WindowState {
        WindowState {
            width_ns: (window.as_nanos() / BUCKETS as u128).max(1),
            origin: Instant::now(),
            buckets: Vec::new(),
            last_us: None,
            samples: VecDeque::new(),
            firing: false,
            last_fired: None,
            last_fired_us: None,
            threshold,
            cooldown,
            pending: Vec::new(),
        }
    }

    /// The width of a bucket in µs (at least 1): the cluster counts matches by wall-clock
    /// bucket of this width, so the nodes' counts of one moment add up in one bucket.
    pub fn wall_width_us(&self) -> u64 {
        ((self.width_ns / 1000) as u64).max(1)
    }

    /// Keeps `n` matches seen at wall-clock `wall_us` for the cluster's next round.
    pub fn pend(&mut self, wall_us: i64, n: u64) {
        let id = wall_us.max(0) as u64 / self.wall_width_us();
        match self.pending.last_mut() {
            Some((last, count)) if *last == id => *count += n,
            _ => {
                if self.pending.len() == PENDING {
                    self.pending.remove(0);
                }
                self.pending.push((id, n));
            }
        }
    }

    /// The matches kept for the cluster since the last call, by wall-clock bucket.
    pub fn take_pending(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.pending)
    }

    /// The newest matching lines kept (up to [`SAMPLES`]), oldest first.
    pub fn samples(&self) -> Vec<Line> {
        self.samples.iter().cloned().collect()
    }

    /// When the last match was seen here (wall clock, µs).
    pub fn last_us(&self) -> Option<i64> {
        self.last_us
    }

    /// Notes a firing decided elsewhere (by the cluster), for the API and the console.
    pub fn fired_at(&mut self, wall_us: i64) {
        self.last_fired_us = Some(wall_us);
    }

    fn id(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.width_ns) as u64
    }

    fn live(&self, now: Instant) -> impl Iterator<Item = &Bucket> {
        let now_id = self.id(now);
        self.buckets
            .iter()
            .filter(move |b| b.count > 0 && b.id <= now_id && b.id + BUCKETS > now_id)
    }

    /// Matches in the window now.
    pub fn count(&self, now: Instant) -> u64 {
        self.live(now).map(|b| b.count).sum()
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    /// When this window last fired (wall clock, µs), if it has since the server started.
    pub fn last_fired_us(&self) -> Option<i64> {
        self.last_fired_us
    }

    /// Adds `n` matches seen at `now` (wall clock `wall_us`), keeps the newest of
    /// `samples` (the batch's matching lines, oldest first), then checks for firing.
    pub fn record(
        &mut self,
        now: Instant,
        wall_us: i64,
        n: u64,
        samples: impl IntoIterator<Item = Line>,
    ) -> Option<Report> {
        if n == 0 {
            return None;
        }
        self.add(now, wall_us, n, samples);
        self.check(now)
    }

    /// Adds `n` matches as [`WindowState::record`] does, without checking for firing (in
    /// cluster mode the cluster's count decides).
    pub fn add(
        &mut self,
        now: Instant,
        wall_us: i64,
        n: u64,
        samples: impl IntoIterator<Item = Line>,
    ) {
        if n == 0 {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![Bucket::default(); BUCKETS as usize];
        }
        let id = self.id(now);
        let b = &mut self.buckets[(id % BUCKETS) as usize];
        if b.id != id || b.count == 0 {
            *b = Bucket {
                id,
                count: 0,
                first_us: wall_us,
            };
        }
        b.count += n;
        self.last_us = Some(wall_us);
        for l in samples {
            if self.samples.len() == SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(l);
        }
    }

    /// The firing state machine both kinds of rule share: fires when `over` and the cooldown
    /// since the last firing has passed, resolves a firing window that is no longer `over`;
    /// `None` when nothing changes.
    fn turn(&mut self, now: Instant, over: bool) -> Option<Transition> {
        if self.firing {
            if over {
                return None;
            }
            self.firing = false;
            return Some(Transition::Resolve);
        }
        let cooled = self
            .last_fired
            .map_or(true, |t| now.saturating_duration_since(t) >= self.cooldown);
        if !over || !cooled {
            return None;
        }
        self.firing = true;
        self.last_fired = Some(now);
        self.last_fired_us = Some(crate::clock::now_micros());
        Some(Transition::Fire)
    }

    /// Fires when the window holds `threshold` matches and the cooldown since the last
    /// firing has passed; resolves a firing window that fell back under the threshold.
    /// Called on every recorded batch and by the manager's ticker.
    pub fn check(&mut self, now: Instant) -> Option<Report> {
        let count = self.count(now);
        let transition = self.turn(now, count >= self.threshold)?;
        Some(Report {
            transition,
            count,
            first_us: self.live(now).map(|b| b.first_us).min(),
            last_us: self.last_us,
            samples: self.samples.iter().cloned().collect(),
            value: None,
        })
    }

    /// For a metric rule, on the ticker: fires when `value` is above `above` and the
    /// cooldown since the last firing has passed; resolves once it is no longer above (a
    /// metric with nothing to compute from, such as a ratio without requests, is not above).
    pub fn check_metric(&mut self, now: Instant, value: Option<f64>, above: f64) -> Option<Report> {
        let transition = self.turn(now, value.is_some_and(|v| v > above))?;
        if transition == Transition::Fire {
            self.last_us = self.last_fired_us;
        }
        Some(Report {
            transition,
            count: 0,
            first_us: self.last_fired_us,
            last_us: Some(crate::clock::now_micros()),
            samples: Vec::new(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn st(threshold: u64) -> WindowState {
        WindowState::new(Duration::from_secs(60), threshold, Duration::from_secs(300))
    }

    fn hit(w: &mut WindowState, n: u64) -> Option<Transition> {
        w.record(Instant::now(), 0, n, []).map(|s| s.transition)
    }

    #[tokio::test(start_paused = true)]
    async fn fires_when_threshold_matches_fall_in_the_window() {
        let mut w = st(5);
        for _ in 0..4 {
            assert_eq!(hit(&mut w, 1), None);
            advance(Duration::from_secs(10)).await;
        }
        // 4 matches over 30 s, then the fifth: fire, counting all five.
        let s = w.record(Instant::now(), 7, 1, []).unwrap();
        assert_eq!(s.transition, Transition::Fire);
        assert_eq!(s.count, 5);
        assert_eq!(s.last_us, Some(7));
        assert!(w.firing());
        assert!(w.last_fired_us().is_some_and(|t| t > 0));
        // More matches while firing say nothing more.
        assert_eq!(hit(&mut w, 3), None);
    }

    #[tokio::test(start_paused = true)]
    async fn matches_spread_wider_than_the_window_never_fire() {
        let mut w = st(3);
        for _ in 0..10 {
            assert_eq!(hit(&mut w, 1), None);
            advance(Duration::from_secs(31)).await;
        }
        assert!(w.count(Instant::now()) <= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn old_matches_leave_the_window() {
        let mut w = st(100);
        hit(&mut w, 7);
        advance(Duration::from_secs(30)).await;
        hit(&mut w, 3);
        assert_eq!(w.count(Instant::now()), 10);
        advance(Duration::from_secs(31)).await;
        assert_eq!(w.count(Instant::now()), 3);
        advance(Duration::from_secs(30)).await;
        assert_eq!(w.count(Instant::now()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn resolves_once_when_the_window_falls_under_threshold() {
        let mut w = st(5);
        assert_eq!(hit(&mut w, 5), Some(Transition::Fire));
        advance(Duration::from_secs(30)).await;
        assert!(w.check(Instant::now()).is_none());
        advance(Duration::from_secs(31)).await;
        let s = w.check(Instant::now()).unwrap();
        assert_eq!(s.transition, Transition::Resolve);
        assert_eq!(s.count, 0);
        assert!(!w.firing());
        assert!(w.check(Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_one_firing_per_cooldown() {
        let mut w = st(2);
        assert_eq!(hit(&mut w, 2), Some(Transition::Fire));
        advance(Duration::from_secs(61)).await;
        assert_eq!(
            w.check(Instant::now()).map(|s| s.transition),
            Some(Transition::Resolve)
        );
        // A new burst 61 s after firing: still in the 5 min cooldown, so silent...
        assert_eq!(hit(&mut w, 5), None);
        assert!(!w.firing());
        // ... and while it lasts until the cooldown ends, the ticker fires it then.
        for _ in 0..4 {
            advance(Duration::from_secs(55)).await;
            hit(&mut w, 2);
            assert!(!w.firing());
        }
        advance(Duration::from_secs(20)).await; // 301 s since the first firing
        hit(&mut w, 1);
        assert!(w.firing());
    }

    #[tokio::test(start_paused = true)]
    async fn matches_for_the_cluster_wait_by_wall_clock_bucket_until_taken() {
        // A 60 s window: buckets of one second.
        let mut w = st(100);
        assert_eq!(w.wall_width_us(), 1_000_000);
        w.pend(5_000_000, 2);
        w.pend(5_999_999, 1);
        w.pend(7_000_000, 4);
        // Adding without the check never fires.
        w.add(Instant::now(), 7_000_000, 200, []);
        assert!(!w.firing());
        assert_eq!(w.take_pending(), [(5, 3), (7, 4)]);
        assert!(w.take_pending().is_empty());
        // A round that is late keeps the newest buckets only.
        for b in 0..(PENDING as i64 + 10) {
            w.pend(b * 1_000_000, 1);
        }
        let p = w.take_pending();
        assert_eq!(p.len(), PENDING);
        assert_eq!(p.last(), Some(&(PENDING as u64 + 9, 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_the_last_five_samples() {
        use bytes::Bytes;
        let mut w = st(8);
        let line = |i: usize| {
            let f = format!("<190>1 2016-03-08T02:43:26.693600+00:00 h t.x web.1 - - m{i}");
            Line::parse(Bytes::from(f), Bytes::from_static(b"app")).unwrap()
        };
        w.record(Instant::now(), 1, 4, (0..4).map(line));
        let s = w.record(Instant::now(), 2, 4, (4..8).map(line)).unwrap();
        let msgs: Vec<_> = s
            .samples
            .iter()
            .map(|l| String::from_utf8_lossy(l.msg()).into_owned())
            .collect();
        assert_eq!(msgs, ["m3", "m4", "m5", "m6", "m7"]);
        assert_eq!(s.first_us, Some(1));
        assert_eq!(s.last_us, Some(2));
    }
}
