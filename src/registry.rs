//! The registry: an in-memory snapshot (token → channel, name → channel) rebuilt from the
//! store's [`State`] after every change and swapped atomically; the same state is applied to
//! the drains ([`Drains::apply`]) and the alert rules ([`Alerts::apply`]). The hot path reads
//! the snapshot without locks and never touches SQLite.

use crate::alert::Alerts;
use crate::channel::{Channel, Limits, Tap};
use crate::drain::Drains;
use crate::line::Source;
use crate::log::Log;
use crate::store::{self, ChannelRecord, Conn, State, Store, StoreError};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

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

/// Those who run what the store describes beside the channels: the drains and the alert
/// rules. Attached once they are started (after history is restored, so restored lines are
/// not sent again); from then on every change is applied to them.
pub struct Outputs {
    pub drains: Arc<Drains>,
    pub alerts: Arc<Alerts>,
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
        let state = reg.store.call_blocking(store::state)?;
        reg.install(state);
        Ok(reg)
    }

    /// Hands the stored drains and rules to `outputs` and keeps them for every later change
    /// (blocking; start-up only, once).
    pub fn attach(&self, outputs: Outputs) -> Result<(), StoreError> {
        if self.outputs.set(outputs).is_err() {
            tracing::error!("the registry's outputs were attached twice; the first are kept");
        }
        self.store.call_blocking(|conn| {
            let state = store::state(conn)?;
            self.install(state);
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

    /// Runs a store change, reads the new [`State`] and installs it (a new snapshot, drains
    /// and rules applied), all on the blocking pool and under the store's connection lock,
    /// so changes are installed in the order they were made.
    pub async fn change<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let me = self.clone();
        self.store
            .call(move |conn| {
                let out = f(conn)?;
                let state = store::state(conn)?;
                me.install(state);
                Ok(out)
            })
            .await
    }

    /// Makes `state` current: channels kept by id (their history and tails with them),
    /// drains and rules applied, each channel's taps set, the snapshot swapped in; a
    /// channel no longer in the state is destroyed (its drains and rules stop seeing lines
    /// at once and its sessions end).
    fn install(&self, state: State) {
        let old = self.current.load();
        let mut channels: HashMap<Arc<str>, Arc<Channel>> =
            HashMap::with_capacity(state.channels.len());
        let mut tokens = HashMap::new();
        for rec in &state.channels {
            // A channel of the same name but another id was destroyed and created again.
            let ch = match old.channels.get(rec.name.as_str()) {
                Some(c) if c.id == rec.id => c.clone(),
                _ => Arc::new(Channel::with_log(
                    rec.id,
                    &rec.name,
                    self.limits,
                    self.log.clone(),
                )),
            };
            ch.set_metrics(rec.metrics);
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
        for d in &state.drains {
            if let Some(ch) = channels.get(d.channel.as_str()) {
                drain_tokens.insert(d.token.as_bytes().to_vec().into_boxed_slice(), ch.id);
            }
        }
        if let Some(out) = self.outputs.get() {
            out.drains.apply(&state.drains);
            out.alerts.apply(&state.alerts, &state.channels);
        }
        for (name, ch) in old.channels.iter() {
            if !channels.get(name).is_some_and(|c| Arc::ptr_eq(c, ch)) {
                ch.destroy();
                // Its lines are never read again (a channel of the same name is another id);
                // retention deletes them with their segments.
                if let Some(log) = &self.log {
                    if let Err(e) = log.forget(ch.id as u64) {
                        tracing::warn!(channel = %ch.name, "cannot mark the destroyed channel's lines in the log: {e}");
                    }
                }
            }
        }
        if let Some(out) = self.outputs.get() {
            for ch in channels.values() {
                let mut taps: Vec<Arc<dyn Tap>> = out.drains.taps(ch);
                taps.extend(out.alerts.taps(ch));
                ch.set_taps(taps);
            }
        }
        self.current.store(Arc::new(Snapshot {
            tokens,
            channels,
            records: state.channels,
            drain_tokens,
        }));
    }
}
