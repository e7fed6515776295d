-- fetch: settle the payloads finished since the last call, then pop up to ARGV[1] payloads, oldest first,
-- trying the queues in the order given, and hold each one in this process's working list until it is
-- settled (at-least-once delivery). One round trip per batch does both.
-- KEYS[1]     NS:working:<identity>
-- KEYS[2..n]  NS:queue:<name>, in the order to try them
-- ARGV[1]     the most payloads to take
-- ARGV[2..]   payloads whose jobs are done: removed from the working list first
-- returns     the payloads taken
for i = 2, #ARGV do
  redis.call('LREM', KEYS[1], -1, ARGV[i])
end
local want = tonumber(ARGV[1])
local taken = {}
for i = 2, #KEYS do
  if want <= 0 then break end
  local got = redis.call('RPOP', KEYS[i], want)
  if got then
    for _, p in ipairs(got) do
      redis.call('LPUSH', KEYS[1], p)
      taken[#taken + 1] = p
    end
    want = want - #got
  end
end
return taken
