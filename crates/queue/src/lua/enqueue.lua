-- Idempotent enqueue of call-ended jobs, one or many per call.
-- KEYS: calls, calls_at, ready, data, state, attempts, max, notify
-- ARGV: now, then per job: call_id, job_id, max_attempts
-- The jobs' data is written by an HSET in the same MULTI, before this script: a job's
-- JSON never becomes a Lua string (Redis hashes every byte of those), and a duplicate's
-- data is removed here, so the transaction leaves nothing behind for it.
-- Returns per job: 1 and the new id, or 0 and the id of the job the call already has.
-- Batched: one HMGET finds known calls, then each kind of write is one command per call.
local now = ARGV[1]
if #ARGV == 4 then
  -- One event (the HTTP ingest's case): the same writes without the batch's tables.
  local call_id, id = ARGV[2], ARGV[3]
  if rcall('HSETNX', KEYS[1], call_id, id) == 0 then
    local prev = rcall('HGET', KEYS[1], call_id)
    -- A retried transaction names the same job again: its data is the job's own.
    if prev ~= id then rcall('HDEL', KEYS[4], id) end
    return { 0, prev }
  end
  rcall('ZADD', KEYS[2], now, call_id)
  rcall('HSET', KEYS[7], id, ARGV[4])
  rcall('HSET', KEYS[5], id, state_json('queued', now))
  rcall('LPUSH', KEYS[3], id)
  notify(KEYS[8])
  return { 1, id }
end
local call_ids = {}
for i = 2, #ARGV, 3 do call_ids[#call_ids + 1] = ARGV[i] end
local known = hmget(KEYS[1], call_ids)

local out = {}
local fresh = {}
-- No attempts entry: an absent count reads as 0 everywhere (fetch, status, replay).
local calls, calls_at, unused, maxes, states, ready = {}, {}, {}, {}, {}, {}
local queued
for k = 1, #call_ids do
  local i = 2 + (k - 1) * 3
  local call_id, id, max = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  -- A call twice in one batch: the second is a duplicate of the first, as HSETNX in turn.
  local prev = known[k] or fresh[call_id]
  if prev then
    out[#out + 1] = 0
    out[#out + 1] = prev
    if prev ~= id then unused[#unused + 1] = id end
  else
    fresh[call_id] = id
    queued = queued or state_json('queued', now)
    calls[#calls + 1] = call_id
    calls[#calls + 1] = id
    calls_at[#calls_at + 1] = now
    calls_at[#calls_at + 1] = call_id
    maxes[#maxes + 1] = id
    maxes[#maxes + 1] = max
    states[#states + 1] = id
    states[#states + 1] = queued
    ready[#ready + 1] = id
    out[#out + 1] = 1
    out[#out + 1] = id
  end
end
if #ready > 0 then
  call_sliced('HSET', KEYS[1], calls, 2)
  call_sliced('ZADD', KEYS[2], calls_at, 2)
  call_sliced('HSET', KEYS[7], maxes, 2)
  call_sliced('HSET', KEYS[5], states, 2)
  call_sliced('LPUSH', KEYS[3], ready, 1)
  notify(KEYS[8])
end
if #unused > 0 then call_sliced('HDEL', KEYS[4], unused, 1) end
return out
