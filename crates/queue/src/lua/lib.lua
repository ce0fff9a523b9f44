-- Shared helpers, prepended to every script. Every key a script touches arrives in KEYS.
-- Work on many jobs goes to Redis as one multi-argument command per slice of ids, not
-- one command per job: each redis.call costs Redis a whole command dispatch. Globals are
-- read once into locals: a global lookup costs more than the table access it guards.
local KEYS, ARGV = KEYS, ARGV
local rcall, unpack, tonumber = redis.call, unpack, tonumber
local encode, sub = cjson.encode, string.sub

-- Arguments per multi-argument command: well under Lua's unpack limit (~8000).
local SLICE = 1000

-- Runs `cmd key args[1..n]` in slices; `step` keeps pairs (field, value) together.
local function call_sliced(cmd, key, args, step)
  local n = #args
  if n <= SLICE then
    if n > 0 then rcall(cmd, key, unpack(args, 1, n)) end
    return
  end
  local i = 1
  while i <= n do
    local j = i + SLICE - 1
    if j > n then j = n end
    j = j - ((j - i + 1) % step)
    rcall(cmd, key, unpack(args, i, j))
    i = j + 1
  end
end

-- HMGET for any number of fields; values aligned with `fields` (false where absent).
local function hmget(key, fields)
  local n = #fields
  if n <= SLICE then return rcall('HMGET', key, unpack(fields, 1, n)) end
  local out = {}
  local i = 1
  while i <= n do
    local j = i + SLICE - 1
    if j > n then j = n end
    local got = rcall('HMGET', key, unpack(fields, i, j))
    for k = 1, #got do out[i + k - 1] = got[k] end
    i = j + 1
  end
  return out
end

local function append_entry(cur, entry)
  if not cur or cur == '' or cur == '[]' then
    return '[' .. entry .. ']'
  end
  return sub(cur, 1, -2) .. ',' .. entry .. ']'
end

local function append_log(log_key, id, entry)
  if entry == nil or entry == '' then return end
  rcall('HSET', log_key, id, append_entry(rcall('HGET', log_key, id), entry))
end

-- Appends entries[k] to the history of ids[k], with one HMGET and one HSET per slice.
local function append_logs(log_key, ids, entries)
  local n = #ids
  if n == 0 then return end
  local cur = hmget(log_key, ids)
  local kv = {}
  for k = 1, n do
    kv[2 * k - 1] = ids[k]
    kv[2 * k] = append_entry(cur[k], entries[k])
  end
  call_sliced('HSET', log_key, kv, 2)
end

local function state_json(state, now, extra)
  local t = extra or {}
  t['state'] = state
  t['at'] = tonumber(now)
  return encode(t)
end

-- Wakes idle workers (they block on the list). Capped at 64 tokens: busy workers do not
-- read it, and a full list already wakes everyone who blocks next.
local function notify(key)
  if rcall('LLEN', key) < 64 then
    rcall('LPUSH', key, 1)
  end
end

-- The call-ended job whose event action job `id` reads (`<parent>.<index>`, as Rust's
-- `call_ended_id`); nil for an id that is not an action job's.
local function call_ended_of(id)
  return string.match(id, '^(.+)%.%d+$')
end

-- Action job `id` is forgotten (swept or purged): one reader fewer of its call-ended
-- job's data, the call's one copy of the event, which goes with the last reader once
-- the call-ended job is forgotten too. (Data from before `refs`, with the event in each
-- action job, has no count: it reads as none left.)
local function release_event(refs_key, state_key, data_key, id)
  local parent = call_ended_of(id)
  if not parent then return end
  if rcall('HINCRBY', refs_key, parent, -1) <= 0 then
    rcall('HDEL', refs_key, parent)
    if rcall('HEXISTS', state_key, parent) == 0 then rcall('HDEL', data_key, parent) end
  end
end

-- Job `id` settled (delivered, skipped or dead). For a call whose agent has
-- `on_complete` (`completion` holds its callback job's id): an action job is one fewer
-- to wait for, and the last one queues the callback, once per settling: from `waiting`
-- (its first), from done or dead (a replayed action settled again, with a fresh budget);
-- one being sent now is marked (`<parent>!`) and queued again when it ends; one queued
-- or scheduled and not yet sent will read the latest outcomes anyway.
-- Each queuing is logged (`settled`) in the callback's history: the callback's
-- `webhook-id` counts them, so a receiver tells settlings apart and retries alike.
-- `k`: the script's keys by name (completion, pending, ready, running, scheduled, done,
-- dead, state, attempts, log, notify). Returns nothing; one HGET for a call without callback.
local function settled(k, id, now)
  local parent = call_ended_of(id)
  if not parent then return end
  local cb = rcall('HGET', k.completion, parent)
  if not cb then return end
  if cb ~= id then
    if rcall('HINCRBY', k.pending, parent, -1) > 0 then return end
    rcall('HDEL', k.pending, parent)
  elseif rcall('HDEL', k.pending, parent .. '!') == 0 then
    return
  end
  if rcall('ZSCORE', k.running, cb) then
    rcall('HSET', k.pending, parent .. '!', 1)
    return
  end
  if rcall('ZSCORE', k.scheduled, cb) then return end
  local was = rcall('ZREM', k.done, cb) + rcall('ZREM', k.dead, cb)
  if was == 0 and not string.find(rcall('HGET', k.state, cb) or '', '"state":"waiting"', 1, true) then
    return
  end
  local attempts = tonumber(rcall('HGET', k.attempts, cb) or '0')
  append_log(k.log, cb, cjson.encode({ attempt = attempts, at = tonumber(now), outcome = 'settled' }))
  rcall('HSET', k.attempts, cb, 0)
  rcall('LPUSH', k.ready, cb)
  rcall('HSET', k.state, cb, state_json('queued', now))
  notify(k.notify)
end

-- A dead action job `id` was replayed: its call waits for it again before its callback.
local function unsettled(k, id)
  local parent = call_ended_of(id)
  if not parent then return end
  local cb = rcall('HGET', k.completion, parent)
  if cb and cb ~= id then rcall('HINCRBY', k.pending, parent, 1) end
end
