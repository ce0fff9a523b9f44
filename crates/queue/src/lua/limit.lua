-- Per-destination limits shared by every replica: at most `max_inflight` holders at
-- once and at most `max_per_sec` starts in the current second.
-- KEYS (scripts.rs binds them as locals): sem_key, rate_key (zset token -> expiry ms; counter of this second's starts)
-- ARGV: now_ms, token, ttl_ms, max_inflight (0 = none), max_per_sec (0 = none)
-- Returns 1 when the caller may go, 0 when it must wait.
local now, token, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local max_inflight, max_per_sec = tonumber(ARGV[4]), tonumber(ARGV[5])
if max_inflight > 0 then
  redis.call('ZREMRANGEBYSCORE', sem_key, '-inf', now)
  if redis.call('ZCARD', sem_key) >= max_inflight then return 0 end
end
if max_per_sec > 0 then
  local n = tonumber(redis.call('GET', rate_key) or '0')
  if n >= max_per_sec then return 0 end
  redis.call('INCR', rate_key)
  redis.call('PEXPIRE', rate_key, 2000)
end
if max_inflight > 0 then
  redis.call('ZADD', sem_key, now + ttl, token)
  redis.call('PEXPIRE', sem_key, ttl * 2)
end
return 1
