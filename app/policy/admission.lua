-- One round trip decides a create-web-call, a chat's start or a preflight, atomically:
-- origin entry -> (body) -> agent grant -> every rate limit, all or nothing.
-- kind "chat" reads the chat grants and counts the chat limits (their own keys); minute
-- budgets and concurrency caps are for calls only.
-- A refusal is written to the usage stream here too, so saying no costs one round trip.
-- Input: ARGV[1], one JSON request; output: one JSON reply (app/policy/admission.py); the
-- request, safe(), record() and reply() are common.lua's.
-- Keys are built from the prefix inside the script: single-node Redis (or Sentinel) only.
local chat = req.kind == 'chat'

-- A refusal: recorded with the status and error code the caller will answer with.
local function refuse(outcome, entry, agent, reason)
  local answer = req.refusals[reason or outcome]
  record({outcome = outcome, status = answer.status, error = answer.error,
          entry = entry, agent_id = agent})
  return {outcome = outcome, reason = reason or outcome, entry = entry or '', agent_id = agent or ''}
end

local entry = origin_entry()
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
local grants = safe('SMEMBERS', prefix .. (chat and 'chat-agents:' or 'agents:') .. entry) or {}
if agent == '' then
  if #grants == 0 then return reply(refuse('agent_denied', entry, '')) end
  if #grants > 1 then return reply(refuse('invalid', entry, '', 'agent_required')) end
  agent = grants[1]
else
  local granted = false
  for _, g in ipairs(grants) do if g == agent then granted = true break end end
  if not granted then return reply(refuse('agent_denied', entry, agent)) end
end

-- Per-entry and per-agent settings, read live: HSET widget:limits:<entry> per_day N ...
-- A stored value overrides the default: N >= 0 is the limit (0 pauses), -1 means none.
local origin_limits = safe('HMGET', prefix .. 'limits:' .. entry, 'per_day', 'minutes_per_day',
                           'minutes_per_month', 'max_concurrent', 'verify', 'transcript',
                           'chats_per_day') or {}
local agent_limits = safe('HMGET', prefix .. 'limits:agent:' .. agent, 'per_day',
                          'minutes_per_day', 'minutes_per_month', 'chats_per_day') or {}

-- Verification, before any limit is counted: an unverified flood spends nothing.
local policy = origin_limits[5] or req.verify_default
if policy == '' then policy = req.verify_default end
if policy ~= 'none' then
  if not req.providers_ready[policy] then  -- unknown, or its keys are missing: fail closed
    local decision = refuse('verification_unavailable', entry, agent)
    decision.provider = policy
    return reply(decision)
  end
  if req.verified then
    if req.verified ~= policy then return reply(refuse('verification_failed', entry, agent)) end
  elseif req.has_token then  -- the route checks the token, then asks again with `verified`
    return reply({outcome = 'verify', reason = 'verify', provider = policy, entry = entry,
                  agent_id = agent})
  else
    local decision = refuse('verification_required', entry, agent)
    decision.provider = policy
    return reply(decision)
  end
end

-- Limits, on Redis's clock (shared by every gateway host). Per IP: rolling windows kept as a
-- log of admission times (exact: no double budget across a window boundary). Per origin
-- and per agent: calendar days in UTC, the unit operators think in.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = t[1] .. string.format('%06d', tonumber(t[2]))  -- unique: scripts run one at a time
local buckets = {}
local rl = prefix .. (chat and 'rl:chat:' or 'rl:')  -- chats are counted apart from calls
for _, ip_limit in ipairs(chat and req.chat.ip_limits or req.ip_limits) do
  local key = rl .. 'ip:' .. req.ip_bucket .. ':' .. ip_limit.window
  local window_ms = ip_limit.window * 1000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - window_ms)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  buckets[#buckets + 1] = {key = key, limit = ip_limit.count, window_ms = window_ms,
                           used = redis.call('ZCARD', key),
                           reset_ms = (tonumber(oldest) or now_ms) + window_ms}
end
local day = math.floor(now_ms / 86400000)
local function daily(name, limit)
  local key = rl .. name .. ':day:' .. day
  buckets[#buckets + 1] = {key = key, limit = limit, window_ms = false,
                           used = tonumber(redis.call('GET', key) or '0') or 0,
                           reset_ms = (day + 1) * 86400000}
end
local function setting(stored, default)
  local override = tonumber(stored or '')
  if override then return override >= 0 and override or nil end
  return default > 0 and default or nil
end
local origin_cap, agent_cap
if chat then
  origin_cap = setting(origin_limits[7], req.chat.origin_per_day)
  agent_cap = setting(agent_limits[4], req.chat.agent_per_day)
