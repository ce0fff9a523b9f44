-- Payload retention: rewrites settled jobs without their personal content.
-- KEYS (scripts.rs binds them as locals): done_key, data_key, log_key, analysis_key, payload_cursor_key
-- ARGV: cursor (the done score reached), then per job: id, stripped job JSON ('' to
--       leave the data), stripped history JSON ('' to leave it), call id whose analysis
--       goes ('' for none), m, then m ids that must all have settled too (a call-ended
--       job's actions: its data is the call's one copy of the event).
-- Only jobs still in `done` are rewritten: one swept meanwhile stays gone; a call's event
-- stays while one of its actions is queued, retrying or dead. The stripped JSON is a
-- job's ids and action config, a few hundred bytes: unlike a job's data it may pass
-- through Lua.
local n = 0
local i = 2
while i <= #ARGV do
  local id, data, log, call_id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local m = tonumber(ARGV[i + 4])
  local settled = rcall('ZSCORE', done_key, id)
  for j = i + 5, i + 4 + m do
    if not settled then break end
    settled = rcall('ZSCORE', done_key, ARGV[j])
  end
  if settled then
    if data ~= '' then rcall('HSET', data_key, id, data) end
    if log ~= '' then rcall('HSET', log_key, id, log) end
    if call_id ~= '' then rcall('HDEL', analysis_key, call_id) end
    n = n + 1
  end
  i = i + 5 + m
end
rcall('SET', payload_cursor_key, ARGV[1])
return n
