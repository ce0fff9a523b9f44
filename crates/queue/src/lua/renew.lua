-- Extends the leases this worker still holds.
-- KEYS (scripts.rs binds them as locals): running_key, lease_key
-- ARGV: deadline_ms, then pairs: id, token
-- Returns the ids whose lease was lost.
local lost = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', lease_key, id) == token then
    redis.call('ZADD', running_key, 'XX', ARGV[1], id)
  else
    table.insert(lost, id)
  end
end
return lost
