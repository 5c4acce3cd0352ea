-- claim: ack finished units, then move up to COUNT units from the queues, in order, into
-- this process's in-flight record; one atomic step, payload bytes untouched.
-- KEYS[1] difo:inflight:ID (hash)   KEYS[2] difo:started:ID (set)
-- KEYS[3..2+Q] queue:NAME lists, in fetch order   KEYS[3+Q..2+2Q] their difo:wake:NAME lists
-- KEYS[3+2Q] difo:paused (set): queues named there are skipped
-- ARGV[1] COUNT   ARGV[2] first sequence number   ARGV[3] number of acks A
-- ARGV[4] number of careful acks C   ARGV[5..4+A] acks   ARGV[5+A..4+A+C] careful acks
-- ARGV[5+A+C..] the queue names, one per queue key
-- Returns {queue index (1-based), payload, ...} in claim order (oldest first).
local count = tonumber(ARGV[1])
local seq = tonumber(ARGV[2])
local acks = tonumber(ARGV[3])
local careful = tonumber(ARGV[4])
if acks > 0 then
  redis.call('HDEL', KEYS[1], unpack(ARGV, 5, 4 + acks))
end
if careful > 0 then
  redis.call('SREM', KEYS[2], unpack(ARGV, 5 + acks, 4 + acks + careful))
end
if count <= 0 then
  return {}
end
local nqueues = (#KEYS - 3) / 2
local names = 4 + acks + careful
local paused = redis.call('SMISMEMBER', KEYS[#KEYS], unpack(ARGV, names + 1, names + nqueues))
local out = {}
local fields = {}
for i = 1, nqueues do
  local items = false
  if paused[i] == 0 then
    items = redis.call('RPOP', KEYS[2 + i], count)
  end
  if items then
    local name = ARGV[names + i]
    for _, item in ipairs(items) do
      fields[#fields + 1] = seq .. ':' .. name
      fields[#fields + 1] = item
      out[#out + 1] = i
      out[#out + 1] = item
      seq = seq + 1
    end
    count = count - #items
    if count <= 0 then
      break
    end
  end
end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
else
  -- Every queue is empty (or paused): the wake-up tokens left are stale.
  redis.call('DEL', unpack(KEYS, 3 + nqueues, 2 + 2 * nqueues))
end
return out
