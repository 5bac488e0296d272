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

-- Limits: fixed windows aligned to the epoch, on the server's clock (shared by all hosts).
local now = tonumber(redis.call('TIME')[1])
local buckets = {}
local function bucket(name, limit, window)
  local index = math.floor(now / window)
  buckets[#buckets + 1] = {prefix .. 'rl:' .. name .. ':' .. window .. ':' .. index, limit, (index + 1) * window}
end
for count, window in string.gmatch(ip_limits, '(%d+):(%d+)') do
  bucket('ip:' .. ip, tonumber(count), tonumber(window))
end
local function cap(key, default)
  local override = tonumber(safe('HGET', key, 'per_day') or '')
  if override then return override >= 0 and override or nil end
  return default > 0 and default or nil
end
local origin_cap = cap(prefix .. 'limits:' .. entry, origin_day)
if origin_cap then bucket('origin:' .. entry, origin_cap, 86400) end
local agent_cap = cap(prefix .. 'limits:agent:' .. agent, agent_day)
if agent_cap then bucket('agent:' .. agent, agent_cap, 86400) end

local keys = {}
for b = 1, #buckets do keys[b] = buckets[b][1] end
local counts = #keys > 0 and redis.call('MGET', unpack(keys)) or {}
local blocked
for b = 1, #buckets do
  local used = tonumber(counts[b] or '0') or 0
  if used >= buckets[b][2] and (not blocked or buckets[b][3] > blocked[3]) then blocked = buckets[b] end
end
if blocked then
  record('rate_limited', '429', entry, agent)
  return reply('rate_limited', entry, agent, tostring(blocked[2]), '0', tostring(blocked[3]), tostring(blocked[3] - now))
end

local tightest
for b = 1, #buckets do
  local used = redis.call('INCR', buckets[b][1])
  if used == 1 then redis.call('EXPIRE', buckets[b][1], buckets[b][3] - now + 1) end
  local left = buckets[b][2] - used
  if not tightest or left < tightest[2] then tightest = {buckets[b][2], left, buckets[b][3]} end
end
tightest = tightest or {0, 0, 0}
return reply('ok', entry, agent, tostring(tightest[1]), tostring(tightest[2]), tostring(tightest[3]), '0')
