-- stage_due: move units whose time has come from the retry and schedule sets into a staging
-- record, so that Python can set enqueued_at before they are pushed (Lua never re-encodes).
-- KEYS[1] difo:staging:ID (hash)   KEYS[2..] the sorted sets to look in (retry, schedule)
-- ARGV[1] limit per set   ARGV[2] ref prefix (unique for this call)
-- Returns {ref, payload, ...}; refs are the prefix, the set's position, '.', a counter, ':'.
local clock = redis.call('TIME')
local now = string.format('%d.%06d', clock[1], clock[2])
local out = {}
local fields = {}
for k = 2, #KEYS do
  local due = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
  if #due > 0 then
    for i, payload in ipairs(due) do
      local ref = ARGV[2] .. k .. '.' .. i .. ':'
      fields[#fields + 1] = ref
      fields[#fields + 1] = payload
      out[#out + 1] = ref
      out[#out + 1] = payload
    end
    redis.call('ZREM', KEYS[k], unpack(due))
  end
end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
end
return out
