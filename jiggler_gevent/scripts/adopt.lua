--#include lib_holds
-- adopt: take over the working list of a process whose heartbeat has expired, so that exactly one live
-- process recovers each of its jobs, and give back in the same step the slots and lease it held (lib_holds):
-- they are free from the moment the process is declared dead, not when their timeouts pass. The death is recorded
-- in NS:deaths unless the process held one suspect job alone (a death that job may be blamed for); the deaths
-- recorded within the blame window are returned, for the blame rule (server/recovery.py).
-- KEYS[1]  NS:process:<dead identity>   (its heartbeat)
-- KEYS[2]  NS:working:<dead identity>
-- KEYS[3]  NS:working:<my identity>
-- KEYS[4]  NS:processes
-- KEYS[5]  NS:work:<dead identity>
-- KEYS[6]  NS:holds:<dead identity>
-- KEYS[7]  NS:schedule
-- KEYS[8]  NS:queues
-- KEYS[9]  NS:wake
-- KEYS[10] NS:deaths
-- KEYS[11] NS:limits (a group's limiter leaves it with its last slot: lib_holds)
-- ARGV[1]  the dead identity
-- ARGV[2]  "force" to adopt even if the heartbeat is still there (the supervisor saw the process die)
-- ARGV[3]  the limiter key prefix NS:limit:
-- ARGV[4]  the scheduler lease key prefix NS:cron:leader:
-- ARGV[5]  the queue key prefix NS:queue:
-- ARGV[6]  the queue of a payload that names none
-- ARGV[7]  the blame window (ms): how long NS:deaths keeps a death, and how far back the reply looks
-- ARGV[8]  how many deaths make a job a suspect (its `recoveries`, at the top of the payload or in its
--          `jiggler` object on Sidekiq's wire)
-- returns  {the payloads adopted, the identities in NS:deaths recovered within the window, this one included
--          if recorded}, or false when that process is still alive
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[1]) == 1 then return false end
local moved = {}
while true do
  local p = redis.call('RPOPLPUSH', KEYS[2], KEYS[3])
  if not p then break end
  moved[#moved + 1] = p
end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[5])
local H = { limit_prefix = ARGV[3], leader_prefix = ARGV[4], limits = KEYS[11], schedule = KEYS[7], queues = KEYS[8],
            wake = KEYS[9], qprefix = ARGV[5], queue = ARGV[6] }
release_holds(H, KEYS[6], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = now - tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', since)
local function suspect(p)
  local ok, job = pcall(cjson.decode, p)
  if not ok or type(job) ~= 'table' then return false end
  local n = job.recoveries
  if n == nil and type(job.jiggler) == 'table' then n = job.jiggler.recoveries end
  return type(n) == 'number' and n >= tonumber(ARGV[8])
end
if #moved ~= 1 or not suspect(moved[1]) then
  redis.call('ZADD', KEYS[10], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[10], ARGV[7])
end
return {moved, redis.call('ZRANGEBYSCORE', KEYS[10], since, '+inf')}
