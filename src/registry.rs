//! The registry: an in-memory snapshot (token → channel, name → channel) of what the store
//! holds, swapped atomically; the same drains and alert rules are applied to those who run
//! them ([`Drains::apply`], [`Alerts::apply`]). The hot path reads the snapshot without
//! locks and never touches SQLite.
//!
//! The maps are persistent (`imbl`): a change copies the few nodes on its path and shares
//! the rest with the snapshot before it, so creating or destroying a channel costs
//! O(log n) in the number of channels, not a rebuild, and readers keep the snapshot they
//! loaded for as long as they hold it.

use crate::alert::{Alerts, RuleSpec};
use crate::channel::{Channel, Limits, Tap};
use crate::drain::Drains;
use crate::line::Source;
use crate::log::Log;
use crate::store::{
    self, ChannelRecord, Conn, DrainRecord, LoadedChannel, PackedTokens, Store, StoreError,
};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

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

impl Entry {
    fn new(channel: Arc<Channel>, rec: &ChannelRecord) -> Entry {
        Entry {
            channel,
            created_at: rec.created_at,
            metrics: rec.metrics,
            tokens: PackedTokens::new(rec.tokens.iter().map(|(n, t)| (n.as_str(), t.as_str()))),
        }
    }

    /// (name, token) of each token, in the store's order.
    fn tokens(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tokens.iter()
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

/// Shards of the token map: a power of two, so a shard is a mask of the hash.
const SHARDS: usize = 4096;

/// Token → route, in [`SHARDS`] plain hash maps: a change copies the list of shards and the
/// one shard it changes (a few hundred routes at a million channels), never the whole map.
/// (A persistent hash map was measured at 964 bytes a token with 2,000,000 tokens, against
/// 153 for `std`'s; and a lookup stays one hash and one probe of a `std` map.)
#[derive(Clone)]
struct Tokens {
    shards: Arc<Vec<Arc<Shard>>>,
}

/// A shard hashes with aHash under random keys (its own per shard): a token is hashed
/// once per line looked up and once per token loaded at start, where SipHash, `std`'s,
/// took twice as long on a 38-byte token.
type Shard = HashMap<Box<[u8]>, Route, ahash::RandomState>;

fn shard(capacity: usize) -> Shard {
    let keys = ahash::RandomState::with_seeds(
        fastrand::u64(..),
        fastrand::u64(..),
        fastrand::u64(..),
        fastrand::u64(..),
    );
    Shard::with_capacity_and_hasher(capacity, keys)
}

impl Default for Tokens {
    fn default() -> Tokens {
        Tokens {
            shards: Arc::new((0..SHARDS).map(|_| Arc::new(shard(0))).collect()),
        }
    }
}

impl Tokens {
    fn shard(token: &[u8]) -> usize {
        // Fixed seeds: which shard holds a token is no secret (each shard's map has its
        // own random hasher).
        let h = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(token);
        h as usize & (SHARDS - 1)
    }

    fn get(&self, token: &[u8]) -> Option<&Route> {
        self.shards[Self::shard(token)].get(token)
    }

    /// The shard of `token`, copied first if another snapshot shares it.
    fn shard_mut(&mut self, token: &[u8]) -> &mut Shard {
        let shards = Arc::make_mut(&mut self.shards);
        Arc::make_mut(&mut shards[Self::shard(token)])
    }

    /// The routes of every token of `entries`, each shard made at its final size.
    fn build(entries: &[Arc<Entry>]) -> Tokens {
        let mut counts = vec![0usize; SHARDS];
        for e in entries {
            for (_, token) in e.tokens() {
                counts[Self::shard(token.as_bytes())] += 1;
            }
        }
        let mut shards: Vec<Shard> = counts.iter().map(|&n| shard(n)).collect();
        for e in entries {
            for (name, token) in e.tokens() {
                let route = Route {
                    channel: e.channel.clone(),
                    source: Source::new(name.as_bytes()),
                };
                shards[Self::shard(token.as_bytes())]
                    .insert(token.as_bytes().to_vec().into_boxed_slice(), route);
            }
        }
        Tokens {
            shards: Arc::new(shards.into_iter().map(Arc::new).collect()),
        }
    }

    fn insert(&mut self, token: Box<[u8]>, route: Route) {
        self.shard_mut(&token).insert(token, route);
    }

    fn remove(&mut self, token: &[u8]) {
        self.shard_mut(token).remove(token);
    }
}

/// One consistent view of channels and tokens.
#[derive(Clone, Default)]
pub struct Snapshot {
    tokens: Tokens,
    /// By name, so the list is in order and pages by name.
    channels: imbl::OrdMap<Arc<str>, Arc<Entry>>,
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
    pub fn route(&self, token: &[u8]) -> Option<&Route> {
        self.tokens.get(token)
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

    /// The channels as stored (names and tokens), by name.
    pub fn records(&self) -> impl Iterator<Item = ChannelRecord> + '_ {
        self.channels.values().map(|e| e.record())
    }

    /// The channels as stored whose names come after `after` (all with `""`), by name: a
    /// page starts here in O(log n).
    pub fn records_after<'a>(&'a self, after: &'a str) -> impl Iterator<Item = ChannelRecord> + 'a {
        let from: Bound<&str> = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after)
        };
        self.channels
            .range::<_, str>((from, Bound::Unbounded))
            .map(|(_, e)| e.record())
    }

