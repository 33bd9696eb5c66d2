//! A DDSketch-style quantile sketch: values are counted in logarithmic buckets narrow enough
//! that any quantile read back is within [`ALPHA`] of the exact value (relative error).
//!
//! Bucket `k` holds the values in (γ^(k−1), γ^k] with γ = (1 + α) / (1 − α) and answers
//! γ^k·(1 − α), which is within α of every value in the bucket. Negative values go to a
//! mirrored store, values near zero to a zero count. Two forms:
//! - [`Sketch`], the live one an open period writes to: a dense array of counts over a window
//!   of at most [`MAX_KEYS`] consecutive keys per sign, so adding is an index and an
//!   increment, and clearing keeps the allocation (no allocation per value in the steady
//!   state). A value that would widen the window past [`MAX_KEYS`] collapses the lowest keys
//!   into one (DDSketch's "collapsing lowest" store): 2048 keys span a factor of 10¹⁶, so
//!   only a distribution wider than that loses accuracy, and only in its lowest quantiles.
//!   The window covers only the keys in use (plus some slack): ms latencies from 1 ms to
//!   30 s take about 400 keys.
//! - [`SketchRec`], the compact form a closed period keeps: the non-empty buckets only, keys as
//!   gaps, everything varint-encoded by postcard (about 2–4 bytes a bucket).
//!
//! We wrote it rather than take `sketches-ddsketch`: that crate keeps its store private, so
//! there is no way to write the sparse form above or to clear without reallocating.

use serde::{Deserialize, Serialize};

/// The relative accuracy of every quantile: 0.9 %. The summary rounds to 4 significant
/// digits (0.05 % more), which keeps what users see within 1 % of the exact value.
pub const ALPHA: f64 = 0.009;
/// ln γ for γ = (1 + α) / (1 − α) (checked against [`ALPHA`] by a test).
const LN_GAMMA: f64 = 0.018_000_486_023_620_893;
/// 1 / ln γ.
const INV_LN_GAMMA: f64 = 55.554_055_523_154_41;
/// The widest window of keys a live store keeps, per sign.
pub const MAX_KEYS: usize = 2048;
/// No finite value has a key beyond this (ln of the largest f64 / ln γ is about 39,400);
/// decoded records with larger keys are refused.
const MAX_ABS_KEY: i64 = 50_000;
/// Values closer to zero than this are counted as zero.
const MIN_VALUE: f64 = 1e-9;
/// Keys added around a new one when a store grows, so neighbours do not each reallocate.
const SLACK: i32 = 32;

/// ⌈q·n⌉ within 1..=n: which of n sorted values is the q-quantile (nearest rank). The
/// product is nudged down so that 0.95 × 20 is 19, not 20 for a rounding error.
pub fn nearest_rank(q: f64, n: u64) -> u64 {
    ((q.clamp(0.0, 1.0) * n as f64 - 1e-9).ceil() as u64).clamp(1, n.max(1))
}

/// The bucket of a positive value (above [`MIN_VALUE`]).
#[inline]
fn key(x: f64) -> i32 {
    (x.ln() * INV_LN_GAMMA).ceil() as i32
}

/// Whole numbers below this have their bucket looked up (router times are whole
/// milliseconds, and most are below 4 s): a table of 16 KiB instead of a logarithm each.
const SMALL: usize = 4096;

/// [`key`] of whole numbers `1..SMALL`, looked up.
#[inline]
fn small_key(i: usize) -> i32 {
    static SMALL_KEYS: std::sync::LazyLock<Box<[i32; SMALL]>> = std::sync::LazyLock::new(|| {
        let mut t = Box::new([0; SMALL]);
        for (i, k) in t.iter_mut().enumerate() {
            *k = key(i as f64);
        }
        t
    });
    SMALL_KEYS[i % SMALL]
}

