--#include lib_ready
-- debounce: push a debounced job, or replace the job of the same debounce key that still waits, in one atomic step.
-- The job waiting for a key is named by NS:debounce:<key>; when it is still in the scheduled set (or already due in
-- its queue, not yet taken by a worker), it is taken out and the new payload goes in with its jid, due again after
-- the whole delay: so however many processes enqueue at once, one job per key waits, with the last arguments, and
-- exactly one runs per quiet period. Once a worker has taken it, the next enqueue starts a new job (a new jid).
-- KEYS[1]  NS:debounce:<key>, the payload (as stored) of the job waiting for that key
-- KEYS[2]  NS:schedule
-- KEYS[3]  NS:queue:<name>, the job's queue
-- ARGV[1]  the new payload's text before its jid
-- ARGV[2]  the new payload's text after its jid
-- ARGV[3]  the jid of a new job (taken when no job waits for the key)
-- ARGV[4]  when it is due (unix seconds)
-- ARGV[5]  how long NS:debounce:<key> is kept (ms)
-- returns  the jid of the job that waits now
local jid = ARGV[3]
local current = redis.call('GET', KEYS[1])
local function waiting(p)  -- taken out of where it waits: scheduled, or due in its queue (list or priority set)
  return redis.call('ZREM', KEYS[2], p) == 1 or redis.call('LREM', KEYS[3], -1, p) == 1
    or redis.call('ZREM', arranged_key(KEYS[3], 'prio'), p) == 1
end
if current and waiting(current) then
  local ok, d = pcall(cjson.decode, current)
  if ok and type(d) == 'table' and type(d.jid) == 'string' then jid = d.jid end
end
local p = ARGV[1] .. jid .. ARGV[2]
redis.call('ZADD', KEYS[2], ARGV[4], p)
redis.call('SET', KEYS[1], p, 'PX', ARGV[5])
return jid