    /// Is `drain_token` the token of a drain of `channel`?
    pub fn is_drain_of(&self, drain_token: &[u8], channel: &Channel) -> bool {
        self.drain_tokens.get(drain_token) == Some(&channel.id)
    }

    /// Adds `ch` with its record, its token routes and (metrics on) to the metered.
    fn add(&mut self, rec: ChannelRecord, ch: Arc<Channel>) {
        let e = Entry::new(ch, &rec);
        self.add_tokens(&e);
        let ch = &e.channel;
        if rec.metrics {
            self.metered.insert(ch.name.clone(), ch.clone());
        } else {
            self.metered.remove(&*ch.name);
        }
        self.channels.insert(ch.name.clone(), Arc::new(e));
    }

    fn add_tokens(&mut self, e: &Entry) {
        for (name, token) in e.tokens() {
            let route = Route {
                channel: e.channel.clone(),
                source: Source::new(name.as_bytes()),
            };
            self.tokens
                .insert(token.as_bytes().to_vec().into_boxed_slice(), route);
        }
    }

    /// Removes the routes of `e`'s tokens that still lead to its channel.
    fn remove_tokens(&mut self, e: &Entry) {
        for (_, token) in e.tokens() {
            if self
                .tokens
                .get(token.as_bytes())
                .is_some_and(|r| Arc::ptr_eq(&r.channel, &e.channel))
            {
                self.tokens.remove(token.as_bytes());
            }
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
            current: ArcSwap::from_pointee(Snapshot::default()),
            outputs: OnceLock::new(),
        });
        let channels = store::load_channels(&reg.store)?;
        let (drains, alerts) = reg
            .store
            .call_blocking(|c| Ok((store::list_drains(c)?, store::list_alerts(c)?)))?;
        reg.install(channels, drains, alerts);
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

    /// Makes the whole stored state current (start-up): every channel made anew. A million
    /// channels are loaded this way, so the maps are built in bulk rather than one change
    /// at a time: the token shards each made at their final size, on a thread of their own
    /// while this one builds the map by name.
    fn install(
        &self,
        channels: Vec<LoadedChannel>,
        drains: Vec<DrainRecord>,
        alerts: Vec<RuleSpec>,
    ) {
        let entries: Vec<Arc<Entry>> = channels
            .into_iter()
            .map(|c| {
                let ch = Channel::with_log(c.id, c.name, self.limits, self.log.clone());
                ch.set_metrics(c.metrics);
                Arc::new(Entry {
                    channel: Arc::new(ch),
                    created_at: c.created_at,
                    metrics: c.metrics,
                    tokens: c.tokens,
                })
            })
            .collect();
        let (tokens, (channels, metered)) = std::thread::scope(|s| {
            let tokens = s.spawn(|| Tokens::build(&entries));
            let mut channels = imbl::OrdMap::new();
            let mut metered = imbl::OrdMap::new();
            for e in &entries {
                if e.metrics {
                    metered.insert(e.channel.name.clone(), e.channel.clone());
                }
                channels.insert(e.channel.name.clone(), e.clone());
            }
            let tokens = match tokens.join() {
                Ok(t) => t,
                Err(p) => std::panic::resume_unwind(p),
            };
            (tokens, (channels, metered))
        });
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
        let ch = Channel::with_log(rec.id, rec.name.as_str(), self.limits, self.log.clone());
        ch.set_metrics(rec.metrics);
        Arc::new(ch)
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
