-- What happens to a call after admission, one round trip each (app/usage/calls.py):
--   created:  Retell minted it; write its record, move its live slots from the pending
--             member to the call id, and its usage entry
--   released: Retell did not; give its reservation back at once, and its usage entry
--   event:    a verified webhook (or reconcile) about it; call_ended settles the minutes
--             (the reservation is replaced by the real duration, in the period it was
--             reserved in) and frees its live slots; one call-events entry
-- Input: ARGV[1], one JSON request; output: one JSON reply (both through common.lua).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A spooled write replayed (app/usage/spool.py): applied once, by its spool line's id; a
-- created call whose record exists was written the first time after all.
if req.replay then
  local written = req.op == 'created' and redis.call('EXISTS', prefix .. 'call:' .. req.call_id) == 1
  local marker = prefix .. 'replayed:' .. req.replay
  if written or not redis.call('SET', marker, req.op, 'NX', 'PX', req.record_ttl_ms) then
    return reply({outcome = 'duplicate'})
  end
end

if req.op == 'created' then
  local key = prefix .. 'call:' .. req.call_id
  redis.call('HSET', key, 'entry', req.entry, 'origin', req.origin, 'agent_id', req.agent_id,
             'minted_ms', req.minted_ms, 'reserved_ms', req.reserved_ms,
             'counters', cjson.encode(req.counters), 'live', cjson.encode(req.live),
             'settled', '0', 'request_id', req.usage.request_id)
  redis.call('PEXPIRE', key, req.record_ttl_ms)
  for _, live in ipairs(req.live) do
    local expires = redis.call('ZSCORE', live, req.pending)
    redis.call('ZREM', live, req.pending)
    if expires then redis.call('ZADD', live, expires, req.call_id) end
  end
  local open = prefix .. 'calls:open'
  redis.call('ZADD', open, req.minted_ms + req.reserved_ms + req.join_window_ms, req.call_id)
  redis.call('ZREMRANGEBYSCORE', open, '-inf', now_ms() - req.record_ttl_ms)  -- records gone
  xadd('usage', req.usage_order, req.usage)
  return reply({outcome = 'created'})
end

if req.op == 'released' then
  for _, counter in ipairs(req.counters) do
    if redis.call('EXISTS', counter) == 1 then redis.call('DECRBY', counter, req.reserved_ms) end
  end
  for _, live in ipairs(req.live) do redis.call('ZREM', live, req.pending) end
  xadd('usage', req.usage_order, req.usage)
  return reply({outcome = 'released'})
end

if req.op == 'event' then
  local now = now_ms()
  redis.call('SET', prefix .. 'webhooks:last', now)  -- any verified event: they do arrive
  local key = prefix .. 'call:' .. req.call_id
  local flat = redis.call('HGETALL', key)
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  if not record.entry then return reply({outcome = 'unknown'}) end  -- not minted here (a phone call)
  local seen = prefix .. 'webhook:' .. req.call_id .. ':' .. req.event
  if not redis.call('SET', seen, '1', 'NX', 'PX', req.record_ttl_ms) then
    return reply({outcome = 'duplicate'})  -- Retell retries until it gets a 2xx
  end
  local event = req.values
  if req.event == 'call_ended' and record.settled ~= '1' then
    local delta = (tonumber(event.duration_ms) or 0) - (tonumber(record.reserved_ms) or 0)
    for _, counter in ipairs(cjson.decode(record.counters or '[]')) do
      if redis.call('EXISTS', counter) == 1 then redis.call('INCRBY', counter, delta) end
    end
    for _, live in ipairs(cjson.decode(record.live or '[]')) do
      redis.call('ZREM', live, req.call_id)
    end
    redis.call('ZREM', prefix .. 'calls:open', req.call_id)
    redis.call('HSET', key, 'settled', '1', 'duration_ms', event.duration_ms or '0',
               'ended_ms', now)
  end
  if event.cost_cents and event.cost_cents ~= '' then
    redis.call('HSET', key, 'cost_cents', event.cost_cents)
  end
  event.entry, event.origin, event.agent_id = record.entry, record.origin, record.agent_id
  event.ts = now
  xadd('call-events', req.order, event)
  return reply({outcome = 'accepted'})
end

return redis.error_reply('unknown op')
