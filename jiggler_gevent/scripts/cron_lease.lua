-- cron_lease: take, keep or give back the scheduler lease of one set of periodic entries (one signature), and
-- note in the same step that a scheduler of that set is alive, on Redis' clock (so hosts' clocks do not matter).
-- KEYS[1]  NS:cron:leader:<sig>   the holder's identity, with a TTL
-- KEYS[2]  NS:cron:seen:<sig>     the last time (ms, Redis clock) a scheduler of the set called this script
-- KEYS[3]  NS:holds:<identity>    the caller's record (lib_holds): 'lease:<sig>' while it holds the lease, so
--                                 the recovery that declares it dead gives the lease back at once
-- ARGV[1]  the caller's identity
-- ARGV[2]  the lease in ms: the caller takes the lease if nobody holds it, or renews it if it holds it;
--          0 gives it back if the caller holds it
-- ARGV[3]  how long KEYS[2] is kept, in seconds
-- ARGV[4]  the signature <sig>
-- returns  {1 if the caller holds the lease now else 0, KEYS[2] before this call (0 if none), Redis' time in ms}
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local seen = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  redis.call('HDEL', KEYS[3], 'lease:' .. ARGV[4])
  return {0, seen, now}
end
local held = 0
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  held = 1
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  held = 1
end
if held == 1 then
  redis.call('HSET', KEYS[3], 'lease:' .. ARGV[4], '1')
  if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
else
  redis.call('HDEL', KEYS[3], 'lease:' .. ARGV[4])
end
redis.call('SET', KEYS[2], now, 'EX', ARGV[3])
return {held, seen, now}
