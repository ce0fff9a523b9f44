-- Shared helpers, prepended to every script. Every key a script touches arrives in KEYS.
local function append_log(log_key, id, entry)
  if entry == nil or entry == '' then return end
  local cur = redis.call('HGET', log_key, id)
  if not cur or cur == '' or cur == '[]' then
    redis.call('HSET', log_key, id, '[' .. entry .. ']')
  else
    redis.call('HSET', log_key, id, string.sub(cur, 1, -2) .. ',' .. entry .. ']')
  end
end

local function state_json(state, now, extra)
  local t = extra or {}
  t['state'] = state
  t['at'] = tonumber(now)
  return cjson.encode(t)
end
