//! The one retry policy of every outbound delivery: HTTP and syslog drains, alert webhooks
//! and `logplex shuttle`. A [`Policy`] says how many tries and how long to wait between
//! them (exponential backoff with jitter); [`classify`] says what an HTTP status means (2xx
//! done; 429 and 5xx worth another try; anything else refused for good; network errors are
//! always worth another try); a [`Deadline`] caps every await of a delivery, so a stop is
//! never held up by a receiver that does not answer.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How many tries, and the waits between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Tries of one delivery, the first included; `None`: until it succeeds or the deadline.
    pub attempts: Option<u32>,
    /// The cap of the first wait; doubled for each next one up to `max`.
    pub base: Duration,
    pub max: Duration,
}

/// Alert webhooks: 5 tries, waits capped at 0.5 s, 1 s, 2 s, 4 s.
pub const WEBHOOK: Policy = Policy {
    attempts: Some(5),
    base: Duration::from_millis(500),
    max: Duration::from_secs(4),
};

/// One batch of an HTTP drain: 10 tries (with the same `Logplex-Frame-Id`), waits from
/// 250 ms up to 30 s (4 s when the drain reads the durable log: [`LOGGED_DRAIN_MAX`]); the
/// same backoff paces the batch after one the receiver refused.
pub const HTTP_DRAIN: Policy = Policy {
    attempts: Some(10),
    base: Duration::from_millis(250),
    max: Duration::from_secs(30),
};

/// A syslog drain's connection: reopened until it works, waits from 100 ms up to 4 s (each
/// between half and all of its cap, so 2–4 s once the receiver has been gone a few seconds).
/// The lines of a batch that could not be written go back to the drain's buffer (or stay in
/// the log) meanwhile.
///
/// The cap is what a receiver that comes back waits for its first line, so it is short: with
/// the durable log a drain catches up on everything after an outage of any length, and a
/// wait of up to 30 s (the cap before) left the first line 19 s late after a 60 s outage.
/// A dead receiver still gets at most one connection attempt every 2 s per drain (a refused
/// TCP connect is one SYN and one RST).
pub const RECONNECT: Policy = Policy {
    attempts: None,
    base: Duration::from_millis(100),
    max: Duration::from_secs(4),
};

/// The longest wait between tries of a drain that reads the durable log. Its lines are kept
/// there however long the receiver is gone, so a long wait would only delay the first line
/// after the receiver returns (an HTTP drain's 30 s left it up to 30 s late); the lines
/// of a drain without the log are kept only while its batch is tried, so its waits stay
/// long enough to ride out a receiver's restart.
pub const LOGGED_DRAIN_MAX: Duration = Duration::from_secs(4);

/// One batch of `logplex shuttle`: 4 tries, waits capped at 0.5 s, 1 s, 2 s.
pub const SHUTTLE: Policy = Policy {
    attempts: Some(4),
    base: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// What an HTTP answer means for the delivery that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx: delivered.
    Done,
    /// 429 and 5xx: the receiver may take it later.
    Retry,
    /// Any other status (a 4xx, or something no receiver should answer): refused for good,
    /// trying again will not help.
    GiveUp,
}

/// The policy's reading of an HTTP status.
pub fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Done,
        429 | 500..=599 => Class::Retry,
        _ => Class::GiveUp,
    }
}

/// Why one try failed, and whether another may work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// A network error, a timeout, 429 or 5xx.
    Retry(E),
    /// Refused for good.
    GiveUp(E),
}

impl<E> Failure<E> {
    /// The failure of an HTTP answer that was not a success, as [`classify`] reads it.
    pub fn of_status(status: u16, why: E) -> Failure<E> {
        match classify(status) {
            Class::Retry => Failure::Retry(why),
            Class::Done | Class::GiveUp => Failure::GiveUp(why),
        }
    }
}

/// How a delivery run by [`Policy::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished<T, E> {
    Done {
        value: T,
        attempts: u32,
    },
    /// The receiver refused it for good.
    Refused {
        attempts: u32,
        error: E,
    },
    /// Every try failed; `error` is the last one's.
    Exhausted {
        attempts: u32,
        error: E,
    },
    /// The deadline passed first.
    Stopped {
        attempts: u32,
    },
}

impl Policy {
    /// This policy with its waits capped at `max` (and never above its own cap).
    pub fn capped(self, max: Duration) -> Policy {
        Policy {
            max: self.max.min(max),
            ..self
        }
    }

