//! Request bodies of the API and of `POST /logs`, read under three limits so that slow or
//! large uploads cannot hold the router's memory or connections: the whole body within
//! `ingest.http.body_timeout`, at [`MIN_RATE`] at least once its first [`GRACE`] is over (both
//! answered 408 and the connection closed), and inside one byte budget shared by every body
//! being read at once, `ingest.http.max_inflight_bytes` (answered 503 with `Retry-After`).
//! The budget is reserved as memory is allocated for bytes that have arrived, never for what
//! a `Content-Length` promises, so a client that lies about its length holds nothing.

use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;
use prometheus::IntCounter;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The slowest a body may arrive once [`GRACE`] is over, in bytes per second on average
/// since its start: a client that falls behind is answered 408 and disconnected. A log
/// batch of 100 KB has 4.5 s; a 4 MiB body needs the whole-body deadline's pace anyway.
pub const MIN_RATE: u64 = 64 * 1024;
/// How long a body may take before [`MIN_RATE`] applies. Not shorter: a body that sends
/// next to nothing is cut at this point, and an attacker simply starts another, so a
/// shorter grace only makes the same attack churn connections faster (2,000 slow bodies
/// starting again when cut: 21% of a core and 138 MiB peak RSS with 1 s, 8% and 114 MiB
/// with 3 s), while the body still gets cut well inside the whole-body deadline.
pub const GRACE: Duration = Duration::from_secs(3);
/// Seconds a client refused for a full budget is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 2;

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body over {0} bytes")]
    TooLarge(usize),
    #[error("too many request bodies are being read at once; retry in {RETRY_AFTER_SECS} s")]
    OverBudget,
    #[error("body not received within {0:?}")]
    Timeout(Duration),
    #[error("body arriving slower than {} KiB/s", MIN_RATE / 1024)]
    TooSlow,
    #[error("cannot read the body: {0}")]
    Read(hyper::Error),
    #[error("bad gzip body: {0}")]
    Gzip(std::io::Error),
}

impl BodyError {
    /// The status that answers it: 413, 503, 408 or 400.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::OverBudget => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Timeout(_) | BodyError::TooSlow => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) | BodyError::Gzip(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Adds what the answer must say besides its status: when to retry after a 503, and
    /// that a connection whose body was cut short is closed.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        match self {
            BodyError::OverBudget => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            BodyError::Timeout(_) | BodyError::TooSlow | BodyError::TooLarge(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            BodyError::Read(_) | BodyError::Gzip(_) => {}
        }
    }
}

/// The listener a body arrives on, for the counters.
#[derive(Debug, Clone, Copy)]
pub enum Listener {
    Api,
    Http,
}

#[derive(Clone)]
struct Refused {
    over_budget: IntCounter,
    timeout: IntCounter,
    too_slow: IntCounter,
}

impl Refused {
    fn new(metrics: &Metrics, listener: &str) -> Refused {
        let c = |reason: &str| {
            metrics
                .bodies_refused
                .with_label_values(&[listener, reason])
        };
        Refused {
            over_budget: c("over_budget"),
            timeout: c("timeout"),
            too_slow: c("too_slow"),
        }
    }

    fn count(&self, e: &BodyError) {
        match e {
            BodyError::OverBudget => self.over_budget.inc(),
            BodyError::Timeout(_) => self.timeout.inc(),
            BodyError::TooSlow => self.too_slow.inc(),
            _ => {}
        }
    }
}

/// The budget and deadline every body of the server is read under.
pub struct Bodies {
    budget: Arc<Semaphore>,
    capacity: usize,
    timeout: Duration,
    api: Refused,
    http: Refused,
}

/// Bytes of the budget one body holds; given back when dropped.
pub struct Reservation {
    budget: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Takes `n` more bytes of the budget, or fails at once when they are not free.
    pub fn grow(&mut self, n: usize) -> Result<(), BodyError> {
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| BodyError::OverBudget)?;
        let p = self
            .budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| BodyError::OverBudget)?;
        match &mut self.permit {
            Some(held) => held.merge(p),
            None => self.permit = Some(p),
        }
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }
}

impl Bodies {
    pub fn new(config: &crate::config::Config, metrics: &Metrics) -> Bodies {
        let capacity = config
            .ingest
            .http
            .max_inflight_bytes
            .min(Semaphore::MAX_PERMITS);
        Bodies {
            budget: Arc::new(Semaphore::new(capacity)),
            capacity,
            timeout: config.ingest.http.body_timeout(),
            api: Refused::new(metrics, "api"),
            http: Refused::new(metrics, "http"),
        }
    }

