-- The platform intake's two writes beside a plain enqueue (enqueue.lua), for one call.
-- KEYS (scripts.rs binds them as locals): calls_key, calls_log_key, ready_key, scheduled_key, data_key, state_key, max_key, notify_key, analysis_key
-- ARGV: mode, now, max_attempts ('' for the default), call_id, id, then
--   mode 'wait': until_ms, reason. The call's job is held in `scheduled` until `until_ms`
--     (its state saying why: "waiting for analysis until T"), then fanned out as any job.
--   mode 'join': record. The call's analysis arrived (Retell's `call_analyzed`), with the
--     whole call again as the job `id`. `record` (small: the analysis, not the call) is
--     kept under the call id, first one wins.
-- As in enqueue.lua, the job's data is written by an HSET in the same MULTI before this
-- script, and removed here when the job is not kept.
-- Returns { outcome, job id }:
--   0 enqueued: a new call (wait: held; join: queued now, the call's first message)
--   1 duplicate: the call (wait) or its analysis (join) was seen before; nothing changed
--   2 joined: the call was waiting for its analysis; the analysed job takes its place and
--     is queued now, the waiting one is forgotten
--   3 late: the call fanned out (or is running) already; the analysis is kept with the
--     call and its actions are not run again
local mode, now, max, call_id, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local function take(state)
  rcall('HSET', calls_key, call_id, id)
  rcall('XADD', calls_log_key, '*', call_id, '')
  if max ~= '' then rcall('HSET', max_key, id, max) end
  rcall('HSET', state_key, id, state)
end

local prev = rcall('HGET', calls_key, call_id)

if mode == 'wait' then
  local until_ms, reason = ARGV[6], ARGV[7]
  if prev then
    if prev ~= id then rcall('HDEL', data_key, id) end
    return { 1, prev }
  end
  take(state_json('scheduled', now, { run_at = tonumber(until_ms), reason = reason, waiting = 'analysis' }))
  rcall('ZADD', scheduled_key, until_ms, id)
  return { 0, id }
end

-- join
local record = ARGV[6]
local first = rcall('HSETNX', analysis_key, call_id, record) == 1
if not prev then
  take(state_json('queued', now))
  rcall('LPUSH', ready_key, id)
  notify(notify_key)
  return { 0, id }
end
-- A retried transaction names the same job again.
if prev == id then return { 1, prev } end
if first then
  local state = rcall('HGET', state_key, prev)
  if state and string.find(state, '"waiting":"analysis"', 1, true)
      and rcall('ZSCORE', scheduled_key, prev) then
    -- Never fetched, so it has no attempts, history or lease to move: only these.
    rcall('ZREM', scheduled_key, prev)
    rcall('HDEL', state_key, prev)
    rcall('HDEL', max_key, prev)
    rcall('HDEL', data_key, prev)
    rcall('HSET', calls_key, call_id, id)
    if max ~= '' then rcall('HSET', max_key, id, max) end
    rcall('HSET', state_key, id, state_json('queued', now, { reason = 'analysis arrived' }))
    rcall('LPUSH', ready_key, id)
    notify(notify_key)
    return { 2, id }
  end
  rcall('HDEL', data_key, id)
  return { 3, prev }
end
rcall('HDEL', data_key, id)
return { 1, prev }
