-- beat: record a process's liveness at Redis's own clock (every server shares it).
-- KEYS[1] difo:beats (zset)
-- ARGV[1] identity
-- Returns the time written, as a string of epoch seconds.
local clock = redis.call('TIME')
local now = string.format('%d.%06d', clock[1], clock[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
