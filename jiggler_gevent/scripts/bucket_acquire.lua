-- bucket_acquire: take one acquisition of a fixed-interval rate limiter. Guarantee: at most `size`
-- acquisitions per whole interval of `per` (intervals counted from the epoch on Redis' clock).
-- KEYS[1]  NS:limit:<name>   hash: interval (its number since the epoch), count (taken in it)
-- KEYS[2]  NS:limits         hash, limiter name -> JSON {kind, size, per}
-- ARGV[1]  the limiter's name
-- ARGV[2]  its size (the most acquisitions per interval)
-- ARGV[3]  the interval (ms)
-- ARGV[4]  the limiter's JSON description for NS:limits
-- returns  {1, 0} when taken; {0, ms until the next interval} when full
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per = tonumber(ARGV[3])
local interval = math.floor(now / per)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
local current = redis.call('HMGET', KEYS[1], 'interval', 'count')
local count = 0
if current[1] == string.format('%.0f', interval) then count = tonumber(current[2]) end
if count < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'interval', string.format('%.0f', interval), 'count', count + 1)
  redis.call('PEXPIRE', KEYS[1], per * 2)
  return {1, 0}
end
return {0, math.max(1, (interval + 1) * per - now)}
