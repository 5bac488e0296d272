-- One round trip decides a create-web-call or a preflight, atomically:
-- origin entry -> (body) -> agent grant -> every rate limit, all or nothing.
-- A refusal is written to the usage stream here too, so saying no costs one round trip.
-- Keys are built from the prefix inside the script: single-node Redis (or Sentinel) only.
local prefix, mode, implicit = ARGV[1], ARGV[2], ARGV[3] == '1'
local n_cand = tonumber(ARGV[4])
local at = 5 + n_cand
local agent, body_status, body_code = ARGV[at], ARGV[at + 1], ARGV[at + 2]
local ip, ip_limits = ARGV[at + 3], ARGV[at + 4]
local origin_day, agent_day, maxlen = tonumber(ARGV[at + 5]), tonumber(ARGV[at + 6]), ARGV[at + 7]
local fields_from = at + 8
local problems = {}

local function safe(...)
  local res = redis.pcall(...)
  if type(res) == 'table' and res.err then
    problems[#problems + 1] = select(2, ...) .. ': ' .. res.err
    return nil
  end
  return res
end

local function record(outcome, status, entry, agent_id)
  local fields = {'outcome', outcome, 'status', status, 'entry', entry or '', 'agent_id', agent_id or ''}
  for j = fields_from, #ARGV do fields[#fields + 1] = ARGV[j] end
  local res
  if maxlen == '0' then
    res = redis.pcall('XADD', prefix .. 'usage', '*', unpack(fields))
  else
    res = redis.pcall('XADD', prefix .. 'usage', 'MAXLEN', '~', maxlen, '*', unpack(fields))
  end
  if type(res) == 'table' and res.err then problems[#problems + 1] = 'usage: ' .. res.err end
end

local function reply(...)
  local out = {...}
  out[#out + 1] = table.concat(problems, '; ')
  return out
end

-- Origin: the first candidate (exact, then wildcards) that is an allowlist entry.
local entry
for c = 1, n_cand do
  local cand = ARGV[4 + c]
  if safe('SISMEMBER', prefix .. 'origins', cand) == 1 then entry = cand break end
end
if not entry and implicit then entry = ARGV[5] end
if mode == 'preflight' then
  return reply(entry and 'allowed' or 'origin_denied', entry or '')
end
if not entry then
  record('origin_denied', '403')
  return reply('origin_denied', '')
end
if body_code ~= '' then
  record('invalid', body_status, entry, agent)
  return reply('invalid', entry)
end

-- Agent: granted to the matched entry; omitted means "the one agent", if there is one.
local grants = safe('SMEMBERS', prefix .. 'agents:' .. entry) or {}
if agent == '' then
  if #grants ~= 1 then
    local code = #grants == 0 and 'agent_denied' or 'invalid'
    record(code, #grants == 0 and '403' or '400', entry, '')
    return reply(#grants == 0 and 'agent_denied' or 'agent_required', entry)
  end
  agent = grants[1]
else
  local granted = false
  for _, g in ipairs(grants) do if g == agent then granted = true break end end
  if not granted then
    record('agent_denied', '403', entry, agent)
    return reply('agent_denied', entry, agent)
  end
end

-- Limits, on Redis's clock (shared by every gateway host). Per IP: rolling windows kept as a
-- log of admission times (exact: no double budget across a window boundary). Per origin
-- and per agent: calendar days in UTC, the unit operators think in.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = t[1] .. string.format('%06d', tonumber(t[2]))  -- unique: scripts run one at a time
local buckets = {}  -- {key, limit, rolling window ms or false, used, reset ms}
for count, window in string.gmatch(ip_limits, '(%d+):(%d+)') do
  local key = prefix .. 'rl:ip:' .. ip .. ':' .. window
  local window_ms = tonumber(window) * 1000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - window_ms)
  local used = redis.call('ZCARD', key)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  buckets[#buckets + 1] = {key, tonumber(count), window_ms, used, (tonumber(oldest) or now_ms) + window_ms}
end
local day = math.floor(now_ms / 86400000)
local function daily(name, limit)
  local key = prefix .. 'rl:' .. name .. ':day:' .. day
  buckets[#buckets + 1] = {key, limit, false, tonumber(redis.call('GET', key) or '0') or 0, (day + 1) * 86400000}
end
local function cap(key, default)
  local override = tonumber(safe('HGET', key, 'per_day') or '')
  if override then return override >= 0 and override or nil end
  return default > 0 and default or nil
end
local origin_cap = cap(prefix .. 'limits:' .. entry, origin_day)
if origin_cap then daily('origin:' .. entry, origin_cap) end
local agent_cap = cap(prefix .. 'limits:agent:' .. agent, agent_day)
if agent_cap then daily('agent:' .. agent, agent_cap) end

local blocked
for _, b in ipairs(buckets) do
  if b[4] >= b[2] and (not blocked or b[5] > blocked[5]) then blocked = b end
end
local function seconds(ms) return tostring(math.ceil(ms / 1000)) end
if blocked then
  record('rate_limited', '429', entry, agent)
  return reply('rate_limited', entry, agent, tostring(blocked[2]), '0', seconds(blocked[5]), seconds(blocked[5] - now_ms))
end

local tightest
for _, b in ipairs(buckets) do
  if b[3] then
    redis.call('ZADD', b[1], now_ms, member)
    redis.call('PEXPIRE', b[1], b[3])
  elseif redis.call('INCR', b[1]) == 1 then
    redis.call('PEXPIREAT', b[1], b[5] + 1000)
  end
  local left = b[2] - b[4] - 1
  if not tightest or left < tightest[2] then tightest = {b[2], left, b[5]} end
end
tightest = tightest or {0, 0, 0}
return reply('ok', entry, agent, tostring(tightest[1]), tostring(tightest[2]), seconds(tightest[3]), '0')
