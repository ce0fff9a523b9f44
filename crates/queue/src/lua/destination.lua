-- A destination's health, shared by every replica: its circuit breaker, its pause after a
-- 429 or Retry-After, and the operators' pauses (by destination, agent or action type).
-- KEYS (scripts.rs binds them as locals): health_key, held_key, paused_key, destinations_key, scheduled_key, notify_key
-- health_key (made per destination): hash state (closed|open|half_open), streak, until
--   (ms the cool-down ends), probe (job id), probe_until, since (ms it opened),
--   pause_until (ms), last_error, last_at, closed_at
-- held_key (made per destination): zset job id -> ms its hold ends
-- ARGV: op, now, destination, then
--   op 'gate': job_id, agent_id, action, probe_ms, recheck_ms, deadline_ms
--     Returns { verdict, until_ms, since_ms, streak }: verdict 'go', 'probe' (go, as the
--     half-open probe), 'open' or 'throttled' or 'paused' (hold until until_ms, not an
--     attempt), or 'expired' (held past deadline_ms: the caller dead-letters it).
--   op 'report': result (ok|fail|throttle), error, threshold (0 = never opens),
--     cooldown_ms, pause_until_ms (0 = none)
--     Returns { event ('' | 'opened' | 'closed'), state, streak, the held job ids let go }.
local op, now, dest = ARGV[1], tonumber(ARGV[2]), ARGV[3]
rcall('ZADD', destinations_key, now, dest)

if op == 'gate' then
  local id, agent, action = ARGV[4], ARGV[5], ARGV[6]
  local probe_ms, recheck_ms, deadline = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
  local h = rcall('HMGET', health_key, 'state', 'streak', 'until', 'probe', 'probe_until', 'since', 'pause_until')
  local state, streak = h[1] or 'closed', tonumber(h[2] or '0')
  local since = tonumber(h[6] or '0')
  local function hold(verdict, untl, from)
    if deadline > 0 and now >= deadline then
      rcall('ZREM', held_key, id)
      return { 'expired', 0, from, streak }
    end
    rcall('ZADD', held_key, untl, id)
    return { verdict, untl, from, streak }
  end
  local p = rcall('HMGET', paused_key, 'destination:' .. dest, 'agent:' .. agent, 'action:' .. action)
  for k = 1, 3 do
    if p[k] then
      local at = tonumber(cjson.decode(p[k])['at'] or now)
      return hold('paused', now + recheck_ms, at)
    end
  end
  local pause_until = tonumber(h[7] or '0')
  if pause_until > now then return hold('throttled', pause_until, since > 0 and since or now) end
  if state == 'closed' then
    rcall('ZREM', held_key, id)
    return { 'go', 0, 0, streak }
  end
  local probe, probe_until = h[4], tonumber(h[5] or '0')
  if state == 'open' then
    local untl = tonumber(h[3] or '0')
    if now < untl then return hold('open', untl, since) end
  elseif probe ~= id and probe_until > now then
    -- Half-open, and another job is the probe: look again shortly (a success lets held
    -- jobs go at once, but not one whose hold is being recorded at that moment).
    return hold('open', math.min(probe_until, now + recheck_ms), since)
  end
  -- The cool-down is over (or the probe's holder went quiet): this job is the probe.
  rcall('HSET', health_key, 'state', 'half_open', 'probe', id, 'probe_until', now + probe_ms)
  rcall('ZREM', held_key, id)
  return { 'probe', 0, since, streak }
end

-- op == 'report'
local result, err = ARGV[4], ARGV[5]
local threshold, cooldown, pause_until = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local state = rcall('HGET', health_key, 'state') or 'closed'
local event = ''
local streak = 0
local released = {}
if result == 'ok' then
  rcall('HSET', health_key, 'streak', 0)
  if state ~= 'closed' then
    rcall('HSET', health_key, 'state', 'closed', 'closed_at', now)
    rcall('HDEL', health_key, 'probe', 'probe_until', 'until', 'since')
    state, event = 'closed', 'closed'
    -- What the breaker held goes now, not at the end of its hold.
    -- (A partitioned queue's jobs are in their partitions' schedules, not under this
    -- script's hash tag: the caller moves them up from the ids returned.)
    released = rcall('ZRANGE', held_key, 0, 9999)
    for _, id in ipairs(released) do
      rcall('ZADD', scheduled_key, 'XX', now, id)
    end
    rcall('DEL', held_key)
    if #released > 0 then notify(notify_key) end
  end
else
  rcall('HSET', health_key, 'last_error', err, 'last_at', now)
  if pause_until > now then
    local cur = tonumber(rcall('HGET', health_key, 'pause_until') or '0')
    if pause_until > cur then rcall('HSET', health_key, 'pause_until', pause_until) end
  end
  if result == 'fail' then
    streak = rcall('HINCRBY', health_key, 'streak', 1)
    if state == 'half_open' then
      rcall('HSET', health_key, 'state', 'open', 'until', now + cooldown)
      rcall('HDEL', health_key, 'probe', 'probe_until')
      state = 'open'
    elseif state == 'closed' and threshold > 0 and streak >= threshold then
      rcall('HSET', health_key, 'state', 'open', 'until', now + cooldown, 'since', now)
      state, event = 'open', 'opened'
    end
  else
    streak = tonumber(rcall('HGET', health_key, 'streak') or '0')
  end
end
return { event, state, streak, released }
