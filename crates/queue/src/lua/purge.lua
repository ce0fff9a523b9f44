-- Deletes dead letters for good, leaving a `purged` state so the call's history says so.
-- KEYS: dead, data, state, attempts, max, log, lease
-- ARGV: now, ids...
local now = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('HDEL', KEYS[6], id)
    redis.call('HDEL', KEYS[7], id)
    redis.call('HSET', KEYS[3], id, state_json('purged', now))
    n = n + 1
  end
end
return n
