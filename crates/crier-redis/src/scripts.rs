//! The Lua scripts. Each touches the keys of one hash tag only (see `keys.rs`), so each is
//! atomic on standalone Redis, Sentinel and Cluster alike; the one exception,
//! `PUBLISH_MANY`, is used only on one server, never on Redis Cluster.

use fred::types::scripts::Script;

/// Publish to one subscription name: if it has subscribers, append to its log (trimmed by
/// length and age) and push on its sharded channel. On Redis Cluster, one call per matching
/// name, whatever the number of subscribers.
///
/// Each entry also records the id of the entry before it (`b`, "0-0" in a new log): a
/// session whose own entry was trimmed away lost messages only if that is not its position
/// (a quiet name's last entry is trimmed by age with nothing after it lost).
///
/// With a third key, the publish may be re-sent by its client (see
/// `crier_engine::RetryKey`), and this is the call for the exact channel, which goes first
/// on Redis Cluster. The key is `p` while the other names are being published and `d` once
/// they all were (set by the node afterwards). `d`: a retry, nothing is published, -1.
/// `p`: this name had it but the node stopped before the others were done; nothing is
/// published here, -2, and the node publishes to the other names again (some may get it
/// twice; none loses it). Unset: it is set to `p`, expiring after the window. Any other
/// value counts as done.
///
/// KEYS: members, log, optionally the retry key. ARGV: max_len, retention_ms, message id,
/// channel, json, shard channel, then the retry window in ms with the retry key.
/// Returns the log offset, nil if the name has no subscribers, -1 or -2 as above.
const PUBLISH: &str = r#"
if #KEYS > 2 then
  local seen = redis.call('SET', KEYS[3], 'p', 'NX', 'GET', 'PX', ARGV[7])
  if seen == 'p' then return -2 end
  if seen then return -1 end
end
if redis.call('SCARD', KEYS[1]) == 0 then return false end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local before = '0-0'
if #last > 0 then before = last[1][1] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'p', ARGV[3], 'c', ARGV[4], 'm', ARGV[5], 'b', before)
local ms = tonumber(string.match(id, '^(%d+)'))
local keep = tonumber(ARGV[2])
if ms and ms > keep then redis.call('XTRIM', KEYS[2], 'MINID', '~', tostring(ms - keep)) end
redis.call('PEXPIRE', KEYS[2], keep * 2)
redis.call('SPUBLISH', ARGV[6], id .. '\n' .. ARGV[3] .. '\n' .. ARGV[4] .. '\n' .. ARGV[5])
return id
"#;

