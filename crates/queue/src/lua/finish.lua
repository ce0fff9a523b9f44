-- Ends attempts of leased jobs. A finish only applies while the caller still holds the
-- job's lease token, so a worker whose lease expired cannot overwrite a newer attempt.
-- KEYS: ready, running, scheduled, dead, done, state, attempts, log, lease, notify
-- ARGV: now, then per job: mode (done|retry|dead|release|defer), id, token, score, state_json, log_entry
-- Returns per job: 1 applied, 0 stale lease.
local now = ARGV[1]
local out = {}
local wake = false
for i = 2, #ARGV, 6 do
  local mode, id, token, score, st, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  if redis.call('HGET', KEYS[9], id) ~= token then
    table.insert(out, 0)
  else
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[9], id)
    if mode == 'release' then
      redis.call('HINCRBY', KEYS[7], id, -1)
      redis.call('RPUSH', KEYS[1], id)
      redis.call('HSET', KEYS[6], id, state_json('queued', now))
      wake = true
    elseif mode == 'defer' then
      -- Held back by a per-destination limit: not an attempt, try again shortly.
      redis.call('HINCRBY', KEYS[7], id, -1)
      redis.call('ZADD', KEYS[3], score, id)
      redis.call('HSET', KEYS[6], id, st)
      wake = true
    else
      redis.call('HSET', KEYS[6], id, st)
      append_log(KEYS[8], id, entry)
      if mode == 'done' then
        redis.call('ZADD', KEYS[5], now, id)
      elseif mode == 'retry' then
        redis.call('ZADD', KEYS[3], score, id)
        -- Idle workers re-read the next due time, so a short retry is not late.
        wake = true
      else
        redis.call('ZADD', KEYS[4], now, id)
      end
    end
    table.insert(out, 1)
  end
end
if wake then
  redis.call('LPUSH', KEYS[10], 1)
  redis.call('LTRIM', KEYS[10], 0, 63)
end
return out
