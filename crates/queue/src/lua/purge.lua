-- Deletes dead letters for good, leaving a `purged` state so the call's history says so.
-- KEYS (scripts.rs binds them as locals): dead_key, data_key, state_key, attempts_key, max_key, log_key, lease_key, refs_key
-- ARGV: now, ids...
local now = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', dead_key, id) == 1 then
    redis.call('HDEL', data_key, id)
    redis.call('HDEL', attempts_key, id)
    redis.call('HDEL', max_key, id)
    redis.call('HDEL', log_key, id)
    redis.call('HDEL', lease_key, id)
    redis.call('HSET', state_key, id, state_json('purged', now))
    release_event(refs_key, state_key, data_key, id)
    n = n + 1
  end
end
return n
