--#include lib_workflow
-- lib_ending: included at the top of the scripts that end jobs or open batches (settle, cancel, push_each).
-- track() writes a tracked job's status (only jobs with result_ttl have NS:result:<jid>): once ended (done,
-- dead, cancelled, expired) it keeps its result or error for result_ttl seconds, is never changed again, and one member
-- is pushed to NS:result:<jid>:done to wake every waiter. batch_end() counts a job of a batch that succeeded or
-- failed (`status` as track() takes it: done, retrying, dead, cancelled); each jid is counted once however often it
-- runs (at-least-once delivery), and a workflow's step ends there too (lib_workflow); batch_check() enqueues
-- each callback exactly once: on_complete when every job not yet succeeded has failed at least once,
-- on_success when every job has succeeded. `E` holds what these need: qprefix (NS:queue:), queues (NS:queues),
-- wake (NS:wake), now (unix seconds), pending_ttl, batch_ttl.
local ENDED = { done = true, dead = true, cancelled = true, expired = true }

local function track(E, rkey, status, detail, ttl)
  if ENDED[redis.call('HGET', rkey, 'status')] then return end
  redis.call('HSET', rkey, 'status', status, 'updated_at', E.now)
  if status == 'done' then
    redis.call('HSET', rkey, 'result', detail)
  elseif detail ~= '' then
    redis.call('HSET', rkey, 'error', detail)
  end
  if ENDED[status] then
    local done = rkey .. ':done'
    redis.call('DEL', done)
    redis.call('RPUSH', done, status)
    redis.call('EXPIRE', rkey, ttl)
    redis.call('EXPIRE', done, ttl)
  else
    redis.call('EXPIRE', rkey, E.pending_ttl)
  end
end

local function batch_callback(E, bkey, which)
  local raw = redis.call('HGET', bkey, 'cb_' .. which)
  if raw then
    local queue = redis.call('HGET', bkey, 'cbq_' .. which)
    ready(E.qprefix .. queue, '{"enqueued_at":' .. E.now .. ',' .. string.sub(raw, 2), false)
    redis.call('SADD', E.queues, queue)
    redis.call('ZADD', E.wake, 0, 'wake')
  end
end

local function batch_check(E, bkey)
  local pending = tonumber(redis.call('HGET', bkey, 'pending') or '0')
  if pending <= redis.call('SCARD', bkey .. ':failed') and redis.call('HSETNX', bkey, 'complete_at', E.now) == 1 then
    batch_callback(E, bkey, 'complete')
  end
  if pending <= 0 and redis.call('HSETNX', bkey, 'success_at', E.now) == 1 then
    batch_callback(E, bkey, 'success')
  end
  for _, k in ipairs({ bkey, bkey .. ':ok', bkey .. ':failed' }) do redis.call('EXPIRE', k, E.batch_ttl) end
end

local function batch_end(E, bkey, jid, status, detail)
  if redis.call('EXISTS', bkey) == 0 then return end
  local counted = false
  if status == 'done' then
    counted = redis.call('SADD', bkey .. ':ok', jid) == 1
    if counted then
      redis.call('HINCRBY', bkey, 'pending', -1)
      redis.call('SREM', bkey .. ':failed', jid)
    end
  elseif redis.call('SISMEMBER', bkey .. ':ok', jid) == 0 then
    redis.call('SADD', bkey .. ':failed', jid)
    counted = true
  end
  local wkey = counted and redis.call('HGET', bkey, 'workflow')
  if wkey then workflow_end(E, wkey, jid, status, detail) end
  batch_check(E, bkey)
end
