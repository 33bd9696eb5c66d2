//! The registry: an in-memory snapshot (token → channel, name → channel) of what the store
//! holds, swapped atomically; the same drains and alert rules are applied to those who run
//! them ([`Drains::apply`], [`Alerts::apply`]). The hot path reads the snapshot without
//! locks and never touches SQLite.
//!
//! The maps are copied on write: token routes in a three-level tree of small tables, the
//! channels by name in a sorted list of chunks (`names.rs`). A change copies the nodes on
//! its path (the name list's ~1,000 chunk pointers at a million channels) and shares the
//! rest with the snapshot before it, so creating or destroying a channel is not a
//! rebuild, and readers keep the snapshot they loaded for as long as they hold it.

use crate::alert::{Alerts, RuleSpec};
use crate::channel::{Channel, HistoryTotals, Limits, Tap};
use crate::drain::Drains;
use crate::line::Source;
use crate::log::Log;
use crate::store::{self, ChannelRecord, Conn, DrainRecord, PackedTokens, Store, StoreError};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

mod names;
use names::{Named, Names};

/// Where a token's lines go.
#[derive(Clone)]
pub struct Route {
    pub channel: Arc<Channel>,
    /// The token's name, shown as SOURCE.
    pub source: Source,
}

/// A channel and its stored record (name, tokens), shared by the snapshots that hold it.
/// Kept compact, as a node holds a million: the name is the channel's, and the tokens are
/// one allocation (a [`ChannelRecord`] with two tokens took five more, ≈ 400 bytes).
struct Entry {
    channel: Arc<Channel>,
    created_at: i64,
    metrics: bool,
    tokens: PackedTokens,
}

impl Named for Entry {
    fn name(&self) -> &str {
        &self.channel.name
    }
}

impl Entry {
    fn new(channel: Arc<Channel>, rec: &ChannelRecord) -> Entry {
        Entry {
            channel,
            created_at: rec.created_at,
            metrics: rec.metrics,
            tokens: PackedTokens::new(rec.tokens.iter().map(|(n, t)| (n.as_str(), t.as_str()))),
        }
    }

    fn record(&self) -> ChannelRecord {
        ChannelRecord {
            id: self.channel.id,
            name: self.channel.name.to_string(),
            tokens: self.tokens.to_vec(),
            created_at: self.created_at,
            metrics: self.metrics,
        }
    }
}

/// A token in the route tables: its channel's entry and which of the entry's tokens it is.
/// The token's bytes and name are read from the entry, so a slot is 16 bytes and owns no
/// allocation, and copying a table (a change) copies no keys. (A map from the token's bytes
/// to a [`Route`] took 80 bytes and an allocation a token, and a copied shard of 500
/// routes made 500 allocations: most of an API create at a million channels.)
#[derive(Clone)]
struct Slot {
    entry: Arc<Entry>,
    index: u32,
}

impl Slot {
    /// (name, token) as bytes.
    fn pair(&self) -> (&[u8], &[u8]) {
        self.entry
            .tokens
            .bytes()
            .nth(self.index as usize)
            .unwrap_or_default()
    }

    fn token(&self) -> &[u8] {
        self.pair().1
    }

    fn route(&self) -> Route {
        Route {
            channel: self.entry.channel.clone(),
            source: Source::new(self.pair().0),
        }
    }
}

/// The hash of a token, under random keys chosen once per process: aHash, as a token is
/// hashed once per line run looked up and once per token loaded at start, where SipHash,
/// `std`'s, took twice as long on a 38-byte token. Bits 32 to 47 choose the leaf table;
/// a table places by the low bits and tags by the top seven, so the three do not overlap.
fn hash(token: &[u8]) -> u64 {
    static KEYS: OnceLock<ahash::RandomState> = OnceLock::new();
    KEYS.get_or_init(|| {
        ahash::RandomState::with_seeds(
            fastrand::u64(..),
            fastrand::u64(..),
            fastrand::u64(..),
            fastrand::u64(..),
        )
    })
    .hash_one(token)
}

