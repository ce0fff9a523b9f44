-- Promote due scheduled jobs, reap expired leases, then lease up to `batch` ready jobs.
-- KEYS (scripts.rs binds them as locals): ready_key, running_key, scheduled_key, dead_key, data_key, state_key, attempts_key, max_key, log_key, lease_key, notify_key, done_key, completion_key, pending_key
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

local due = rcall('ZRANGEBYSCORE', scheduled_key, '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  local queued = state_json('queued', now)
  local states = {}
  for _, id in ipairs(due) do
    states[#states + 1] = id
    states[#states + 1] = queued
  end
  call_sliced('ZREM', scheduled_key, due, 1)
  call_sliced('LPUSH', ready_key, due, 1)
  call_sliced('HSET', state_key, states, 2)
end

local expired = rcall('ZRANGEBYSCORE', running_key, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  rcall('ZREM', running_key, id)
  local holder = rcall('HGET', lease_key, id)
  rcall('HDEL', lease_key, id)
  local n = tonumber(rcall('HGET', attempts_key, id) or '0')
  local max = tonumber(rcall('HGET', max_key, id) or default_max)
  local err = 'lease expired: the worker holding the job stopped renewing it (crash, kill or stall)'
  local entry = { attempt = n, at = now, outcome = 'lease_expired', error = err }
  if holder then entry['worker'] = string.match(holder, '^(.*):[^:]*$') end
  append_log(log_key, id, cjson.encode(entry))
  if n >= max then
    rcall('ZADD', dead_key, now, id)
    rcall('HSET', state_key, id, state_json('dead', now, { error = err }))
    if rcall('EXISTS', completion_key) == 1 then
      settled({
        completion = completion_key, pending = pending_key, ready = ready_key,
        running = running_key, scheduled = scheduled_key, done = done_key,
        dead = dead_key, state = state_key, attempts = attempts_key, log = log_key, notify = notify_key,
      }, id, now)
    end
  else
    rcall('RPUSH', ready_key, id)
    rcall('HSET', state_key, id, state_json('queued', now))
  end
end

local out = { -1 }
local ids = rcall('RPOP', ready_key, batch)
if ids then
  local attempts = hmget(attempts_key, ids)
  local maxes = hmget(max_key, ids)
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
    call_sliced('HSET', attempts_key, counted, 2)
    call_sliced('ZADD', running_key, zadd, 2)
    call_sliced('HSET', lease_key, leases, 2)
    call_sliced('HSET', state_key, states, 2)
  end
  if rcall('LLEN', ready_key) > 0 then
    -- Chain the wake-up so other idle workers join in on a burst.
    notify(notify_key)
  end
end

local next_due = -1
local s = rcall('ZRANGE', scheduled_key, 0, 0, 'WITHSCORES')
if s[2] then next_due = tonumber(s[2]) end
local r = rcall('ZRANGE', running_key, 0, 0, 'WITHSCORES')
if r[2] and (next_due < 0 or tonumber(r[2]) < next_due) then next_due = tonumber(r[2]) end
out[1] = next_due
return out