    /// A fresh backoff for this policy.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 0,
        }
    }

    /// Runs `attempt` (given the try's number, from 1) until it succeeds, fails for good, the
    /// tries are used up or `deadline` passes; each try and each wait is capped by the
    /// deadline. `on_retry` hears of each failure that will be tried again.
    pub async fn run<T, E, F, Fut>(
        &self,
        deadline: &Deadline,
        mut attempt: F,
        mut on_retry: impl FnMut(u32, &E),
    ) -> Finished<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Failure<E>>>,
    {
        let mut backoff = self.backoff();
        let mut n = 0;
        loop {
            n += 1;
            let Some(r) = deadline.cap(attempt(n)).await else {
                return Finished::Stopped { attempts: n };
            };
            match r {
                Ok(value) => return Finished::Done { value, attempts: n },
                Err(Failure::GiveUp(error)) => return Finished::Refused { attempts: n, error },
                Err(Failure::Retry(error)) => {
                    let Some(wait) = backoff.next_delay() else {
                        return Finished::Exhausted { attempts: n, error };
                    };
                    on_retry(n, &error);
                    if !deadline.sleep(wait).await {
                        return Finished::Stopped { attempts: n };
                    }
                }
            }
        }
    }
}

/// The waits of one delivery under a [`Policy`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    /// Failed tries so far.
    attempt: u32,
}

impl Backoff {
    /// The wait after one more failed try, or `None` when the policy's tries are used up.
    /// The cap doubles from `base` up to `max`; the wait is drawn at random between half
    /// the cap and the cap (jitter, so that many senders failing together do not come back
    /// together, but never near zero, so that a dead receiver is not hammered).
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.attempt = self.attempt.saturating_add(1);
        if self.policy.attempts.is_some_and(|n| self.attempt >= n) {
            return None;
        }
        let cap = self
            .policy
            .base
            .saturating_mul(1u32 << (self.attempt - 1).min(16))
            .min(self.policy.max);
        let half = cap / 2;
        Some(half + Duration::from_nanos(fastrand::u64(0..=(cap - half).as_nanos() as u64)))
    }

    /// The wait after a failure that does not count as a try (a refused batch, after which
    /// the next one must not follow at once): the next wait, never `None`.
    pub fn pace(&mut self) -> Duration {
        let cap = self
            .policy
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.policy.max);
        self.attempt = self.attempt.saturating_add(1).min(16);
        let half = cap / 2;
        half + Duration::from_nanos(fastrand::u64(0..=(cap - half).as_nanos() as u64))
    }

    /// Failed tries so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// A success: the next failure waits the shortest again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The shutdown side of a [`Deadline`]: once `started` is cancelled, work in progress may go
/// on for `grace` more (drains flushing their buffers), not longer.
#[derive(Debug)]
pub struct Flush {
    started: CancellationToken,
    grace: Duration,
    /// When `started` was first seen cancelled (every waiter sees it at once).
    at: OnceLock<Instant>,
}

impl Flush {
    pub fn new(started: CancellationToken, grace: Duration) -> Arc<Flush> {
        Arc::new(Flush {
            started,
            grace,
            at: OnceLock::new(),
        })
    }

    /// When the grace ends, once the flush has started.
    fn ends(&self) -> Option<Instant> {
        self.started
            .is_cancelled()
            .then(|| *self.at.get_or_init(Instant::now) + self.grace)
    }
}

/// When a delivery must end: at once when `abort` is cancelled (a drain removed, the alert
/// tasks stopping), or when a [`Flush`]'s grace has passed.
#[derive(Debug, Clone, Default)]
pub struct Deadline {
    abort: CancellationToken,
    flush: Option<Arc<Flush>>,
}

impl Deadline {
    /// A deadline that passes when `abort` is cancelled.
    pub fn on(abort: CancellationToken) -> Deadline {
        Deadline { abort, flush: None }
    }

    /// A deadline that passes when `abort` is cancelled or the grace of `flush` is over.
    pub fn with_flush(abort: CancellationToken, flush: Arc<Flush>) -> Deadline {
        Deadline {
            abort,
            flush: Some(flush),
        }
    }

    /// Has the flush started (work should finish what it has, without waiting for more)?
    pub fn flushing(&self) -> bool {
        self.flush
            .as_ref()
            .is_some_and(|f| f.started.is_cancelled())
    }

    /// Has the deadline passed?
    pub fn passed(&self) -> bool {
        self.abort.is_cancelled()
            || self
                .flush
                .as_ref()
                .and_then(|f| f.ends())
                .is_some_and(|t| Instant::now() >= t)
    }

