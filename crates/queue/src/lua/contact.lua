-- The contact rules of one send, atomically across replicas: the contact's opt-out,
-- then its frequency cap (at most `max` sends per `window_ms` on this channel, whatever
-- the agent). A send that passes is counted under its job id; the same job's later
-- attempts find it counted and pass again (a retry is not a second message).
-- KEYS (scripts.rs binds them as locals): optouts_key, sent_key (zset job id -> ms of its send)
-- ARGV: now_ms, optout_field, job_id, max (0 = no cap), window_ms
-- Returns { 'opted_out', record } | { 'capped', earliest counted send ms } | { 'ok' }.
local now, field, job = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local max, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local record = redis.call('HGET', optouts_key, field)
if record then return { 'opted_out', record } end
if max <= 0 then return { 'ok' } end
redis.call('ZREMRANGEBYSCORE', sent_key, '-inf', now - window)
if redis.call('ZSCORE', sent_key, job) then return { 'ok' } end
if redis.call('ZCARD', sent_key) >= max then
  local first = redis.call('ZRANGE', sent_key, 0, 0, 'WITHSCORES')
  return { 'capped', first[2] }
end
redis.call('ZADD', sent_key, now, job)
redis.call('PEXPIRE', sent_key, window)
return { 'ok' }
