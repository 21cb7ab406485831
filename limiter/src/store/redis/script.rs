//! The Lua scripts a check runs inside Redis.
//!
//! Both scripts run atomically on the node that owns their keys, so a
//! counter is never seen half-updated. Time comes from Redis (`TIME`), never
//! from the limiter, so the clocks of limiter hosts do not matter.
//!
//! Lua numbers are doubles: the admission test is exact while
//! `requests × window_ms` stays below 2^53 (for example up to 100 million
//! requests in a one-day window). Beyond that, rounding can flip a decision
//! by one request at the exact boundary.

use std::sync::LazyLock;

use redis::Script;

/// Checks every counter of one slot and increments all of them only if all
/// have room.
///
/// `KEYS[i]`: counter `i`, a hash of `s` (current window start, ms), `p`
/// (previous window count) and `c` (current window count).
/// `ARGV[1]`: the time in ms, or empty to use Redis `TIME` (the empty form
/// is what production sends; tests pass a manual clock). `ARGV[2]`: the
/// cost. `ARGV[1 + 2i]`, `ARGV[2 + 2i]`: window length and limit of
/// counter `i`.
///
/// Returns `{admitted (0/1), now, prev_1, cur_1, prev_2, cur_2, …}`, the
/// counts as they were before the check. Every counter written gets an
/// expiry at the end of its second window, in the same call.
pub static CHECK: LazyLock<Script> = LazyLock::new(|| Script::new(CHECK_LUA));

/// Gives back `cost` to counters a check incremented in one slot, when
/// another slot of the same check denied it.
///
/// `ARGV[1]`: the cost. `ARGV[2i]`, `ARGV[2i + 1]`: the window start at which
/// counter `i` was incremented, and its window length. A counter whose
/// window has rolled since gets the refund in its previous count.
pub static REFUND: LazyLock<Script> = LazyLock::new(|| Script::new(REFUND_LUA));

/// A limiter's heartbeat for one policy, and what it needs to know back.
///
/// `KEYS[1]`: the policy's multiplier key; `KEYS[2]`: its set of live
/// limiters. `ARGV[1]`: this limiter's instance id; `ARGV[2]`: how long a
/// heartbeat stays fresh, in ms. Records the heartbeat at Redis time, drops
/// stale ones, and returns `{multiplier or '', now, live replicas}`.
pub static SYNC: LazyLock<Script> = LazyLock::new(|| Script::new(SYNC_LUA));

/// Publishes a policy's multiplier, stamped with Redis time.
///
/// `KEYS[1]`: the multiplier key. `ARGV[1]`: the multiplier; `ARGV[2]`: the
/// key's time to live in ms. Returns the stamp.
pub static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_LUA));

const PUBLISH_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. string.format('%d', now), 'PX', ARGV[2])
return now
"#;

const SYNC_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fresh = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - fresh)
redis.call('PEXPIRE', KEYS[2], 2 * fresh)
return {redis.call('GET', KEYS[1]) or '', now, redis.call('ZCARD', KEYS[2])}
"#;

/// The Lua text of [`CHECK`], for tools that must run the very script the
/// limiter runs, such as the Redis benchmark (`scripts/bench-redis.sh`,
/// through the `check_script` example).
pub const CHECK_LUA: &str = r#"
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[2])
local result = {1, now}
local starts = {}
for i, key in ipairs(KEYS) do
  local w = tonumber(ARGV[1 + 2 * i])
  local limit = tonumber(ARGV[2 + 2 * i])
  local start = now - now % w
  local stored = redis.call('HMGET', key, 's', 'p', 'c')
  local s = tonumber(stored[1])
  local prev, cur = 0, 0
  if s == start then
    prev, cur = tonumber(stored[2]) or 0, tonumber(stored[3]) or 0
  elseif s == start - w then
    prev = tonumber(stored[3]) or 0
  end
  if prev * (w - (now - start)) + (cur + cost) * w > limit * w then
    result[1] = 0
  end
  result[1 + 2 * i] = prev
  result[2 + 2 * i] = cur
  starts[i] = start
end
if result[1] == 1 and cost > 0 then
  for i, key in ipairs(KEYS) do
    local w = tonumber(ARGV[1 + 2 * i])
    redis.call('HSET', key, 's', starts[i], 'p', result[1 + 2 * i], 'c', result[2 + 2 * i] + cost)
    redis.call('PEXPIRE', key, starts[i] + 2 * w - now)
  end
end
return result
"#;

const REFUND_LUA: &str = r#"
local cost = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local start = tonumber(ARGV[2 * i])
  local w = tonumber(ARGV[2 * i + 1])
  local stored = redis.call('HMGET', key, 's', 'p', 'c')
  local s = tonumber(stored[1])
  if s == start then
    redis.call('HSET', key, 'c', math.max(0, (tonumber(stored[3]) or 0) - cost))
  elseif s == start + w then
    redis.call('HSET', key, 'p', math.max(0, (tonumber(stored[2]) or 0) - cost))
  end
end
return 1
"#;
