-- Atomically creates a call's action jobs and finishes its call-ended job. Idempotent:
-- a call fans out once, whoever holds the lease.
-- KEYS: ready, running, scheduled, done, data, state, attempts, max, log, lease, fanout, notify
-- ARGV: now, parent_id, token, call_id, parent_state, parent_log, ids_json,
--       then per job: id, json, max, run_at_ms (0 = now)
-- Returns 1 applied, 0 stale lease.
local now = tonumber(ARGV[1])
local parent, token, call_id = ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', KEYS[10], parent) ~= token then return 0 end
if redis.call('HSETNX', KEYS[11], call_id, ARGV[7]) == 1 then
  for i = 8, #ARGV, 4 do
    local id, json, max, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    redis.call('HSET', KEYS[5], id, json)
    redis.call('HSET', KEYS[7], id, 0)
    redis.call('HSET', KEYS[8], id, max)
    if run_at > now then
      redis.call('ZADD', KEYS[3], run_at, id)
      redis.call('HSET', KEYS[6], id, state_json('scheduled', now, { run_at = run_at }))
    else
      redis.call('LPUSH', KEYS[1], id)
      redis.call('HSET', KEYS[6], id, state_json('queued', now))
    end
  end
end
redis.call('ZREM', KEYS[2], parent)
redis.call('HDEL', KEYS[10], parent)
redis.call('HSET', KEYS[6], parent, ARGV[5])
append_log(KEYS[9], parent, ARGV[6])
redis.call('ZADD', KEYS[4], now, parent)
redis.call('LPUSH', KEYS[12], 1)
redis.call('LTRIM', KEYS[12], 0, 63)
return 1