    /// Completes when the deadline passes.
    pub async fn reached(&self) {
        let grace = async {
            match &self.flush {
                Some(f) => {
                    f.started.cancelled().await;
                    if let Some(t) = f.ends() {
                        tokio::time::sleep_until(t).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.abort.cancelled() => {}
            _ = grace => {}
        }
    }

    /// Completes when the flush starts (or the deadline passes).
    pub async fn flush_started(&self) {
        match &self.flush {
            Some(f) => {
                tokio::select! {
                    _ = f.started.cancelled() => {}
                    _ = self.abort.cancelled() => {}
                }
            }
            None => self.abort.cancelled().await,
        }
    }

    /// `f`, unless the deadline passes first (`None`).
    pub async fn cap<F: Future>(&self, f: F) -> Option<F::Output> {
        if self.passed() {
            return None;
        }
        tokio::select! {
            biased;
            r = f => Some(r),
            _ = self.reached() => None,
        }
    }

    /// Sleeps `d` (a backoff), cut short when the flush starts (what is left is then tried
    /// at once, within the grace); false if the deadline passed first.
    pub async fn sleep(&self, d: Duration) -> bool {
        let flushing = self.flushing();
        let wait = async {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = self.flush_started(), if !flushing => {}
            }
        };
        self.cap(wait).await.is_some() && !self.passed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(classify(200), Class::Done);
        assert_eq!(classify(204), Class::Done);
        assert_eq!(classify(429), Class::Retry);
        assert_eq!(classify(500), Class::Retry);
        assert_eq!(classify(503), Class::Retry);
        assert_eq!(classify(400), Class::GiveUp);
        assert_eq!(classify(401), Class::GiveUp);
        assert_eq!(classify(408), Class::GiveUp);
        assert_eq!(classify(413), Class::GiveUp);
        assert_eq!(classify(301), Class::GiveUp);
    }

    #[test]
    fn waits_double_with_jitter_up_to_the_cap_and_end_with_the_tries() {
        let mut b = HTTP_DRAIN.backoff();
        let mut caps = Vec::new();
        while let Some(w) = b.next_delay() {
            caps.push(w);
        }
        assert_eq!(caps.len(), 9, "10 tries, 9 waits between them");
        let first = caps[0];
        assert!(first >= Duration::from_millis(125) && first <= Duration::from_millis(250));
        assert!(caps.iter().all(|w| *w <= Duration::from_secs(30)));
        assert!(caps[8] >= Duration::from_secs(15));
        b.reset();
        assert!(b.next_delay().unwrap() <= Duration::from_millis(250));

        let mut r = RECONNECT.backoff();
        for _ in 0..100 {
            assert!(r.next_delay().is_some(), "reconnects never give up");
        }
        // However long the receiver was gone, the next try is 2-4 s away: it gets its first
        // line within 4 s of coming back, and is not tried more than every 2 s meanwhile.
        for _ in 0..100 {
            let w = r.pace();
            assert!(
                w >= Duration::from_secs(2) && w <= Duration::from_secs(4),
                "{w:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_then_gives_up_or_is_refused() {
        let deadline = Deadline::default();
        let mut heard = 0;
        let out: Finished<(), &str> = WEBHOOK
            .run(
                &deadline,
                |_| async { Err(Failure::Retry("down")) },
                |_, _| heard += 1,
            )
            .await;
        assert_eq!(
            out,
            Finished::Exhausted {
                attempts: 5,
                error: "down"
            }
        );
        assert_eq!(heard, 4);
        let out: Finished<(), &str> = WEBHOOK
            .run(
                &deadline,
                |n| async move {
                    if n < 3 {
                        Err(Failure::Retry("503"))
                    } else {
                        Err(Failure::GiveUp("400"))
                    }
                },
                |_, _| {},
            )
            .await;
        assert_eq!(
            out,
            Finished::Refused {
                attempts: 3,
                error: "400"
            }
        );
        let out: Finished<u32, &str> = WEBHOOK
            .run(&deadline, |n| async move { Ok(n) }, |_, _| {})
            .await;
        assert_eq!(
            out,
            Finished::Done {
                value: 1,
                attempts: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_flush_grace_caps_tries_and_waits() {
        let abort = CancellationToken::new();
        let started = CancellationToken::new();
        let deadline = Deadline::with_flush(
            abort.clone(),
            Flush::new(started.clone(), Duration::from_secs(5)),
        );
        assert!(!deadline.flushing() && !deadline.passed());
        started.cancel();
        assert!(deadline.flushing() && !deadline.passed());
        let t = Instant::now();
        // A try that never ends is cut at the end of the grace.
        let out: Finished<(), &str> = RECONNECT
            .run(&deadline, |_| std::future::pending(), |_, _| {})
            .await;
        assert_eq!(out, Finished::Stopped { attempts: 1 });
        assert_eq!(t.elapsed(), Duration::from_secs(5));
        assert!(deadline.passed());
        assert!(!deadline.sleep(Duration::from_millis(1)).await);

        let abort_only = Deadline::on(abort.clone());
        abort.cancel();
        assert!(abort_only.passed());
        assert_eq!(abort_only.cap(async { 1 }).await, None);
    }
}
