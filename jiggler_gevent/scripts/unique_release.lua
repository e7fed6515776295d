-- unique_release: release unique locks, each only if it is still held by the given jid (compare and delete),
-- so a job never releases the lock of a later identical job.
-- KEYS     the lock keys NS:unique:<digest>
-- ARGV     the jid for each key, in the same order
-- returns  how many locks were released
local released = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i])
    released = released + 1
  end
end
return released
