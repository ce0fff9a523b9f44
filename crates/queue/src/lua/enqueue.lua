-- Idempotent enqueue of call-ended jobs, one or many per call.
-- KEYS (scripts.rs binds them as locals): calls_key, calls_log_key, ready_key, data_key, state_key, attempts_key, max_key, notify_key
-- ARGV: now, max_attempts ('' for the default, which is not stored), then the n call
--       ids, then the n job ids (same order).
-- The jobs' data is written by an HSET in the same MULTI, before this script: a job's
-- JSON never becomes a Lua string (Redis hashes every byte of those), and a duplicate's
-- data is removed here, so the transaction leaves nothing behind for it.
-- Returns the duplicates only, as pairs: the job's place in the batch (from 1) and the
-- id of the job its call already has. Every other job was enqueued under its own id.
-- Batched: one HMGET finds known calls, then each kind of write is one command per call.
-- Retention's index is a stream: one entry per script call (its id Redis's time, its
-- fields the new call ids), where a sorted set entry per call cost 16 % of an enqueue.
local now, max = ARGV[1], ARGV[2]

local n = (#ARGV - 2) / 2
if n == 1 then
  -- One event (the HTTP ingest's case): the same writes without the batch's tables.
  local call_id, id = ARGV[3], ARGV[4]
  if rcall('HSETNX', calls_key, call_id, id) == 0 then
    local prev = rcall('HGET', calls_key, call_id)
    -- A retried transaction names the same job again: its data is the job's own.
    if prev ~= id then rcall('HDEL', data_key, id) end
    return { 1, prev }
  end
  rcall('XADD', calls_log_key, '*', call_id, '')
  if max ~= '' then rcall('HSET', max_key, id, max) end
  rcall('HSET', state_key, id, state_json('queued', now))
  rcall('LPUSH', ready_key, id)
  notify(notify_key)
  return {}
end
local known
if n <= SLICE then
  known = rcall('HMGET', calls_key, unpack(ARGV, 3, 2 + n))
else
  local call_ids = {}
  for k = 1, n do call_ids[k] = ARGV[2 + k] end
  known = hmget(calls_key, call_ids)
end

local dups = {}
local fresh = {}
-- No attempts entry: an absent count reads as 0 everywhere (fetch, status, replay).
-- Explicit counters, not `#t + 1`: Lua finds a table's length by a binary search.
local calls, logged, unused, states, ready = {}, {}, {}, {}, {}
local nc, nr, nu, nd = 0, 0, 0, 0
local queued = state_json('queued', now)
for k = 1, n do
  local call_id, id = ARGV[2 + k], ARGV[2 + n + k]
  -- A call twice in one batch: the second is a duplicate of the first, as HSETNX in turn.
  local prev = known[k] or fresh[call_id]
  if prev then
    dups[nd + 1] = k
    dups[nd + 2] = prev
    nd = nd + 2
    if prev ~= id then nu = nu + 1; unused[nu] = id end
  else
    fresh[call_id] = id
    calls[nc + 1] = call_id
    calls[nc + 2] = id
    states[nc + 1] = id
    states[nc + 2] = queued
    nc = nc + 2
    nr = nr + 1
    ready[nr] = id
    logged[2 * nr - 1] = call_id
    logged[2 * nr] = ''
  end
end
if nr > 0 then
  call_sliced('HSET', calls_key, calls, 2)
  -- One entry per slice of call ids (each an id and an empty value).
  for i = 1, 2 * nr, SLICE do
    rcall('XADD', calls_log_key, '*', unpack(logged, i, math.min(i + SLICE - 1, 2 * nr)))
  end
  if max ~= '' then
    local maxes = {}
    for r = 1, nr do
      maxes[2 * r - 1] = ready[r]
      maxes[2 * r] = max
    end
    call_sliced('HSET', max_key, maxes, 2)
  end
  call_sliced('HSET', state_key, states, 2)
  call_sliced('LPUSH', ready_key, ready, 1)
  notify(notify_key)
end
if nu > 0 then call_sliced('HDEL', data_key, unused, 1) end
return dups
