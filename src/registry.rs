//! The registry: an in-memory snapshot (token → channel, name → channel) rebuilt from the
//! store after every change and swapped atomically. The hot path reads it without locks and
//! never touches SQLite.

use crate::channel::{Channel, Limits, Tap};
use crate::line::Source;
use crate::store::{self, ChannelRecord, Store, StoreError};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

/// Where a token's lines go.
#[derive(Clone)]
pub struct Route {
    pub channel: Arc<Channel>,
    /// The token's name, shown as SOURCE.
    pub source: Source,
}

/// One consistent view of channels and tokens.
#[derive(Default)]
pub struct Snapshot {
    tokens: HashMap<Box<[u8]>, Route>,
    channels: HashMap<Arc<str>, Arc<Channel>>,
    records: Vec<ChannelRecord>,
    /// Drain token (`d.…`) → id of the channel the drain belongs to, so HTTP input can tell
    /// a batch that one of a channel's own drains sent back to it (a loop).
    drain_tokens: HashMap<Box<[u8]>, i64>,
}

impl Snapshot {
    /// The route of a token (`t.…`), if it exists.
    pub fn route(&self, token: &[u8]) -> Option<&Route> {
        self.tokens.get(token)
    }

    pub fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.channels.get(name)
    }

    /// The channel `name` if it is still the one with store id `id` (not destroyed, nor
    /// destroyed and created again).
    pub fn channel_with_id(&self, name: &str, id: i64) -> Option<&Arc<Channel>> {
        self.channels.get(name).filter(|c| c.id == id)
    }

    pub fn channels(&self) -> impl Iterator<Item = &Arc<Channel>> {
        self.channels.values()
    }

    /// The channels as stored (names and tokens), sorted by name.
    pub fn records(&self) -> &[ChannelRecord] {
        &self.records
    }

    /// Is `drain_token` the token of a drain of `channel`?
    pub fn is_drain_of(&self, drain_token: &[u8], channel: &Channel) -> bool {
        self.drain_tokens.get(drain_token) == Some(&channel.id)
    }
}

/// Supplies the taps of each channel (a drain's buffer, an alert rule's window). After every
/// store change the registry calls `refresh` (on the blocking pool, under the store lock,
/// so it may read its own tables), then `taps` for each channel.
pub trait TapProvider: Send + Sync {
    fn refresh(
        &self,
        conn: &mut rusqlite::Connection,
        channels: &[ChannelRecord],
    ) -> Result<(), StoreError>;
    fn taps(&self, channel: &Arc<Channel>) -> Vec<Arc<dyn Tap>>;
}

/// The live registry.
pub struct Registry {
    store: Store,
    limits: Limits,
    current: ArcSwap<Snapshot>,
    providers: Vec<Arc<dyn TapProvider>>,
}

impl Registry {
    /// Builds the first snapshot from the store (blocking; start-up only).
    pub fn load(
        store: Store,
        limits: Limits,
        providers: Vec<Arc<dyn TapProvider>>,
    ) -> Result<Arc<Registry>, StoreError> {
        let reg = Arc::new(Registry {
            store,
            limits,
            current: ArcSwap::from_pointee(Snapshot::default()),
            providers,
        });
        let r = reg.clone();
        reg.store.call_blocking(move |conn| r.rebuild(conn))?;
        Ok(reg)
    }

    /// The current snapshot; cheap, lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs a store change and swaps in a new snapshot, both on the blocking pool and under
    /// the store's connection lock, so snapshots are installed in the order of the changes.
    pub async fn change<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let me = self.clone();
        self.store
            .call(move |conn| {
                let out = f(conn)?;
                me.rebuild(conn)?;
                Ok(out)
            })
            .await
    }

    fn rebuild(&self, conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
        let records = store::list_channels(conn)?;
        let old = self.current.load();
        let mut channels: HashMap<Arc<str>, Arc<Channel>> = HashMap::with_capacity(records.len());
        let mut tokens = HashMap::new();
        for rec in &records {
            // A channel keeps its history and tails across snapshots; one of the same name
            // but another id was destroyed and created again: a new channel.
            let ch = match old.channels.get(rec.name.as_str()) {
                Some(c) if c.id == rec.id => c.clone(),
                _ => Arc::new(Channel::new(rec.id, &rec.name, self.limits)),
            };
            for (name, token) in &rec.tokens {
                let route = Route {
                    channel: ch.clone(),
                    source: Source::new(name.as_bytes()),
                };
                tokens.insert(token.as_bytes().to_vec().into_boxed_slice(), route);
            }
            channels.insert(ch.name.clone(), ch);
        }
        let mut drain_tokens = HashMap::new();
        for d in store::list_drains(conn)? {
            if let Some(rec) = records.iter().find(|r| r.name == d.channel) {
                drain_tokens.insert(d.token.into_bytes().into_boxed_slice(), rec.id);
            }
        }
        for p in &self.providers {
            p.refresh(conn, &records)?;
        }
        // A destroyed channel's drains and rules stop seeing lines at once and its sessions
        // end.
        for (name, ch) in old.channels.iter() {
            if !channels.get(name).is_some_and(|c| Arc::ptr_eq(c, ch)) {
                ch.destroy();
            }
        }
        for ch in channels.values() {
            let taps: Vec<Arc<dyn Tap>> = self.providers.iter().flat_map(|p| p.taps(ch)).collect();
            ch.set_taps(taps);
        }
        self.current.store(Arc::new(Snapshot {
            tokens,
            channels,
            records,
            drain_tokens,
        }));
        Ok(())
    }
}
