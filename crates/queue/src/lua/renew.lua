-- Extends the leases this worker still holds.
-- KEYS: running, lease
-- ARGV: deadline_ms, then pairs: id, token
-- Returns the ids whose lease was lost.
local lost = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[2], id) == token then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], id)
  else
    table.insert(lost, id)
  end
end
return lost
