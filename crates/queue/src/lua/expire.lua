-- Payload retention: rewrites settled jobs without their personal content.
-- KEYS (scripts.rs binds them as locals): done_key, data_key, log_key, analysis_key, payload_cursor_key
-- ARGV: cursor (the done score reached), then per job: id, stripped job JSON ('' to
--       leave the data), stripped history JSON ('' to leave it), call id whose analysis
--       goes ('' for none).
-- Only jobs still in `done` are rewritten: one swept meanwhile stays gone. The stripped
-- JSON is a job's ids and action config, a few hundred bytes: unlike a job's data it
-- may pass through Lua.
local n = 0
for i = 2, #ARGV, 4 do
  local id, data, log, call_id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if rcall('ZSCORE', done_key, id) then
    if data ~= '' then rcall('HSET', data_key, id, data) end
    if log ~= '' then rcall('HSET', log_key, id, log) end
    if call_id ~= '' then rcall('HDEL', analysis_key, call_id) end
    n = n + 1
  end
end
rcall('SET', payload_cursor_key, ARGV[1])
return n