/// One table of routes: about 30 at two million tokens.
type Leaf = hashbrown::HashTable<Slot>;

/// A level of the tree above the tables, copied on write.
type Level<T> = Arc<Vec<T>>;

/// Fan-out of the three levels: 64 × 32 × 32 = 65,536 leaf tables.
const TOP: usize = 64;
const MID: usize = 32;
const LOW: usize = 32;
const LEAVES: usize = TOP * MID * LOW;

/// Which leaf table holds a token of hash `h` (0..[`LEAVES`]).
fn leaf_of(h: u64) -> usize {
    (h >> 32) as usize & (LEAVES - 1)
}

/// Token → route, in a tree of three small levels over [`LEAVES`] tables: a change copies
/// one node of each level and the one table it changes (some 160 pointers and 30 slots a
/// token), never the whole map (a list of 4,096 shards of 500 routes each was copied
/// before: 1.1 ms a create at a million channels). A lookup is one hash, three indexed
/// loads and one probe.
#[derive(Clone)]
struct Tokens {
    root: Level<Level<Level<Arc<Leaf>>>>,
}

impl Default for Tokens {
    /// Every table the same empty one, shared until written.
    fn default() -> Tokens {
        let leaf = Arc::new(Leaf::new());
        let low = Arc::new(vec![leaf.clone(); LOW]);
        let mid = Arc::new(vec![low.clone(); MID]);
        Tokens {
            root: Arc::new(vec![mid.clone(); TOP]),
        }
    }
}

impl Tokens {
    fn leaf(&self, h: u64) -> &Leaf {
        let i = leaf_of(h);
        &self.root[i / (MID * LOW)][i / LOW % MID][i % LOW]
    }

    fn get(&self, token: &[u8]) -> Option<&Slot> {
        let h = hash(token);
        self.leaf(h).find(h, |s| s.token() == token)
    }

    /// The table of hash `h`, it and the nodes above it copied first if another snapshot
    /// shares them.
    fn leaf_mut(&mut self, h: u64) -> &mut Leaf {
        let i = leaf_of(h);
        let mid = &mut Arc::make_mut(&mut self.root)[i / (MID * LOW)];
        let low = &mut Arc::make_mut(mid)[i / LOW % MID];
        Arc::make_mut(&mut Arc::make_mut(low)[i % LOW])
    }

    /// Routes the token of `slot` there (replacing the route it had).
    fn insert(&mut self, slot: Slot) {
        // The token's bytes stay borrowed from the entry while the slot moves in.
        let key = slot.clone();
        let token = key.token();
        let h = hash(token);
        match self
            .leaf_mut(h)
            .entry(h, |s| s.token() == token, |s| hash(s.token()))
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = slot,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
    }

    /// Removes the route of `token` if it leads to `channel`.
    fn remove_if(&mut self, token: &[u8], channel: &Arc<Channel>) {
        let h = hash(token);
        // Looked up first: a table shared with another snapshot is copied only to change it.
        if !self
            .leaf(h)
            .find(h, |s| s.token() == token)
            .is_some_and(|s| Arc::ptr_eq(&s.entry.channel, channel))
        {
            return;
        }
        if let Ok(o) = self.leaf_mut(h).find_entry(h, |s| s.token() == token) {
            o.remove();
        }
    }

