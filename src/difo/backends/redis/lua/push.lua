-- push: append units to a queue, register the queue, wake one idle server per unit.
-- KEYS[1] queues (set)   KEYS[2] queue:NAME (list)   KEYS[3] difo:wake:NAME (list)
-- ARGV[1] queue name     ARGV[2..] payloads, oldest first
-- Returns the queue's length.
-- The wake list is capped: tokens only say "look now"; the claim clears stale ones.
redis.call('SADD', KEYS[1], ARGV[1])
local length = redis.call('LPUSH', KEYS[2], unpack(ARGV, 2))
if redis.call('LLEN', KEYS[3]) < 16 then
  redis.call('LPUSH', KEYS[3], '1')
end
return length
