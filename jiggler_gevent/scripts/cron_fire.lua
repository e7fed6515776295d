--#include lib_ready
-- cron_fire: enqueue periodic jobs, each at most once per (entry, fire time), and only for the lease holder.
-- A payload is pushed only if its fire time is later than the last one recorded for its entry, and recording
-- it is part of the same atomic step: a fire time enqueued by one holder is never enqueued again by the next,
-- whatever its clock says. Pushing does what push.lua does (LPUSH, SADD to NS:queues, touch NS:wake).
-- KEYS[1]  NS:cron:leader:<sig>   the lease; nothing is pushed unless it holds ARGV[1]
-- KEYS[2]  NS:cron:last           hash, entry name -> last fire time enqueued (unix seconds)
-- KEYS[3]  NS:queues
-- KEYS[4]  NS:wake
-- ARGV[1]  the caller's identity
-- ARGV[2]  the queue key prefix NS:queue:
-- ARGV     then groups of 4, oldest fire time first within an entry: entry name, fire time, queue name, payload
-- returns  -1 when the caller does not hold the lease (nothing pushed), else one number per group:
--          1 pushed, 0 skipped (that fire time or a later one was already enqueued)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local results, pushed = {}, false
for i = 3, #ARGV, 4 do
  local name, fire = ARGV[i], tonumber(ARGV[i + 1])
  local last = tonumber(redis.call('HGET', KEYS[2], name) or '')
  if last == nil or fire > last then
    ready(ARGV[2] .. ARGV[i + 2], ARGV[i + 3], false)
    redis.call('SADD', KEYS[3], ARGV[i + 2])
    redis.call('HSET', KEYS[2], name, ARGV[i + 1])
    results[#results + 1] = 1
    pushed = true
  else
    results[#results + 1] = 0
  end
end
if pushed then redis.call('ZADD', KEYS[4], 0, 'wake') end
return results