    /// The routes of every token of `entries`. Two million tokens are loaded this way at
    /// start, so each is hashed once and the slots are bucketed by table first (a counting
    /// sort), then each table is made at its final size, one after the other: memory
    /// written in order instead of two million inserts into tables all over it.
    fn build(entries: &[Arc<Entry>]) -> Tokens {
        let mut hashes: Vec<u64> = Vec::new();
        let mut first = vec![0u32; LEAVES + 1];
        for e in entries {
            for (_, token) in e.tokens.bytes() {
                let h = hash(token);
                hashes.push(h);
                first[leaf_of(h) + 1] += 1;
            }
        }
        for i in 1..first.len() {
            first[i] += first[i - 1];
        }
        let mut at = first.clone();
        let mut sorted: Vec<Option<(u64, Slot)>> = Vec::new();
        sorted.resize_with(hashes.len(), || None);
        let mut next = hashes.iter();
        for e in entries {
            for index in 0..e.tokens.bytes().count() {
                let Some(&h) = next.next() else { break };
                let to = &mut at[leaf_of(h)];
                sorted[*to as usize] = Some((
                    h,
                    Slot {
                        entry: e.clone(),
                        index: index as u32,
                    },
                ));
                *to += 1;
            }
        }
        drop(hashes);
        let empty = Arc::new(Leaf::new());
        let mut leaves = Vec::with_capacity(LEAVES);
        for l in 0..LEAVES {
            let part = &mut sorted[first[l] as usize..first[l + 1] as usize];
            if part.is_empty() {
                leaves.push(empty.clone());
                continue;
            }
            let mut table = Leaf::with_capacity(part.len());
            // Tokens are unique in the store (its primary key): no lookup before each.
            for (h, slot) in part.iter_mut().filter_map(Option::take) {
                table.insert_unique(h, slot, |s| hash(s.token()));
            }
            leaves.push(Arc::new(table));
        }
        let lows = group(leaves, LOW);
        let mids = group(lows, MID);
        Tokens {
            root: Arc::new(mids),
        }
    }
}

/// `items` in nodes of `n`, in order.
fn group<T>(items: Vec<T>, n: usize) -> Vec<Level<T>> {
    let mut out = Vec::with_capacity(items.len() / n);
    let mut items = items.into_iter();
    loop {
        let node: Vec<T> = items.by_ref().take(n).collect();
        if node.is_empty() {
            return out;
        }
        out.push(Arc::new(node));
    }
}

/// One consistent view of channels and tokens.
#[derive(Clone, Default)]
pub struct Snapshot {
    tokens: Tokens,
    /// By name, so the list is in order and pages by name.
    channels: Names<Arc<Entry>>,
    /// The channels with metrics from the logs on (few), so a scrape need not visit all.
    metered: imbl::OrdMap<Arc<str>, Arc<Channel>>,
    /// The drains and the stored alert rules as last read (few: read whole on a change).
    drains: Arc<Vec<DrainRecord>>,
    alerts: Arc<Vec<RuleSpec>>,
    /// Drain token (`d.…`) → id of the channel the drain belongs to, so HTTP input can tell
    /// a batch that one of a channel's own drains sent back to it (a loop).
    drain_tokens: Arc<HashMap<Box<[u8]>, i64>>,
}

impl Snapshot {
    /// The route of a token (`t.…`), if it exists.
    pub fn route(&self, token: &[u8]) -> Option<Route> {
        self.tokens.get(token).map(Slot::route)
    }

