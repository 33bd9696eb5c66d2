//! Alert rules counted over the cluster, fired once. Alone, a node counts the lines it
//! ingested, so a rule would fire on each node that sees enough of them and on none when
//! they are spread. In cluster mode each node's tap keeps, per window (rule, channel), the
//! matches of each wall-clock bucket (a sixtieth of the window), and once a second one
//! round, pipelined in one round trip, hands them to a script per window (`ROUND`) that
//! adds them into the window's counts in Redis, sums every node's over the window and
//! decides in the same step, against the window's cluster-wide state, whether it fires
//! (the sum reached the threshold and the cooldown since its last firing passed) or
//! resolves. Redis runs a script alone, so each firing and each resolving is decided by
//! exactly one node's round (the state records which); that node writes the in-band line
//! and sends the webhook (`Alerts::settle`). Channels without rules cost nothing: only
//! windows with matches here, or firing, take part in a round.
//!
//! A node that fired and died: its firing windows are in the set [`FIRING`], and every
//! node follows the windows of that set it watches, so another resolves them.
//!
//! Redis away (a round fails): every node counts and fires on its own as alone, and says
//! so in its log; the healthcheck says `degraded` already. Metric rules stay per node.
//!
//! Keys: `logplex:{ch:NAME}:alert:ID:APP:RULE:counts` (a hash: bucket → matches, trimmed
//! to the window, expiring a minute after the window),
//! `logplex:{ch:NAME}:alert:ID:APP:RULE:state` (a hash: `firing`, `fired_at`, `resolved_at`
//! (µs), `by` the node that decided; expiring a minute after the longer of window and
//! cooldown), and [`FIRING`]. `ID` is the channel's id: a channel destroyed and made again
//! under its name starts with empty windows (the old keys expire).

use super::Cluster;
use crate::alert::window::{Transition, BUCKETS};
use crate::alert::{Alerts, Outcome, Tally};
use redis::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a node takes part in a round.
pub const EVERY: Duration = Duration::from_secs(1);
/// A round slower than this counts as failed.
const ROUND_WAIT: Duration = Duration::from_secs(2);
/// The windows firing in the cluster, as `CHANNEL APP RULE`.
pub const FIRING: &str = "logplex:alerts:firing";

/// The window's counts: wall-clock bucket → matches.
pub fn counts_key(channel: &str, id: i64, app: &str, rule: &str) -> String {
    format!("logplex:{{ch:{channel}}}:alert:{id}:{app}:{rule}:counts")
}

/// The window's state over the cluster.
pub fn state_key(channel: &str, id: i64, app: &str, rule: &str) -> String {
    format!("logplex:{{ch:{channel}}}:alert:{id}:{app}:{rule}:state")
}

/// KEYS: counts, state. ARGV: now (µs), bucket width (µs), threshold, cooldown (µs),
/// node, counts' expiry (ms), state's expiry (ms), then bucket and matches pairs. Answers
/// `{transition ('fire', 'resolve' or ''), sum, firing (0/1), oldest bucket, newest
/// bucket}` (-1 for none).
const ROUND: &str = r#"
local now = tonumber(ARGV[1])
local cur = math.floor(now / tonumber(ARGV[2]))
for i = 8, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
if #ARGV >= 8 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
local sum, lo, hi = 0, -1, -1
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local b = tonumber(all[i])
  if b <= cur - BUCKETS then
    redis.call('HDEL', KEYS[1], all[i])
  elseif b <= cur then
    sum = sum + tonumber(all[i + 1])
    if lo < 0 or b < lo then lo = b end
    if b > hi then hi = b end
  end
end
local firing = redis.call('HGET', KEYS[2], 'firing') == '1'
local fired = tonumber(redis.call('HGET', KEYS[2], 'fired_at') or '')
local over = sum >= tonumber(ARGV[3])
local t = ''
if firing and not over then
  redis.call('HSET', KEYS[2], 'firing', '0', 'resolved_at', ARGV[1], 'by', ARGV[5])
  firing = false
  t = 'resolve'
elseif not firing and over and (fired == nil or now - fired >= tonumber(ARGV[4])) then
  redis.call('HSET', KEYS[2], 'firing', '1', 'fired_at', ARGV[1], 'by', ARGV[5])
  firing = true
  t = 'fire'
end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[7]) end
return {t, sum, firing and 1 or 0, lo, hi}
"#;

/// Turns cluster counting on before intake starts (so no line is counted as alone in
/// between: the cluster decides from the first line when Redis is reached) and starts the
/// rounds on `tasks`.
pub fn start(
    cluster: &Arc<Cluster>,
    alerts: &Arc<Alerts>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    alerts.share();
    alerts.set_live(cluster.is_up());
    tasks.spawn(run(cluster.clone(), alerts.clone(), shutdown.clone()));
}