/// [`key`], looked up for whole numbers below [`SMALL`]; the same answer.
#[inline]
fn key_of(x: f64) -> i32 {
    if x < SMALL as f64 {
        let i = x as usize;
        if i as f64 == x && i > 0 {
            return small_key(i);
        }
    }
    key(x)
}

/// The value a bucket answers: within α of everything it holds.
fn value(k: i32) -> f64 {
    (k as f64 * LN_GAMMA).exp() * (1.0 - ALPHA)
}

/// Counts of one sign over a window of consecutive keys.
#[derive(Debug, Clone, Default)]
struct Store {
    /// `counts[i]` is the count of key `offset + i`; never longer than [`MAX_KEYS`].
    counts: Vec<u64>,
    offset: i32,
    total: u64,
}

impl Store {
    #[inline]
    fn add(&mut self, key: i32, n: u64) {
        let i = (key as i64 - self.offset as i64) as usize;
        match self.counts.get_mut(i) {
            Some(c) => {
                *c += n;
                self.total += n;
            }
            None => self.add_slow(key, n),
        }
    }

    /// `key` is outside the window: widen it (with some slack), collapsing the lowest keys
    /// when it would exceed [`MAX_KEYS`].
    #[cold]
    fn add_slow(&mut self, key: i32, n: u64) {
        let max = MAX_KEYS as i32;
        let (lo, hi) = if self.counts.is_empty() {
            (key - SLACK, key + SLACK)
        } else {
            let hi = self.offset + self.counts.len() as i32 - 1;
            if key > hi {
                if key - self.offset < max {
                    (self.offset, (key + SLACK).min(self.offset + max - 1))
                } else {
                    (key - max + 1, key)
                }
            } else if hi - key < max {
                ((key - SLACK).max(hi - max + 1), hi)
            } else {
                (hi - max + 1, hi)
            }
        };
        self.reshape(lo, hi);
        let i = (key.max(self.offset) - self.offset) as usize;
        self.counts[i] += n;
        self.total += n;
    }

    /// Moves the window to `[lo, hi]` (`hi` never below the current highest key); counts of
    /// keys below `lo` go to `lo`.
    fn reshape(&mut self, lo: i32, hi: i32) {
        let mut counts = vec![0u64; (hi - lo + 1) as usize];
        for (k, c) in self.bins() {
            counts[(k.max(lo) - lo) as usize] += c;
        }
        self.counts = counts;
        self.offset = lo;
    }

    /// Non-empty buckets, lowest key first.
    fn bins(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        let offset = self.offset;
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(move |(i, &c)| (offset + i as i32, c))
    }

    /// Empties the store, keeping its window and allocation.
    fn clear(&mut self) {
        if self.total > 0 {
            self.counts.fill(0);
            self.total = 0;
        }
    }

    fn to_bins(&self) -> Bins {
        let mut out = Bins::default();
        let mut prev = None;
        for (k, c) in self.bins() {
            let gap = match prev {
                None => {
                    out.first = k;
                    0
                }
                Some(p) => (k - p) as u32,
            };
            out.gaps.push((gap, c));
            prev = Some(k);
        }
        out
    }

