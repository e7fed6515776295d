--#include lib_ready
-- lib_holds: what a worker process holds besides its jobs, and giving it back. Included by concurrent_release,
-- fetch, settle, adopt and release_holds. Guarantee: a `concurrent` slot or a scheduler lease taken by a worker process is
-- recorded in NS:holds:<identity> in the same step that takes it, so whoever ends that process's tenure (the
-- recovery that declares it dead, in adopt; the process itself at a clean stop, in release_holds) gives every one
-- back at once, instead of leaving it to its timeout. Fields of NS:holds:<identity>:
--   'slot:<limiter name>:<token>'  -> '<limiter size>,<lock timeout ms>'
--   'lease:<signature>'            -> '1' (NS:cron:leader:<signature> holds the identity while it is its lease)
-- A freed slot wakes one waiter (a push to NS:limit:<name>:free, kept to the limiter's size) and one job parked
-- on the limiter (wake_parked). A group's limiter (fetch.lua: 'group.<sha1>') is listed in NS:limits only while
-- one of its slots is in use: the release of its last one unlists it (named limiters stay listed). `H` holds what
-- these need: limit_prefix (NS:limit:), leader_prefix (NS:cron:leader:), limits (NS:limits), schedule
-- (NS:schedule), queues (NS:queues), wake (NS:wake), qprefix (NS:queue:), queue (the queue of a payload that names
-- none).

-- A job rescheduled because this limiter was full waits in NS:schedule and is named in NS:limit:<name>:parked
-- (settle.lua). Move the first one still scheduled to the back of its queue now, rather than at its delay's end.
local function wake_parked(H, parked_key)
  for _ = 1, 20 do
    local p = redis.call('LPOP', parked_key)
    if not p then return end
    if redis.call('ZREM', H.schedule, p) == 1 then
      local ok, job = pcall(cjson.decode, p)
      local queue = H.queue
      if ok and type(job) == 'table' and type(job.queue) == 'string' and job.queue ~= '' then queue = job.queue end
      ready(H.qprefix .. queue, p, false)
      redis.call('SADD', H.queues, queue)
      redis.call('ZADD', H.wake, 0, 'wake')
      return
    end
  end
end

-- The name of a group's limiter, as fetch.lua makes it; any other name is a named limiter's.
local GROUP_LIMITER = '^group%.' .. string.rep('%x', 40) .. '$'

-- Give back one slot of the limiter `name`; 1 when `token` held it, else 0 (released already, or expired: nobody
-- is woken). A slot of a group's limiter also wakes an idle worker (that group's next job waits in its list), and
-- the group's limiter leaves NS:limits once none of its slots is in use (unexpired, on Redis' clock, as api.Limits
-- counts them): a queue with very many groups lists only those running a job.
local function release_slot(H, name, limit_key, free_key, parked_key, token, size, keep_ms)
  if redis.call('ZREM', limit_key, token) == 0 then return 0 end
  redis.call('LPUSH', free_key, '1')
  redis.call('LTRIM', free_key, 0, size - 1)
  redis.call('PEXPIRE', free_key, keep_ms)
  wake_parked(H, parked_key)
  if string.find(name, GROUP_LIMITER) then
    redis.call('ZADD', H.wake, 0, 'wake')
    if not H.now_ms then
      local t = redis.call('TIME')
      H.now_ms = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
    end
    if redis.call('ZCOUNT', limit_key, '(' .. H.now_ms, '+inf') == 0 then redis.call('HDEL', H.limits, name) end
  end
  return 1
end

-- Give back the slot recorded in NS:holds:<identity> (`holds_key`) as `field` ('slot:<name>:<token>'), unless it
-- was freed already (by a recovery, or expired: the field is gone); the slots taken by fetch.lua are given back so.
local function give_back(H, holds_key, field)
  local record = redis.call('HGET', holds_key, field)
  if not record then return end
  redis.call('HDEL', holds_key, field)
  local name, token = string.match(field, '^slot:([^:]+):(.+)$')
  local size, keep = string.match(record, '^(%d+),(%d+)$')
  if name and size then
    local key = H.limit_prefix .. name
    local keep_ms = math.max(1000, tonumber(keep))
    release_slot(H, name, key, key .. ':free', key .. ':parked', token, tonumber(size), keep_ms)
  end
end

-- Give back everything NS:holds:<identity> records, and forget it; returns how many slots were freed.
local function release_holds(H, holds_key, identity)
  local fields = redis.call('HGETALL', holds_key)
  local freed = 0
  for i = 1, #fields, 2 do
    local name, token = string.match(fields[i], '^slot:([^:]+):(.+)$')
    local size, keep = string.match(fields[i + 1], '^(%d+),(%d+)$')
    if name and size then
      local key = H.limit_prefix .. name
      local keep_ms = math.max(1000, tonumber(keep))
      freed = freed + release_slot(H, name, key, key .. ':free', key .. ':parked', token, tonumber(size), keep_ms)
    end
    local signature = string.match(fields[i], '^lease:(.+)$')
    if signature and redis.call('GET', H.leader_prefix .. signature) == identity then
      redis.call('DEL', H.leader_prefix .. signature)
    end
  end
  redis.call('DEL', holds_key)
  return freed
end
