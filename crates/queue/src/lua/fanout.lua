-- Atomically creates calls' action jobs and finishes their call-ended jobs, one or many
-- calls per script call, each as if run in turn. Idempotent: a call fans out once,
-- whoever holds the lease.
-- KEYS (scripts.rs binds them as locals): ready_key, running_key, scheduled_key, done_key, data_key, state_key, attempts_key, max_key, log_key, lease_key, fanout_key, refs_key, notify_key, completion_key, pending_key
-- ARGV: now, then per call-ended job: parent_id, token, call_id, parent_state, parent_log,
--       ids_json, claim_token, claim_deadline_ms, n, then n times: id, max ('' for the
--       default, which is not stored), run_at_ms (0 = now; -1 = the call's completion
--       callback, `waiting` until its other action jobs have settled: lib.lua `settled`)
-- The action jobs' data is written by HSETNXs in the same MULTI, before this script: a
-- job's JSON never becomes a Lua string (Redis hashes every byte of those: 28 % of this
-- script's cost when it passed through here), and HSETNX never rewrites a job that
-- exists (the ids are `parent.index`, the same on every attempt). A fan-out that does
-- not apply (stale lease, or the call fanned out before) removes what those HSETNXs
-- created: data under an id that has no state is no job's.
-- A claim (claim_token not empty, `worker:1`) leases the call's first action job that
-- is due now to the fanning-out worker, which runs it next without a fetch: that job
-- skips the ready list, the rest are queued as usual. Only a call's first fan-out claims.
-- The action jobs' data does not repeat the call's event: they read the call-ended job's
-- (one copy per call), which `refs` keeps (parent -> action jobs not yet forgotten;
-- sweep.lua and purge.lua count down).
-- Returns per call-ended job: 0 stale lease, 1 applied, or the id of the claimed job.
local now = tonumber(ARGV[1])
local now_s = ARGV[1]

-- The state of a job claimed with `token` (fetch.lua writes the same).
local function running_state(token)
  return state_json('running', now, { worker = string.match(token, '^(.*):[^:]*$') })
end

-- The data the MULTI's HSETNXs wrote for the action jobs of a fan-out that did not apply
-- (ARGV[p + 9] on, n of them): removed unless a job of that id exists.
local function drop_unused(p, n)
  for j = p + 9, p + 6 + 3 * n, 3 do
    local id = ARGV[j]
    if rcall('HEXISTS', state_key, id) == 0 then rcall('HDEL', data_key, id) end
  end
end

