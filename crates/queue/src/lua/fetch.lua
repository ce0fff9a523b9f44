-- Promote due scheduled jobs, reap expired leases, then lease up to `batch` ready jobs.
-- KEYS: ready, running, scheduled, dead, data, state, attempts, max, log, lease, notify
-- ARGV: now, batch, lease_ms, worker
-- Returns: { next_due_ms or -1, id, data, attempts, max, id, data, attempts, max, ... }
local now = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local worker = ARGV[4]

local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('LPUSH', KEYS[1], id)
  redis.call('HSET', KEYS[6], id, state_json('queued', now))
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  local holder = redis.call('HGET', KEYS[10], id)
  redis.call('HDEL', KEYS[10], id)
  local n = tonumber(redis.call('HGET', KEYS[7], id) or '0')
  local max = tonumber(redis.call('HGET', KEYS[8], id) or '1')
  local err = 'lease expired: the worker holding the job stopped renewing it (crash, kill or stall)'
  local entry = { attempt = n, at = now, outcome = 'lease_expired', error = err }
  if holder then entry['worker'] = string.match(holder, '^(.*):[^:]*$') end
  append_log(KEYS[9], id, cjson.encode(entry))
  if n >= max then
    redis.call('ZADD', KEYS[4], now, id)
    redis.call('HSET', KEYS[6], id, state_json('dead', now, { error = err }))
  else
    redis.call('RPUSH', KEYS[1], id)
    redis.call('HSET', KEYS[6], id, state_json('queued', now))
  end
end

local out = { -1 }
local ids = redis.call('RPOP', KEYS[1], batch)
if ids then
  local deadline = now + lease_ms
  for _, id in ipairs(ids) do
    local data = redis.call('HGET', KEYS[5], id)
    if data then
      redis.call('ZADD', KEYS[2], deadline, id)
      local n = redis.call('HINCRBY', KEYS[7], id, 1)
      redis.call('HSET', KEYS[10], id, worker .. ':' .. n)
      redis.call('HSET', KEYS[6], id, state_json('running', now, { worker = worker }))
      table.insert(out, id)
      table.insert(out, data)
      table.insert(out, n)
      table.insert(out, tonumber(redis.call('HGET', KEYS[8], id) or '1'))
    end
  end
  if redis.call('LLEN', KEYS[1]) > 0 then
    -- Chain the wake-up so other idle workers join in on a burst.
    redis.call('LPUSH', KEYS[11], 1)
    redis.call('LTRIM', KEYS[11], 0, 63)
  end
end

local next_due = -1
local s = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if s[2] then next_due = tonumber(s[2]) end
local r = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if r[2] and (next_due < 0 or tonumber(r[2]) < next_due) then next_due = tonumber(r[2]) end
out[1] = next_due
return out
