-- move_to_queue: take one entry out of a sorted set and push it (rewritten) onto a queue:
-- "retry now" and "add to queue" of the API. Atomic: the entry is in one place throughout.
-- KEYS[1] schedule | retry | dead (zset)   KEYS[2] queues (set)   KEYS[3] queue:NAME
-- KEYS[4] difo:wake:NAME
-- ARGV[1] the entry as stored   ARGV[2] queue name   ARGV[3] payload to push
-- Returns 1 when moved, 0 when the entry was no longer in the set (nothing written).
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[3])
if redis.call('LLEN', KEYS[4]) < 16 then
  redis.call('LPUSH', KEYS[4], '1')
end
return 1