    /// Bytes reserved by the bodies being read now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.budget.available_permits().min(self.capacity)
    }

    /// An empty reservation on the shared budget.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.budget.clone(),
            permit: None,
        }
    }

    /// Reads a whole body of at most `max` bytes (`declared`: its `Content-Length`, only
    /// ever trusted to refuse early or to cap growth). The bytes stay reserved until the
    /// returned [`Reservation`] is dropped.
    pub async fn read(
        &self,
        on: Listener,
        body: Incoming,
        max: usize,
        declared: Option<usize>,
    ) -> Result<(Bytes, Reservation), BodyError> {
        let refused = match on {
            Listener::Api => &self.api,
            Listener::Http => &self.http,
        };
        let r = self.read_inner(body, max, declared).await;
        if let Err(e) = &r {
            refused.count(e);
        }
        r
    }

    async fn read_inner(
        &self,
        mut body: Incoming,
        max: usize,
        declared: Option<usize>,
    ) -> Result<(Bytes, Reservation), BodyError> {
        if declared.is_some_and(|n| n > max) {
            return Err(BodyError::TooLarge(max));
        }
        let mut res = self.reservation();
        // A first chunk that is the whole declared body (the usual batch) is kept as it
        // came: no copy. Anything else is copied into `buf` at once, so that a partial body
        // does not pin the connection's read buffer (hyper's, of up to 64 KiB).
        let mut first: Option<Bytes> = None;
        let mut buf: Vec<u8> = Vec::new();
        let cap_at = declared.unwrap_or(max).min(max);
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut received: u64 = 0;
        let timer = tokio::time::sleep_until((start + GRACE).min(deadline));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                f = body.frame() => {
                    let data = match f {
                        None => break,
                        Some(Err(e)) => return Err(BodyError::Read(e)),
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(d) => d,
                            Err(_) => continue, // trailers
                        },
                    };
                    received += data.len() as u64;
                    if received > max as u64 {
                        return Err(BodyError::TooLarge(max));
                    }
                    if first.is_none() && buf.is_empty() && declared == Some(data.len()) {
                        res.grow(data.len())?;
                        first = Some(data);
                        continue;
                    }
                    if let Some(f) = first.take() {
                        // The first chunk's bytes stay reserved for the buffer it moves to.
                        let mut credit = f.len();
                        grow(&mut buf, &mut res, f.len() + data.len(), cap_at, &mut credit)?;
                        buf.extend_from_slice(&f);
                    }
                    let need = buf.len() + data.len();
                    grow(&mut buf, &mut res, need, cap_at, &mut 0)?;
                    buf.extend_from_slice(&data);
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(BodyError::Timeout(self.timeout));
                    }
                    let due = start + GRACE + rate_time(received);
                    if now >= due {
                        return Err(BodyError::TooSlow);
                    }
                    timer.as_mut().reset(due.min(deadline));
                }
            }
        }
        let bytes = match first {
            Some(f) => f,
            None => Bytes::from(buf),
        };
        Ok((bytes, res))
    }

    /// Decompresses a gzip body of at most `max` bytes once inflated, reserving the output
    /// on `res` as it grows.
    pub fn gunzip(
        &self,
        compressed: &[u8],
        max: usize,
        res: &mut Reservation,
    ) -> Result<Bytes, BodyError> {
        let mut dec = flate2::read::GzDecoder::new(compressed);
        let mut out: Vec<u8> = Vec::new();
        let first = compressed
            .len()
            .saturating_mul(4)
            .max(64 * 1024)
            .min(max + 1);
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(BodyError::TooLarge(max));
                }
                let target = (out.capacity() * 2).max(first).min(max + 1);
                res.grow(target - out.capacity())?;
                out.reserve_exact(target - out.len());
            }
            let len = out.len();
            out.resize(out.capacity(), 0);
            let n = match dec.read(&mut out[len..]) {
                Ok(n) => n,
                Err(e) => return Err(BodyError::Gzip(e)),
            };
            out.truncate(len + n);
            if n == 0 {
                break;
            }
        }
        if out.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        Ok(Bytes::from(out))
    }
}