    pub fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.channels.get(name).map(|e| &e.channel)
    }

    /// The channel `name` if it is still the one with store id `id` (not destroyed, nor
    /// destroyed and created again).
    pub fn channel_with_id(&self, name: &str, id: i64) -> Option<&Arc<Channel>> {
        self.channel(name).filter(|c| c.id == id)
    }

    /// Every channel, by name.
    pub fn channels(&self) -> impl Iterator<Item = &Arc<Channel>> {
        self.channels.values().map(|e| &e.channel)
    }

    /// The channels with metrics from the logs on, by name.
    pub fn metered(&self) -> impl Iterator<Item = &Arc<Channel>> {
        self.metered.values()
    }

    /// How many channels there are.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The channel `name` as stored (name and tokens).
    pub fn record(&self, name: &str) -> Option<ChannelRecord> {
        self.channels.get(name).map(|e| e.record())
    }

    /// The channels as stored whose names come after `after` (all with `""`), by name: a
    /// page starts here in O(log n).
    pub fn records_after<'a>(&'a self, after: &'a str) -> impl Iterator<Item = ChannelRecord> + 'a {
        self.entries_after(after).map(|e| e.record())
    }

    /// The first channel as stored whose name and creation time (Unix seconds) pass `is`:
    /// a scan, which makes no record until it finds one.
    pub fn find_record(&self, mut is: impl FnMut(&str, i64) -> bool) -> Option<ChannelRecord> {
        self.channels
            .values()
            .find(|e| is(e.name(), e.created_at))
            .map(|e| e.record())
    }

    /// The channels whose names come after `after` (all with `""`), by name, from O(log n).
    pub fn channels_after<'a>(&'a self, after: &'a str) -> impl Iterator<Item = &'a Arc<Channel>> {
        self.entries_after(after).map(|e| &e.channel)
    }

    fn entries_after<'a>(&'a self, after: &'a str) -> impl Iterator<Item = &'a Arc<Entry>> {
        let from: Bound<&str> = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after)
        };
        self.channels.after(from)
    }

    /// Is `drain_token` the token of a drain of `channel`?
    pub fn is_drain_of(&self, drain_token: &[u8], channel: &Channel) -> bool {
        self.drain_tokens.get(drain_token) == Some(&channel.id)
    }

    /// Adds `ch` with its record, its token routes and (metrics on) to the metered.
    fn add(&mut self, rec: ChannelRecord, ch: Arc<Channel>) {
        let e = Arc::new(Entry::new(ch, &rec));
        for index in 0..e.tokens.bytes().count() {
            self.tokens.insert(Slot {
                entry: e.clone(),
                index: index as u32,
            });
        }
        let ch = &e.channel;
        if rec.metrics {
            self.metered.insert(ch.name.clone(), ch.clone());
        } else {
            self.metered.remove(&*ch.name);
        }
        self.channels.insert(e);
    }

    /// Removes the routes of `e`'s tokens that still lead to its channel.
    fn remove_tokens(&mut self, e: &Entry) {
        for (_, token) in e.tokens.bytes() {
            self.tokens.remove_if(token, &e.channel);
        }
    }

    fn set_outputs(&mut self, drains: Vec<DrainRecord>, alerts: Vec<RuleSpec>) {
        let mut drain_tokens = HashMap::with_capacity(drains.len());
        for d in &drains {
            if let Some(ch) = self.channel(&d.channel) {
                drain_tokens.insert(d.token.as_bytes().to_vec().into_boxed_slice(), ch.id);
            }
        }
        self.drain_tokens = Arc::new(drain_tokens);
        self.drains = Arc::new(drains);
        self.alerts = Arc::new(alerts);
    }
}

/// A channel as the store describes it, writing to `log`.
fn make_channel(
    id: i64,
    name: impl Into<Arc<str>>,
    metrics: bool,
    limits: Limits,
    log: Option<Arc<Log>>,
    totals: Arc<HistoryTotals>,
) -> Arc<Channel> {
    let ch = Channel::with_log(id, name, limits, log, totals);
    ch.set_metrics(metrics);
    Arc::new(ch)
}

/// Those who run what the store describes beside the channels: the drains and the alert
/// rules. Attached once they are started (after history is restored, so restored lines are
/// not sent again); from then on every change is applied to them.
pub struct Outputs {
    pub drains: Arc<Drains>,
    pub alerts: Arc<Alerts>,
    /// In cluster mode, the tap that puts every channel's lines into its log stream in
    /// Redis (set on every channel).
    pub stream: Option<Arc<dyn Tap>>,
}

/// The live registry.
pub struct Registry {
    store: Store,
    limits: Limits,
    /// The durable log new channels write to, `None` when it is off.
    log: Option<Arc<Log>>,
    /// Lines and bytes in every channel's history.
    totals: Arc<HistoryTotals>,
    current: ArcSwap<Snapshot>,
    outputs: OnceLock<Outputs>,
}

