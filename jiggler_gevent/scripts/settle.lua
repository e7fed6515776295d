-- settle: write what becomes of payloads held in a working list. Each leaves the list; one that was still
-- held then goes on, by its disposition: "ack" and "drop" nowhere, "retry" and "dead" into that sorted set,
-- "requeue" back to the front of its queue. A payload no longer held (settled already, or adopted by
-- another process) goes nowhere, so nothing is stored or run twice. The dead set is trimmed by age and size
-- whenever something is buried.
-- KEYS[1]  NS:working:<identity>
-- KEYS[2]  NS:retry
-- KEYS[3]  NS:dead
-- KEYS[4]  NS:queues
-- KEYS[5]  NS:wake (added when a payload is put back in a queue)
-- ARGV[1]  the oldest score kept in the dead set (now - 180 days)
-- ARGV[2]  the most entries kept in the dead set
-- ARGV[3]  the queue key prefix NS:queue:
-- ARGV     then groups of 4: payload held, disposition, payload to store, and the score (retry, dead) or
--          the queue name (requeue)
-- returns  how many payloads were still held
local held, buried, requeued = 0, false, false
for i = 4, #ARGV, 4 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) > 0 then
    held = held + 1
    local disposition = ARGV[i + 1]
    if disposition == 'retry' then
      redis.call('ZADD', KEYS[2], ARGV[i + 3], ARGV[i + 2])
    elseif disposition == 'dead' then
      redis.call('ZADD', KEYS[3], ARGV[i + 3], ARGV[i + 2])
      buried = true
    elseif disposition == 'requeue' then
      redis.call('RPUSH', ARGV[3] .. ARGV[i + 3], ARGV[i + 2])
      redis.call('SADD', KEYS[4], ARGV[i + 3])
      requeued = true
    end
  end
end
if buried then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[2]) - 1)
end
if requeued then redis.call('ZADD', KEYS[5], 0, 'wake') end
return held
