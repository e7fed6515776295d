-- settle: write what becomes of payloads held in a working list. Each leaves the list; one that was still
-- held then goes on, by its disposition: "ack" and "drop" nowhere, "retry" and "dead" into that sorted set,
-- "reschedule" into NS:schedule, "requeue" back to the front of its queue. A unique job's lock named with the
-- outcome is released in the same step, if it still holds that jid: so a job is never done while its lock
-- stays held (until its TTL) because of a crash between the two. A payload no longer held (settled already, or adopted by
-- another process) goes nowhere, so nothing is stored or run twice. The dead set is trimmed by age and size
-- whenever something is buried.
-- KEYS[1]  NS:working:<identity>
-- KEYS[2]  NS:retry
-- KEYS[3]  NS:dead
-- KEYS[4]  NS:queues
-- KEYS[5]  NS:wake (added when a payload is put back in a queue)
-- KEYS[6]  NS:schedule
-- ARGV[1]  the oldest score kept in the dead set (now - 180 days)
-- ARGV[2]  the most entries kept in the dead set
-- ARGV[3]  the queue key prefix NS:queue:
-- ARGV     then groups of 6: payload held, disposition, payload to store, the score (retry, dead, reschedule)
--          or the queue name (requeue), the unique lock key to release ('' = none) and the jid it must hold
-- returns  how many payloads were still held
local held, buried, requeued = 0, false, false
for i = 4, #ARGV, 6 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) > 0 then
    held = held + 1
    local disposition = ARGV[i + 1]
    if disposition == 'retry' then
      redis.call('ZADD', KEYS[2], ARGV[i + 3], ARGV[i + 2])
    elseif disposition == 'dead' then
      redis.call('ZADD', KEYS[3], ARGV[i + 3], ARGV[i + 2])
      buried = true
    elseif disposition == 'reschedule' then
      redis.call('ZADD', KEYS[6], ARGV[i + 3], ARGV[i + 2])
    elseif disposition == 'requeue' then
      redis.call('RPUSH', ARGV[3] .. ARGV[i + 3], ARGV[i + 2])
      redis.call('SADD', KEYS[4], ARGV[i + 3])
      requeued = true
    end
    if ARGV[i + 4] ~= '' and redis.call('GET', ARGV[i + 4]) == ARGV[i + 5] then redis.call('DEL', ARGV[i + 4]) end
  end
end
if buried then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[2]) - 1)
end
if requeued then redis.call('ZADD', KEYS[5], 0, 'wake') end
return held