impl Registry {
    /// Builds the first snapshot from the store (blocking; start-up only). No drain or
    /// alert rule runs until [`Registry::attach`].
    pub fn load(
        store: Store,
        limits: Limits,
        log: Option<Arc<Log>>,
    ) -> Result<Arc<Registry>, StoreError> {
        let reg = Arc::new(Registry {
            store,
            limits,
            log,
            totals: Arc::default(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            outputs: OnceLock::new(),
        });
        let t = std::time::Instant::now();
        let (limits, log, totals) = (reg.limits, reg.log.clone(), reg.totals.clone());
        let channels = store::load_channels(
            &reg.store,
            |c| {
                Arc::new(Entry {
                    channel: make_channel(
                        c.id,
                        c.name,
                        c.metrics,
                        limits,
                        log.clone(),
                        totals.clone(),
                    ),
                    created_at: c.created_at,
                    metrics: c.metrics,
                    tokens: c.tokens,
                })
            },
            |e: &Arc<Entry>| e.name(),
        )?;
        let (drains, alerts) = reg
            .store
            .call_blocking(|c| Ok((store::list_drains(c)?, store::list_alerts(c)?)))?;
        let read = t.elapsed();
        reg.install(channels, drains, alerts);
        tracing::info!(
            read_ms = read.as_millis() as u64,
            build_ms = (t.elapsed() - read).as_millis() as u64,
            "registry loaded"
        );
        Ok(reg)
    }

    /// Hands the stored drains and rules to `outputs` and keeps them for every later change
    /// (blocking; start-up only, once). The channels are those [`Registry::load`] read.
    pub fn attach(&self, outputs: Outputs) -> Result<(), StoreError> {
        if self.outputs.set(outputs).is_err() {
            tracing::error!("the registry's outputs were attached twice; the first are kept");
        }
        self.store.call_blocking(|conn| {
            let drains = store::list_drains(conn)?;
            let alerts = store::list_alerts(conn)?;
            self.apply(Vec::new(), drains, alerts, true);
            Ok(())
        })
    }

    /// The current snapshot; cheap, lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// At stop, once nothing more is read from the channels (their lines saved, the log
    /// closed): lets go of the snapshot, on a thread of its own when it is big. Freeing a
    /// million channels and their routes took a second, and nothing in them has to happen
    /// before the stop returns: it is memory only (a channel's `Drop` frees, the log is
    /// closed already), so the process that exits next hands it back whole, and one that
    /// goes on has it back a moment later. The registry serves an empty snapshot after.
    pub fn release(&self) {
        let snap = self.current.swap(Arc::new(Snapshot::default()));
        if snap.len() < 10_000 {
            return;
        }
        let freeing = std::thread::Builder::new()
            .name("logplex-free".into())
            .spawn(move || drop(snap));
        // Without a thread (none can be made now), the snapshot went with the closure.
        if let Err(e) = freeing {
            tracing::debug!("the channels were freed on the stopping thread: {e}");
        }
    }

    /// The buffers of every channel.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs a store change about channel `channel` (`None`: none in particular, such as an
    /// alert rule on `*`), reads back that channel, the drains and the alert rules, and
    /// installs them (the channel's routes, drains and rules applied), all on the blocking
    /// pool and under the store's connection lock, so changes are installed in the order
    /// they were made. The cost does not grow with the number of channels.
    pub async fn change<T, F>(
        self: &Arc<Self>,
        channel: Option<&str>,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let me = self.clone();
        let channel = channel.map(str::to_string);
        self.store
            .call(move |conn| {
                let out = f(conn)?;
                let touched = match channel {
                    Some(name) => match store::get_channel(conn, &name) {
                        Ok(rec) => Some((name, Some(rec))),
                        Err(StoreError::NotFound) => Some((name, None)),
                        Err(e) => return Err(e),
                    },
                    None => None,
                };
                let drains = store::list_drains(conn)?;
                let alerts = store::list_alerts(conn)?;
                me.apply(touched.into_iter().collect(), drains, alerts, false);
                Ok(out)
            })
            .await
    }

    /// Runs a store change that may touch every channel (cluster mode: the whole config
    /// loaded again from Redis), reads the whole state back and installs what differs from
    /// the current snapshot: channels made, changed or destroyed one by one (the others,
    /// their history and tails, kept as they are), then every drain and rule. Costs a read
    /// of every channel.
    pub async fn change_all<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let me = self.clone();
        self.store
            .call(move |conn| {
                let out = f(conn)?;
                let state = store::state(conn)?;
                let old = me.current.load_full();
                // Gone from the store: only the names are needed (no record built).
                let mut touched: Vec<(String, Option<ChannelRecord>)> = old
                    .channels()
                    .filter(|ch| {
                        state
                            .channels
                            .binary_search_by(|c| c.name.as_str().cmp(&ch.name))
                            .is_err()
                    })
                    .map(|ch| (ch.name.to_string(), None))
                    .collect();
                for rec in state.channels {
                    if old.record(&rec.name).as_ref() != Some(&rec) {
                        touched.push((rec.name.clone(), Some(rec)));
                    }
                }
                me.apply(touched, state.drains, state.alerts, true);
                Ok(out)
            })
            .await
    }

