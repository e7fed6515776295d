--#include lib_holds
-- concurrent_release: give back one slot of a concurrency limiter, wake one waiter and one parked job, and strike
-- the slot off its holder process's record. Guarantee: a token is released at most once (a second release, one
-- after the slot expired, or one after a recovery freed it, changes nothing and wakes no one).
-- Waiters block on the free list (BLPOP) and re-check with concurrent_acquire; the list is trimmed to the
-- limiter's size, so wake-ups that find no waiter cost at most that many spare re-checks later.
-- KEYS[1]  NS:limit:<name>          sorted set, holder token -> expiry
-- KEYS[2]  NS:limit:<name>:free     list, one element per freed slot
-- KEYS[3]  NS:limit:<name>:parked   list, payloads rescheduled because the limiter was full (settle.lua)
-- KEYS[4]  NS:holds:<identity>      the holder process's record (lib_holds); NS:holds: outside a worker
-- KEYS[5]  NS:schedule
-- KEYS[6]  NS:queues
-- KEYS[7]  NS:wake
-- KEYS[8]  NS:limits (a group's limiter leaves it with its last slot: lib_holds)
-- ARGV[1]  the holder's token
-- ARGV[2]  the limiter's size
-- ARGV[3]  how long a wake-up nobody takes is kept (ms)
-- ARGV[4]  the limiter's name
-- ARGV[5]  the queue key prefix NS:queue:
-- ARGV[6]  the queue of a payload that names none
-- returns  1 when the token was held, else 0
local H = { limits = KEYS[8], schedule = KEYS[5], queues = KEYS[6], wake = KEYS[7], qprefix = ARGV[5],
            queue = ARGV[6] }
redis.call('HDEL', KEYS[4], 'slot:' .. ARGV[4] .. ':' .. ARGV[1])
return release_slot(H, ARGV[4], KEYS[1], KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2]), ARGV[3])
