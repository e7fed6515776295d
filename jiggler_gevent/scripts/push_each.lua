--#include lib_ready
--#include lib_ending
-- push_each: push payloads one by one, to their queues now or to the scheduled set, for pushes that need more
-- than push.lua: unique locks, tracked status (result_ttl) or a batch. All in one atomic step. A unique job's
-- lock is taken (SET NX PX) in the same step as its push: of identical unique jobs pushed at once, by any
-- number of clients, exactly one is pushed while its lock is held; a payload whose lock is held (by another
-- job, or an earlier payload of the same call) is skipped. The lock's value is the jid that holds it. A
-- batch's totals grow by the payloads pushed in the same step, so no job of it can end before it is counted;
-- a new batch that gets no job completes at once (its callbacks are enqueued here). A payload may carry a hash
-- written beside it (the Django tasks backend's record, NS:djtask:<jid>), in the same step: it exists if and only
-- if its payload was pushed: written right after that push, which a refused write (OOM, READONLY) stops first.
-- KEYS[1]  NS:queues
-- KEYS[2]  NS:wake
-- KEYS[3]  NS:schedule
-- KEYS[4]  NS:batches
-- ARGV[1]  the queue key prefix NS:queue:
-- ARGV[2]  the unique lock key prefix NS:unique:
-- ARGV[3]  the status key prefix NS:result:
-- ARGV[4]  the batch key prefix NS:batch:
-- ARGV[5]  now (unix seconds)
-- ARGV[6]  seconds a tracked job's status is kept while it waits
-- ARGV[7]  seconds a batch is kept after its last change
-- ARGV[8]  batch id ('' = none)
-- ARGV[9]  "new" to create that batch, "add" to add to it
-- ARGV[10] the new batch's fields as alternating names and values, JSON-encoded (an array of strings)
-- ARGV     then groups of 8: queue name, payload, due time ('' = now), lock digest ('' = none), jid,
--          lock TTL (ms), result_ttl ('' = untracked), the hash beside it ('' = none: else a JSON array of
--          strings, its key, its TTL in seconds, then alternating field names and values)
-- returns  a list with 1 for each payload pushed and 0 for each skipped, in order
local E = { qprefix = ARGV[1], queues = KEYS[1], wake = KEYS[2], now = ARGV[5], pending_ttl = ARGV[6],
            batch_ttl = ARGV[7] }
local pushed, woke, count = {}, false, 0
for i = 11, #ARGV, 8 do
  local ok = 1
  if ARGV[i + 3] ~= '' then
    if not redis.call('SET', ARGV[2] .. ARGV[i + 3], ARGV[i + 4], 'NX', 'PX', ARGV[i + 5]) then ok = 0 end
  end
  if ok == 1 then
    count = count + 1
    if ARGV[i + 2] == '' then
      ready(ARGV[1] .. ARGV[i], ARGV[i + 1], false)
      redis.call('SADD', KEYS[1], ARGV[i])
      woke = true
    else
      redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 1])
    end
    if ARGV[i + 6] ~= '' then
      track(E, ARGV[3] .. ARGV[i + 4], ARGV[i + 2] == '' and 'queued' or 'scheduled', '', ARGV[i + 6])
    end
    if ARGV[i + 7] ~= '' then
      local beside = cjson.decode(ARGV[i + 7])
      redis.call('HSET', beside[1], unpack(beside, 3))
      redis.call('EXPIRE', beside[1], beside[2])
    end
  end
  pushed[#pushed + 1] = ok
end
if woke then redis.call('ZADD', KEYS[2], 0, 'wake') end
if ARGV[8] ~= '' then
  local bkey = ARGV[4] .. ARGV[8]
  if ARGV[9] == 'new' then
    redis.call('HSET', bkey, unpack(cjson.decode(ARGV[10])))
    redis.call('ZADD', KEYS[4], ARGV[5], ARGV[8])
  end
  redis.call('HINCRBY', bkey, 'total', count)
  redis.call('HINCRBY', bkey, 'pending', count)
  if ARGV[9] == 'new' and count == 0 then batch_check(E, bkey) end
  for _, k in ipairs({ bkey, bkey .. ':ok', bkey .. ':failed' }) do redis.call('EXPIRE', k, E.batch_ttl) end
end
return pushed
