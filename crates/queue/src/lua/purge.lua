-- Deletes dead letters for good, leaving a `purged` state so the call's history says so.
-- KEYS (scripts.rs binds them as locals): dead_key, data_key, state_key, attempts_key, max_key, log_key, lease_key, refs_key, done_key, audit_key
-- ARGV: now, mode, ids...
-- mode `purge` (an operator's): the job's data and history go now, and its reference
-- to the call's event with them.
-- mode `expire` (AFTERCALL_DEAD_RETENTION): the job's data goes; its state says why and
-- joins `done`, so its history (then stripped by payload retention) and its reference
-- go with the retention sweep, as a settled job's. One audit entry per call of this.
local now = tonumber(ARGV[1])
local expire = ARGV[2] == 'expire'
local expired = expire and state_json('purged', now, {
  reason = 'dead letter kept past AFTERCALL_DEAD_RETENTION: its payload was dropped'
})
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', dead_key, id) == 1 then
    redis.call('HDEL', data_key, id)
    redis.call('HDEL', lease_key, id)
    if expire then
      redis.call('HSET', state_key, id, expired)
      redis.call('ZADD', done_key, now, id)
    else
      redis.call('HDEL', attempts_key, id)
      redis.call('HDEL', max_key, id)
      redis.call('HDEL', log_key, id)
      redis.call('HSET', state_key, id, state_json('purged', now))
      release_event(refs_key, state_key, data_key, id)
    end
    n = n + 1
  end
end
if expire and n > 0 then
  redis.call('XADD', audit_key, 'MAXLEN', '~', 10000, '*', 'op', 'dead_expired',
    'by', 'AFTERCALL_DEAD_RETENTION', 'jobs', n)
end
return n
