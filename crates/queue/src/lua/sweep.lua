-- Retention: forgets finished jobs and call ids older than the cutoff, in bounded steps.
-- KEYS (scripts.rs binds them as locals): done_key, data_key, state_key, attempts_key, max_key, log_key, calls_key, calls_log_key, fanout_key, analysis_key, refs_key, completion_key, pending_key
-- ARGV: cutoff_ms, limit, retention_ms
-- Call ids are forgotten by whole entries of the log (one per enqueue: up to 500 ids),
-- until `limit` ids are gone.
local cutoff, limit = ARGV[1], tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', done_key, '-inf', cutoff, 'LIMIT', 0, limit)
-- A call-ended job's data is the call's event: it stays while an action job of the call
-- is not forgotten (a retry, a dead letter kept longer, a replay), and goes with the last.
for _, id in ipairs(ids) do
  redis.call('ZREM', done_key, id)
  for _, key in ipairs({ state_key, attempts_key, max_key, log_key }) do
    redis.call('HDEL', key, id)
  end
  if redis.call('HEXISTS', refs_key, id) == 0 then redis.call('HDEL', data_key, id) end
  if not call_ended_of(id) then
    -- A call-ended job: its completion callback's bookkeeping, if it had one.
    redis.call('HDEL', completion_key, id)
    redis.call('HDEL', pending_key, id, id .. '!')
  end
  release_event(refs_key, state_key, data_key, id)
end
local forgotten = 0
-- The log's entry ids are Redis's time (`ms-seq`), so its cutoff is taken by Redis's
-- clock too: up to it means every entry of that millisecond or before.
local t = redis.call('TIME')
local log_cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
-- A few entries at a time (one can hold 500 ids); each is deleted once its ids are.
-- (A retention longer than the clock's age leaves nothing to forget.)
while forgotten < limit and log_cutoff > 0 do
  local entries = redis.call('XRANGE', calls_log_key, '-', log_cutoff, 'COUNT', 16)
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local fields = e[2]
    for f = 1, #fields, 2 do
      redis.call('HDEL', calls_key, fields[f])
      redis.call('HDEL', fanout_key, fields[f])
      redis.call('HDEL', analysis_key, fields[f])
    end
    forgotten = forgotten + #fields / 2
    redis.call('XDEL', calls_log_key, e[1])
    if forgotten >= limit then break end
  end
end
return #ids + forgotten
