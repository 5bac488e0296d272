-- A chat after admission, one round trip each (app/usage/chats.py):
--   created:  Retell made it; write its record and its live slot (scored by its token's
--             expiry) and its usage entry; sweep a few expired chats
--   failed:   Retell did not; its usage entry; sweep a few expired chats
--   message:  may the visitor send one more? entry still allowlisted, agent still granted,
--             chat known and not ended, the per-chat rolling rate and the cap; all or
--             nothing, counting the message
--   status:   the entry and agent checks, counting nothing: whether it ended (the history)
--   ended:    mark it ended (once) and write its end entry with its message count
--   sweep:    end chats whose token expired (bounded), each with its end entry
-- Input: ARGV[1], one JSON request; output: one JSON reply (both through common.lua).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = prefix .. 'chats:live'

local function record_of(chat_id)
  local flat = safe('HGETALL', prefix .. 'chat:' .. chat_id) or {}
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  return record
end

-- Closes a chat that is not closed yet: its end entry, with what the record says.
local function close(chat_id, record, outcome, usage)
  redis.call('HSET', prefix .. 'chat:' .. chat_id, 'ended', '1', 'ended_ms', now)
  redis.call('ZREM', live, chat_id)
  usage = usage or {}
  if (usage.ts or '') == '' then usage.ts = now end
  usage.kind, usage.outcome, usage.chat_id = 'chat', outcome, chat_id
  usage.origin, usage.entry, usage.agent_id = record.origin, record.entry, record.agent_id
  usage.messages = record.messages or '0'
  xadd('usage', req.usage_order, usage)
end

-- Chats whose token expired (past a grace for clock differences between hosts), oldest first.
local looked = 0
local function sweep(limit)
  local swept = {}
  local due = redis.call('ZRANGEBYSCORE', live, '-inf', now - req.sweep_grace_ms,
                         'LIMIT', 0, limit)
  looked = #due
  for _, chat_id in ipairs(due) do
    local record = record_of(chat_id)
    if record.entry and record.ended ~= '1' then
      close(chat_id, record, 'expired', {request_id = req.request_id})
      swept[#swept + 1] = chat_id
    else
      redis.call('ZREM', live, chat_id)  -- its record is gone, or it ended already
    end
  end
  return swept
end

-- What a visitor's request on a chat must pass: its entry is allowlisted, its agent granted.
local function check()
  local listed = req.implicit or safe('SISMEMBER', prefix .. 'origins', req.entry) == 1
  if not listed then return {outcome = 'origin_denied', listed = false} end
  if safe('SISMEMBER', prefix .. 'chat-agents:' .. req.entry, req.agent_id) ~= 1 then
    return {outcome = 'agent_denied', listed = true}
  end
  local record = record_of(req.chat_id)
  return nil, record, not record.entry or record.ended == '1'
end

-- A spooled write replayed (app/usage/spool.py): applied once, by its spool line's id; a
-- chat whose record exists was written the first time after all.
if req.replay then
  local chat_id = req.usage.chat_id or ''
  local written = chat_id ~= '' and redis.call('EXISTS', prefix .. 'chat:' .. chat_id) == 1
  local marker = prefix .. 'replayed:' .. req.replay
  if written or not redis.call('SET', marker, req.op, 'NX', 'PX', req.record_ttl_ms) then
    return reply({outcome = 'duplicate'})
  end
end

if req.op == 'created' then
  local key = prefix .. 'chat:' .. req.chat_id
  redis.call('HSET', key, 'entry', req.entry, 'origin', req.origin, 'agent_id', req.agent_id,
             'created_ms', now, 'expires_ms', req.expires_ms, 'messages', '0', 'ended', '0',
             'request_id', req.usage.request_id)
  redis.call('PEXPIREAT', key, req.expires_ms + req.record_ttl_ms)
  redis.call('ZADD', live, req.expires_ms, req.chat_id)
  xadd('usage', req.usage_order, req.usage)
  return reply({outcome = 'created', swept = sweep(req.sweep_batch)})
end

if req.op == 'failed' then
  xadd('usage', req.usage_order, req.usage)
  return reply({outcome = 'failed', swept = sweep(req.sweep_batch)})
end

if req.op == 'message' then
  local refused, record, ended = check()
  if refused then return reply(refused) end
  if ended then return reply({outcome = 'chat_ended', listed = true}) end
  local sent = tonumber(record.messages) or 0
  if req.max_messages > 0 and sent >= req.max_messages then
    return reply({outcome = 'message_limit', listed = true, limit = req.max_messages})
  end
  if req.per_minute > 0 then
    local window = prefix .. 'rl:chat:messages:' .. req.chat_id
    redis.call('ZREMRANGEBYSCORE', window, '-inf', now - 60000)
    if redis.call('ZCARD', window) >= req.per_minute then
      local oldest = tonumber(redis.call('ZRANGE', window, 0, 0, 'WITHSCORES')[2]) or now
      return reply({outcome = 'rate_limited', listed = true, limit = req.per_minute,
                    retry_after = math.max(1, math.ceil((oldest + 60000 - now) / 1000)),
                    reset = math.ceil((oldest + 60000) / 1000)})
    end
    redis.call('ZADD', window, now, tostring(sent + 1))  -- the count is unique per chat
    redis.call('PEXPIRE', window, 60000)
  end
  local count = redis.call('HINCRBY', prefix .. 'chat:' .. req.chat_id, 'messages', 1)
  return reply({outcome = 'admitted', listed = true, messages = count})
end

if req.op == 'status' then
  local refused, record, ended = check()
  if refused then return reply(refused) end
  return reply({outcome = 'admitted', listed = true, ended = ended,
                messages = tonumber(record.messages) or 0})
end

if req.op == 'ended' then
  local listed = req.implicit or safe('SISMEMBER', prefix .. 'origins', req.entry) == 1
  local record = record_of(req.chat_id)
  if not record.entry then return reply({outcome = 'unknown', listed = listed}) end
  if record.ended == '1' then return reply({outcome = 'already', listed = listed}) end
  close(req.chat_id, record, 'ended', req.usage)
  return reply({outcome = 'ended', listed = listed, messages = tonumber(record.messages) or 0})
end

if req.op == 'sweep' then
  local swept = sweep(req.batch)
  return reply({outcome = 'swept', swept = swept, looked = looked})
end

return redis.error_reply('unknown op')
