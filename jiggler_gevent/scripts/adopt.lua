-- adopt: take over the working list of a process whose heartbeat has expired, so that exactly one live
-- process recovers each of its jobs.
-- KEYS[1]  NS:process:<dead identity>   (its heartbeat)
-- KEYS[2]  NS:working:<dead identity>
-- KEYS[3]  NS:working:<my identity>
-- KEYS[4]  NS:processes
-- KEYS[5]  NS:work:<dead identity>
-- ARGV[1]  the dead identity
-- ARGV[2]  "force" to adopt even if the heartbeat is still there (the supervisor saw the process die)
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
return moved
