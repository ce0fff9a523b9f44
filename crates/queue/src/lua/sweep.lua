-- Retention: forgets finished jobs and call ids older than the cutoff, in bounded steps.
-- KEYS: done, data, state, attempts, max, log, calls, calls_at, fanout
-- ARGV: cutoff_ms, limit
local cutoff, limit = ARGV[1], tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  for k = 2, 6 do redis.call('HDEL', KEYS[k], id) end
end
local calls = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', cutoff, 'LIMIT', 0, limit)
for _, c in ipairs(calls) do
  redis.call('ZREM', KEYS[8], c)
  redis.call('HDEL', KEYS[7], c)
  redis.call('HDEL', KEYS[9], c)
end
return #ids + #calls
