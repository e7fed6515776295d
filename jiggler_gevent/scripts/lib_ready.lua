-- lib_ready: put a payload where the jobs of its queue wait, by its priority or its group. Included by every script
-- that pushes a payload to a queue (push_each, settle, move_due, move_one, cron_fire, debounce, fetch, and
-- lib_ending, lib_holds, lib_workflow).
-- Guarantee: the payload goes to exactly one place, in the same atomic step as the script's own work, and a worker
-- takes it from there only by fetch.lua's move into its working list; so delivery stays at least once, and a job
-- keeps its priority or group through every way back (retry, put-back, recovery after SIGKILL, parking).
-- A plain payload (most: one without the text "priority" or "group" costs two string.finds) goes on the list
-- NS:queue:<name>, as Sidekiq's wire has it. One of priority N (-100..100, not 0) goes into the sorted set
-- NS:prio:<name>, scored so that a lower score starts first: -N * 2^40 (higher priority first), plus a sequence
-- number from the counter NS:seq (enqueue order within a priority). A push to the back adds 2^39 + seq, one to
-- the front (a put-back) 2^39 - seq. Scores stay below 2^47, exact in a double; written with %.0f, as Lua's own
-- conversion keeps 14 digits only. One of group G goes on the list NS:group:<name>:<G>, and G joins the rotation
-- NS:groups:<name> (sorted set, group -> its turn; the member '' stands for the queue's own list) unless it is in.
-- fetch.lua takes a queue's priorities above 0, then round-robin over its groups and its list, then those below 0.
-- These keys are made from the queue key (queue names hold no ':'), so every key stays in the namespace's hash
-- slot; NS:seq, made by the first such push, tells a fetch that priorities or groups are in use on the namespace.
-- (INCRBY by 1, not INCR: the ACL rule of existing deployments grants INCRBY, acl.py.)
local PRIO_BAND, PRIO_MIDDLE = 1099511627776, 549755813888  -- 2^40, 2^39

-- A key of the queue whose list is `queue_key`: 'prio', 'groups' or 'group' (with `group`), or the counter NS:seq.
local function arranged_key(queue_key, kind, group)
  if kind == 'seq' then return (string.gsub(queue_key, 'queue:[^:]*$', 'seq', 1)) end
  local key = string.gsub(queue_key, 'queue:([^:]*)$', kind .. ':%1', 1)
  if group then return key .. ':' .. group end
  return key
end

-- The priority (an integer from -100 to 100, 0 when none) and the group (nil when none) written in payload `p`.
local function arrangement_of(p)
  if not string.find(p, '"priority"', 1, true) and not string.find(p, '"group"', 1, true) then return 0, nil end
  local ok, d = pcall(cjson.decode, p)
  if not ok or type(d) ~= 'table' then return 0, nil end
  local n, group = 0, nil
  if type(d.priority) == 'number' then n = math.max(-100, math.min(100, math.floor(d.priority))) end
  if type(d.group) == 'string' and d.group ~= '' then group = d.group end
  return n, group
end

-- Put `group` of the queue `queue_key` in its rotation, at the back, unless it is in already.
local function rotate_in(queue_key, group)
  local turn = redis.call('INCRBY', arranged_key(queue_key, 'seq'), 1)
  redis.call('ZADD', arranged_key(queue_key, 'groups'), 'NX', turn, group)
end

-- Push `p` to the queue whose list is `queue_key`: to the back (where LPUSH puts it), or to the front when `front`.
local function ready(queue_key, p, front)
  local n, group = arrangement_of(p)
  if group then
    local key = arranged_key(queue_key, 'group', group)
    if front then redis.call('RPUSH', key, p) else redis.call('LPUSH', key, p) end
    rotate_in(queue_key, group)
  elseif n ~= 0 then
    local seq = redis.call('INCRBY', arranged_key(queue_key, 'seq'), 1)
    local score = -n * PRIO_BAND + PRIO_MIDDLE + (front and -seq or seq)
    redis.call('ZADD', arranged_key(queue_key, 'prio'), string.format('%.0f', score), p)
  elseif front then
    redis.call('RPUSH', queue_key, p)
  else
    redis.call('LPUSH', queue_key, p)
  end
end
