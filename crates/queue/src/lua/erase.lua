-- Erases a call's personal data (`aftercall calls erase`, `DELETE /calls/{id}`).
-- KEYS (scripts.rs binds them as locals): calls_key, fanout_key, analysis_key, ready_key, scheduled_key, running_key, dead_key, done_key, state_key, log_key, lease_key, audit_key, completion_key, pending_key
-- ARGV: call_id, now, by, fanout_seen ('' for none), then the call's job ids (the
--       call-ended job first). Their data was rewritten without the event's content by
--       an HSET in the same MULTI, before this script.
-- Work in flight is cancelled, visibly: a job queued, scheduled, running or dead becomes
-- `skipped` ("erased by <by>"); a running job's lease is dropped, so its worker's finish
-- (or fan-out) no longer applies. Attempt histories keep outcome, status and times, not
-- error texts or response snippets. One audit entry (who, when, how many), no content.
-- Returns { jobs, cancelled }, or { -1 } when the call is unknown or its jobs changed
-- since the caller read them (a fan-out in between): the caller reads and tries again.
-- Rare and operator-driven: the LREM of a queued job scans the ready list, once.
local call_id, now, by, seen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if rcall('HGET', calls_key, call_id) ~= ARGV[5] then return { -1 } end
if (rcall('HGET', fanout_key, call_id) or '') ~= seen then return { -1 } end
rcall('HDEL', analysis_key, call_id)
-- No completion callback after an erasure: it is cancelled with the rest.
rcall('HDEL', completion_key, ARGV[5])
rcall('HDEL', pending_key, ARGV[5], ARGV[5] .. '!')
local erased = state_json('skipped', now, { reason = 'erased by ' .. by })
local jobs, cancelled = 0, 0
for i = 5, #ARGV do
  local id = ARGV[i]
  jobs = jobs + 1
  local state = rcall('HGET', state_key, id) or ''
  local name = string.match(state, '"state":"([%a_]+)"')
  local live = true
  if name == 'queued' then
    rcall('LREM', ready_key, 0, id)
  elseif name == 'scheduled' then
    rcall('ZREM', scheduled_key, id)
  elseif name == 'running' then
    rcall('ZREM', running_key, id)
    rcall('HDEL', lease_key, id)
  elseif name == 'dead' then
    rcall('ZREM', dead_key, id)
  elseif name ~= 'waiting' then
    live = false
  end
  if live then
    cancelled = cancelled + 1
    rcall('HSET', state_key, id, erased)
    rcall('ZADD', done_key, now, id)
  end
  local log = rcall('HGET', log_key, id)
  if log then
    local kept = {}
    for k, a in ipairs(cjson.decode(log)) do
      kept[k] = { attempt = a.attempt, at = a.at, outcome = a.outcome, status = a.status,
                  duration_ms = a.duration_ms, next_run_at = a.next_run_at, worker = a.worker }
    end
    rcall('HSET', log_key, id, #kept > 0 and cjson.encode(kept) or '[]')
  end
end
rcall('XADD', audit_key, 'MAXLEN', '~', 10000, '*', 'op', 'erase', 'call_id', call_id,
  'by', by, 'jobs', jobs, 'cancelled', cancelled)
return { jobs, cancelled }
