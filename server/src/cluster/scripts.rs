//! The Lua scripts that make each change to the shared state one atomic step in Redis.

use redis::Script;

/// Writes a room if nobody changed it since it was read, and publishes what the change tells
/// the peers, in the same step (so every instance's channel carries a room's events in the
/// order the room changed).
///
/// KEYS: the room's hash, the set of all rooms. ARGV: the version read (`""`: none), the new
/// state (`""`: the room closed, delete it), the new version, the room's key as JSON, then
/// channel and message pairs to publish. Returns 1 when written, 0 when the room changed.
const WRITE_ROOM: &str = r"
local current = redis.call('HGET', KEYS[1], 'v')
if (current or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], KEYS[1])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[3], 's', ARGV[2], 'k', ARGV[4])
  redis.call('SADD', KEYS[2], KEYS[1])
end
for i = 5, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return 1
";

/// Counts an arrival on a `?next=N` path: the generation (the group) it belongs to. The counter
/// lives only while a group fills: the arrival that fills it deletes it, so the next arrival
/// starts a new one numbered by its join stamp (unique across instances, so never a generation
/// an open group has). Keys made by room names therefore last only as long as someone waits in
/// them.
///
/// KEYS: the counter's hash. ARGV: fill, the generation for a new counter (the arrival's
/// stamp), a lifetime in ms (a safety net). Returns the generation as a string.
const ARRIVE: &str = r"
local generation = redis.call('HGET', KEYS[1], 'g')
if not generation then
  generation = ARGV[2]
  redis.call('HSET', KEYS[1], 'g', generation, 'a', 0)
end
local arrivals = redis.call('HINCRBY', KEYS[1], 'a', 1)
if arrivals >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return generation
";

/// One that arrived in generation ARGV[1] left before its group filled: its seat goes to the
/// next arrival; a counter nobody waits in any more is deleted. KEYS: the counter's hash.
const DEPART: &str = r"
if redis.call('HGET', KEYS[1], 'g') == ARGV[1] then
  local arrivals = tonumber(redis.call('HGET', KEYS[1], 'a') or '0')
  if arrivals > 1 then
    redis.call('HSET', KEYS[1], 'a', arrivals - 1)
  else
    redis.call('DEL', KEYS[1])
  end
end
return 1
";

/// The next join-order stamp: the caller's clock in microseconds, or one past the last stamp
/// if that is later (instances' clocks differ; stamps never go back). KEYS: the stamp's key.
/// ARGV: the clock. Returns the stamp as a string.
const STAMP: &str = r"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local stamp = math.max(tonumber(ARGV[1]), last + 1)
local text = string.format('%.0f', stamp)
redis.call('SET', KEYS[1], text)
return text
";

/// The scripts, hashed once.
pub(crate) struct Scripts {
    pub(crate) write_room: Script,
    pub(crate) arrive: Script,
    pub(crate) depart: Script,
    pub(crate) stamp: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            write_room: Script::new(WRITE_ROOM),
            arrive: Script::new(ARRIVE),
            depart: Script::new(DEPART),
            stamp: Script::new(STAMP),
        }
    }
}
