--#include lib_ready
--#include lib_ending
--#include lib_holds
-- settle: write what becomes of payloads held in a working list. Each leaves the list; one that was still
-- held then goes on, by its disposition: "ack", "drop", "cancel" and "expire" nowhere, "retry" and "dead" into that
-- sorted set, "reschedule" into NS:schedule, "requeue" back to the front of its queue, "recover" (its process
-- died) to the back of its queue, behind the jobs that waited meanwhile. In the same step: a
-- unique job's lock named with the outcome is released if it still holds that jid (so a job is never done
-- while its lock stays held because of a crash between the two), a tracked job's status is written, and a
-- batch member is counted (lib_ending). A payload no longer held (settled already, or adopted by another
-- process) goes nowhere, so nothing is stored, counted or run twice. The dead set is trimmed by age and size
-- whenever something is buried. A job rescheduled because a `concurrent` limiter was full is also parked on it
-- (RPUSH NS:limit:<name>:parked): the next release of a slot of that limiter moves it to its queue (lib_holds).
-- The `concurrent` slots the fetch took for jobs that have ended (fetch.lua) are given back in the same step
-- (lib_holds.give_back: at most once; one a recovery freed already, or expired, is left alone), struck off
-- NS:holds:<identity>, each waking a job parked on its limiter.
-- KEYS[1]  NS:working:<identity>
-- KEYS[2]  NS:retry
-- KEYS[3]  NS:dead
-- KEYS[4]  NS:queues
-- KEYS[5]  NS:wake (added when a payload is put back in a queue)
-- KEYS[6]  NS:schedule
-- KEYS[7]  NS:holds:<identity>, the settling process's record of the slots it holds (lib_holds)
-- KEYS[8]  NS:limits (a group's limiter leaves it with its last slot: lib_holds)
-- ARGV[1]  the oldest score kept in the dead set (now - 180 days)
-- ARGV[2]  the most entries kept in the dead set
-- ARGV[3]  the queue key prefix NS:queue:
-- ARGV[4]  the status key prefix NS:result:
-- ARGV[5]  the batch key prefix NS:batch:
-- ARGV[6]  now (unix seconds)
-- ARGV[7]  seconds a tracked job's status is kept while it waits
-- ARGV[8]  seconds a batch is kept after its last change
-- ARGV[9]  the limiter key prefix NS:limit:
-- ARGV[10] how long a limiter's parked list is kept after its last push (ms)
-- ARGV[11] the queue of a payload that names none (a parked job woken by a freed slot goes to its queue)
-- ARGV[12] n, how many slots to give back follow: their fields in NS:holds:<identity> ('slot:<limiter>:<token>')
-- ARGV     then groups of 10: payload held, disposition, payload to store, the score (retry, dead, reschedule)
--          or the queue name (requeue, recover), the unique lock key to release ('' = none), the jid, its batch id
--          ('' = none), its result_ttl ('' = untracked), its result or error as JSON ('' = none), and the
--          limiter to park a rescheduled job on ('' = none)
-- returns  how many payloads were still held
local E = { qprefix = ARGV[3], queues = KEYS[4], wake = KEYS[5], now = ARGV[6], pending_ttl = ARGV[7],
            batch_ttl = ARGV[8] }
local STATUS = { ack = 'done', drop = 'dead', dead = 'dead', cancel = 'cancelled', retry = 'retrying',
                 reschedule = 'scheduled', requeue = 'queued', recover = 'queued', expire = 'expired' }
local BACK = { requeue = false, recover = true }  -- the put-backs: to the back of the queue, or the front
local H = { limit_prefix = ARGV[9], limits = KEYS[8], schedule = KEYS[6], queues = KEYS[4], wake = KEYS[5],
            qprefix = ARGV[3], queue = ARGV[11] }
local first = 13 + tonumber(ARGV[12])  -- the first group
for i = 13, first - 1 do give_back(H, KEYS[7], ARGV[i]) end
local held, buried, requeued = 0, false, false
for i = first, #ARGV, 10 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) > 0 then
    held = held + 1
    local disposition, jid = ARGV[i + 1], ARGV[i + 5]
    if disposition == 'retry' then
      redis.call('ZADD', KEYS[2], ARGV[i + 3], ARGV[i + 2])
    elseif disposition == 'dead' then
      redis.call('ZADD', KEYS[3], ARGV[i + 3], ARGV[i + 2])
      buried = true
    elseif disposition == 'reschedule' then
      redis.call('ZADD', KEYS[6], ARGV[i + 3], ARGV[i + 2])
      if ARGV[i + 9] ~= '' then
        local parked = ARGV[9] .. ARGV[i + 9] .. ':parked'
        redis.call('RPUSH', parked, ARGV[i + 2])
        redis.call('PEXPIRE', parked, ARGV[10])
      end
    elseif BACK[disposition] ~= nil then
      ready(ARGV[3] .. ARGV[i + 3], ARGV[i + 2], not BACK[disposition])
      redis.call('SADD', KEYS[4], ARGV[i + 3])
      requeued = true
    end
    if ARGV[i + 4] ~= '' and redis.call('GET', ARGV[i + 4]) == jid then redis.call('DEL', ARGV[i + 4]) end
    if ARGV[i + 7] ~= '' then track(E, ARGV[4] .. jid, STATUS[disposition], ARGV[i + 8], ARGV[i + 7]) end
    if ARGV[i + 6] ~= '' and BACK[disposition] == nil and disposition ~= 'reschedule' then
      batch_end(E, ARGV[5] .. ARGV[i + 6], jid, STATUS[disposition], ARGV[i + 8])
    end
  end
end
if buried then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[2]) - 1)
end
if requeued then redis.call('ZADD', KEYS[5], 0, 'wake') end
return held
