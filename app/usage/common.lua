-- Shared by every script of ours, put in front of each by app/usage/scripts.py (Redis runs
-- one script text, so this is how they share code): the JSON request (ARGV[1]), the
-- problems met on the way (a write that failed is reported with the reply, not raised: the
-- decision still stands), and the stream writers.
local req = cjson.decode(ARGV[1])
local prefix = req.prefix
local problems = {}

-- redis.pcall, with a failure kept as a problem: nil then.
local function safe(...)
  local res = redis.pcall(...)
  if type(res) == 'table' and res.err then
    problems[#problems + 1] = select(2, ...) .. ': ' .. res.err
    return nil
  end
  return res
end

-- The request's allowlist entry: the first of its origin's candidates (exact, then
-- wildcards) that is one; with req.implicit, the origin itself. nil: not allowed.
local function origin_entry()
  for _, cand in ipairs(req.candidates or {}) do
    if safe('SISMEMBER', prefix .. 'origins', cand) == 1 then return cand end
  end
  if req.implicit then return req.candidates[1] end
end

-- One stream entry, its fields in `order` (a missing value is empty), capped at req.maxlen.
local function xadd(stream, order, values)
  local fields = {}
  for _, name in ipairs(order) do
    fields[#fields + 1] = name
    fields[#fields + 1] = tostring(values[name] or '')
  end
  local res
  if req.maxlen == 0 then
    res = redis.pcall('XADD', prefix .. stream, '*', unpack(fields))
  else
    res = redis.pcall('XADD', prefix .. stream, 'MAXLEN', '~', req.maxlen, '*', unpack(fields))
  end
  if type(res) == 'table' and res.err then problems[#problems + 1] = stream .. ': ' .. res.err end
end

-- The usage entry: the caller's fields in the schema's order, with what was decided here.
local function record(decided)
  local values = {}
  for _, name in ipairs(req.usage_order) do values[name] = decided[name] or req.usage[name] end
  xadd('usage', req.usage_order, values)
end

-- The JSON reply, with the problems met.
local function reply(decision)
  decision.problems = table.concat(problems, '; ')
  return cjson.encode(decision)
end