if #ARGV == 10 + 3 * tonumber(ARGV[10]) then
  -- One call (a quiet worker's case): the same writes without the batch's tables.
  local parent, token, call_id = ARGV[2], ARGV[3], ARGV[4]
  local n = tonumber(ARGV[10])
  if rcall('HGET', lease_key, parent) ~= token then
    drop_unused(2, n)
    return { 0 }
  end
  local result = 1
  local queued = false
  if rcall('HSETNX', fanout_key, call_id, ARGV[7]) == 1 then
    local claim_token = ARGV[8]
    if n > 0 then rcall('HSET', refs_key, parent, n) end
    for i = 11, #ARGV, 3 do
      local id, run_at = ARGV[i], tonumber(ARGV[i + 2])
      if ARGV[i + 1] ~= '' then rcall('HSET', max_key, id, ARGV[i + 1]) end
      if run_at < 0 then
        rcall('HSET', completion_key, parent, id)
        rcall('HSET', pending_key, parent, n - 1)
        rcall('HSET', state_key, id, state_json('waiting', now))
      elseif run_at > now then
        rcall('ZADD', scheduled_key, run_at, id)
        rcall('HSET', state_key, id, state_json('scheduled', now, { run_at = run_at }))
        queued = true
      elseif claim_token ~= '' and result == 1 then
        -- Leased as fetch.lua leases a job for its first attempt.
        rcall('HSET', attempts_key, id, 1)
        rcall('ZADD', running_key, ARGV[9], id)
        rcall('HSET', lease_key, id, claim_token)
        rcall('HSET', state_key, id, running_state(claim_token))
        result = id
      else
        rcall('LPUSH', ready_key, id)
        rcall('HSET', state_key, id, state_json('queued', now))
        queued = true
      end
    end
  else
    drop_unused(2, n)
  end
  rcall('ZREM', running_key, parent)
  rcall('HDEL', lease_key, parent)
  rcall('HSET', state_key, parent, ARGV[5])
  append_log(log_key, parent, ARGV[6])
  rcall('ZADD', done_key, now_s, parent)
  if queued then notify(notify_key) end
  return { result }
end
local parents, tokens, at = {}, {}, {}
local np = 0
local i = 2
while i <= #ARGV do
  np = np + 1
  parents[np] = ARGV[i]
  tokens[np] = ARGV[i + 1]
  at[np] = i
  i = i + 9 + 3 * tonumber(ARGV[i + 8])
end
local holders = hmget(lease_key, parents)

local out = {}
local seen = {}
-- No attempts entry for new jobs: an absent count reads as 0 everywhere.
-- Explicit counters, not `#t + 1`: Lua finds a table's length by a binary search.
local maxes, states, ready, scheduled, unapplied = {}, {}, {}, {}, {}
local finished, done, log_ids, log_entries, refs = {}, {}, {}, {}, {}
local claimed, running, leases, running_states = {}, {}, {}, {}
local nm, ns, nr, nsc, nf, nl, nc, nu, nrf = 0, 0, 0, 0, 0, 0, 0, 0, 0
local queued
for k = 1, np do
  local p = at[k]
  local parent = parents[k]
  if holders[k] ~= tokens[k] or seen[parent] then
    out[k] = 0
    nu = nu + 1
    unapplied[nu] = k
  else
    seen[parent] = true
    out[k] = 1
    local n = tonumber(ARGV[p + 8])
    local claim_token = ARGV[p + 6]
    if rcall('HSETNX', fanout_key, ARGV[p + 2], ARGV[p + 5]) == 1 then
      if n > 0 then
        refs[nrf + 1] = parent
        refs[nrf + 2] = n
        nrf = nrf + 2
      end
      for j = p + 9, p + 6 + 3 * n, 3 do
        local id, run_at = ARGV[j], tonumber(ARGV[j + 2])
        if ARGV[j + 1] ~= '' then
          maxes[nm + 1] = id
          maxes[nm + 2] = ARGV[j + 1]
          nm = nm + 2
        end
        local st
        if run_at < 0 then
          rcall('HSET', completion_key, parent, id)
          rcall('HSET', pending_key, parent, n - 1)
          st = state_json('waiting', now)
        elseif run_at > now then
          scheduled[nsc + 1] = ARGV[j + 2]
          scheduled[nsc + 2] = id
          nsc = nsc + 2
          st = state_json('scheduled', now, { run_at = run_at })
        elseif claim_token ~= '' and out[k] == 1 then
          out[k] = id
          claimed[nc + 1] = id
          claimed[nc + 2] = 1
          running[nc + 1] = ARGV[p + 7]
          running[nc + 2] = id
          leases[nc + 1] = id
          leases[nc + 2] = claim_token
          nc = nc + 2
          st = running_states[claim_token]
          if not st then
            st = running_state(claim_token)
            running_states[claim_token] = st
          end
        else
          nr = nr + 1
          ready[nr] = id
          queued = queued or state_json('queued', now)
          st = queued
        end
        states[ns + 1] = id
        states[ns + 2] = st
        ns = ns + 2
      end
    else
      nu = nu + 1
      unapplied[nu] = k
    end
    nf = nf + 1
    finished[nf] = parent
    done[2 * nf - 1] = now_s
    done[2 * nf] = parent
    states[ns + 1] = parent
    states[ns + 2] = ARGV[p + 3]
    ns = ns + 2
    if ARGV[p + 4] ~= '' then
      nl = nl + 1
      log_ids[nl] = parent
      log_entries[nl] = ARGV[p + 4]
    end
  end
end

if nf > 0 then
  if nm > 0 then call_sliced('HSET', max_key, maxes, 2) end
  if nrf > 0 then call_sliced('HSET', refs_key, refs, 2) end
  if nsc > 0 then call_sliced('ZADD', scheduled_key, scheduled, 2) end
  if nr > 0 then call_sliced('LPUSH', ready_key, ready, 1) end
  call_sliced('ZREM', running_key, finished, 1)
  call_sliced('HDEL', lease_key, finished, 1)
  if nc > 0 then
    call_sliced('HSET', attempts_key, claimed, 2)
    call_sliced('ZADD', running_key, running, 2)
    call_sliced('HSET', lease_key, leases, 2)
  end
  call_sliced('HSET', state_key, states, 2)
  append_logs(log_key, log_ids, log_entries)
  call_sliced('ZADD', done_key, done, 2)
  if nr > 0 or nsc > 0 then notify(notify_key) end
end
-- After the writes above, so a call twice in one batch keeps its first fan-out's data.
for u = 1, nu do
  local k = unapplied[u]
  drop_unused(at[k], tonumber(ARGV[at[k] + 8]))
end
return out