/// Makes room in `buf` for `need` bytes: exactly at first (a body that stalls holds no
/// more than it sent), then doubling, and straight to `cap_at` (the declared or largest
/// length) once half of it has arrived, so a liar holds at most twice what it sent. The
/// growth is reserved first; `credit` bytes already reserved (and about to be freed) go
/// first.
fn grow(
    buf: &mut Vec<u8>,
    res: &mut Reservation,
    need: usize,
    cap_at: usize,
    credit: &mut usize,
) -> Result<(), BodyError> {
    if need <= buf.capacity() {
        return Ok(());
    }
    let cap = buf.capacity();
    let target = if need.saturating_mul(2) >= cap_at {
        cap_at.max(need)
    } else if need - buf.len() < cap / 8 {
        // A trickle: small steps, so a slow body holds little more than it sent.
        need.max(cap + SLOW_STEP)
    } else {
        need.max(cap * 2)
    };
    let more = target - buf.capacity();
    let from_credit = more.min(*credit);
    *credit -= from_credit;
    res.grow(more - from_credit)?;
    buf.reserve_exact(target - buf.len());
    Ok(())
}

/// How much a buffer grows when little arrives at a time.
const SLOW_STEP: usize = 4096;

/// How long `bytes` take at [`MIN_RATE`].
fn rate_time(bytes: u64) -> Duration {
    let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(MIN_RATE);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(budget: usize) -> Bodies {
        let mut c = crate::config::Config::default();
        c.ingest.http.max_inflight_bytes = budget;
        Bodies::new(&c, &Metrics::new())
    }

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let b = bodies(1000);
        let mut r1 = b.reservation();
        r1.grow(600).unwrap();
        r1.grow(300).unwrap();
        assert_eq!(r1.bytes(), 900);
        let mut r2 = b.reservation();
        assert!(matches!(r2.grow(200), Err(BodyError::OverBudget)));
        assert_eq!(b.in_flight(), 900);
        drop(r1);
        r2.grow(1000).unwrap();
        assert_eq!(b.in_flight(), 1000);
    }

    #[test]
    fn gunzip_reserves_its_output_and_stops_at_max() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![b'x'; 300_000]).unwrap();
        let gz = enc.finish().unwrap();
        let b = bodies(1 << 20);
        let mut r = b.reservation();
        let out = b.gunzip(&gz, 300_000, &mut r).unwrap();
        assert_eq!(out.len(), 300_000);
        assert!(r.bytes() >= 300_000, "{}", r.bytes());
        drop(r);
        let mut r = b.reservation();
        assert!(matches!(
            b.gunzip(&gz, 299_999, &mut r),
            Err(BodyError::TooLarge(_))
        ));
        let small = bodies(100_000);
        let mut r = small.reservation();
        assert!(matches!(
            small.gunzip(&gz, 300_000, &mut r),
            Err(BodyError::OverBudget)
        ));
        let mut r = b.reservation();
        assert!(matches!(
            b.gunzip(b"not gzip", 300_000, &mut r),
            Err(BodyError::Gzip(_))
        ));
    }

    #[test]
    fn buffers_grow_exactly_then_double_or_in_small_steps_for_a_trickle() {
        let b = bodies(1 << 30);
        let mut r = b.reservation();
        let mut buf = Vec::new();
        // A first chunk that is not the whole body: exactly its size.
        grow(&mut buf, &mut r, 8000, 4 << 20, &mut 0).unwrap();
        assert_eq!(buf.capacity(), 8000);
        buf.resize(8000, 0);
        // 100 more bytes: a trickle, a small step.
        grow(&mut buf, &mut r, 8100, 4 << 20, &mut 0).unwrap();
        assert_eq!(buf.capacity(), 8000 + SLOW_STEP);
        // A big chunk: doubling.
        let cap = buf.capacity();
        buf.resize(cap, 0);
        grow(&mut buf, &mut r, cap + 8192, 4 << 20, &mut 0).unwrap();
        assert_eq!(buf.capacity(), 2 * cap);
        // Half the declared length arrived: straight to it.
        grow(&mut buf, &mut r, 3 << 20, 4 << 20, &mut 0).unwrap();
        assert_eq!(buf.capacity(), 4 << 20);
        assert_eq!(r.bytes(), 4 << 20, "every byte of capacity is reserved");
    }

    #[test]
    fn the_minimum_rate() {
        assert_eq!(rate_time(MIN_RATE), Duration::from_secs(1));
        assert_eq!(rate_time(MIN_RATE / 2), Duration::from_millis(500));
    }
}
