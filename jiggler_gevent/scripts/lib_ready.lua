-- lib_ready: put a payload where the jobs of its queue wait, by its priority. Included by every script that pushes
-- a payload to a queue (push_each, settle, move_due, move_one, cron_fire, and lib_ending, lib_holds, lib_workflow).
-- A payload of priority 0 (most: one without the text "priority" costs a string.find) goes on the plain list
-- NS:queue:<name>, as Sidekiq's wire has it; one of priority N (-100..100, not 0) goes into the sorted set
-- NS:prio:<name>, scored so that a lower score starts first: -N * 2^40 (higher priority first), plus a sequence
-- number from the counter NS:prio (enqueue order within a priority). A push to the back adds 2^39 + seq, one to
-- the front (a put-back) 2^39 - seq. Scores stay below 2^47, exact in a double; written with %.0f, as Lua's own
-- conversion keeps 14 digits only. fetch.lua takes a queue's positive part, then its list, then its negative part.
-- Both prio keys are made from the queue key (queue names hold no ':'), so every key stays in the namespace's
-- hash slot, and the counter, created by the first priority push, tells a fetch that priorities are in use.
local PRIO_BAND, PRIO_MIDDLE = 1099511627776, 549755813888  -- 2^40, 2^39

-- The sorted set of the priority jobs of the queue whose list is `queue_key`; the counter NS:prio when `counter`.
local function prio_key(queue_key, counter)
  local replacement = counter and 'prio' or 'prio:%1'
  return (string.gsub(queue_key, 'queue:([^:]*)$', replacement, 1))
end

-- The priority written in payload `p`: an integer from -100 to 100, 0 when none (or the payload cannot be read).
local function priority_of(p)
  if not string.find(p, '"priority"', 1, true) then return 0 end
  local ok, d = pcall(cjson.decode, p)
  if not ok or type(d) ~= 'table' or type(d.priority) ~= 'number' then return 0 end
  return math.max(-100, math.min(100, math.floor(d.priority)))
end

-- Push `p` to the queue whose list is `queue_key`: to the back (where LPUSH puts it), or to the front when `front`.
local function ready(queue_key, p, front)
  local n = priority_of(p)
  if n == 0 then
    if front then redis.call('RPUSH', queue_key, p) else redis.call('LPUSH', queue_key, p) end
    return
  end
  local seq = redis.call('INCR', prio_key(queue_key, true))
  local score = -n * PRIO_BAND + PRIO_MIDDLE + (front and -seq or seq)
  redis.call('ZADD', prio_key(queue_key, false), string.format('%.0f', score), p)
end
