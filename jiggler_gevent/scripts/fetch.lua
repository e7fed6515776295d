-- fetch: settle the payloads finished since the last call, then pop up to ARGV[1] payloads, oldest first,
-- trying the queues in the order given, and hold each one in this process's working list until it is
-- settled (at-least-once delivery). One round trip per batch does both. A tracked payload (result_ttl, at the
-- top or in Sidekiq's "jiggler" object) starts here too: unless its jid is in NS:cancelled its status becomes
-- "running", in the same step that reads NS:cancelled, so a cancel lands either before (seen here) or after
-- (it finds the job running).
-- KEYS[1]     NS:working:<identity>
-- KEYS[2]     NS:cancelled
-- KEYS[3..n]  NS:queue:<name>, in the order to try them
-- ARGV[1]     the most payloads to take
-- ARGV[2]     the status key prefix NS:result:
-- ARGV[3]     now (unix seconds); '' = Redis' clock (a fetch sent behind a blocking command runs when it ends)
-- ARGV[4]     seconds a tracked job's status is kept while it is not ended
-- ARGV[5..]   payloads whose jobs are done: removed from the working list first
-- returns     the payloads taken; when one of them is tracked, { the payloads taken, one mark per payload:
--             "r" its "running" status written, "c" tracked and cancelled (nothing written), "." not tracked (or
--             not readable here) }
for i = 5, #ARGV do
  redis.call('LREM', KEYS[1], -1, ARGV[i])
end

local function ttl_of(p)
  local ok, d = pcall(cjson.decode, p)
  if not ok or type(d) ~= 'table' then return nil end
  local ttl = d.result_ttl
  if ttl == nil and type(d.jiggler) == 'table' then ttl = d.jiggler.result_ttl end
  if type(d.jid) ~= 'string' or type(ttl) ~= 'number' or not (ttl > 0 and ttl < math.huge) then return nil end
  return d.jid
end

local function now()
  if ARGV[3] ~= '' then return ARGV[3] end
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', t[2])
end

local function start(p)
  if not string.find(p, '"result_ttl"', 1, true) then return '.' end
  local jid = ttl_of(p)
  if jid == nil then return '.' end
  if redis.call('ZSCORE', KEYS[2], jid) then return 'c' end
  local rkey = ARGV[2] .. jid
  redis.call('HSET', rkey, 'status', 'running', 'started_at', now())
  redis.call('EXPIRE', rkey, ARGV[4])
  return 'r'
end

local want = tonumber(ARGV[1])
local taken, marks, tracked = {}, {}, false
for i = 3, #KEYS do
  if want <= 0 then break end
  local got = redis.call('RPOP', KEYS[i], want)
  if got then
    for _, p in ipairs(got) do
      redis.call('LPUSH', KEYS[1], p)
      taken[#taken + 1] = p
      local mark = start(p)
      marks[#marks + 1] = mark
      tracked = tracked or mark ~= '.'
    end
    want = want - #got
  end
end
if tracked then return { taken, table.concat(marks) } end
return taken
