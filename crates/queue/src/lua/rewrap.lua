-- Key rotation: replaces values sealed with an older key (or plaintext) by the same
-- value sealed with the current key, each only if it is still what was read.
-- KEYS (scripts.rs binds them as locals): target_key (the job data or the agent hash)
-- ARGV: id, value read, new value; repeated.
-- The values pass through Lua: rotation is a rare background pass, not the job path.
local n = 0
for i = 1, #ARGV, 3 do
  if rcall('HGET', target_key, ARGV[i]) == ARGV[i + 1] then
    rcall('HSET', target_key, ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n
