--#include lib_ready
-- move_one: move one payload from a sorted set to the back of its queue, if it is still in the set.
-- KEYS[1]  the sorted set (NS:schedule, NS:retry or NS:dead)
-- KEYS[2]  NS:queues
-- KEYS[3]  NS:queue:<name>
-- KEYS[4]  NS:wake
-- ARGV[1]  the payload as stored in the set
-- ARGV[2]  the payload to push (the same job, its enqueued_at refreshed)
-- ARGV[3]  the queue name
-- returns  1 when moved, 0 when it was no longer in the set
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  ready(KEYS[3], ARGV[2], false)
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('ZADD', KEYS[4], 0, 'wake')
  return 1
end
return 0
