//! Periods: what the lines of one span of time (10 seconds, a minute, an hour) add up to.
//! [`Agg`] is the live form an open period is written to, dense and allocation-free per
//! line once warm; [`Record`] is the closed form, compact and serialized by postcard, that
//! the roll-ups keep and persist.

use super::extract::{Kind, RouterLine};
use super::reads::Reads;
use super::sketch::{Sketch, SketchRec};
use serde::{Deserialize, Serialize};

/// Status classes counted: 1xx to 5xx (index = first digit − 1).
pub const CLASSES: usize = 5;
/// H-codes counted: H00 to H99 (index = the number).
pub const CODES: usize = 100;

/// Which parts of a period to copy or merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// Request and H-code counts, bytes, l2met counts, samples and measure counts.
    pub counters: bool,
    /// Service and connect sketches, l2met measure sketches.
    pub sketches: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        counters: true,
        sketches: true,
    };
    pub const COUNTERS: Parts = Parts {
        counters: true,
        sketches: false,
    };
    pub const SKETCHES: Parts = Parts {
        counters: false,
        sketches: true,
    };
}

/// The live aggregate of one l2met name in a period.
#[derive(Debug, Clone)]
pub struct NameAgg {
    touched: bool,
    /// Values seen.
    pub n: u64,
    /// Sum of `count#` values.
    pub sum: f64,
    /// Last, smallest and largest `sample#` value.
    pub last: f64,
    pub min: f64,
    pub max: f64,
    /// `measure#` values; kept allocated across periods.
    pub sketch: Option<Box<Sketch>>,
}

impl Default for NameAgg {
    fn default() -> NameAgg {
        NameAgg {
            touched: false,
            n: 0,
            sum: 0.0,
            last: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: None,
        }
    }
}

impl NameAgg {
    fn reset(&mut self) {
        let sketch = self.sketch.take();
        *self = NameAgg::default();
        self.sketch = sketch.map(|mut s| {
            s.clear();
            s
        });
    }

    fn sketch_mut(&mut self) -> &mut Sketch {
        self.sketch.get_or_insert_with(Box::default)
    }
}

/// The live aggregate of a period.
#[derive(Debug)]
pub struct Agg {
    /// Start of the period, Unix seconds.
    pub start: i64,
    /// Requests by status class.
    pub requests: [u64; CLASSES],
    pub h_codes: [u64; CODES],
    pub bytes: u64,
    pub service: Sketch,
    pub connect: Sketch,
    /// By name id.
    names: Vec<NameAgg>,
    /// Ids with a value in this period, so clearing and closing skip the others.
    touched: Vec<u16>,
    dirty: bool,
}

impl Agg {
    pub fn new(start: i64) -> Agg {
        Agg {
            start,
            requests: [0; CLASSES],
            h_codes: [0; CODES],
            bytes: 0,
            service: Sketch::default(),
            connect: Sketch::default(),
            names: Vec::new(),
            touched: Vec::new(),
            dirty: false,
        }
    }

    /// Whether nothing was added since the last clear.
    pub fn is_empty(&self) -> bool {
        !self.dirty
    }

    /// Adds a router line: a request when it has a status, its service and connect times
    /// and bytes with it; its H-code in any case.
    #[inline]
    pub fn router(&mut self, r: &RouterLine) {
        if let Some(s) = r.status {
            self.requests[(s / 100 - 1) as usize] += 1;
            if let Some(ms) = r.service_ms {
                self.service.add(ms);
            }
            if let Some(ms) = r.connect_ms {
                self.connect.add(ms);
            }
            self.bytes = self.bytes.saturating_add(r.bytes.unwrap_or(0));
            self.dirty = true;
        }
        if let Some(c) = r.code {
            self.h_codes[c as usize] += 1;
            self.dirty = true;
        }
    }

    /// Adds the router lines of a run read by ingest: what [`Agg::router`] of each would.
    pub fn add_reads(&mut self, r: &Reads) {
        if !r.any {
            return;
        }
        for (n, add) in self.requests.iter_mut().zip(r.requests) {
            *n += add;
        }
        for &c in &r.codes {
            self.h_codes[c as usize] += 1;
        }
        self.bytes = self.bytes.saturating_add(r.bytes);
        self.service.add_values(&r.service);
        self.connect.add_values(&r.connect);
        self.dirty = true;
    }

    /// The aggregate of name `id`, marked as having a value in this period.
    #[inline]
    fn touch(&mut self, id: u16) -> &mut NameAgg {
        let i = id as usize;
        if i >= self.names.len() {
            self.names.resize_with(i + 1, NameAgg::default);
        }
        self.dirty = true;
        let a = &mut self.names[i];
        if !a.touched {
            a.touched = true;
            self.touched.push(id);
        }
        a
    }

