-- Idempotent enqueue of call-ended jobs, one or many per call.
-- KEYS: calls, calls_at, ready, data, state, attempts, max, notify
-- ARGV: now, then per job: call_id, job_id, job_json, max_attempts
-- Returns per job: 1 and the new id, or 0 and the id of the job the call already has.
local now = ARGV[1]
local out = {}
local added = 0
for i = 2, #ARGV, 4 do
  local call_id, id, json, max = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('HSETNX', KEYS[1], call_id, id) == 1 then
    redis.call('ZADD', KEYS[2], now, call_id)
    redis.call('HSET', KEYS[4], id, json)
    redis.call('HSET', KEYS[6], id, 0)
    redis.call('HSET', KEYS[7], id, max)
    redis.call('HSET', KEYS[5], id, state_json('queued', now))
    redis.call('LPUSH', KEYS[3], id)
    added = added + 1
    table.insert(out, 1)
    table.insert(out, id)
  else
    table.insert(out, 0)
    table.insert(out, redis.call('HGET', KEYS[1], call_id))
  end
end
if added > 0 then
  redis.call('LPUSH', KEYS[8], 1)
  redis.call('LTRIM', KEYS[8], 0, 63)
end
return out
