-- concurrent_acquire: take, or renew, one slot of a concurrency limiter. Guarantee: never more than `size`
-- holders at any instant. Holders are members of a sorted set scored by their expiry on Redis' clock (TIME),
-- so a holder that died frees its slot when its expiry passes, whatever the hosts' clocks say; a token
-- already held is renewed (its expiry pushed on), never counted twice. A worker process records the slot in
-- NS:holds:<identity> in the same step (lib_holds), so the recovery that declares it dead frees the slot at once.
-- The limiter is recorded in NS:limits.
-- KEYS[1]  NS:limit:<name>       sorted set, holder token -> expiry (ms, Redis clock)
-- KEYS[2]  NS:limits             hash, limiter name -> JSON {kind, size, per}
-- KEYS[3]  NS:holds:<identity>   the holder process's record ('' in ARGV[6]: not a worker, not written)
-- ARGV[1]  the limiter's name
-- ARGV[2]  its size (the most holders)
-- ARGV[3]  the lock timeout (ms): a holder not released by then is dropped
-- ARGV[4]  the holder's token
-- ARGV[5]  the limiter's JSON description for NS:limits
-- ARGV[6]  '1' when the caller is a worker process whose slots are recorded in KEYS[3], else ''
-- returns  {1, 0} when held; {0, ms until the earliest holder expires} when full
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local timeout = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now + timeout), ARGV[4])
  if redis.call('PTTL', KEYS[1]) < timeout then redis.call('PEXPIRE', KEYS[1], timeout) end
  if ARGV[6] == '1' then
    redis.call('HSET', KEYS[3], 'slot:' .. ARGV[1] .. ':' .. ARGV[4], ARGV[2] .. ',' .. ARGV[3])
    if redis.call('PTTL', KEYS[3]) < timeout then redis.call('PEXPIRE', KEYS[3], timeout) end
  end
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, tonumber(first[2]) - now)}