    fn add_bins(&mut self, b: &Bins) {
        for (k, c) in b.iter() {
            self.add(k, c);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u64>()
    }
}

/// Where [`Sketch::add`] counts a value: whole numbers below [`SMALL`] (the router's
/// milliseconds, most of what is added) by their key from the table, zeros (`connect=0ms`,
/// its most common connect time) by a count, the rest by the general way.
enum Slot {
    Key(i32),
    Zero,
    Other,
}

#[inline(always)]
fn slot(x: f64) -> Slot {
    if (1.0..SMALL as f64).contains(&x) {
        let i = x as u32 as usize;
        if i as f64 == x {
            return Slot::Key(small_key(i));
        }
    } else if x == 0.0 {
        return Slot::Zero;
    }
    Slot::Other
}

/// Widens the smallest and largest values seen, `min` and `max`, to `x` (not NaN: plain
/// comparisons, where `f64::min` spends a dozen instructions on NaN).
#[inline(always)]
fn widen(min: &mut f64, max: &mut f64, x: f64) {
    if x < *min {
        *min = x;
    }
    if x > *max {
        *max = x;
    }
}

/// Values for a [`Sketch`] gathered where it cannot be reached (ingest, before the
/// channel's lock): whole numbers below [`SMALL`] as their bucket keys, zeros counted, the
/// rest as they are. [`Sketch::add_values`] counts them as [`Sketch::add`] of each would,
/// but for the order (keyed values first), which matters only where a store collapses its
/// lowest buckets.
#[derive(Debug, Clone)]
pub struct Values {
    keys: Vec<i32>,
    zero: u64,
    other: Vec<f64>,
    /// The smallest and largest of the keyed values and zeros.
    min: f64,
    max: f64,
}

impl Default for Values {
    fn default() -> Values {
        Values {
            keys: Vec::new(),
            zero: 0,
            other: Vec::new(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Values {
    /// A whole number (the router's milliseconds read the exact way).
    #[inline(always)]
    pub fn push_whole(&mut self, n: u64) {
        if n == 0 {
            self.zero += 1;
            self.bound(0.0);
        } else if n < SMALL as u64 {
            self.keys.push(small_key(n as usize));
            self.bound(n as f64);
        } else {
            self.other.push(n as f64);
        }
    }

    /// Any value, as [`Sketch::add`] takes it.
    #[inline]
    pub fn push(&mut self, x: f64) {
        match slot(x) {
            Slot::Key(k) => self.keys.push(k),
            Slot::Zero => self.zero += 1,
            Slot::Other => return self.other.push(x),
        }
        self.bound(x);
    }

    #[inline(always)]
    fn bound(&mut self, x: f64) {
        widen(&mut self.min, &mut self.max, x);
    }

    /// Empties, keeping the allocations.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.other.clear();
        self.zero = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
    }
}

/// The live sketch of an open period (see the module doc).
#[derive(Debug, Clone)]
pub struct Sketch {
    pos: Store,
    neg: Store,
    zero: u64,
    min: f64,
    max: f64,
}

impl Default for Sketch {
    fn default() -> Sketch {
        Sketch {
            pos: Store::default(),
            neg: Store::default(),
            zero: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Sketch {
    /// Counts `x`; NaN and infinities are ignored.
    #[inline]
    pub fn add(&mut self, x: f64) {
        // A keyed value or a zero is no NaN: `bound`'s plain comparisons hold.
        match slot(x) {
            Slot::Key(k) => self.pos.add(k, 1),
            Slot::Zero => self.zero += 1,
            Slot::Other => return self.add_any(x),
        }
        self.bound(x);
    }

    /// Counts every value of `v` (see [`Values`]).
    pub fn add_values(&mut self, v: &Values) {
        if v.zero > 0 || !v.keys.is_empty() {
            self.bound(v.min);
            self.bound(v.max);
        }
        self.zero += v.zero;
        for &k in &v.keys {
            self.pos.add(k, 1);
        }
        for &x in &v.other {
            self.add(x);
        }
    }

    /// Widens the smallest and largest value seen to `x` (not NaN).
    #[inline(always)]
    fn bound(&mut self, x: f64) {
        widen(&mut self.min, &mut self.max, x);
    }

    /// [`Sketch::add`] of any value.
    fn add_any(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.bound(x);
        if x > MIN_VALUE {
            self.pos.add(key_of(x), 1);
        } else if x < -MIN_VALUE {
            self.neg.add(key_of(-x), 1);
        } else {
            self.zero += 1;
        }
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.pos.total + self.neg.total + self.zero
    }

    /// The q-quantile by nearest rank (the ⌈q·n⌉-th smallest of the n values, the first for
    /// q = 0), within [`ALPHA`] of it and never outside the smallest and largest value seen;
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = nearest_rank(q, n) - 1;
        let clamp = |v: f64| v.clamp(self.min, self.max);
        let mut seen = 0;
        for (k, c) in self.neg.bins().rev() {
            seen += c;
            if seen > rank {
                return Some(clamp(-value(k)));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(clamp(0.0));
        }
        for (k, c) in self.pos.bins() {
            seen += c;
            if seen > rank {
                return Some(clamp(value(k)));
            }
        }
        Some(self.max)
    }

    /// Empties the sketch, keeping its allocation.
    pub fn clear(&mut self) {
        self.pos.clear();
        self.neg.clear();
        self.zero = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
    }

    /// The compact form, `None` when empty.
    pub fn to_rec(&self) -> Option<SketchRec> {
        if self.count() == 0 {
            return None;
        }
        Some(SketchRec {
            zero: self.zero,
            min: self.min,
            max: self.max,
            pos: self.pos.to_bins(),
            neg: self.neg.to_bins(),
        })
    }

    /// Adds the values of a compact sketch (merging is exact: same buckets).
    pub fn merge(&mut self, r: &SketchRec) {
        self.pos.add_bins(&r.pos);
        self.neg.add_bins(&r.neg);
        self.zero += r.zero;
        self.min = self.min.min(r.min);
        self.max = self.max.max(r.max);
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.pos.heap_bytes() + self.neg.heap_bytes()
    }
}

/// The compact form of a sketch kept by closed periods and persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SketchRec {
    zero: u64,
    min: f64,
    max: f64,
    pos: Bins,
    neg: Bins,
}

impl SketchRec {
    /// Whether the record is self-consistent (bucket keys of finite values, min ≤ max).
    pub fn valid(&self) -> bool {
        let keys_ok = |b: &Bins| {
            let mut k = b.first as i64;
            b.gaps.iter().enumerate().all(|(i, &(g, c))| {
                k += g as i64;
                (i == 0 || g > 0) && c > 0 && (-MAX_ABS_KEY..=MAX_ABS_KEY).contains(&k)
            })
        };
        keys_ok(&self.pos) && keys_ok(&self.neg) && self.min <= self.max
    }
}

/// Non-empty buckets: the first key, then (gap from the previous key, count) pairs, the
/// first gap being 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Bins {
    first: i32,
    gaps: Vec<(u32, u64)>,
}

impl Bins {
    fn iter(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        let mut k = self.first as i64;
        self.gaps.iter().map(move |&(g, c)| {
            k += g as i64;
            (k.clamp(i32::MIN as i64, i32::MAX as i64) as i32, c)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_of_small_keys_agrees_with_the_logarithm() {
        for i in 1..SMALL + 10 {
            assert_eq!(key_of(i as f64), key(i as f64), "{i}");
        }
        for x in [MIN_VALUE * 2.0, 0.5, 1.5, 4095.5, 1e9] {
            assert_eq!(key_of(x), key(x));
        }
    }

    use super::*;
    use proptest::prelude::*;

    /// The nearest-rank q-quantile of sorted values, computed on its own.
    fn exact(sorted: &[f64], q: f64) -> f64 {
        let n = sorted.len() as f64;
        let i = ((q * n).ceil() as usize).max(1) - 1;
        sorted[i.min(sorted.len() - 1)]
    }

    fn check(values: &[f64]) -> Result<(), TestCaseError> {
        let mut s = Sketch::default();
        for &v in values {
            s.add(v);
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let (want, got) = (exact(&sorted, q), s.quantile(q).unwrap());
            prop_assert!(
                (got - want).abs() <= ALPHA * want.abs() * (1.0 + 1e-9) + 1e-12,
                "q={q}: got {got}, exact {want}"
            );
        }
        // The compact form answers the same, merged into an empty sketch or split in two.
        let mut m = Sketch::default();
        m.merge(&s.to_rec().unwrap());
        let mid = values.len() / 2;
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        values[..mid].iter().for_each(|&v| a.add(v));
        values[mid..].iter().for_each(|&v| b.add(v));
        if let Some(r) = b.to_rec() {
            a.merge(&r);
        }
        for q in [0.5, 0.95, 0.99] {
            prop_assert_eq!(m.quantile(q), s.quantile(q));
            prop_assert_eq!(a.quantile(q), s.quantile(q));
        }
        Ok(())
    }

    #[test]
    fn constants_match_alpha() {
        let ln = ((1.0 + ALPHA) / (1.0 - ALPHA)).ln();
        assert!((ln - LN_GAMMA).abs() < 1e-15);
        assert!((1.0 / ln - INV_LN_GAMMA).abs() < 1e-10);
    }

    #[test]
    fn every_value_is_answered_within_alpha() {
        let mut x = 1e-8;
        while x < 1e12 {
            let v = value(key(x));
            assert!((v - x).abs() <= ALPHA * x * (1.0 + 1e-12), "{x} -> {v}");
            x *= 1.0007;
        }
    }

    #[test]
    fn zero_negative_and_empty() {
        let mut s = Sketch::default();
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.to_rec(), None);
        for v in [-5.0, 0.0, 0.0, 3.0, f64::NAN, f64::INFINITY] {
            s.add(v);
        }
        assert_eq!(s.count(), 4);
        assert_eq!(s.quantile(0.0), Some(-5.0));
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert_eq!(s.quantile(1.0), Some(3.0));
    }

    #[test]
    fn clear_keeps_the_allocation() {
        let mut s = Sketch::default();
        (1..=30_000).for_each(|v| s.add(v as f64));
        let heap = s.heap_bytes();
        assert!(heap <= MAX_KEYS * 8);
        s.clear();
        assert_eq!(s.count(), 0);
        (1..=30_000).rev().for_each(|v| s.add(v as f64));
        assert_eq!(s.heap_bytes(), heap);
    }

    #[test]
    fn a_wider_range_than_the_window_collapses_the_lowest() {
        let mut s = Sketch::default();
        s.add(1e-6);
        s.add(1e-6);
        s.add(1e12);
        s.add(1e12);
        s.add(1e12);
        assert!(s.heap_bytes() <= MAX_KEYS * 8);
        // The high quantiles stay exact; the low ones answer the lowest kept bucket.
        let p99 = s.quantile(0.99).unwrap();
        assert!((p99 - 1e12).abs() <= ALPHA * 1e12);
        assert!(s.quantile(0.0).unwrap() >= 1e-6);
    }

    fn distribution() -> impl Strategy<Value = Vec<f64>> {
        let n = 1..2000usize;
        prop_oneof![
            // integer milliseconds, like the router's service times
            prop::collection::vec(0u32..30_000, n.clone())
                .prop_map(|v| v.into_iter().map(f64::from).collect()),
            // uniform
            prop::collection::vec(0.001f64..1e6, n.clone()),
            // log-uniform over 9 decades (latencies with a long tail)
            prop::collection::vec(-3.0f64..6.0, n.clone())
                .prop_map(|v| v.into_iter().map(|e| 10f64.powf(e)).collect()),
            // exponential
            prop::collection::vec(0.0f64..1.0, n.clone())
                .prop_map(|v| v.into_iter().map(|u| -(1.0 - u).ln() * 50.0).collect()),
            // bimodal: fast hits and slow misses
            prop::collection::vec((any::<bool>(), 0.0f64..1.0), n.clone()).prop_map(|v| v
                .into_iter()
                .map(|(slow, u)| if slow {
                    800.0 + u * 400.0
                } else {
                    2.0 + u * 8.0
                })
                .collect()),
            // signed values around zero (l2met measures may be negative)
            prop::collection::vec(-1e4f64..1e4, n.clone()),
            // few distinct values, many repeats
            prop::collection::vec(prop::sample::select(vec![0.0, 1.0, 7.0, 23.0, 30_001.0]), n),
        ]
    }

    proptest! {
        #[test]
        fn quantiles_within_alpha_of_exact(values in distribution()) {
            check(&values)?;
        }
    }
}
