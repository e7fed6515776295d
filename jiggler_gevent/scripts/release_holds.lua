--#include lib_holds
-- release_holds: a worker process that stops cleanly gives back whatever slots and lease it still holds (those
-- of jobs it had to kill at the end of its shutdown wait), as a recovery would (lib_holds).
-- KEYS[1]  NS:holds:<identity>
-- KEYS[2]  NS:schedule
-- KEYS[3]  NS:queues
-- KEYS[4]  NS:wake
-- KEYS[5]  NS:limits (a group's limiter leaves it with its last slot: lib_holds)
-- ARGV[1]  the identity
-- ARGV[2]  the limiter key prefix NS:limit:
-- ARGV[3]  the scheduler lease key prefix NS:cron:leader:
-- ARGV[4]  the queue key prefix NS:queue:
-- ARGV[5]  the queue of a payload that names none
-- returns  how many slots were freed
local H = { limit_prefix = ARGV[2], leader_prefix = ARGV[3], limits = KEYS[5], schedule = KEYS[2], queues = KEYS[3],
            wake = KEYS[4], qprefix = ARGV[4], queue = ARGV[5] }
return release_holds(H, KEYS[1], ARGV[1])
