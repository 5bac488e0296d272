-- One round trip decides and records a visitor's feedback on a call (app/usage/feedback.py):
-- origin entry -> (body) -> the per-IP rolling limit -> the call, minted for that same entry
-- -> one feedback per call (HSETNX on the call record). Every attempt, accepted or not, is
-- one usage entry, written here.
-- Input: ARGV[1], one JSON request; output: one JSON reply (both through common.lua).

-- Records the attempt with the status and error code the route will answer with.
local function finish(outcome, decided, limits)
  local answer = req.answers[outcome]
  decided.outcome, decided.status, decided.error = outcome, answer.status, answer.error
  record(decided)
  local out = limits or {}
  out.outcome = outcome
  return reply(out)
end

local entry = origin_entry()
if not entry then return finish('origin_denied', {entry = ''}) end

if req.body_error then
  req.answers.invalid = req.body_error
  return finish('invalid', {entry = entry})
end

-- Per IP, rolling windows on Redis's clock. Every attempt that gets this far counts, so
-- guessing call ids spends the limit too; a 429 itself does not count.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = t[1] .. string.format('%06d', tonumber(t[2]))  -- unique: scripts run one at a time
local function seconds(ms) return math.ceil(ms / 1000) end
local buckets, blocked = {}, nil
for _, ip_limit in ipairs(req.ip_limits) do
  local key = prefix .. 'rl:feedback:ip:' .. req.ip_bucket .. ':' .. ip_limit.window
  local window_ms = ip_limit.window * 1000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - window_ms)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  local b = {key = key, limit = ip_limit.count, window_ms = window_ms,
             used = redis.call('ZCARD', key), reset_ms = (tonumber(oldest) or now_ms) + window_ms}
  buckets[#buckets + 1] = b
  if b.used >= b.limit and (not blocked or b.reset_ms > blocked.reset_ms) then blocked = b end
end
if blocked then
  return finish('rate_limited', {entry = entry},
                {limit = blocked.limit, remaining = 0, reset = seconds(blocked.reset_ms),
                 retry_after = seconds(blocked.reset_ms - now_ms)})
end
local limits = {limit = 0, remaining = 0, reset = 0}
for i, b in ipairs(buckets) do
  redis.call('ZADD', b.key, now_ms, member)
  redis.call('PEXPIRE', b.key, b.window_ms)
  local left = b.limit - b.used - 1
  if i == 1 or left < limits.remaining then
    limits = {limit = b.limit, remaining = left, reset = seconds(b.reset_ms)}
  end
end

-- The call: minted by this gateway for this same entry. Unknown and another site's answer
-- alike, so a site learns nothing about other sites' calls.
local key = prefix .. 'call:' .. req.call_id
local call = safe('HMGET', key, 'entry', 'agent_id') or {}
if call[1] ~= entry then return finish('unknown_call', {entry = entry}, limits) end

-- One feedback per call: the first HSETNX wins, on every gateway host.
if redis.call('HSETNX', key, 'feedback', req.rating) == 0 then
  return finish('feedback_exists', {entry = entry, agent_id = call[2]}, limits)
end
redis.call('HSET', key, 'feedback_ms', now_ms, 'feedback_comment', req.comment)
return finish('accepted', {entry = entry, agent_id = call[2]}, limits)
