-- fire_periodic: enqueue a periodic unit for one tick, once, however many servers try.
-- KEYS[1] difo:periodic (hash: name -> last tick fired)   KEYS[2] queues (set)
-- KEYS[3] queue:NAME   KEYS[4] difo:wake:NAME
-- ARGV[1] periodic name   ARGV[2] tick (epoch seconds)   ARGV[3] queue name   ARGV[4] payload
-- Returns 1 when this call enqueued the tick's unit, 0 when the tick was already fired.
local last = redis.call('HGET', KEYS[1], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('LPUSH', KEYS[3], ARGV[4])
if redis.call('LLEN', KEYS[4]) < 16 then
  redis.call('LPUSH', KEYS[4], '1')
end
return 1
