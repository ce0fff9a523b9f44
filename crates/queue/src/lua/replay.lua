-- Moves dead letters back to the ready queue with a fresh attempt budget.
-- KEYS (scripts.rs binds them as locals): dead_key, ready_key, state_key, attempts_key, log_key, notify_key, completion_key, pending_key
-- ARGV: now, force ('1': the replay entry says so, and the worker runs the job even
--       past its expiry; '' otherwise), ids...
local now = tonumber(ARGV[1])
local entry = { at = now, outcome = 'replayed' }
if ARGV[2] == '1' then entry.forced = true end
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if rcall('ZREM', dead_key, id) == 1 then
    local attempts = tonumber(rcall('HGET', attempts_key, id) or '0')
    rcall('HSET', attempts_key, id, 0)
    rcall('HSET', state_key, id, state_json('queued', now, { replayed = true }))
    entry.attempt = attempts
    append_log(log_key, id, cjson.encode(entry))
    rcall('LPUSH', ready_key, id)
    unsettled({ completion = completion_key, pending = pending_key }, id)
    n = n + 1
  end
end
if n > 0 then
  notify(notify_key)
end
return n
