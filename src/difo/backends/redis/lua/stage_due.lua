-- stage_due: move units whose time has come from a sorted set into a staging record, so
-- that Python can set enqueued_at before they are pushed (Lua never re-encodes payloads).
-- KEYS[1] schedule or retry (zset)   KEYS[2] difo:staging:ID (hash)
-- ARGV[1] limit   ARGV[2] ref prefix (unique for this call)
-- Returns {ref, payload, ...}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now), 'LIMIT', 0, tonumber(ARGV[1]))
if #due == 0 then
  return {}
end
local out = {}
local fields = {}
for i, payload in ipairs(due) do
  local ref = ARGV[2] .. i .. ':'
  fields[#fields + 1] = ref
  fields[#fields + 1] = payload
  out[#out + 1] = ref
  out[#out + 1] = payload
end
redis.call('ZREM', KEYS[1], unpack(due))
redis.call('HSET', KEYS[2], unpack(fields))
return out
