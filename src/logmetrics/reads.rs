//! The metric lines of one run of a channel's lines, read by ingest before the channel's
//! lock: router lines added up (requests by class, H-codes, bytes, and the sketches'
//! values, whole milliseconds already as bucket keys), l2met lines kept for the lock (their
//! names are the channel's). Under the lock a run is then added in one go
//! ([`LogMetrics::add_reads`](super::LogMetrics::add_reads)), a key at a time for the
//! sketches and once for everything else, with the counts [`observe`](super::LogMetrics::observe)
//! of each line gives (the sketches' other values come after the keyed ones, so where a
//! sketch collapses its lowest buckets, for values spanning more than 10^16, the bucket
//! they collapse into may differ). All of a run is counted at the time of the part of it
//! that is stored first.

use super::extract::{self, RouterLine};
use super::period::CLASSES;
use super::sketch::Values;
use bytes::Bytes;

/// What a run's lines add to a channel's metrics; reused from run to run.
#[derive(Debug, Default)]
pub struct Reads {
    pub(super) malformed: u64,
    pub(super) requests: [u64; CLASSES],
    /// H-codes seen, one entry a line (errors are few).
    pub(super) codes: Vec<u8>,
    pub(super) bytes: u64,
    pub(super) service: Values,
    pub(super) connect: Values,
    /// Whether any line had a status or an H-code (else the period is left untouched).
    pub(super) any: bool,
    /// MSGs of the lines with l2met pairs, read under the lock.
    pub(super) l2met: Vec<Bytes>,
}

impl Reads {
    /// Empties for the next run, keeping the allocations.
    pub fn clear(&mut self) {
        self.malformed = 0;
        self.requests = [0; CLASSES];
        self.codes.clear();
        self.bytes = 0;
        self.service.clear();
        self.connect.clear();
        self.any = false;
        self.l2met.clear();
    }

    /// Reads one line of the run: its SOURCE (token name), PROCID and MSG, a part of
    /// `frame`. A line that is neither the router's nor holds a `#` costs one `memchr`.
    #[inline(always)]
    pub fn line(&mut self, source: &[u8], procid: &[u8], msg: &[u8], frame: &Bytes) {
        if extract::is_router(source, procid) {
            match extract::router_fast(msg) {
                Some(f) => {
                    // As `Agg::router` of the same line: a request (it has a status).
                    self.requests[(f.status / 100 - 1) as usize] += 1;
                    self.service.push_whole(f.service);
                    self.connect.push_whole(f.connect);
                    self.bytes = self.bytes.saturating_add(f.bytes);
                    if let Some(c) = f.code {
                        self.codes.push(c);
                    }
                    self.any = true;
                }
                None => self.router(&extract::router_slow(msg)),
            }
        } else if extract::has_l2met(msg) {
            self.l2met.push(frame.slice_ref(msg));
        }
    }

