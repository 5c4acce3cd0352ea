-- move_to_dead: take one entry out of a sorted set (retry or schedule) into the dead set,
-- trimmed as Sidekiq trims it: the API's "kill".
-- KEYS[1] the source zset   KEYS[2] dead (zset)
-- ARGV[1] the entry as stored   ARGV[2] payload to keep   ARGV[3] max entries
-- ARGV[4] max age (seconds)
-- Returns 1 when moved, 0 when the entry was no longer in the set.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZADD', KEYS[2], string.format('%.6f', now), ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.6f', now - tonumber(ARGV[4])))
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[3]))
return 1
