--#include lib_ending
-- cancel: record that a job is cancelled, tell every worker, and take the job out of where it waits.
-- Guarantee: a cancelled job never starts once this has run. A payload still in its queue, the scheduled set or
-- the retry set is removed here, and ends here: its unique lock released, its status written, its batch
-- counting it as failed. A job a worker has fetched or runs is stopped by that worker, which hears of it on
-- NS:cancel and checks NS:cancelled when it (re)subscribes; a payload recovered from a dead worker is skipped
-- when fetched again, as the jid is in NS:cancelled (kept CANCEL_KEEP seconds).
-- KEYS[1]  NS:cancelled
-- KEYS[2]  where the payload was seen: its queue's list, NS:prio:<name> or a group's NS:group:<name>:<group>,
--          NS:schedule or NS:retry (NS:cancelled when not waiting: read
--          only when ARGV[5] names a payload, passed anyway so that every key is in the namespace's hash slot)
-- KEYS[3]  NS:queues
-- KEYS[4]  NS:wake
-- ARGV[1]  the jid
-- ARGV[2]  now (unix seconds)
-- ARGV[3]  the oldest cancellation kept (now - CANCEL_KEEP)
-- ARGV[4]  the pub/sub channel NS:cancel
-- ARGV[5]  the payload seen waiting ('' = none)
-- ARGV[6]  its unique lock key ('' = none); ARGV[7] its batch key ('' = none); ARGV[8] its status key and
--          ARGV[9] its result_ttl ('' = untracked); ARGV[10] the queue key prefix; ARGV[11] seconds a batch is
--          kept; ARGV[12] seconds a tracked status is kept while waiting
-- returns  1 when the payload was removed from where it waited, else 0
local E = { qprefix = ARGV[10], queues = KEYS[3], wake = KEYS[4], now = ARGV[2], pending_ttl = ARGV[12],
            batch_ttl = ARGV[11] }
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
if ARGV[5] == '' then return 0 end
local removed
if redis.call('TYPE', KEYS[2]).ok == 'list' then
  removed = redis.call('LREM', KEYS[2], 1, ARGV[5])
else
  removed = redis.call('ZREM', KEYS[2], ARGV[5])
end
if removed == 0 then return 0 end
if ARGV[6] ~= '' and redis.call('GET', ARGV[6]) == ARGV[1] then redis.call('DEL', ARGV[6]) end
if ARGV[9] ~= '' then track(E, ARGV[8], 'cancelled', '{"error_class":"JobCancelled"}', ARGV[9]) end
if ARGV[7] ~= '' then batch_end(E, ARGV[7], ARGV[1], 'cancelled', '{"error_class":"JobCancelled"}') end
return 1
