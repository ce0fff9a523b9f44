-- Stores an agent's config only if it is still what the caller read (compare-and-set),
-- so two concurrent read-modify-write updates cannot silently overwrite each other.
-- KEYS (scripts.rs binds them as locals): agents_key
-- ARGV: agent_id, expected_present (1|0), expected_json, new_json
-- Returns 1 stored, 0 changed meanwhile.
local cur = redis.call('HGET', agents_key, ARGV[1])
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then
  return 0
end
redis.call('HSET', agents_key, ARGV[1], ARGV[4])
return 1