    /// Adds an l2met value of name `id`.
    #[inline]
    pub fn name(&mut self, id: u16, kind: Kind, v: f64) {
        let a = self.touch(id);
        a.n += 1;
        match kind {
            Kind::Count => a.sum += v,
            Kind::Sample => {
                a.last = v;
                a.min = a.min.min(v);
                a.max = a.max.max(v);
            }
            Kind::Measure => a.sketch_mut().add(v),
        }
    }

    /// Ids with a value in this period.
    pub fn touched(&self) -> &[u16] {
        &self.touched
    }

    /// The aggregate of name `id`, if it has a value in this period.
    pub fn name_agg(&self, id: u16) -> Option<&NameAgg> {
        self.names.get(id as usize).filter(|a| a.touched)
    }

    /// Requests of every class.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// Empties the aggregate for the period starting at `start`, keeping its allocations.
    pub fn clear(&mut self, start: i64) {
        self.start = start;
        if !self.dirty {
            return;
        }
        self.requests = [0; CLASSES];
        self.h_codes = [0; CODES];
        self.bytes = 0;
        self.service.clear();
        self.connect.clear();
        for &id in &self.touched {
            self.names[id as usize].reset();
        }
        self.touched.clear();
        self.dirty = false;
    }

    /// The closed form of `parts` of this period; `kind` names the kind of each id (names
    /// it does not know are left out).
    pub fn to_record(&self, kind: impl Fn(u16) -> Option<Kind>, parts: Parts) -> Record {
        let mut r = Record::default();
        if parts.counters {
            r.requests = self.requests;
            r.h_codes = (0..CODES as u8)
                .map(|c| (c, self.h_codes[c as usize]))
                .filter(|&(_, n)| n > 0)
                .collect();
            r.bytes = self.bytes;
        }
        if parts.sketches {
            r.service = self.service.to_rec();
            r.connect = self.connect.to_rec();
        }
        let mut ids = self.touched.clone();
        ids.sort_unstable();
        for id in ids {
            let (Some(k), a) = (kind(id), &self.names[id as usize]) else {
                continue;
            };
            let rec = match (k, parts.counters) {
                (Kind::Count, true) => NameRec::Count { n: a.n, sum: a.sum },
                (Kind::Sample, true) if a.n > 0 => NameRec::Sample {
                    n: a.n,
                    last: a.last,
                    min: a.min,
                    max: a.max,
                },
                (Kind::Measure, _) => {
                    let sketch = if parts.sketches {
                        a.sketch.as_ref().and_then(|s| s.to_rec())
                    } else {
                        None
                    };
                    let n = if parts.counters { a.n } else { 0 };
                    if n == 0 && sketch.is_none() {
                        continue;
                    }
                    NameRec::Measure { n, sketch }
                }
                _ => continue,
            };
            r.names.push((id, rec));
        }
        r
    }

    /// Adds `parts` of a closed period. Periods are merged oldest first, so a sample's last
    /// value is the latest one.
    pub fn merge(&mut self, r: &Record, parts: Parts) {
        if parts.counters {
            for (mine, theirs) in self.requests.iter_mut().zip(r.requests) {
                *mine += theirs;
            }
            for &(c, n) in &r.h_codes {
                if let Some(mine) = self.h_codes.get_mut(c as usize) {
                    *mine += n;
                }
            }
            self.bytes += r.bytes;
            self.dirty |= r.requests.iter().any(|&n| n > 0) || !r.h_codes.is_empty();
        }
        if parts.sketches {
            if let Some(s) = &r.service {
                self.service.merge(s);
                self.dirty = true;
            }
            if let Some(s) = &r.connect {
                self.connect.merge(s);
                self.dirty = true;
            }
        }
        for (id, rec) in &r.names {
            match rec {
                NameRec::Count { n, sum } if parts.counters => {
                    let a = self.touch(*id);
                    a.n += n;
                    a.sum += sum;
                }
                NameRec::Sample { n, last, min, max } if parts.counters => {
                    let a = self.touch(*id);
                    a.n += n;
                    a.last = *last;
                    a.min = a.min.min(*min);
                    a.max = a.max.max(*max);
                }
                NameRec::Measure { n, sketch } => {
                    let sketch = sketch.as_ref().filter(|_| parts.sketches);
                    let n = if parts.counters { *n } else { 0 };
                    if n == 0 && sketch.is_none() {
                        continue;
                    }
                    let a = self.touch(*id);
                    a.n += n;
                    if let Some(s) = sketch {
                        a.sketch_mut().merge(s);
                    }
                }
                _ => {}
            }
        }
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.service.heap_bytes()
            + self.connect.heap_bytes()
            + self.touched.capacity() * 2
            + self.names.capacity() * std::mem::size_of::<NameAgg>()
            + self
                .names
                .iter()
                .filter_map(|a| a.sketch.as_ref())
                .map(|s| std::mem::size_of::<Sketch>() + s.heap_bytes())
                .sum::<usize>()
    }
}

