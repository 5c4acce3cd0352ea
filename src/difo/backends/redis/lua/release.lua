-- release: move staged units to their queues (head or tail) or to the dead set.
-- KEYS[1] difo:staging:ID   KEYS[2] queues (set)   KEYS[3] dead (zset)
-- KEYS[4..] two keys per unit: its queue:NAME list and its difo:wake:NAME list
-- ARGV[1] dead max entries   ARGV[2] dead max age (seconds), then 4 values per unit:
--   ref, where ('head' | 'tail' | 'dead'), queue name, payload
-- Returns how many units were moved (refs no longer staged are skipped).
local moved = 0
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local killed = false
for i = 0, (#ARGV - 2) / 4 - 1 do
  local base = 3 + i * 4
  local ref, where, name, payload = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  if redis.call('HDEL', KEYS[1], ref) == 1 then
    if where == 'dead' then
      redis.call('ZADD', KEYS[3], string.format('%.6f', now), payload)
      killed = true
    else
      redis.call('SADD', KEYS[2], name)
      if where == 'tail' then
        redis.call('RPUSH', KEYS[4 + 2 * i], payload)
      else
        redis.call('LPUSH', KEYS[4 + 2 * i], payload)
      end
      if redis.call('LLEN', KEYS[5 + 2 * i]) < 16 then
        redis.call('LPUSH', KEYS[5 + 2 * i], '1')
      end
    end
    moved = moved + 1
  end
end
if killed then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%.6f', now - tonumber(ARGV[2])))
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[1]))
end
return moved