/// [`PUBLISH`] for every matching name at once, for a single Redis server (primary and
/// replicas, or Sentinel), where a script may touch keys of any hash tag. One call per
/// publish instead of one per name (depth + 2): on the publishing node each call is a
/// command through the client, which cost more CPU than the script itself (about 74 µs
/// per publish for four names in a 200-publisher run, docs/benchmarks.md "Other modes").
/// Redis Cluster keeps one call per name, each on its name's slot.
///
/// With a retry key (see [`PUBLISH`]), one step does it all: the key is set to `d`, and if
/// it already was, nothing is published (-1). A key left at `p` by a node on Redis Cluster
/// publishes to every name again. A publish that reached no subscriber does not keep its
/// key: nothing was delivered to repeat, and publishes nobody receives cost no memory.
///
/// KEYS: members and log of each name, in pairs, then optionally the retry key. ARGV:
/// max_len, retention_ms, message id, channel, json, the shard channel of each name, then
/// the retry window in ms with the retry key. Returns how many names had subscribers, or
/// -1 for a retry (nothing published).
const PUBLISH_MANY: &str = r#"
local names = math.floor(#KEYS / 2)
local retry = false
if #KEYS % 2 == 1 then
  retry = KEYS[#KEYS]
  local seen = redis.call('SET', retry, 'd', 'NX', 'GET', 'PX', ARGV[6 + names])
  if seen == 'p' then
    redis.call('SET', retry, 'd', 'XX', 'KEEPTTL')
  elseif seen then
    return -1
  end
end
local keep = tonumber(ARGV[2])
local sent = 0
for i = 1, names do
  local members, log = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('SCARD', members) > 0 then
    local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
    local before = '0-0'
    if #last > 0 then before = last[1][1] end
    local id = redis.call('XADD', log, 'MAXLEN', '~', ARGV[1], '*', 'p', ARGV[3], 'c', ARGV[4], 'm', ARGV[5], 'b', before)
    local ms = tonumber(string.match(id, '^(%d+)'))
    if ms and ms > keep then redis.call('XTRIM', log, 'MINID', '~', tostring(ms - keep)) end
    redis.call('PEXPIRE', log, keep * 2)
    redis.call('SPUBLISH', ARGV[5 + i], id .. '\n' .. ARGV[3] .. '\n' .. ARGV[4] .. '\n' .. ARGV[5])
    sent = sent + 1
  end
end
if retry and sent == 0 then redis.call('DEL', retry) end
return sent
"#;

/// Subscribe, channel side: add the member and return the log's current end, where the new
/// subscription's cursor starts (no replay of older messages).
///
/// KEYS: members, log. ARGV: client id. Returns the last offset, or "0-0".
const JOIN: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last == 0 then return '0-0' end
return last[1][1]
"#;

/// Subscribe, session side: record the name with its starting cursor if the session exists.
///
/// A subscribe through another node than the attached one clears the session's `since`:
/// the attached node's marks do not cover the new name until the session attaches again.
///
/// KEYS: info, subs. ARGV: name, cursor, calling node. Returns nil if the session is gone,
/// else {1 if new else 0, attached node}.
const SUBSCRIBE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local new = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
local node = redis.call('HGET', KEYS[1], 'node') or ''
if node ~= ARGV[3] then redis.call('HDEL', KEYS[1], 'since') end
return {new, node}
"#;

/// Unsubscribe, session side. KEYS: info, subs. ARGV: name.
/// Returns {1 if it was subscribed else 0, attached node}.
const UNSUBSCRIBE: &str = r#"
local removed = redis.call('HDEL', KEYS[2], ARGV[1])
return {removed, redis.call('HGET', KEYS[1], 'node') or ''}
"#;

/// Attach a session to a node. KEYS: info, subs. ARGV: node, since (see `marks`), and the
/// node and since the caller read before (whose marks it may use). Returns nil if the
/// session is gone, else {previous node, {name, cursor, ...}, identity, 1 if the previous
/// node and since were the ones read else 0}.
const ATTACH: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local prev = redis.call('HGET', KEYS[1], 'node') or ''
local since = redis.call('HGET', KEYS[1], 'since') or ''
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'since', ARGV[2])
local unchanged = 0
if prev == ARGV[3] and since == ARGV[4] then unchanged = 1 end
return {prev, redis.call('HGETALL', KEYS[2]), redis.call('HGET', KEYS[1], 'identity') or '', unchanged}
"#;

/// A node dropped a session: clear its `since` if Redis still records it as attached to
/// that node since then or later (see `marks`). KEYS: info. ARGV: node, since.
const DISOWN: &str = r#"
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then
  local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '')
  if since and since >= tonumber(ARGV[2]) then redis.call('HDEL', KEYS[1], 'since') end
end
return 1
"#;

/// Write a node's marks (see `marks`). KEYS: marks. ARGV: TTL (ms), 1 to delete the hash
/// first, the write's number (an older write than the hash's `_w`, arriving late, is
/// ignored), the number of names to delete, those names, then field, value, ... (`_w` and
/// `_v` among them). Written in
/// chunks: Lua's `unpack` has a limit on how many values it returns.
const MARKS: &str = r#"
local last = tonumber(redis.call('HGET', KEYS[1], '_w') or '0')
if last >= tonumber(ARGV[3]) then return 0 end
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
local gone = tonumber(ARGV[4])
local first = 5
for i = first, first + gone - 1, 500 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 499, first + gone - 1)))
end
first = first + gone
for i = first, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// Bind an identity (JSON) to an existing session. KEYS: info. ARGV: identity.
const IDENTIFY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'identity', ARGV[1])
return 1
"#;

/// Destroy a session. Exactly one caller gets a non-nil answer, so events fire once.
/// KEYS: info, subs. Returns nil if already gone, else {attached node, {names}}.
const DESTROY: &str = r#"
local node = redis.call('HGET', KEYS[1], 'node') or ''
if redis.call('DEL', KEYS[1]) == 0 then return false end
local names = redis.call('HKEYS', KEYS[2])
redis.call('DEL', KEYS[2])
return {node, names}
"#;

/// Store delivery cursors: only for names still subscribed, and only forwards (a late store
/// from a node the session left cannot move a cursor back).
/// KEYS: subs. ARGV: name, ms, seq, name, ms, seq, ...
const CURSORS: &str = r#"
for i = 1, #ARGV, 3 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    local ms, seq = string.match(cur, '^(%d+)-(%d+)$')
    local nms, nseq = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    ms, seq = tonumber(ms) or 0, tonumber(seq) or 0
    if nms > ms or (nms == ms and nseq > seq) then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '-' .. ARGV[i + 2])
    end
  end
end
return 1
"#;

/// Re-create a session this node holds after Redis lost it (a restart without persistence),
/// so its subscriptions (and identity) survive. KEYS: info, subs.
/// ARGV: node, created, identity ('' if none), name, cursor, ... Returns 1 if it had to be re-created.
const RESTORE: &str = r#"
local missing = redis.call('EXISTS', KEYS[1]) == 0
if missing then
  redis.call('HSET', KEYS[1], 'node', ARGV[1], 'created', ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'identity', ARGV[3]) end
