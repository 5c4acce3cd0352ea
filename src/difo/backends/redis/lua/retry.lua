-- retry: move an in-flight unit to the retry set as its rewritten payload.
-- KEYS[1] difo:inflight:ID   KEYS[2] difo:started:ID   KEYS[3] retry (zset)
-- ARGV[1] ref   ARGV[2] when due (epoch seconds)   ARGV[3] payload with the error fields
-- Returns 1 when the unit was in flight (and moved), 0 when it was not (nothing written).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return 1
