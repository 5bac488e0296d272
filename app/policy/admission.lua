-- One round trip decides a create-web-call or a preflight, atomically:
-- origin entry -> (body) -> agent grant -> every rate limit, all or nothing.
-- A refusal is written to the usage stream here too, so saying no costs one round trip.
-- Input: ARGV[1], one JSON request; output: one JSON reply (app/policy/admission.py).
-- Keys are built from the prefix inside the script: single-node Redis (or Sentinel) only.
local req = cjson.decode(ARGV[1])
local prefix = req.prefix
local problems = {}

local function safe(...)
  local res = redis.pcall(...)
  if type(res) == 'table' and res.err then
    problems[#problems + 1] = select(2, ...) .. ': ' .. res.err
    return nil
  end
  return res
end

-- The usage entry: the caller's fields in the schema's order, with what was decided here.
local function record(decided)
  local fields, usage = {}, req.usage
  for _, name in ipairs(usage.order) do
    fields[#fields + 1] = name
    fields[#fields + 1] = tostring(decided[name] or usage.values[name] or '')
  end
  local res
  if req.maxlen == 0 then
    res = redis.pcall('XADD', prefix .. 'usage', '*', unpack(fields))
  else
    res = redis.pcall('XADD', prefix .. 'usage', 'MAXLEN', '~', req.maxlen, '*', unpack(fields))
  end
  if type(res) == 'table' and res.err then problems[#problems + 1] = 'usage: ' .. res.err end
end

local function reply(decision)
  decision.problems = table.concat(problems, '; ')
  return cjson.encode(decision)
end

-- A refusal: recorded with the status and error code the caller will answer with.
local function refuse(outcome, entry, agent, reason)
  local answer = req.refusals[reason or outcome]
  record({outcome = outcome, status = answer.status, error = answer.error,
          entry = entry, agent_id = agent})
  return {outcome = outcome, reason = reason or outcome, entry = entry or '', agent_id = agent or ''}
end

-- Origin: the first candidate (exact, then wildcards) that is an allowlist entry.
local entry
for _, cand in ipairs(req.candidates) do
  if safe('SISMEMBER', prefix .. 'origins', cand) == 1 then entry = cand break end
end
if not entry and req.implicit then entry = req.candidates[1] end
if req.mode == 'preflight' then
  return reply({outcome = entry and 'admitted' or 'origin_denied', entry = entry or ''})
end
if not entry then return reply(refuse('origin_denied')) end

local agent = req.agent_id
if req.body_error then
  record({outcome = 'invalid', status = req.body_error.status, error = req.body_error.error,
          entry = entry, agent_id = agent})
  return reply({outcome = 'invalid', reason = 'body', entry = entry, agent_id = agent})
end

-- Agent: granted to the matched entry; omitted means "the one agent", if there is one.
local grants = safe('SMEMBERS', prefix .. 'agents:' .. entry) or {}
if agent == '' then
  if #grants == 0 then return reply(refuse('agent_denied', entry, '')) end
  if #grants > 1 then return reply(refuse('invalid', entry, '', 'agent_required')) end
  agent = grants[1]
else
  local granted = false
  for _, g in ipairs(grants) do if g == agent then granted = true break end end
  if not granted then return reply(refuse('agent_denied', entry, agent)) end
end

-- Limits, on Redis's clock (shared by every gateway host). Per IP: rolling windows kept as a
-- log of admission times (exact: no double budget across a window boundary). Per origin
-- and per agent: calendar days in UTC, the unit operators think in.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = t[1] .. string.format('%06d', tonumber(t[2]))  -- unique: scripts run one at a time
local buckets = {}
for _, ip_limit in ipairs(req.ip_limits) do
  local key = prefix .. 'rl:ip:' .. req.ip_bucket .. ':' .. ip_limit.window
  local window_ms = ip_limit.window * 1000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - window_ms)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  buckets[#buckets + 1] = {key = key, limit = ip_limit.count, window_ms = window_ms,
                           used = redis.call('ZCARD', key),
                           reset_ms = (tonumber(oldest) or now_ms) + window_ms}
end
local day = math.floor(now_ms / 86400000)
local function daily(name, limit)
  local key = prefix .. 'rl:' .. name .. ':day:' .. day
  buckets[#buckets + 1] = {key = key, limit = limit, window_ms = false,
                           used = tonumber(redis.call('GET', key) or '0') or 0,
                           reset_ms = (day + 1) * 86400000}
end
-- HSET <limits key> per_day N overrides the default: 0 pauses, -1 means unlimited.
local function cap(key, default)
  local override = tonumber(safe('HGET', key, 'per_day') or '')
  if override then return override >= 0 and override or nil end
  return default > 0 and default or nil
end
local origin_cap = cap(prefix .. 'limits:' .. entry, req.origin_per_day)
if origin_cap then daily('origin:' .. entry, origin_cap) end
local agent_cap = cap(prefix .. 'limits:agent:' .. agent, req.agent_per_day)
if agent_cap then daily('agent:' .. agent, agent_cap) end

local function seconds(ms) return math.ceil(ms / 1000) end
local blocked
for _, b in ipairs(buckets) do
  if b.used >= b.limit and (not blocked or b.reset_ms > blocked.reset_ms) then blocked = b end
end
if blocked then
  local decision = refuse('rate_limited', entry, agent)
  decision.limit, decision.remaining = blocked.limit, 0
  decision.reset, decision.retry_after = seconds(blocked.reset_ms), seconds(blocked.reset_ms - now_ms)
  return reply(decision)
end

local tightest
for _, b in ipairs(buckets) do
  if b.window_ms then
    redis.call('ZADD', b.key, now_ms, member)
    redis.call('PEXPIRE', b.key, b.window_ms)
  elseif redis.call('INCR', b.key) == 1 then
    redis.call('PEXPIREAT', b.key, b.reset_ms + 1000)
  end
  local left = b.limit - b.used - 1
  if not tightest or left < tightest.remaining then
    tightest = {limit = b.limit, remaining = left, reset = seconds(b.reset_ms)}
  end
end
tightest = tightest or {limit = 0, remaining = 0, reset = 0}
return reply({outcome = 'admitted', entry = entry, agent_id = agent, limit = tightest.limit,
              remaining = tightest.remaining, reset = tightest.reset, retry_after = 0})