    /// A router line read the general way (see `Agg::router`).
    fn router(&mut self, r: &RouterLine) {
        self.malformed += r.malformed as u64;
        if let Some(s) = r.status {
            self.requests[(s / 100 - 1) as usize] += 1;
            if let Some(ms) = r.service_ms {
                self.service.push(ms);
            }
            if let Some(ms) = r.connect_ms {
                self.connect.push(ms);
            }
            self.bytes = self.bytes.saturating_add(r.bytes.unwrap_or(0));
            self.any = true;
        }
        if let Some(c) = r.code {
            self.codes.push(c);
            self.any = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logmetrics::{Limits, LogMetrics};

    /// A run read ahead and added under the lock leaves the metrics as observing each of
    /// its lines does: router lines of the exact layout and of others, malformed values,
    /// H-codes, l2met and runtime lines, plain lines; twice, the reads reused.
    #[test]
    fn a_run_read_ahead_adds_up_as_each_line_observed() {
        let router = |tail: &str| {
            format!(
                "at=info method=GET path=\"/\" host=a.herokuapp.com request_id=1 \
                 fwd=\"1.2.3.4\" dyno=web.1 {tail}"
            )
        };
        let mut lines: Vec<(&str, &str, String)> = Vec::new();
        for (c, s, st, b) in [
            (0, 23, 200, 1548),
            (1, 0, 404, 0),
            (5000, 30001, 503, 7),
            (3, 4095, 201, 12),
            (2, 4096, 302, 99_999_999_999u64),
        ] {
            let msg = router(&format!(
                "connect={c}ms service={s}ms status={st} bytes={b} protocol=https"
            ));
            assert!(extract::router_fast(msg.as_bytes()).is_some(), "{msg}");
            lines.push(("heroku", "router", msg));
        }
        lines.push((
            "heroku",
            "router",
            "at=error code=H12 desc=\"Request timeout\" method=GET path=\"/\" host=a \
             request_id=2 fwd=\"1.2.3.4\" dyno=web.1 connect=0ms service=30000ms \
             status=503 bytes=0 protocol=https"
                .into(),
        ));
        for tail in [
            "connect=1.5ms service=2.5ms status=200 bytes=10",
            "connect=1ms service=12 status=200 bytes=10",
            "connect= service= status=503 bytes=",
            "connect=1ms service=abc status=200 bytes=1",
            "connect=-1ms service=3ms status=500 bytes=1",
            "connect=1ms service=3ms bytes=1",
            "status=404 bytes=7 service=4ms connect=2ms",
        ] {
            lines.push(("heroku", "router", router(tail)));
        }
        lines.push((
            "heroku",
            "router",
            "at=error code=H10 desc=\"App crashed\" method=GET path=\"/\" host=a dyno= \
             connect= service= status=503 bytes= protocol=https"
                .into(),
        ));
        lines.push((
            "app",
            "web.1",
            "count#signups=1 sample#db.pool=7 measure#render=23ms".into(),
        ));
        lines.push((
            "app",
            "web.2",
            "measure#render=2.5ms measure#render=0ms".into(),
        ));
        lines.push((
            "heroku",
            "web.1",
            "source=web.1 sample#memory_total=212.3MB sample#load_avg_1m=0.2".into(),
        ));
        lines.push((
            "app",
            "web.1",
            "Started GET \"/\" for 1.2.3.4 #not-l2met".into(),
        ));
        lines.push(("app", "web.1", "Completed 200 OK in 23ms".into()));
        // An H-code and no status: counted, no request.
        lines.push((
            "heroku",
            "router",
            "at=error code=H80 desc=\"Maintenance mode\" method=GET path=\"/\" host=a".into(),
        ));

        let now = 1_700_000_000;
        let mut one = LogMetrics::new(now, Limits::default());
        let mut run = LogMetrics::new(now, Limits::default());
        let mut reads = Reads::default();
        for round in 0..2 {
            reads.clear();
            for (source, procid, msg) in &lines {
                // The MSG within a whole frame, as ingest has it.
                let frame = Bytes::from(format!(
                    "<158>1 2016-03-08T02:43:26.693600+00:00 host t.x {procid} - - {msg}"
                ));
                let m = &frame[frame.len() - msg.len()..];
                one.observe(now + round, source.as_bytes(), procid.as_bytes(), m);
                reads.line(source.as_bytes(), procid.as_bytes(), m, &frame);
            }
            run.roll(now + round);
            run.add_reads(now + round, &reads);
        }
        // A run of that H-code line alone.
        let (source, procid, msg) = lines.last().unwrap();
        one.observe(
            now + 2,
            source.as_bytes(),
            procid.as_bytes(),
            msg.as_bytes(),
        );
        let frame = Bytes::from(msg.clone());
        reads.clear();
        reads.line(source.as_bytes(), procid.as_bytes(), &frame, &frame);
        run.roll(now + 2);
        run.add_reads(now + 2, &reads);
        assert_eq!(run.encode(), one.encode());
        assert_eq!(run.counters(), one.counters());
    }
}
