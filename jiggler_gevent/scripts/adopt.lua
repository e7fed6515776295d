--#include lib_holds
-- adopt: take over the working list of a process whose heartbeat has expired, so that exactly one live
-- process recovers each of its jobs, and give back in the same step the slots and lease it held (lib_holds):
-- they are free from the moment the process is declared dead, not when their timeouts pass.
-- KEYS[1]  NS:process:<dead identity>   (its heartbeat)
-- KEYS[2]  NS:working:<dead identity>
-- KEYS[3]  NS:working:<my identity>
-- KEYS[4]  NS:processes
-- KEYS[5]  NS:work:<dead identity>
-- KEYS[6]  NS:holds:<dead identity>
-- KEYS[7]  NS:schedule
-- KEYS[8]  NS:queues
-- KEYS[9]  NS:wake
-- ARGV[1]  the dead identity
-- ARGV[2]  "force" to adopt even if the heartbeat is still there (the supervisor saw the process die)
-- ARGV[3]  the limiter key prefix NS:limit:
-- ARGV[4]  the scheduler lease key prefix NS:cron:leader:
-- ARGV[5]  the queue key prefix NS:queue:
-- ARGV[6]  the queue of a payload that names none
-- returns  the payloads adopted, or false when that process is still alive
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[1]) == 1 then return false end
local moved = {}
while true do
  local p = redis.call('RPOPLPUSH', KEYS[2], KEYS[3])
  if not p then break end
  moved[#moved + 1] = p
end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[5])
local H = { limit_prefix = ARGV[3], leader_prefix = ARGV[4], schedule = KEYS[7], queues = KEYS[8], wake = KEYS[9],
            qprefix = ARGV[5], queue = ARGV[6] }
release_holds(H, KEYS[6], ARGV[1])
return moved
