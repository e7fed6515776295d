-- window_acquire: take one acquisition of a sliding-window rate limiter. Guarantee: never more than `size`
-- acquisitions in any window of `per` (on Redis' clock, to the microsecond): an acquisition is recorded only
-- when fewer than `size` were recorded in the `per` before it.
-- KEYS[1]  NS:limit:<name>   sorted set, acquisition token -> its time (µs, Redis clock)
-- KEYS[2]  NS:limits         hash, limiter name -> JSON {kind, size, per}
-- ARGV[1]  the limiter's name
-- ARGV[2]  its size (the most acquisitions per window)
-- ARGV[3]  the window (µs)
-- ARGV[4]  a token for this acquisition (unique)
-- ARGV[5]  the limiter's JSON description for NS:limits
-- returns  {1, 0} when taken; {0, ms until the oldest acquisition leaves the window} when full
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local per = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - per))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(per / 1000))
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, math.ceil((tonumber(first[2]) + per - now) / 1000))}