    /// Makes the whole stored state current (start-up): `entries`, by name, made anew as
    /// they were read. A million channels are loaded this way, so the maps are built in
    /// bulk rather than one change at a time: the token tables each made at their final
    /// size, the map by name cut from the sorted entries.
    fn install(&self, entries: Vec<Arc<Entry>>, drains: Vec<DrainRecord>, alerts: Vec<RuleSpec>) {
        let tokens = Tokens::build(&entries);
        let mut metered = imbl::OrdMap::new();
        for e in entries.iter().filter(|e| e.metrics) {
            metered.insert(e.channel.name.clone(), e.channel.clone());
        }
        let channels = Names::build(entries);
        let mut snap = Snapshot {
            tokens,
            channels,
            metered,
            ..Snapshot::default()
        };
        snap.set_outputs(drains, alerts);
        self.current.store(Arc::new(snap));
    }

    fn new_channel(&self, rec: &ChannelRecord) -> Arc<Channel> {
        make_channel(
            rec.id,
            rec.name.as_str(),
            rec.metrics,
            self.limits,
            self.log.clone(),
            self.totals.clone(),
        )
    }

    /// Lines and bytes held in every channel's history now.
    pub fn history_totals(&self) -> (usize, usize) {
        self.totals.get()
    }

    /// Makes one change current: each of `touched` is a channel as now stored (`None`
    /// inside when it is gone), kept by id (its history and tails with it), made, or
    /// destroyed (its drains and rules stop seeing lines at once and its sessions end); the
    /// drains and rules are applied, and the taps set again on the channels whose drains or
    /// rules changed (every channel when `all`, or when a rule on `*` changed).
    fn apply(
        &self,
        touched: Vec<(String, Option<ChannelRecord>)>,
        drains: Vec<DrainRecord>,
        alerts: Vec<RuleSpec>,
        all: bool,
    ) {
        let old = self.current.load_full();
        let mut snap = (*old).clone();
        let mut retap: HashSet<Arc<str>> = HashSet::new();
        let mut gone: Vec<Arc<Channel>> = Vec::new();
        for (name, rec) in touched {
            let prev = snap.channels.get(name.as_str()).cloned();
            match (prev, rec) {
                (Some(e), Some(rec)) if e.channel.id == rec.id => {
                    snap.remove_tokens(&e);
                    e.channel.set_metrics(rec.metrics);
                    snap.add(rec, e.channel.clone());
                }
                (prev, rec) => {
                    // A channel of the same name but another id was destroyed and made again.
                    if let Some(e) = prev {
                        snap.remove_tokens(&e);
                        snap.channels.remove(name.as_str());
                        snap.metered.remove(name.as_str());
                        gone.push(e.channel.clone());
                    }
                    if let Some(rec) = rec {
                        let ch = self.new_channel(&rec);
                        retap.insert(ch.name.clone());
                        snap.add(rec, ch);
                    }
                }
            }
        }
        // Channels whose drains changed, and those a changed rule watches.
        let star = {
            let (before, after) = (set(&old.drains), set(&drains));
            for (_, channel) in before.symmetric_difference(&after) {
                retap.insert(Arc::from(*channel));
            }
            let mut star = false;
            let changed = |a: &[RuleSpec], b: &[RuleSpec]| -> Vec<String> {
                a.iter()
                    .filter(|r| !b.contains(r))
                    .map(|r| r.app.clone())
                    .collect()
            };
            let mut apps = changed(&old.alerts, &alerts);
            apps.extend(changed(&alerts, &old.alerts));
            for app in apps {
                star |= app == "*";
                retap.insert(Arc::from(app));
            }
            star
        };
        snap.set_outputs(drains, alerts);
        if let Some(out) = self.outputs.get() {
            out.drains.apply(&snap.drains);
            out.alerts
                .apply(&snap.alerts, &|name| snap.channels.contains_key(name));
        }
        for ch in gone {
            ch.destroy();
            // Its lines are never read again (a channel of the same name is another id);
            // retention deletes them with their segments.
            if let Some(log) = &self.log {
                if let Err(e) = log.forget(ch.id as u64) {
                    tracing::warn!(channel = %ch.name, "cannot mark the destroyed channel's lines in the log: {e}");
                }
            }
        }
        if let Some(out) = self.outputs.get() {
            let tap = |ch: &Arc<Channel>| {
                let mut taps: Vec<Arc<dyn Tap>> = out.drains.taps(ch);
                taps.extend(out.alerts.taps(ch));
                taps.extend(out.stream.clone());
                // An idle channel keeps the shared empty list it was made with.
                if !taps.is_empty() || ch.has_taps() {
                    ch.set_taps(taps);
                }
            };
            if all || star {
                snap.channels().for_each(tap);
            } else {
                for name in &retap {
                    if let Some(ch) = snap.channel(name) {
                        tap(ch);
                    }
                }
            }
        }
        self.current.store(Arc::new(snap));
    }
}