/// Takes part in a round every [`EVERY`] until `shutdown` (see the module's documentation).
async fn run(cluster: Arc<Cluster>, alerts: Arc<Alerts>, shutdown: CancellationToken) {
    let script = redis::Script::new(&ROUND.replace("BUCKETS", &BUCKETS.to_string()));
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut firing: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !alerts.watches_lines() {
            // Nothing to count; a rule added later is counted over the cluster from its
            // first line when Redis is there.
            alerts.set_live(cluster.is_up());
            continue;
        }
        let tallies = alerts.tallies(&firing);
        let done = tokio::time::timeout(ROUND_WAIT, round(&cluster, &script, &tallies)).await;
        let done = match done {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "timed out",
            ))),
        };
        match done {
            Ok((now_firing, outcomes)) => {
                if !alerts.set_live(true) {
                    tracing::info!("cluster: alert rules count over the cluster");
                }
                index(&cluster, &tallies, &outcomes, &now_firing).await;
                firing = now_firing;
                alerts.settle(
                    tallies
                        .into_iter()
                        .zip(outcomes)
                        .map(|(t, o)| (t.watch, o))
                        .collect(),
                );
            }
            Err(e) => {
                cluster.reader_failed();
                if alerts.set_live(false) {
                    tracing::warn!(
                        "cluster: cannot count alert matches in Redis ({e}); each node counts \
                         and fires on its own until it is back"
                    );
                }
            }
        }
    }
}

/// One round: the set of firing windows and, for each tally, the script (loaded first, so
/// that a Redis restarted empty has it), pipelined (on a Redis Cluster, one pipeline per
/// slot, sent at once; the set, in another slot, on its own).
async fn round(
    cluster: &Cluster,
    script: &redis::Script,
    tallies: &[Tally],
) -> redis::RedisResult<(HashSet<String>, Vec<Outcome>)> {
    let conn = cluster.reader().await?;
    let now = crate::clock::now_micros();
    let node = cluster.node();
    // Each group's pipeline and the tallies whose scripts it carries, in order.
    let mut groups: HashMap<u16, (redis::Pipeline, Vec<usize>)> = HashMap::new();
    for (i, t) in tallies.iter().enumerate() {
        let r = &t.watch.rule;
        let (app, name, ch) = (&r.spec.app, &r.spec.name, t.watch.channel_name());
        let (pipe, which) = groups.entry(conn.group(ch)).or_insert_with(|| {
            let mut pipe = redis::pipe();
            pipe.load_script(script).ignore();
            (pipe, Vec::new())
        });
        let window_ms = r.window.as_millis() as u64;
        let mut inv = script.prepare_invoke();
        let id = t.watch.channel_id();
        inv.key(counts_key(ch, id, app, name))
            .key(state_key(ch, id, app, name))
            .arg(now)
            .arg(t.width_us)
            .arg(r.threshold)
            .arg(r.cooldown.as_micros() as u64)
            .arg(node)
            .arg(window_ms + 60_000)
            .arg(window_ms.max(r.cooldown.as_millis() as u64) + 60_000);
        for (b, n) in &t.counts {
            inv.arg(*b).arg(*n);
        }
        pipe.invoke_script(&inv);
        which.push(i);
    }
    let (pipes, which): (Vec<_>, Vec<_>) = groups.into_values().unzip();
    let mut set = conn.clone();
    let mut members = redis::cmd("SMEMBERS");
    members.arg(FIRING);
    let (firing, answers) = tokio::join!(
        members.query_async::<HashSet<String>>(&mut set),
        conn.query_each::<Vec<Value>>(pipes)
    );
    let firing = firing?;
    let bad = || redis::RedisError::from((redis::ErrorKind::TypeError, "unexpected answer"));
    let mut outcomes: Vec<Option<Outcome>> = tallies.iter().map(|_| None).collect();
    for (answer, which) in answers.into_iter().zip(which) {
        let answer = answer?;
        if answer.len() != which.len() {
            return Err(bad());
        }
        for (v, i) in answer.iter().zip(which) {
            outcomes[i] = Some(outcome(v, tallies[i].width_us).ok_or_else(bad)?);
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.ok_or_else(bad))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((firing, outcomes))
}

/// A script's answer.
fn outcome(v: &Value, width_us: u64) -> Option<Outcome> {
    let (t, sum, firing, lo, hi): (String, i64, i64, i64, i64) = redis::from_redis_value(v).ok()?;
    let at =
        |b: i64, end: bool| (b >= 0).then(|| (b + i64::from(end)).saturating_mul(width_us as i64));
    Some(Outcome {
        transition: match t.as_str() {
            "fire" => Some(Transition::Fire),
            "resolve" => Some(Transition::Resolve),
            _ => None,
        },
        count: sum.max(0) as u64,
        firing: firing == 1,
        first_us: at(lo, false),
        last_us: at(hi, true).map(|t| t.min(crate::clock::now_micros())),
    })
}

/// Keeps [`FIRING`] up to date with the changes this round made (best effort: a node
/// that misses one leaves a window out of the set, which matters only if it also dies).
async fn index(
    cluster: &Cluster,
    tallies: &[Tally],
    outcomes: &[Outcome],
    firing: &HashSet<String>,
) {
    let mut pipe = redis::pipe();
    let mut any = false;
    for (t, o) in tallies.iter().zip(outcomes) {
        match o.transition {
            Some(Transition::Fire) => {
                pipe.cmd("SADD")
                    .arg(FIRING)
                    .arg(t.watch.index_name())
                    .ignore();
                any = true;
            }
            Some(Transition::Resolve) => {
                pipe.cmd("SREM")
                    .arg(FIRING)
                    .arg(t.watch.index_name())
                    .ignore();
                any = true;
            }
            // A window resolved by a node whose write to the set was lost.
            None if !o.firing && firing.contains(&t.watch.index_name()) => {
                pipe.cmd("SREM")
                    .arg(FIRING)
                    .arg(t.watch.index_name())
                    .ignore();
                any = true;
            }
            None => {}
        }
    }
    if !any {
        return;
    }
    if let Ok(mut conn) = cluster.reader().await {
        let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
    }
}
