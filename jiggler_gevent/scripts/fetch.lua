-- fetch: settle the payloads finished since the last call, then pop up to ARGV[1] payloads, oldest first,
-- trying the queues in the order given, and hold each one in this process's working list until it is
-- settled (at-least-once delivery). One round trip per batch does both. A tracked payload (result_ttl, at the
-- top or in Sidekiq's "jiggler" object) starts here too: unless its jid is in NS:cancelled its status becomes
-- "running", in the same step that reads NS:cancelled, so a cancel lands either before (seen here) or after
-- (it finds the job running).
-- With the extra part (ARGV[5] > 0; a plain fetch leaves it out, and pays nothing for it):
-- - The settling also gives back the `concurrent` slots of jobs that have ended (lib_holds.give_back: at most
--   once), and counts the batch members that succeeded as settle.lua does (lib_ending.batch_end: each jid once,
--   only a payload still held, callbacks exactly once), in the same atomic step.
-- - A payload of a job with `concurrency=N` named in the extra part takes a slot of that job's `concurrent`
--   limiter, as concurrent_acquire.lua would (never more than N holders at once, each recorded in
--   NS:holds:<identity> in the same step, so the recovery of this process frees it). When the limiter is full the
--   payload is parked instead of taken: into NS:schedule, due at E[5], and named in NS:limit:<name>:parked, so the
--   next release of a slot moves it back to its queue (lib_holds.wake_parked), as settle.lua parks a job the
--   worker rescheduled over a full limiter. A tracked one is taken and marked refused instead: its worker writes
--   its status as it reschedules it.
-- A paused queue (its key in NS:paused) is skipped: nothing is taken from it while it is paused, by any worker,
-- since the check and the take are one step. A plain fetch pays one SCARD for this while nothing is paused.
-- Priorities and groups (lib_ready): a queue's jobs of priority above 0 are taken first, highest first, then its
-- list and its groups' lists in turn (round-robin, NS:groups:<name>), then its jobs below 0, each in enqueue order:
-- all in this one step, so the order holds across every worker. With the extra part, a grouped payload whose job
-- has `group_concurrency=N` (written in the payload) takes a slot of its group's `concurrent` limiter as it is
-- taken (the same slots, recorded and given back as above); a group whose limiter is full is passed over.
-- KEYS[1]     NS:working:<identity>
-- KEYS[2]     NS:cancelled
-- KEYS[3]     NS:paused
-- KEYS[4..n]  NS:queue:<name>, in the order to try them; with the extra part, KEYS[4..8] are NS:holds:<identity>,
--             NS:limits, NS:schedule, NS:queues and NS:wake, and the queues KEYS[9..n]
-- ARGV[1]     the most payloads to take
-- ARGV[2]     the status key prefix NS:result:
-- ARGV[3]     now (unix seconds); '' = Redis' clock (a fetch sent behind a blocking command runs when it ends)
-- ARGV[4]     seconds a tracked job's status is kept while it is not ended
-- ARGV[5]     x, how many arguments the extra part has (0: none), E[1..x] = ARGV[6..5+x]:
--   E[1]      the limiter key prefix NS:limit:
--   E[2]      a slot's lock timeout (ms): one not given back or renewed by then is dropped
--   E[3]      the prefix of the tokens of the slots this call takes (unique to the call)
--   E[4]      the payload's field that names its job: "name", or "class" on Sidekiq's wire
--   E[5]      when a parked payload is due (unix seconds), should no release of a slot move it before
--   E[6]      how long a limiter's parked list is kept after its last push (ms)
--   E[7]      the queue key prefix NS:queue:
--   E[8]      the queue of a payload that names none
--   E[9]      k, how many jobs with `concurrency=N` follow (0: no payload is looked at for a slot)
--   then      k times: the job's name, its limiter's name, N
--   then      n, and n fields of NS:holds:<identity>: the slots of jobs that have ended, given back first
--   then      the batch key prefix NS:batch:, seconds a batch is kept after its last change, m, and m groups of
--             three: the payload of a batch member that succeeded (nothing else to write for it), its jid, its
--             batch id
-- ARGV[6+x..] payloads whose jobs are done: removed from the working list first
-- returns     the payloads taken; when one of them is tracked or limited, or one was parked, { the payloads taken,
--             one mark per payload: "r" its "running" status written, "c" tracked and cancelled (nothing
--             written), "." not tracked (or not readable here); one slot per payload: its field in
--             NS:holds:<identity> ('slot:<limiter>:<token>') when it took one, "!" when the limiter was full, ""
--             when not limited (none at all when E[9] is 0); how many payloads were parked (each counts against
--             ARGV[1]); how many of the queues asked are paused; 1 when priorities or groups are in use on the
--             namespace (NS:seq exists), else 0 }; this shape too when one of them is paused, or they are in use
--#include lib_ready
local x = tonumber(ARGV[5])
local acks, first_queue = 6 + x, 4
local limited, quoted, k = {}, {}, 0
-- The extra part's functions, and those of the libraries it uses (included inside the block), are made only with
-- it: a plain fetch makes none of them.
local limiter_of, take_slot, park
if x > 0 then
--#include lib_ending
--#include lib_holds
  first_queue = 9
  k = tonumber(ARGV[14])
  for j = 15, 14 + 3 * k, 3 do
    limited[ARGV[j]] = { name = ARGV[j + 1], size = tonumber(ARGV[j + 2]) }
    quoted[#quoted + 1] = '"' .. ARGV[j] .. '"'
  end
  local releases = 16 + 3 * k  -- the first slot to give back
  local members = releases + tonumber(ARGV[15 + 3 * k]) + 3  -- the first batch member
  if releases < members - 3 then
    local H = { limit_prefix = ARGV[6], limits = KEYS[5], schedule = KEYS[6], queues = KEYS[7], wake = KEYS[8],
                qprefix = ARGV[12], queue = ARGV[13] }
    for i = releases, members - 4 do give_back(H, KEYS[4], ARGV[i]) end
  end
  local E = { qprefix = ARGV[12], queues = KEYS[7], wake = KEYS[8], now = ARGV[3], batch_ttl = ARGV[members - 2] }
  if members < acks and E.now == '' then
    local t = redis.call('TIME')
    E.now = t[1] .. '.' .. string.format('%06d', t[2])
  end
  for i = members, acks - 1, 3 do
    if redis.call('LREM', KEYS[1], -1, ARGV[i]) > 0 then
      batch_end(E, ARGV[members - 3] .. ARGV[i + 2], ARGV[i + 1], 'done', '')
    end
  end

  -- The limiter of the job `p` runs, when it is one of those named in E (looked for as text before decoding).
  limiter_of = function(p)
    for _, q in ipairs(quoted) do
      if string.find(p, q, 1, true) then
        local ok, d = pcall(cjson.decode, p)
        if ok and type(d) == 'table' then return limited[d[ARGV[9]]] end
        return nil
      end
    end
    return nil
  end

  local clock_ms, swept = nil, {}

  -- Take a slot of `lim` for the payload at position `i` of this call, as concurrent_acquire.lua does; "!" when full.
  -- The limiter is named in NS:limits here, as concurrent_acquire.lua names it, so it is listed (api.Limits, the
  -- Limits page) from its first slot, not from the first renewal of one (a group's too, until the release of its
  -- last slot unlists it: lib_holds.release_slot).
  take_slot = function(lim, i)
    local key, timeout = ARGV[6] .. lim.name, tonumber(ARGV[7])
    if clock_ms == nil then
      local t = redis.call('TIME')
      clock_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    if not swept[key] then
      swept[key] = true
      redis.call('ZREMRANGEBYSCORE', key, '-inf', clock_ms)
      redis.call('HSET', KEYS[5], lim.name, '{"kind": "concurrent", "size": ' .. lim.size .. ', "per": 0}')
    end
    if redis.call('ZCARD', key) >= lim.size then return '!' end
    local token = ARGV[8] .. i
    redis.call('ZADD', key, string.format('%.0f', clock_ms + timeout), token)
    if redis.call('PTTL', key) < timeout then redis.call('PEXPIRE', key, timeout) end
    local field = 'slot:' .. lim.name .. ':' .. token
    redis.call('HSET', KEYS[4], field, lim.size .. ',' .. timeout)
    if redis.call('PTTL', KEYS[4]) < timeout then redis.call('PEXPIRE', KEYS[4], timeout) end
    return field
  end

  park = function(lim, p)
    local parked = ARGV[6] .. lim.name .. ':parked'
    redis.call('ZADD', KEYS[6], ARGV[10], p)
    redis.call('RPUSH', parked, p)
    redis.call('PEXPIRE', parked, ARGV[11])
  end
end
for i = acks, #ARGV do
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

local paused, skipped = {}, 0
if redis.call('SCARD', KEYS[3]) > 0 then
  for i = first_queue, #KEYS do
    if redis.call('SISMEMBER', KEYS[3], KEYS[i]) == 1 then
      paused[i] = true
      skipped = skipped + 1
    end
  end
end

-- Priority and grouped jobs (lib_ready) wait beside the list; NS:seq, made by the first push of one, says whether
-- any ever came on the namespace: until then a fetch pays one EXISTS for them.
local arranged = first_queue <= #KEYS and redis.call('EXISTS', arranged_key(KEYS[first_queue], 'seq')) == 1

local want = tonumber(ARGV[1])
local taken, marks, slots, parked, noted = {}, {}, {}, 0, false

-- Up to `want` payloads of the sorted set `key` scored from `min` to `max`, lowest first, taken out of it.
local function pop_scored(key, min, max)
  local got = redis.call('ZRANGEBYSCORE', key, min, max, 'LIMIT', 0, want)
  if #got == 0 then return false end
  redis.call('ZREM', key, unpack(got))
  return got
end

-- Hold the payloads `got` (or nothing when false), each taking its slot or parked, as the header says; `group_slot`
-- is the slot of its group's limiter a grouped payload took already.
local function hold(got, group_slot)
  if not got then return end
  for _, p in ipairs(got) do
    local lim, slot = k > 0 and not group_slot and limiter_of(p), group_slot or ''
    if lim and not string.find(p, '"result_ttl"', 1, true) then slot = take_slot(lim, #taken + 1) end
    if slot == '!' then
      park(lim, p)
      parked = parked + 1
    else
      redis.call('LPUSH', KEYS[1], p)
      taken[#taken + 1] = p
      local mark = start(p)
      if lim and mark == 'r' then slot = take_slot(lim, #taken) end  -- tracked: its worker writes a refusal
      marks[#marks + 1] = mark
      if x > 0 then slots[#taken] = slot end
      noted = noted or mark ~= '.' or slot ~= ''
    end
  end
  want = want - #got
end

-- The slot of the `group_concurrency` limiter of `group` of the queue `queue_key` for payload `p`, taken as
-- take_slot does: "!" when full, "" when the payload names no limit (or without the extra part: the worker has no
-- job with group_concurrency registered).
local function group_slot(queue_key, group, p)
  if x == 0 or not string.find(p, '"group_concurrency"', 1, true) then return '' end
  local ok, d = pcall(cjson.decode, p)
  if not ok or type(d) ~= 'table' or type(d.group_concurrency) ~= 'number' then return '' end
  local name = 'group.' .. redis.sha1hex(queue_key .. '\n' .. group)  -- a limiter name holds no ':'
  return take_slot({ name = name, size = d.group_concurrency }, #taken + 1)
end

-- Round-robin over the rotation of the queue `queue_key`: one payload from the group whose turn it is (the queue's
-- own list takes part as the member ''), which then goes to the back of the rotation, or leaves it once empty. A
-- group at its group_concurrency is passed over (to the back, its payload put back at its front): after
-- GROUP_VISITS such passes in a row, or as many as there are groups, or want + that many visits in all, the fetch
-- stops looking, so a script call stays short however many groups are full.
local GROUP_VISITS = 200
local function take_grouped(queue_key, rotation)
  if redis.call('LLEN', queue_key) > 0 then rotate_in(queue_key, '') end
  local passed, most = 0, math.min(GROUP_VISITS, redis.call('ZCARD', rotation))
  -- the turns this call may hand out, reserved at once: one per visit, at most `visits` visits
  local visits = want + most
  local turn = redis.call('INCRBY', arranged_key(queue_key, 'seq'), visits) - visits
  while want > 0 and passed < most and visits > 0 do
    visits = visits - 1
    local group = redis.call('ZRANGE', rotation, 0, 0)[1]
    if group == nil then return end
    local key = group == '' and queue_key or arranged_key(queue_key, 'group', group)
    local p = redis.call('RPOP', key)
    if p then
      local slot = group ~= '' and group_slot(queue_key, group, p) or ''
      if slot == '!' then
        redis.call('RPUSH', key, p)  -- back to the front of its group, untaken
        passed = passed + 1
      else
        hold({ p }, slot ~= '' and slot or nil)
        passed = 0
      end
    end
    if p and redis.call('EXISTS', key) == 1 then
      turn = turn + 1
      redis.call('ZADD', rotation, 'XX', turn, group)
    else
      redis.call('ZREM', rotation, group)
    end
  end
end

-- Per queue: its priority jobs above 0 (negative scores), its groups and list in turn (or its list alone when it
-- has no group waiting), then its priority jobs below 0.
for i = first_queue, #KEYS do
  if want <= 0 then break end
  if not paused[i] then
    local scored = arranged and arranged_key(KEYS[i], 'prio')
    if scored then hold(pop_scored(scored, '-inf', '(0')) end
    local rotation = arranged and want > 0 and arranged_key(KEYS[i], 'groups')
    if rotation and redis.call('EXISTS', rotation) == 1 then
      take_grouped(KEYS[i], rotation)
    elseif want > 0 then
      hold(redis.call('RPOP', KEYS[i], want))
    end
    if scored and want > 0 then hold(pop_scored(scored, '(0', '+inf')) end
  end
end
if noted or parked > 0 or skipped > 0 or arranged then
  return { taken, table.concat(marks), slots, parked, skipped, arranged and 1 or 0 }
end
return taken