end
for i = 4, #ARGV, 2 do redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) end
if missing then return 1 end
return 0
"#;

/// A presence change of one user. KEYS: sessions, away, presence, online.
/// ARGV: op (`join`, `leave`, `away`, `back`), client id, now (ms), presence TTL (ms), user.
/// Returns `{before, after}` statuses, or false when `away`/`back` names a session that is
/// not the user's. The away set stays a subset of the sessions set, so "every session
/// away" is a count comparison.
const PRESENCE: &str = r#"
local function status()
  local n = redis.call('SCARD', KEYS[1])
  if n == 0 then return 'offline' end
  if redis.call('SCARD', KEYS[2]) >= n then return 'away' end
  return 'online'
end
local op, id, now = ARGV[1], ARGV[2], ARGV[3]
if (op == 'away' or op == 'back') and redis.call('SISMEMBER', KEYS[1], id) == 0 then return false end
local before = status()
if op == 'join' then redis.call('SADD', KEYS[1], id)
elseif op == 'leave' then redis.call('SREM', KEYS[1], id); redis.call('SREM', KEYS[2], id)
elseif op == 'away' then redis.call('SADD', KEYS[2], id)
else redis.call('SREM', KEYS[2], id) end
local after = status()
if after ~= before then
  if after == 'offline' then
    redis.call('HDEL', KEYS[3], 'online_since', 'away_since')
    redis.call('HSET', KEYS[3], 'last_online', now)
    redis.call('SREM', KEYS[4], ARGV[5])
  else
    if before == 'offline' then
      redis.call('HSET', KEYS[3], 'online_since', now)
      redis.call('SADD', KEYS[4], ARGV[5])
    end
    if after == 'away' then redis.call('HSET', KEYS[3], 'away_since', now)
    else redis.call('HDEL', KEYS[3], 'away_since') end
  end
end
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return {before, after}
"#;

/// One user's presence. KEYS: sessions, away, presence.
/// Returns `{sessions, away, online_since, last_online, away_since}` ('' when unset).
const PRESENCE_READ: &str = r#"
local h = redis.call('HMGET', KEYS[3], 'online_since', 'last_online', 'away_since')
return {redis.call('SCARD', KEYS[1]), redis.call('SCARD', KEYS[2]), h[1] or '', h[2] or '', h[3] or ''}
"#;

/// An EventSource stream's mark: set only while the session is attached to the marking
/// node, so a stream on a node the session has left (its `close` not handled yet there),
/// or of a destroyed session, cannot overwrite the mark of the stream that delivers.
///
/// KEYS: session info, stream mark. ARGV: node, ttl_ms. Returns 1 if set, else 0.
const STREAM_MARK: &str = r#"
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"#;

pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) publish_many: Script,
    pub(crate) join: Script,
    pub(crate) subscribe: Script,
    pub(crate) unsubscribe: Script,
    pub(crate) attach: Script,
    pub(crate) destroy: Script,
    pub(crate) cursors: Script,
    pub(crate) marks: Script,
    pub(crate) disown: Script,
    pub(crate) restore: Script,
    pub(crate) identify: Script,
    pub(crate) presence: Script,
    pub(crate) presence_read: Script,
    pub(crate) stream_mark: Script,
}

impl Scripts {
    /// Every script, to load them all up front.
    pub(crate) fn all(&self) -> [&Script; 15] {
        [
            &self.publish,
            &self.publish_many,
            &self.join,
            &self.subscribe,
            &self.unsubscribe,
            &self.attach,
            &self.destroy,
            &self.cursors,
            &self.marks,
            &self.disown,
            &self.restore,
            &self.identify,
            &self.presence,
            &self.presence_read,
            &self.stream_mark,
        ]
    }

    pub(crate) fn new() -> Self {
        Scripts {
            publish: Script::from_lua(PUBLISH),
            publish_many: Script::from_lua(PUBLISH_MANY),
            join: Script::from_lua(JOIN),
            subscribe: Script::from_lua(SUBSCRIBE),
            unsubscribe: Script::from_lua(UNSUBSCRIBE),
            attach: Script::from_lua(ATTACH),
            destroy: Script::from_lua(DESTROY),
            cursors: Script::from_lua(CURSORS),
            marks: Script::from_lua(MARKS),
            disown: Script::from_lua(DISOWN),
            restore: Script::from_lua(RESTORE),
            identify: Script::from_lua(IDENTIFY),
            presence: Script::from_lua(PRESENCE),
            presence_read: Script::from_lua(PRESENCE_READ),
            stream_mark: Script::from_lua(STREAM_MARK),
        }
    }
}
