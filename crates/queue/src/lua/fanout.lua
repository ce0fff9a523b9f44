-- Atomically creates calls' action jobs and finishes their call-ended jobs, one or many
-- calls per script call, each as if run in turn. Idempotent: a call fans out once,
-- whoever holds the lease.
-- KEYS: ready, running, scheduled, done, data, state, attempts, max, log, lease, fanout, notify
-- ARGV: now, then per call-ended job: parent_id, token, call_id, parent_state, parent_log,
--       ids_json, claim_token, claim_deadline_ms, n, then n times: id, json, max,
--       run_at_ms (0 = now)
-- A claim (claim_token not empty, `worker:1`) leases the call's first action job that
-- is due now to the fanning-out worker, which runs it next without a fetch: that job
-- skips the ready list, the rest are queued as usual. Only a call's first fan-out claims.
-- Returns per call-ended job: 0 stale lease, 1 applied, or the id of the claimed job.
local now = tonumber(ARGV[1])
local now_s = ARGV[1]

-- The state of a job claimed with `token` (fetch.lua writes the same).
local function running_state(token)
  return state_json('running', now, { worker = string.match(token, '^(.*):[^:]*$') })
end

if #ARGV == 10 + 4 * tonumber(ARGV[10]) then
  -- One call (a quiet worker's case): the same writes without the batch's tables.
  local parent, token, call_id = ARGV[2], ARGV[3], ARGV[4]
  if rcall('HGET', KEYS[10], parent) ~= token then return { 0 } end
  local result = 1
  local queued = false
  if rcall('HSETNX', KEYS[11], call_id, ARGV[7]) == 1 then
    local claim_token = ARGV[8]
    for i = 11, #ARGV, 4 do
      local id, run_at = ARGV[i], tonumber(ARGV[i + 3])
      rcall('HSET', KEYS[5], id, ARGV[i + 1])
      rcall('HSET', KEYS[8], id, ARGV[i + 2])
      if run_at > now then
        rcall('ZADD', KEYS[3], run_at, id)
        rcall('HSET', KEYS[6], id, state_json('scheduled', now, { run_at = run_at }))
        queued = true
      elseif claim_token ~= '' and result == 1 then
        -- Leased as fetch.lua leases a job for its first attempt.
        rcall('HSET', KEYS[7], id, 1)
        rcall('ZADD', KEYS[2], ARGV[9], id)
        rcall('HSET', KEYS[10], id, claim_token)
        rcall('HSET', KEYS[6], id, running_state(claim_token))
        result = id
      else
        rcall('LPUSH', KEYS[1], id)
        rcall('HSET', KEYS[6], id, state_json('queued', now))
        queued = true
      end
    end
  end
  rcall('ZREM', KEYS[2], parent)
  rcall('HDEL', KEYS[10], parent)
  rcall('HSET', KEYS[6], parent, ARGV[5])
  append_log(KEYS[9], parent, ARGV[6])
  rcall('ZADD', KEYS[4], now_s, parent)
  if queued then notify(KEYS[12]) end
  return { result }
end
local parents, tokens, at = {}, {}, {}
local i = 2
while i <= #ARGV do
  parents[#parents + 1] = ARGV[i]
  tokens[#tokens + 1] = ARGV[i + 1]
  at[#at + 1] = i
  i = i + 9 + 4 * tonumber(ARGV[i + 8])
end
local holders = hmget(KEYS[10], parents)

local out = {}
local seen = {}
-- No attempts entry for new jobs: an absent count reads as 0 everywhere.
local data, maxes, states, ready, scheduled = {}, {}, {}, {}, {}
local finished, done, log_ids, log_entries = {}, {}, {}, {}
local claimed, running, leases, running_states = {}, {}, {}, {}
local queued
for k = 1, #parents do
  local p = at[k]
  local parent = parents[k]
  if holders[k] ~= tokens[k] or seen[parent] then
    out[k] = 0
  else
    seen[parent] = true
    out[k] = 1
    local n = tonumber(ARGV[p + 8])
    local claim_token = ARGV[p + 6]
    if rcall('HSETNX', KEYS[11], ARGV[p + 2], ARGV[p + 5]) == 1 then
      for j = p + 9, p + 8 + 4 * n, 4 do
        local id, json, max, run_at = ARGV[j], ARGV[j + 1], ARGV[j + 2], tonumber(ARGV[j + 3])
        data[#data + 1] = id
        data[#data + 1] = json
        maxes[#maxes + 1] = id
        maxes[#maxes + 1] = max
        states[#states + 1] = id
        if run_at > now then
          scheduled[#scheduled + 1] = ARGV[j + 3]
          scheduled[#scheduled + 1] = id
          states[#states + 1] = state_json('scheduled', now, { run_at = run_at })
        elseif claim_token ~= '' and out[k] == 1 then
          out[k] = id
          claimed[#claimed + 1] = id
          claimed[#claimed + 1] = 1
          running[#running + 1] = ARGV[p + 7]
          running[#running + 1] = id
          leases[#leases + 1] = id
          leases[#leases + 1] = claim_token
          local st = running_states[claim_token]
          if not st then
            st = running_state(claim_token)
            running_states[claim_token] = st
          end
          states[#states + 1] = st
        else
          ready[#ready + 1] = id
          queued = queued or state_json('queued', now)
          states[#states + 1] = queued
        end
      end
    end
    finished[#finished + 1] = parent
    states[#states + 1] = parent
    states[#states + 1] = ARGV[p + 3]
    if ARGV[p + 4] ~= '' then
      log_ids[#log_ids + 1] = parent
      log_entries[#log_entries + 1] = ARGV[p + 4]
    end
    done[#done + 1] = now_s
    done[#done + 1] = parent
  end
end

if #finished > 0 then
  if #data > 0 then
    call_sliced('HSET', KEYS[5], data, 2)
    call_sliced('HSET', KEYS[8], maxes, 2)
  end
  if #scheduled > 0 then call_sliced('ZADD', KEYS[3], scheduled, 2) end
  if #ready > 0 then call_sliced('LPUSH', KEYS[1], ready, 1) end
  call_sliced('ZREM', KEYS[2], finished, 1)
  call_sliced('HDEL', KEYS[10], finished, 1)
  if #claimed > 0 then
    call_sliced('HSET', KEYS[7], claimed, 2)
    call_sliced('ZADD', KEYS[2], running, 2)
    call_sliced('HSET', KEYS[10], leases, 2)
  end
  call_sliced('HSET', KEYS[6], states, 2)
  append_logs(KEYS[9], log_ids, log_entries)
  call_sliced('ZADD', KEYS[4], done, 2)
  if #ready > 0 or #scheduled > 0 then notify(KEYS[12]) end
end
return out
