--#include lib_ready
-- move_due: move payloads whose time has come from a sorted set to the back of their queues.
-- KEYS[1]  NS:schedule or NS:retry
-- KEYS[2]  NS:queues
-- KEYS[3]  NS:wake (added when something moved)
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  the most payloads to move in one call
-- ARGV[3]  the queue key prefix NS:queue:
-- ARGV[4]  the queue of a payload that names none (or cannot be read)
-- returns  how many were moved
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, p in ipairs(due) do
  redis.call('ZREM', KEYS[1], p)
  local ok, job = pcall(cjson.decode, p)
  local queue = ARGV[4]
  if ok and type(job) == 'table' and type(job.queue) == 'string' and job.queue ~= '' then queue = job.queue end
  ready(ARGV[3] .. queue, p, false)
  redis.call('SADD', KEYS[2], queue)
end
if #due > 0 then redis.call('ZADD', KEYS[3], 0, 'wake') end
return #due
