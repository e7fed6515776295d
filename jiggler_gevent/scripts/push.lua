-- push: add payloads to their queues, all or nothing, and wake a worker idle on several queues.
-- KEYS[1]  NS:queues
-- KEYS[2]  NS:wake
-- ARGV[1]  the queue key prefix NS:queue:
-- ARGV     then, for each queue: its name, how many payloads follow, and the payloads, oldest first
-- returns  how many payloads were pushed
local prefix, pushed, i = ARGV[1], 0, 2
while i <= #ARGV do
  local queue, last = ARGV[i], i + 1 + tonumber(ARGV[i + 1])
  for first = i + 2, last, 1000 do
    redis.call('LPUSH', prefix .. queue, unpack(ARGV, first, math.min(first + 999, last)))
  end
  redis.call('SADD', KEYS[1], queue)
  pushed = pushed + last - i - 1
  i = last + 1
end
if pushed > 0 then redis.call('ZADD', KEYS[2], 0, 'wake') end
return pushed