/// A closed period, as kept in memory (postcard bytes) and persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub requests: [u64; CLASSES],
    /// (code, count), codes ascending, counts non-zero.
    pub h_codes: Vec<(u8, u64)>,
    pub bytes: u64,
    pub service: Option<SketchRec>,
    pub connect: Option<SketchRec>,
    /// Minute records: the p95 of service time, kept when the sketches are dropped.
    pub service_p95: Option<f64>,
    /// (name id, values), ids ascending.
    pub names: Vec<(u16, NameRec)>,
}

/// The values of one l2met name in a closed period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NameRec {
    Count {
        n: u64,
        sum: f64,
    },
    Sample {
        n: u64,
        last: f64,
        min: f64,
        max: f64,
    },
    /// `n` is 0 in records of sketches only (hours); `sketch` is `None` in records of
    /// counters only (minutes older than two hours).
    Measure {
        n: u64,
        sketch: Option<SketchRec>,
    },
}

impl NameRec {
    pub fn kind(&self) -> Kind {
        match self {
            NameRec::Count { .. } => Kind::Count,
            NameRec::Sample { .. } => Kind::Sample,
            NameRec::Measure { .. } => Kind::Measure,
        }
    }
}

impl Record {
    /// The postcard bytes of the record.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain types into a Vec cannot fail; an empty result would
        // only fail to decode and be skipped.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// A record from its bytes, `None` if they are not one.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        postcard::from_bytes(bytes).ok()
    }

    /// Drops the sketches, keeping the counts and the p95 of service time.
    pub fn thin(&mut self) {
        self.service = None;
        self.connect = None;
        self.names.retain_mut(|(_, r)| match r {
            NameRec::Measure { n, sketch } => {
                *sketch = None;
                *n > 0
            }
            _ => true,
        });
    }

    /// Whether the record is self-consistent: codes in range, ids ascending, sketches valid.
    pub fn valid(&self) -> bool {
        let sketches =
            self.service
                .iter()
                .chain(&self.connect)
                .chain(self.names.iter().filter_map(|(_, r)| match r {
                    NameRec::Measure { sketch, .. } => sketch.as_ref(),
                    _ => None,
                }));
        self.h_codes.iter().all(|&(c, _)| (c as usize) < CODES)
            && self.names.windows(2).all(|w| w[0].0 < w[1].0)
            && sketches.into_iter().all(SketchRec::valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(id: u16) -> Option<Kind> {
        [Kind::Count, Kind::Sample, Kind::Measure]
            .get(id as usize)
            .copied()
    }

    #[test]
    fn records_round_trip_and_merge_like_the_live_form() {
        let mut a = Agg::new(60);
        a.router(&RouterLine {
            status: Some(503),
            code: Some(12),
            service_ms: Some(30001.0),
            connect_ms: Some(1.0),
            bytes: Some(0),
            malformed: 0,
        });
        a.router(&RouterLine {
            status: Some(200),
            service_ms: Some(23.0),
            bytes: Some(1548),
            ..RouterLine::default()
        });
        a.name(0, Kind::Count, 2.0);
        a.name(1, Kind::Sample, 7.0);
        a.name(1, Kind::Sample, 5.0);
        a.name(2, Kind::Measure, 23.0);
        let r = a.to_record(kinds, Parts::ALL);
        assert!(r.valid());
        assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
        assert_eq!(r.requests, [0, 1, 0, 0, 1]);
        assert_eq!(r.h_codes, vec![(12, 1)]);
        assert_eq!(r.bytes, 1548);

        let mut b = Agg::new(0);
        b.merge(&r, Parts::ALL);
        assert_eq!(b.to_record(kinds, Parts::ALL), r);
        let s = b.name_agg(1).unwrap();
        assert_eq!((s.last, s.min, s.max), (5.0, 5.0, 7.0));

        // Counters only, sketches only, thinned.
        let mut c = Agg::new(0);
        c.merge(&r, Parts::COUNTERS);
        assert_eq!(c.service.count(), 0);
        assert_eq!(c.name_agg(2).unwrap().n, 1);
        let mut d = Agg::new(0);
        d.merge(&r, Parts::SKETCHES);
        assert_eq!((d.total_requests(), d.service.count()), (0, 2));
        assert!(d.name_agg(0).is_none());
        let mut t = r.clone();
        t.thin();
        assert_eq!((t.service.clone(), t.names.len()), (None, 3));

        // Clearing keeps nothing but the allocations.
        b.clear(120);
        assert!(b.is_empty());
        assert_eq!(b.to_record(kinds, Parts::ALL), Record::default());
    }

    #[test]
    fn garbage_bytes_are_not_a_record() {
        assert_eq!(Record::decode(&[0xff; 7]), None);
        assert_eq!(Record::decode(&[]), None);
    }
}