else
  origin_cap = setting(origin_limits[1], req.origin_per_day)
  agent_cap = setting(agent_limits[1], req.agent_per_day)
end
if origin_cap then daily('origin:' .. entry, origin_cap) end
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

-- Minute budgets: a call reserves its longest possible length in every budget that applies
-- (like a card authorisation); the call_ended webhook settles it (settle.lua).
local function civil(days)  -- days since 1970-01-01 -> year, month, day (proleptic Gregorian)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  return yoe + era * 400 + (m <= 2 and 1 or 0), m, doy - math.floor((153 * mp + 2) / 5) + 1
end
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * (m > 2 and m - 3 or m + 9) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end
local year, month, mday = civil(day)
local day_name = string.format('%04d-%02d-%02d', year, month, mday)
local month_name = string.format('%04d-%02d', year, month)
local month_end_ms = (month == 12 and days_from_civil(year + 1, 1, 1)
                      or days_from_civil(year, month + 1, 1)) * 86400000
local budgets = {}
local function budget(scope, stored, default, period, end_ms)
  local minutes = setting(stored, default)
  if not minutes then return end
  local key = prefix .. 'minutes:' .. scope .. ':' .. period
  budgets[#budgets + 1] = {key = key, left_ms = minutes * 60000 - (tonumber(redis.call('GET', key) or '0') or 0),
                           end_ms = end_ms}
end
if not chat then  -- a chat bills by message, not by the minute
  budget('origin:' .. entry, origin_limits[2], req.minutes.origin_day, day_name, (day + 1) * 86400000)
  budget('origin:' .. entry, origin_limits[3], req.minutes.origin_month, month_name, month_end_ms)
  budget('agent:' .. agent, agent_limits[2], req.minutes.agent_day, day_name, (day + 1) * 86400000)
  budget('agent:' .. agent, agent_limits[3], req.minutes.agent_month, month_name, month_end_ms)
end
local reserve_ms, exhausted = req.max_call_ms, nil
for _, b in ipairs(budgets) do
  if b.left_ms < req.min_call_ms then
    if not exhausted or b.end_ms > exhausted.end_ms then exhausted = b end
  elseif b.left_ms < reserve_ms then
    reserve_ms = b.left_ms
  end
end
if exhausted then
  local decision = refuse('budget_exhausted', entry, agent)
  decision.retry_after = seconds(exhausted.end_ms - now_ms)
  return reply(decision)
end

-- Concurrency: a call is live from admission until its call_ended webhook, or until its
-- reservation (plus the join window) runs out. Members are scored by that expiry.
local live = {}
local function concurrency(key, cap)
  if not cap then return end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  if redis.call('ZCARD', key) >= cap then return true end
  live[#live + 1] = key
end
if not chat and (
    concurrency(prefix .. 'live:origin:' .. entry, setting(origin_limits[4], req.concurrent.origin))
    or concurrency(prefix .. 'live:all', setting(nil, req.concurrent.total))) then
  local decision = refuse('busy', entry, agent)
  decision.retry_after = req.busy_retry_after
  return reply(decision)
end

-- A verified token admits one call or chat, on every gateway host: kept until it expires.
if req.replay_key and not redis.call('SET', prefix .. 'verify:used:' .. req.replay_key, '1',
                                      'NX', 'PX', req.replay_ttl_ms) then
  return reply(refuse('verification_failed', entry, agent, 'verification_replayed'))
end

-- Admitted: count and reserve everything at once.
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
local counters = {}
for _, b in ipairs(budgets) do
  redis.call('INCRBY', b.key, reserve_ms)
  redis.call('PEXPIREAT', b.key, b.end_ms + req.budget_retention_ms)
  counters[#counters + 1] = b.key
end
local pending = 'pending:' .. member  -- becomes the call id once Retell answers (calls.lua)
for _, key in ipairs(live) do
  redis.call('ZADD', key, now_ms + reserve_ms + req.join_window_ms, pending)
end
-- The live transcript relay, per entry: a stored "1"/"0" overrides TRANSCRIPT_DEFAULT.
local transcript = origin_limits[6]
if transcript == '1' then transcript = true
elseif transcript == '0' then transcript = false
else transcript = req.transcript_default end
return reply({outcome = 'admitted', entry = entry, agent_id = agent, limit = tightest.limit,
              remaining = tightest.remaining, reset = tightest.reset, retry_after = 0,
              reserved_ms = reserve_ms, budgeted = #budgets > 0, counters = counters,
              live = live, pending = pending, minted_ms = now_ms,
              transcript = not chat and transcript})
