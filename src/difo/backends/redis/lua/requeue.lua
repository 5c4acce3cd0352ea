-- requeue: put in-flight units back at the tail of their queues (the end popped next).
-- KEYS[1] difo:inflight:ID   KEYS[2] difo:started:ID   KEYS[3] queues (set)
-- KEYS[4..] two keys per unit: its queue:NAME list and its difo:wake:NAME list
-- ARGV two values per unit: its ref and its queue name; the unit to run first given last
-- Returns how many units were put back (refs no longer in flight are skipped).
local moved = 0
local refs = {}
for i = 0, #ARGV / 2 - 1 do
  local ref, name = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  local payload = redis.call('HGET', KEYS[1], ref)
  refs[#refs + 1] = ref
  if payload then
    redis.call('SADD', KEYS[3], name)
    redis.call('RPUSH', KEYS[4 + 2 * i], payload)
    redis.call('HDEL', KEYS[1], ref)
    if redis.call('LLEN', KEYS[5 + 2 * i]) < 16 then
      redis.call('LPUSH', KEYS[5 + 2 * i], '1')
    end
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('SREM', KEYS[2], unpack(refs))
end
return moved
