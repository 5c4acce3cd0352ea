-- kill: move an in-flight or staged unit to the dead set, then trim it as Sidekiq does.
-- KEYS[1] the record holding the unit (difo:inflight:ID or difo:staging:ID)
-- KEYS[2] difo:started:ID   KEYS[3] dead (zset)
-- ARGV[1] ref   ARGV[2] payload to keep   ARGV[3] max entries   ARGV[4] max age (seconds)
-- Returns 1 when moved, 0 when the ref was not in the record (nothing written).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZADD', KEYS[3], string.format('%.6f', now), ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%.6f', now - tonumber(ARGV[4])))
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[3]))
return 1
