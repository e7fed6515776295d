-- push_unique: push payloads, to their queues now or to the scheduled set, taking the unique lock of each that
-- carries one in the same atomic step. Guarantee: of identical unique jobs pushed at once, by any number of
-- clients, exactly one is pushed while its lock is held; a payload whose lock is held (by another job, or by
-- an earlier payload of the same call) is skipped. The lock's value is the jid that holds it.
-- KEYS[1]  NS:queues
-- KEYS[2]  NS:wake
-- KEYS[3]  NS:schedule
-- ARGV[1]  the queue key prefix NS:queue:
-- ARGV[2]  the unique lock key prefix NS:unique:
-- ARGV     then groups of 6: queue name, payload, due time ('' = now), lock digest ('' = none), jid,
--          lock TTL (ms)
-- returns  a list with 1 for each payload pushed and 0 for each skipped, in order
local pushed, woke = {}, false
for i = 3, #ARGV, 6 do
  local ok = 1
  if ARGV[i + 3] ~= '' then
    if not redis.call('SET', ARGV[2] .. ARGV[i + 3], ARGV[i + 4], 'NX', 'PX', ARGV[i + 5]) then ok = 0 end
  end
  if ok == 1 then
    if ARGV[i + 2] == '' then
      redis.call('LPUSH', ARGV[1] .. ARGV[i], ARGV[i + 1])
      redis.call('SADD', KEYS[1], ARGV[i])
      woke = true
    else
      redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 1])
    end
  end
  pushed[#pushed + 1] = ok
end
if woke then redis.call('ZADD', KEYS[2], 0, 'wake') end
return pushed
