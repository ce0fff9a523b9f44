-- Moves dead letters back to the ready queue with a fresh attempt budget.
-- KEYS: dead, ready, state, attempts, log, notify
-- ARGV: now, ids...
local now = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if rcall('ZREM', KEYS[1], id) == 1 then
    local attempts = tonumber(rcall('HGET', KEYS[4], id) or '0')
    rcall('HSET', KEYS[4], id, 0)
    rcall('HSET', KEYS[3], id, state_json('queued', now, { replayed = true }))
    append_log(KEYS[5], id, cjson.encode({ attempt = attempts, at = now, outcome = 'replayed' }))
    rcall('LPUSH', KEYS[2], id)
    n = n + 1
  end
end
if n > 0 then
  notify(KEYS[6])
end
return n
