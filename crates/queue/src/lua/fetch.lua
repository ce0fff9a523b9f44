-- Promote due scheduled jobs, reap expired leases, then lease up to `batch` ready jobs.
-- KEYS: ready, running, scheduled, dead, data, state, attempts, max, log, lease, notify
-- ARGV: now, batch, lease_ms, worker, default_max (a job's budget when none is stored)
-- Returns: { next_due_ms or -1, id, attempts, max, id, attempts, max, ... }; the caller
-- reads the jobs' data itself (HMGET), since a string crossing into Lua costs Redis a
-- hash of each of its bytes: for a job of a few KB, more than the rest of the lease.
-- Batched: reads are HMGETs and each kind of write one command per call, so the cost per
-- leased job is a few table inserts, not half a dozen Redis commands.
local now = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local worker = ARGV[4]
local default_max = ARGV[5]

local due = rcall('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  local queued = state_json('queued', now)
  local states = {}
  for _, id in ipairs(due) do
    states[#states + 1] = id
    states[#states + 1] = queued
  end
  call_sliced('ZREM', KEYS[3], due, 1)
  call_sliced('LPUSH', KEYS[1], due, 1)
  call_sliced('HSET', KEYS[6], states, 2)
end

local expired = rcall('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  rcall('ZREM', KEYS[2], id)
  local holder = rcall('HGET', KEYS[10], id)
  rcall('HDEL', KEYS[10], id)
  local n = tonumber(rcall('HGET', KEYS[7], id) or '0')
  local max = tonumber(rcall('HGET', KEYS[8], id) or default_max)
  local err = 'lease expired: the worker holding the job stopped renewing it (crash, kill or stall)'
  local entry = { attempt = n, at = now, outcome = 'lease_expired', error = err }
  if holder then entry['worker'] = string.match(holder, '^(.*):[^:]*$') end
  append_log(KEYS[9], id, cjson.encode(entry))
  if n >= max then
    rcall('ZADD', KEYS[4], now, id)
    rcall('HSET', KEYS[6], id, state_json('dead', now, { error = err }))
  else
    rcall('RPUSH', KEYS[1], id)
    rcall('HSET', KEYS[6], id, state_json('queued', now))
  end
end

local out = { -1 }
local ids = rcall('RPOP', KEYS[1], batch)
if ids then
  local attempts = hmget(KEYS[7], ids)
  local maxes = hmget(KEYS[8], ids)
  local deadline = now + lease_ms
  local running = state_json('running', now, { worker = worker })
  local counted, zadd, leases, states = {}, {}, {}, {}
  -- Explicit counters, not `#t + 1`: Lua finds a table's length by a binary search.
  local c, o = 0, 1
  local taken = {}
  -- An id without data (a corrupt queue) is leased too: the worker finds nothing to
  -- decode and dead-letters it, in view (an HEXISTS per job here cost Redis 11 %).
  for k, id in ipairs(ids) do
    -- An id twice in one pop counts twice, as consecutive HINCRBYs would.
    local n = (taken[id] or tonumber(attempts[k] or '0')) + 1
    taken[id] = n
    counted[c + 1] = id
    counted[c + 2] = n
    zadd[c + 1] = deadline
    zadd[c + 2] = id
    leases[c + 1] = id
    leases[c + 2] = worker .. ':' .. n
    states[c + 1] = id
    states[c + 2] = running
    c = c + 2
    out[o + 1] = id
    out[o + 2] = n
    out[o + 3] = tonumber(maxes[k] or default_max)
    o = o + 3
  end
  if c > 0 then
    call_sliced('HSET', KEYS[7], counted, 2)
    call_sliced('ZADD', KEYS[2], zadd, 2)
    call_sliced('HSET', KEYS[10], leases, 2)
    call_sliced('HSET', KEYS[6], states, 2)
  end
  if rcall('LLEN', KEYS[1]) > 0 then
    -- Chain the wake-up so other idle workers join in on a burst.
    notify(KEYS[11])
  end
end

local next_due = -1
local s = rcall('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if s[2] then next_due = tonumber(s[2]) end
local r = rcall('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if r[2] and (next_due < 0 or tonumber(r[2]) < next_due) then next_due = tonumber(r[2]) end
out[1] = next_due
return out
