-- Per-destination limits shared by every replica: at most `max_inflight` holders at
-- once and at most `max_per_sec` starts in the current second.
-- KEYS: sem (zset token -> expiry ms), rate (counter of this second's starts)
-- ARGV: now_ms, token, ttl_ms, max_inflight (0 = none), max_per_sec (0 = none)
-- Returns 1 when the caller may go, 0 when it must wait.
local now, token, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local max_inflight, max_per_sec = tonumber(ARGV[4]), tonumber(ARGV[5])
if max_inflight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= max_inflight then return 0 end
end
if max_per_sec > 0 then
  local n = tonumber(redis.call('GET', KEYS[2]) or '0')
  if n >= max_per_sec then return 0 end
  redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], 2000)
end
if max_inflight > 0 then
  redis.call('ZADD', KEYS[1], now + ttl, token)
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
end
return 1
