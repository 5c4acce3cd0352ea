-- requeue: put in-flight units back at the tail of their queues (the end popped next).
-- KEYS[1] difo:inflight:ID   KEYS[2] difo:started:ID   KEYS[3..] queue:NAME, one per unit
-- ARGV[1..] refs, one per queue key, the one to run first given last
-- Returns how many units were put back (refs no longer in flight are skipped).
local moved = 0
for i = 1, #ARGV do
  local payload = redis.call('HGET', KEYS[1], ARGV[i])
  if payload then
    redis.call('RPUSH', KEYS[2 + i], payload)
    redis.call('HDEL', KEYS[1], ARGV[i])
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('SREM', KEYS[2], unpack(ARGV))
end
return moved
