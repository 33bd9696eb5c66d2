//! The registry's channels by name: a sorted list cut into chunks, both levels copied on
//! write, so a snapshot shares every chunk a change did not touch.
//!
//! It replaces a persistent B-tree (`imbl::OrdMap`) that took 0.48 s to fill one insert at
//! a time with the million channels of a start; the store hands them over in name order,
//! so here they are cut into chunks as they come (milliseconds). A change copies the list
//! of chunks (about 1,000 pointers at a million channels) and the one chunk it changes (at
//! most [`MAX`] pointers): tens of microseconds, against a millisecond for an API create.

use std::ops::Bound;
use std::sync::Arc;

/// What the map holds: a value that knows its own name.
pub trait Named {
    fn name(&self) -> &str;
}

impl<T: Named> Named for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
}

/// Values a chunk is filled with in bulk.
const FILL: usize = 1024;
/// A chunk that grows past this is cut in two.
const MAX: usize = 2 * FILL;

/// Values by name. Invariants: every chunk is non-empty and sorted, and every name of a
/// chunk comes before every name of the next.
pub struct Names<T> {
    chunks: Arc<Vec<Arc<Vec<T>>>>,
    len: usize,
}

impl<T> Clone for Names<T> {
    fn clone(&self) -> Names<T> {
        Names {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for Names<T> {
    fn default() -> Names<T> {
        Names {
            chunks: Arc::default(),
            len: 0,
        }
    }
}

impl<T: Named + Clone> Names<T> {
    /// The map of `values`, whose names are unique. In name order (as the store reads
    /// them) it is filled as they come; otherwise sorted first.
    pub fn build(mut values: Vec<T>) -> Names<T> {
        if !values.windows(2).all(|w| w[0].name() < w[1].name()) {
            values.sort_by(|a, b| a.name().cmp(b.name()));
            values.dedup_by(|a, b| a.name() == b.name());
        }
        let len = values.len();
        let mut chunks = Vec::with_capacity(len.div_ceil(FILL));
        let mut values = values.into_iter();
        loop {
            let chunk: Vec<T> = values.by_ref().take(FILL).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(Arc::new(chunk));
        }
        Names {
            chunks: Arc::new(chunks),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `name` if any does: the first whose last name is not before it.
    fn chunk_of(&self, name: &str) -> usize {
        self.chunks
            .partition_point(|c| c.last().is_some_and(|v| v.name() < name))
    }

    pub fn get(&self, name: &str) -> Option<&T> {
        let chunk = self.chunks.get(self.chunk_of(name))?;
        let i = chunk.binary_search_by(|v| v.name().cmp(name)).ok()?;
        chunk.get(i)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Adds `value`, or replaces the value of its name.
    pub fn insert(&mut self, value: T) {
        // A name past the last goes into the last chunk.
        let c = self
            .chunk_of(value.name())
            .min(self.chunks.len().saturating_sub(1));
        let chunks = Arc::make_mut(&mut self.chunks);
        let Some(chunk) = chunks.get_mut(c) else {
            chunks.push(Arc::new(vec![value]));
            self.len += 1;
            return;
        };
        let chunk = Arc::make_mut(chunk);
        match chunk.binary_search_by(|v| v.name().cmp(value.name())) {
            Ok(i) => chunk[i] = value,
            Err(i) => {
                chunk.insert(i, value);
                self.len += 1;
                if chunk.len() > MAX {
                    let tail = chunk.split_off(chunk.len() / 2);
                    chunks.insert(c + 1, Arc::new(tail));
                }
            }
        }
    }

    /// Removes the value of `name`, if there is one.
    pub fn remove(&mut self, name: &str) -> Option<T> {
        let c = self.chunk_of(name);
        let i = self
            .chunks
            .get(c)?
            .binary_search_by(|v| v.name().cmp(name))
            .ok()?;
        let chunks = Arc::make_mut(&mut self.chunks);
        let chunk = Arc::make_mut(&mut chunks[c]);
        let gone = chunk.remove(i);
        if chunk.is_empty() {
            chunks.remove(c);
        }
        self.len -= 1;
        Some(gone)
    }

    /// Every value, by name.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The values whose names come after `after` (all, with `Unbounded`), by name; finding
    /// where to start is O(log n).
    pub fn after(&self, after: Bound<&str>) -> impl Iterator<Item = &T> {
        let (c, i) = match after {
            Bound::Unbounded => (0, 0),
            Bound::Excluded(a) | Bound::Included(a) => {
                let past = |v: &T| match after {
                    Bound::Excluded(_) => v.name() <= a,
                    _ => v.name() < a,
                };
                let c = self.chunks.partition_point(|c| c.last().is_some_and(&past));
                let i = self.chunks.get(c).map_or(0, |ch| ch.partition_point(past));
                (c, i)
            }
        };
        let first = self.chunks.get(c).map_or(&[][..], |ch| &ch[i..]);
        first
            .iter()
            .chain(self.chunks.iter().skip(c + 1).flat_map(|ch| ch.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[derive(Clone, Debug, PartialEq)]
    struct V(String, u32);

    impl Named for V {
        fn name(&self) -> &str {
            &self.0
        }
    }

    fn names(m: &Names<V>) -> Vec<String> {
        m.values().map(|v| v.0.clone()).collect()
    }

    fn check(m: &Names<V>) {
        assert!(m.chunks.iter().all(|c| !c.is_empty() && c.len() <= MAX));
        let all = names(m);
        assert!(all.windows(2).all(|w| w[0] < w[1]), "out of order");
        assert_eq!(all.len(), m.len());
    }

    #[test]
    fn changes_agree_with_a_btree_and_old_copies_stay_as_they_were() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut m: Names<V> = Names::build((0..5000).map(|i| V(format!("a{i:05}"), 0)).collect());
        let mut model: BTreeSet<String> = (0..5000).map(|i| format!("a{i:05}")).collect();
        check(&m);
        let mut copies = Vec::new();
        for round in 0..20_000u32 {
            let name = format!("a{:05}", rng.u32(0..12_000));
            if rng.u8(0..3) == 0 {
                assert_eq!(m.remove(&name).is_some(), model.remove(&name));
            } else {
                m.insert(V(name.clone(), round));
                model.insert(name.clone());
                assert_eq!(m.get(&name).map(|v| v.1), Some(round));
            }
            if round % 2000 == 0 {
                copies.push((m.clone(), names(&m)));
            }
        }
        check(&m);
        assert_eq!(names(&m), model.iter().cloned().collect::<Vec<_>>());
        for (copy, was) in &copies {
            assert_eq!(&names(copy), was);
        }
        for probe in ["", "a", "a00000", "a05000", "a07777", "a11999", "b"] {
            let want: Vec<&String> = model
                .range::<str, _>((Bound::Excluded(probe), Bound::Unbounded))
                .collect();
            let got: Vec<String> = m
                .after(Bound::Excluded(probe))
                .map(|v| v.0.clone())
                .collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "after {probe}");
            assert_eq!(m.contains_key(probe), model.contains(probe));
        }
        assert_eq!(m.after(Bound::Unbounded).count(), model.len());
    }

    #[test]
    fn built_from_names_out_of_order_or_none() {
        let m = Names::build(vec![V("c".into(), 1), V("a".into(), 2), V("b".into(), 3)]);
        assert_eq!(names(&m), ["a", "b", "c"]);
        let mut e: Names<V> = Names::build(Vec::new());
        assert!(e.is_empty() && e.get("a").is_none() && e.remove("a").is_none());
        assert_eq!(e.after(Bound::Excluded("a")).count(), 0);
        e.insert(V("x".into(), 1));
        assert_eq!(names(&e), ["x"]);
        assert_eq!(e.remove("x"), Some(V("x".into(), 1)));
        assert!(e.is_empty() && e.values().next().is_none());
    }
}
