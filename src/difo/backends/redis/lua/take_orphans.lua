-- take_orphans: move a dead process's in-flight and staging records into ours.
-- KEYS[1] difo:beats (zset)   KEYS[2] its difo:inflight   KEYS[3] its difo:started
-- KEYS[4] its difo:staging    KEYS[5] our difo:staging
-- ARGV[1] its identity   ARGV[2] dead after (seconds without a beat)
-- Returns {ref in our staging, payload, ...}, or {} when it beat again in the meantime.
-- In-flight refs become `s|ID|ref` (known started) or `n|ID|ref`; staging refs keep theirs.
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
if beat and tonumber(beat) > now - tonumber(ARGV[2]) then
  return {}
end
local out = {}
local fields = {}
local inflight = redis.call('HGETALL', KEYS[2])
for i = 1, #inflight, 2 do
  local flag = 'n|'
  if redis.call('SISMEMBER', KEYS[3], inflight[i]) == 1 then
    flag = 's|'
  end
  local ref = flag .. ARGV[1] .. '|' .. inflight[i]
  fields[#fields + 1] = ref
  fields[#fields + 1] = inflight[i + 1]
end
local staged = redis.call('HGETALL', KEYS[4])
for i = 1, #staged do
  fields[#fields + 1] = staged[i]
end
if #fields > 0 then
  redis.call('HSET', KEYS[5], unpack(fields))
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[1], ARGV[1])
return fields