/// Drains by what makes them themselves (id, channel), to tell which changed.
fn set(drains: &[DrainRecord]) -> HashSet<(&str, &str)> {
    drains
        .iter()
        .map(|d| (d.id.as_str(), d.channel.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::Line;
    use bytes::Bytes;

    fn registry() -> (tempfile::TempDir, Arc<Registry>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("l.db")).unwrap();
        let limits = Limits {
            history_lines: 100,
            history_bytes: 1 << 20,
            tail_lines: 8,
        };
        (dir, Registry::load(store, limits, None).unwrap())
    }

    async fn create(reg: &Arc<Registry>, name: &str) -> ChannelRecord {
        let n = name.to_string();
        reg.change(Some(name), move |c| {
            store::create_channel(c, &n, &["app".into()])
        })
        .await
        .unwrap()
    }

    /// Destroying a channel drops every reference the registry held to it (the channel
    /// map, its token routes), so its history goes back to the allocator; the others are
    /// kept as they were (same channel, same history).
    #[tokio::test]
    async fn a_destroyed_channels_memory_is_released() {
        let (_d, reg) = registry();
        let keep = create(&reg, "keep").await;
        let gone = create(&reg, "gone").await;
        let kept = reg.snapshot().channel("keep").unwrap().clone();
        let weak = {
            let snap = reg.snapshot();
            let ch = snap.channel("gone").unwrap();
            let f = b"<190>1 2016-03-08T02:43:26.693600+00:00 h t.x web.1 - - hello".to_vec();
            ch.push([Line::parse(Bytes::from(f), Bytes::from_static(b"app")).unwrap()]);
            let (_, tail) = ch.read(10, 0, true, |_| true);
            drop(tail);
            Arc::downgrade(ch)
        };
        let token = gone.tokens[0].1.clone();
        assert!(reg.snapshot().route(token.as_bytes()).is_some());
        reg.change(Some("gone"), |c| store::delete_channel(c, "gone"))
            .await
            .unwrap();
        let snap = reg.snapshot();
        assert!(snap.route(token.as_bytes()).is_none());
        assert!(snap.channel("gone").is_none());
        assert!(
            weak.upgrade().is_none(),
            "something still holds the channel"
        );
        assert!(Arc::ptr_eq(snap.channel("keep").unwrap(), &kept));
        assert!(snap.route(keep.tokens[0].1.as_bytes()).is_some());
        assert_eq!(snap.len(), 1);
    }

    /// The routes built in bulk at start and those changed one at a time afterwards agree:
    /// every token of enough channels to fill many tables (and grow some) finds its
    /// channel and its name; a token moved to another channel routes there; a destroyed
    /// channel's tokens route nowhere, the others' still do; an older snapshot keeps its
    /// routes.
    #[tokio::test]
    async fn routes_built_in_bulk_and_changed_one_by_one_agree() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("l.db")).unwrap();
        let n = 3000;
        let names: Vec<String> = (0..n).map(|i| format!("app-{i:05}")).collect();
        let tokens: Vec<Vec<(String, String)>> = (0..n)
            .map(|i| {
                vec![
                    ("app".to_string(), format!("t.a{i}")),
                    ("heroku".to_string(), format!("t.h{i}")),
                ]
            })
            .collect();
        store
            .call_blocking(|c| {
                store::upsert_channels(
                    c,
                    names.iter().zip(&tokens).map(|(n, t)| (n.as_str(), &t[..])),
                )
            })
            .unwrap();
        let limits = Limits {
            history_lines: 10,
            history_bytes: 1 << 16,
            tail_lines: 8,
        };
        let reg = Registry::load(store, limits, None).unwrap();
        let check = |snap: &Snapshot, i: usize| {
            for (source, token) in &tokens[i] {
                let r = snap.route(token.as_bytes()).unwrap();
                assert_eq!(&*r.channel.name, names[i]);
                assert!(r.source == Source::new(source.as_bytes()));
            }
        };
        let before = reg.snapshot();
        for i in 0..n {
            check(&before, i);
        }
        assert!(before.route(b"t.nope").is_none());
        // One at a time: a channel made, one destroyed, a token moved to another channel.
        let made = create(&reg, "zz-new").await;
        reg.change(Some("app-00007"), |c| store::delete_channel(c, "app-00007"))
            .await
            .unwrap();
        let moved = tokens[9][0].1.clone();
        let m = moved.clone();
        reg.change(Some("app-00011"), move |c| {
            store::upsert_channel(c, "app-00011", &[("moved".into(), m)])
        })
        .await
        .unwrap();
        reg.change(Some("app-00009"), |_| Ok(())).await.unwrap();
        let snap = reg.snapshot();
        for i in (0..n).filter(|&i| i != 7 && i != 9) {
            check(&snap, i);
        }
        for (_, t) in &tokens[7] {
            assert!(snap.route(t.as_bytes()).is_none());
        }
        let r = snap.route(moved.as_bytes()).unwrap();
        assert_eq!(&*r.channel.name, "app-00011");
        assert!(r.source == Source::new(b"moved"));
        assert_eq!(
            &*snap.route(tokens[9][1].1.as_bytes()).unwrap().channel.name,
            "app-00009"
        );
        assert_eq!(
            &*snap
                .route(made.tokens[0].1.as_bytes())
                .unwrap()
                .channel
                .name,
            "zz-new"
        );
        // The snapshot taken before the changes is as it was.
        for i in 0..n {
            check(&before, i);
        }
        assert!(before.route(made.tokens[0].1.as_bytes()).is_none());
    }

    /// A token added to a channel routes to the same channel (its history kept); the
    /// list pages by name.
    #[tokio::test]
    async fn changes_keep_channels_and_the_list_pages_by_name() {
        let (_d, reg) = registry();
        for n in ["cc", "aa", "dd", "bb"] {
            create(&reg, n).await;
        }
        let before = reg.snapshot().channel("bb").unwrap().clone();
        let t = reg
            .change(Some("bb"), |c| store::create_token(c, "bb", "web"))
            .await
            .unwrap();
        let snap = reg.snapshot();
        assert!(Arc::ptr_eq(
            &snap.route(t.as_bytes()).unwrap().channel,
            &before
        ));
        assert_eq!(snap.record("bb").unwrap().tokens.len(), 2);
        let names = |after| -> Vec<String> { snap.records_after(after).map(|r| r.name).collect() };
        assert_eq!(names(""), ["aa", "bb", "cc", "dd"]);
        assert_eq!(names("bb"), ["cc", "dd"]);
        assert_eq!(names("b"), ["bb", "cc", "dd"]);
        assert!(names("dd").is_empty());
    }
}
