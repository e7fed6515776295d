-- concurrent_release: give back one slot of a concurrency limiter and wake one waiter. Guarantee: a token is
-- released at most once (a second release, or one after the slot expired, changes nothing and wakes no one).
-- Waiters block on the free list (BLPOP) and re-check with concurrent_acquire; the list is trimmed to the
-- limiter's size, so wake-ups that find no waiter cost at most that many spare re-checks later.
-- KEYS[1]  NS:limit:<name>        sorted set, holder token -> expiry
-- KEYS[2]  NS:limit:<name>:free   list, one element per freed slot
-- ARGV[1]  the holder's token
-- ARGV[2]  the limiter's size
-- ARGV[3]  how long a wake-up nobody takes is kept (ms)
-- returns  1 when the token was held, else 0
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
