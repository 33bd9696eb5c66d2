//! Cross-node tails: one reader per node per tailed channel follows the channel's log
//! stream with `XREAD BLOCK` on a connection of its own and fans each entry out to the
//! node's tails of that channel (a broadcast, so a slow tail lags and is told with L11,
//! never holds the others). The reader starts with the first tail and stops with the last.
//!
//! A tail joins at a position (the last entry its history read): the feed keeps its last
//! entries, so a tail that joins a running feed takes what it missed from them, and one
//! whose position is older than they reach reads the gap itself (`XRANGE`) first. Redis
//! away: the reader tries again (0.1 s to 1 s) from its last entry; tails pause meanwhile.

use super::keys;
use super::logs::{self, Entry, EntryId};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one `XREAD` blocks.
const BLOCK: Duration = Duration::from_secs(5);
/// Entries read at once.
const COUNT: usize = 256;
/// Entries a feed keeps for tails that join it.
const RECENT: usize = 256;
/// Entries a tail can be behind before it lags (and is told so).
const LAG: usize = 1024;
/// The reconnect backoff's bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Rounds of catching up a tail may take before it joins as it is.
const CATCH_UP_ROUNDS: usize = 64;

/// The feeds of this node, by channel.
pub struct Feeds {
    client: super::Redis,
    map: Mutex<HashMap<Arc<str>, Weak<Feed>>>,
    run: OnceLock<(TaskTracker, CancellationToken)>,
}

/// One channel's reader and what it has read lately.
pub struct Feed {
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct State {
    /// Every entry after this one is in `recent` or still to come.
    covered: EntryId,
    recent: VecDeque<Arc<Entry>>,
    tx: broadcast::Sender<Arc<Entry>>,
    /// Lines read so far (each entry's `upto`).
    total: u64,
}

/// A tail's part of a feed: the entries after its position it missed, then the feed's.
pub struct Joined {
    /// Held so the reader runs while the tail does.
    pub feed: Arc<Feed>,
    pub missed: Vec<Arc<Entry>>,
    pub rx: broadcast::Receiver<Arc<Entry>>,
}

impl Feeds {
    pub fn new(client: super::Redis) -> Feeds {
        Feeds {
            client,
            map: Mutex::new(HashMap::new()),
            run: OnceLock::new(),
        }
    }

    /// Where readers' tasks go and what ends them.
    pub fn start(&self, tasks: &TaskTracker, shutdown: &CancellationToken) {
        let _ = self.run.set((tasks.clone(), shutdown.clone()));
    }

    /// Joins the feed of `channel` after entry `after` (made, reading from there, when
    /// none runs). `conn` reads the gap when the feed does not reach back that far.
    pub async fn join(
        &self,
        channel: &str,
        after: EntryId,
        conn: &mut super::Conn,
    ) -> redis::RedisResult<Joined> {
        let feed = self.feed(channel, after);
        let key = keys::log(channel);
        let mut after = after;
        let mut missed: Vec<Arc<Entry>> = Vec::new();
        for _ in 0..CATCH_UP_ROUNDS {
            let covered = {
                let st = feed.state.lock().unwrap_or_else(|p| p.into_inner());
                if after >= st.covered {
                    missed.extend(st.recent.iter().filter(|e| e.id > after).cloned());
                    let rx = st.tx.subscribe();
                    drop(st);
                    return Ok(Joined { feed, missed, rx });
                }
                st.covered
            };
            // The gap up to what the feed covers, read here.
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&key)
                .arg(format!("({after}"))
                .arg(covered.to_string())
                .arg("COUNT")
                .arg(COUNT)
                .query_async(conn)
                .await?;
            let n = page.ids.len();
            for raw in &page.ids {
                if let Some(e) = logs::entry(raw) {
                    after = after.max(e.id);
                    missed.push(Arc::new(e));
                }
            }
            if n < COUNT {
                after = after.max(covered);
            }
        }
        // Still behind after that many rounds: join where the feed is (the tail is told
        // nothing about the rest; it had the rounds' entries).
        let st = feed.state.lock().unwrap_or_else(|p| p.into_inner());
        missed.extend(st.recent.iter().cloned());
        let rx = st.tx.subscribe();
        drop(st);
        Ok(Joined { feed, missed, rx })
    }

    /// The running feed of `channel`, or a new one reading after `from`.
    fn feed(&self, channel: &str, from: EntryId) -> Arc<Feed> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(channel).and_then(Weak::upgrade) {
            return f;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let state = Arc::new(Mutex::new(State {
            covered: from,
            recent: VecDeque::new(),
            tx: broadcast::channel(LAG).0,
            total: 0,
        }));
        let (tasks, shutdown) = match self.run.get() {
            Some((t, s)) => (t.clone(), s.child_token()),
            None => (TaskTracker::new(), CancellationToken::new()),
        };
        let feed = Arc::new(Feed {
            state: state.clone(),
            stop: shutdown.clone(),
        });
        tasks.spawn(read(
            self.client.clone(),
            keys::log(channel),
            from,
            state,
            shutdown,
        ));
        map.insert(Arc::from(channel), Arc::downgrade(&feed));
        feed
    }
}

/// The reader: follows `key` after `from` until `stop`, reconnecting with backoff.
async fn read(
    client: super::Redis,
    key: String,
    from: EntryId,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
) {
    let mut last = from;
    let mut backoff = BACKOFF_MIN;
    loop {
        let err = tokio::select! {
            e = follow(&client, &key, &mut last, &state, &mut backoff) => e,
            _ = stop.cancelled() => return,
        };
        tracing::debug!(%key, "cluster: a tail's reader lost Redis ({err}); trying again");
        let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn follow(
    client: &super::Redis,
    key: &str,
    last: &mut EntryId,
    state: &Mutex<State>,
    backoff: &mut Duration,
) -> redis::RedisError {
    let mut conn = match client.connect(BLOCK + Duration::from_secs(3)).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let opts = StreamReadOptions::default()
        .count(COUNT)
        .block(BLOCK.as_millis() as usize);
    loop {
        let reply: Option<StreamReadReply> =
            match conn.xread_options(&[key], &[last.to_string()], &opts).await {
                Ok(r) => r,
                Err(e) => return e,
            };
        *backoff = BACKOFF_MIN;
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        for raw in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let Some(mut e) = logs::entry(&raw) else {
                continue;
            };
            *last = (*last).max(e.id);
            st.total += e.lines.len() as u64;
            e.upto = st.total;
            let e = Arc::new(e);
            if st.recent.len() >= RECENT {
                if let Some(old) = st.recent.pop_front() {
                    st.covered = old.id;
                }
            }
            st.recent.push_back(e.clone());
            // Err only means no tail listens right now.
            let _ = st.tx.send(e);
        }
    }
}
