-- discard: drop an in-flight unit that is neither retried nor kept (retry: false).
-- KEYS[1] difo:inflight:ID   KEYS[2] difo:started:ID
-- ARGV[1] ref
-- Returns 1 when it was in flight, else 0.
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
