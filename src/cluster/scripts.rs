//! The Lua scripts that decide each config change in Redis: a script checks what the
//! single node's store checks (the name is free, the channel exists, the drain is new and
//! under the limit...), writes the object's keys and appends the change to the stream, all
//! at once (Redis runs a script alone), so the keys and the stream cannot diverge and two
//! nodes asking for the same name get one yes and one no.
//!
//! Every script takes, last in `KEYS`, the epoch, the change counter and the stream, and
//! in `ARGV` first the stream's length to keep, the node's name and the change (JSON);
//! its own arguments follow from `ARGV[4]`. It answers `{"ok", seq, channel id}`, or
//! `{reason, seq}`: `conflict`, `not_found`, `duplicate`, `limit`, or `unseeded` (Redis
//! holds no config yet: a node is filling it), with the number of the last change made,
//! which the node waits to have applied before it answers, so that a node that says "it
//! exists" also shows it.

use redis::Script;

/// Refuses to write into a Redis that holds no config, and appends the change.
const PRELUDE: &str = r#"
if redis.call('EXISTS', KEYS[#KEYS - 2]) == 0 then return {'unseeded', 0} end
local function refuse(why)
  return {why, tonumber(redis.call('GET', KEYS[#KEYS - 1]) or '0')}
end
local function publish(id)
  local seq = redis.call('INCR', KEYS[#KEYS - 1])
  redis.call('XADD', KEYS[#KEYS], 'MAXLEN', '~', ARGV[1], '*',
    'seq', seq, 'id', id, 'node', ARGV[2], 'c', ARGV[3])
  return {'ok', seq, tonumber(id)}
end
"#;

/// KEYS: channel, tokens, names, ids. ARGV: name, created_at, metrics, then token
/// name and value pairs.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return refuse('conflict') end
local id = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'id', id, 'created_at', ARGV[5], 'metrics', ARGV[6])
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[3], ARGV[4])
return publish(id)
"#;

/// KEYS: channel, tokens, names, ids. ARGV: name, created_at, metrics (`0`, `1`, or
/// empty to leave it), then token name and value pairs (set, whatever was there).
const DECLARE: &str = r#"
local id = redis.call('HGET', KEYS[1], 'id')
if not id then
  id = redis.call('INCR', KEYS[4])
  redis.call('HSET', KEYS[1], 'id', id, 'created_at', ARGV[5], 'metrics', '0')
  redis.call('SADD', KEYS[3], ARGV[4])
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'metrics', ARGV[6]) end
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return publish(id)
"#;

/// KEYS: channel, tokens, drains, alerts, names. ARGV: name.
const DESTROY: &str = r#"
local id = redis.call('HGET', KEYS[1], 'id')
if not id then return refuse('not_found') end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[5], ARGV[4])
return publish(id)
"#;

/// KEYS: channel, tokens. ARGV: token name, value.
const TOKEN: &str = r#"
local id = redis.call('HGET', KEYS[1], 'id')
if not id then return refuse('not_found') end
if redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[5]) == 0 then return refuse('conflict') end
return publish(id)
"#;

/// KEYS: channel. ARGV: `0` or `1`.
const METRICS: &str = r#"
local id = redis.call('HGET', KEYS[1], 'id')
if not id then return refuse('not_found') end
redis.call('HSET', KEYS[1], 'metrics', ARGV[4])
return publish(id)
"#;

/// KEYS: channel, drains. ARGV: drain id, value, URL, most drains.
const DRAIN: &str = r#"
local id = redis.call('HGET', KEYS[1], 'id')
if not id then return refuse('not_found') end
local all = redis.call('HVALS', KEYS[2])
for _, v in ipairs(all) do
  if cjson.decode(v)['url'] == ARGV[6] then return refuse('duplicate') end
end
if #all >= tonumber(ARGV[7]) then return refuse('limit') end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
return publish(id)
"#;

/// KEYS: channel, drains. ARGV: drain id.
const UNDRAIN: &str = r#"
local id = redis.call('HGET', KEYS[1], 'id')
if not id then return refuse('not_found') end
if redis.call('HDEL', KEYS[2], ARGV[4]) == 0 then return refuse('not_found') end
return publish(id)
"#;

/// KEYS: channel (for `*`: the rules' hash again), rules. ARGV: rule name, rule, `1` for
/// a rule on every channel.
const ALERT: &str = r#"
local id = '0'
if ARGV[6] ~= '1' then
  id = redis.call('HGET', KEYS[1], 'id')
  if not id then return refuse('not_found') end
end
if redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[5]) == 0 then return refuse('conflict') end
return publish(id)
"#;

/// KEYS: rules. ARGV: rule name.
const UNALERT: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[4]) == 0 then return refuse('not_found') end
return publish('0')
"#;

/// A script: run by its hash (`EVALSHA`), and by its text (`EVAL`, which Redis then keeps)
/// when Redis does not know it (restarted, or new). Not `SCRIPT LOAD`: on a Redis Cluster
/// that goes to every master, and fails while any is away, even one the script does
/// not touch.
pub struct Lua {
    hash: String,
    body: String,
}

impl Lua {
    fn new(body: String) -> Lua {
        Lua {
            hash: Script::new(&body).get_hash().to_string(),
            body,
        }
    }

    /// Runs it with `keys` and `args` on `conn`.
    pub async fn run<C: redis::aio::ConnectionLike>(
        &self,
        conn: &mut C,
        keys: &[&str],
        args: &[&[u8]],
    ) -> redis::RedisResult<redis::Value> {
        let call = |how: &str, what: &str| {
            let mut c = redis::cmd(how);
            c.arg(what).arg(keys.len()).arg(keys);
            for a in args {
                c.arg(*a);
            }
            c
        };
        match call("EVALSHA", &self.hash).query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                call("EVAL", &self.body).query_async(conn).await
            }
            other => other,
        }
    }
}

/// The scripts, one per kind of change.
pub struct Scripts {
    pub create: Lua,
    pub declare: Lua,
    pub destroy: Lua,
    pub token: Lua,
    pub metrics: Lua,
    pub drain: Lua,
    pub undrain: Lua,
    pub alert: Lua,
    pub unalert: Lua,
}

impl Scripts {
    pub fn new() -> Scripts {
        let s = |body: &str| Lua::new(format!("{PRELUDE}{body}"));
        Scripts {
            create: s(CREATE),
            declare: s(DECLARE),
            destroy: s(DESTROY),
            token: s(TOKEN),
            metrics: s(METRICS),
            drain: s(DRAIN),
            undrain: s(UNDRAIN),
            alert: s(ALERT),
            unalert: s(UNALERT),
        }
    }
}
