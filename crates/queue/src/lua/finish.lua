-- Ends attempts of leased jobs. A finish only applies while the caller still holds the
-- job's lease token, so a worker whose lease expired cannot overwrite a newer attempt.
-- KEYS (scripts.rs binds them as locals): ready_key, running_key, scheduled_key, dead_key, done_key, state_key, attempts_key, log_key, lease_key, notify_key, completion_key, pending_key
-- ARGV: now, then per job: mode (done|retry|dead|release|defer), id, token, score, state_json, log_entry
-- Returns per job: 1 applied, 0 stale lease.
-- Batched: the lease check is one HMGET, and each kind of write one command per call.
local now = ARGV[1]
local n = (#ARGV - 1) / 6
-- Completion callbacks wait for their calls' action jobs (lib.lua `settled`); a queue
-- none of whose agents has `on_complete` pays one EXISTS per call for them.
local completions = rcall('EXISTS', completion_key) == 1 and {
  completion = completion_key, pending = pending_key, ready = ready_key,
  running = running_key, scheduled = scheduled_key, done = done_key, dead = dead_key,
  state = state_key, attempts = attempts_key, log = log_key, notify = notify_key,
}
if n == 1 then
  -- One job (a quiet worker's case): the same writes without the batch's tables.
  local mode, id, token = ARGV[2], ARGV[3], ARGV[4]
  if rcall('HGET', lease_key, id) ~= token then return { 0 } end
  rcall('ZREM', running_key, id)
  rcall('HDEL', lease_key, id)
  if mode == 'release' then
    rcall('HINCRBY', attempts_key, id, -1)
    rcall('RPUSH', ready_key, id)
    rcall('HSET', state_key, id, state_json('queued', now))
    notify(notify_key)
    return { 1 }
  end
  rcall('HSET', state_key, id, ARGV[6])
  if mode == 'defer' then
    rcall('HINCRBY', attempts_key, id, -1)
    rcall('ZADD', scheduled_key, ARGV[5], id)
    notify(notify_key)
    return { 1 }
  end
  append_log(log_key, id, ARGV[7])
  if mode == 'done' then
    rcall('ZADD', done_key, now, id)
  elseif mode == 'retry' then
    rcall('ZADD', scheduled_key, ARGV[5], id)
    notify(notify_key)
  else
    rcall('ZADD', dead_key, now, id)
  end
  if completions and mode ~= 'retry' then settled(completions, id, now) end
  return { 1 }
end
local ids = {}
for k = 1, n do ids[k] = ARGV[6 * k - 3] end
local holders = hmget(lease_key, ids)

local out, seen = {}, {}
local applied, states, log_ids, log_entries, done = {}, {}, {}, {}, {}
local na, ns, nl, nd = 0, 0, 0, 0
local dead, scheduled, released
local wake = false
for k = 1, n do
  local i = 6 * k - 4
  local mode, id, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  -- The same id twice in one call: only the first holds the lease, as if run in turn.
  if holders[k] ~= token or seen[id] then
    out[k] = 0
  else
    seen[id] = true
    out[k] = 1
    na = na + 1
    applied[na] = id
    if mode == 'done' then
      nd = nd + 2
      done[nd - 1] = now
      done[nd] = id
    elseif mode == 'release' then
      rcall('HINCRBY', attempts_key, id, -1)
      released = released or {}
      released[#released + 1] = id
      ns = ns + 2
      states[ns - 1] = id
      states[ns] = state_json('queued', now)
      wake = true
    elseif mode == 'defer' then
      -- Held back by a per-destination limit: not an attempt, try again shortly.
      rcall('HINCRBY', attempts_key, id, -1)
      scheduled = scheduled or {}
      scheduled[#scheduled + 1] = ARGV[i + 3]
      scheduled[#scheduled + 1] = id
      wake = true
    elseif mode == 'retry' then
      scheduled = scheduled or {}
      scheduled[#scheduled + 1] = ARGV[i + 3]
      scheduled[#scheduled + 1] = id
      -- Idle workers re-read the next due time, so a short retry is not late.
      wake = true
    else
      dead = dead or {}
      dead[#dead + 1] = now
      dead[#dead + 1] = id
    end
    if mode ~= 'release' then
      ns = ns + 2
      states[ns - 1] = id
      states[ns] = ARGV[i + 4]
      local entry = ARGV[i + 5]
      if mode ~= 'defer' and entry ~= '' then
        nl = nl + 1
        log_ids[nl] = id
        log_entries[nl] = entry
      end
    end
  end
end

if na > 0 then
  call_sliced('ZREM', running_key, applied, 1)
  call_sliced('HDEL', lease_key, applied, 1)
  call_sliced('HSET', state_key, states, 2)
  append_logs(log_key, log_ids, log_entries)
  call_sliced('ZADD', done_key, done, 2)
  if scheduled then call_sliced('ZADD', scheduled_key, scheduled, 2) end
  if dead then call_sliced('ZADD', dead_key, dead, 2) end
  if released then call_sliced('RPUSH', ready_key, released, 1) end
end
if wake then notify(notify_key) end
if completions then
  for k = 1, n do
    local mode = ARGV[6 * k - 4]
    if out[k] == 1 and (mode == 'done' or mode == 'dead') then
      settled(completions, ARGV[6 * k - 3], now)
    end
  end
end
return out
