//! The l2met names of one channel: each (kind, name) gets a small id that periods use
//! instead of the name, with its unit as first sent and when it was last seen. At most
//! `max` names at once; an id is freed once no kept period can mention it, so the bound is
//! on the names of the last 24 hours, not of all time.

use super::extract::Kind;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

/// aHash with fixed keys: SipHash was a tenth of the cost of an l2met line. A map holds at
/// most the names limit, so colliding names can only make a lookup walk those.
type Map = HashMap<Box<[u8]>, u16, BuildHasherDefault<ahash::AHasher>>;

/// One name.
#[derive(Debug, Clone)]
pub struct Slot {
    pub kind: Kind,
    pub name: Arc<str>,
    /// The unit of the first value (`ms`, `MB`, or empty); values in another unit are
    /// left out, so a name never mixes units.
    pub unit: Arc<str>,
    /// Start (Unix seconds) of the latest period that has a value of it.
    pub last_seen: i64,
}

/// The names of a channel (see the module doc).
#[derive(Debug, Default)]
pub struct Names {
    slots: Vec<Option<Slot>>,
    free: Vec<u16>,
    /// Per kind, name → id; looked up with the borrowed name, so a known name costs no
    /// allocation.
    index: [Map; 3],
}

impl Names {
    /// The id of a known name.
    #[inline]
    pub fn get(&self, kind: Kind, name: &[u8]) -> Option<u16> {
        self.index[kind.index()].get(name).copied()
    }

    /// Adds a name seen at `now`; `None` when `max` names are already kept.
    pub fn insert(
        &mut self,
        kind: Kind,
        name: &str,
        unit: &str,
        now: i64,
        max: usize,
    ) -> Option<u16> {
        if self.len() >= max.min(u16::MAX as usize) {
            return None;
        }
        let slot = Slot {
            kind,
            name: Arc::from(name),
            unit: Arc::from(unit),
            last_seen: now,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u16
            }
        };
        self.index[kind.index()].insert(name.as_bytes().into(), id);
        Some(id)
    }

    /// The name of an id.
    #[inline]
    pub fn slot(&self, id: u16) -> Option<&Slot> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    /// Notes that `id` has a value in the period starting at `start`.
    pub fn seen(&mut self, id: u16, start: i64) {
        if let Some(Some(s)) = self.slots.get_mut(id as usize) {
            s.last_seen = s.last_seen.max(start);
        }
    }

    /// Frees the ids last seen before `oldest`, the start of the oldest period kept (open
    /// or closed): no period can mention them any more.
    pub fn collect(&mut self, oldest: i64) {
        for (id, slot) in self.slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|s| s.last_seen < oldest) {
                if let Some(s) = slot.take() {
                    self.index[s.kind.index()].remove(s.name.as_bytes());
                    self.free.push(id as u16);
                }
            }
        }
    }

    /// How many names are kept.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// All kept names with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(id, s)| Some((id as u16, s.as_ref()?)))
    }

    /// The names by id, for a snapshot (one reference count per name).
    pub fn table(&self) -> Vec<Option<Slot>> {
        self.slots.clone()
    }

    /// Restores a name with a given id (decoding); `false` if the id or name is taken.
    pub fn restore(&mut self, id: u16, slot: Slot) -> bool {
        let i = id as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        if self.slots[i].is_some() || self.get(slot.kind, slot.name.as_bytes()).is_some() {
            return false;
        }
        self.index[slot.kind.index()].insert(slot.name.as_bytes().into(), id);
        self.slots[i] = Some(slot);
        true
    }

    /// Rebuilds the free list after [`Names::restore`].
    pub fn restored(&mut self) {
        self.free = (0..self.slots.len() as u16)
            .rev()
            .filter(|&id| self.slots[id as usize].is_none())
            .collect();
    }

    /// Bytes held on the heap, roughly: the names twice (the table and the index), their
    /// units, and the maps' entries.
    pub fn heap_bytes(&self) -> usize {
        let per_name = 2 * 16 + 2 * 16 + 32; // two Arc headers, a boxed key, a map entry
        self.slots.capacity() * std::mem::size_of::<Option<Slot>>()
            + self
                .iter()
                .map(|(_, s)| per_name + 2 * s.name.len() + s.unit.len())
                .sum::<usize>()
    }
}
