--#include lib_ready
-- lib_workflow: a workflow's steps pushed as the steps before them succeed. Included by lib_ending (so by settle
-- and cancel, whose batch_end calls workflow_end for a step) and by workflow_push and workflow_cancel.
-- Guarantee: a step is pushed exactly once, in the same atomic step that records the success of the last step it
-- waits for (batch_end counts each jid's success once, however often at-least-once delivery runs it); steps run
-- at least once, like every job. A workflow is "running" until its last step succeeds ("succeeded"), a step ends
-- dead or dropped ("failed") or cancelled ("cancelled"), or it is cancelled; once it is not running, no step is
-- pushed. A SIGKILLed worker's step runs again after its recovery, and its success, counted once, pushes what
-- follows. The workflow hash (KEY NS:workflow:<id>, named in its batch's hash) is described in keys.py.
-- `E` holds: qprefix (NS:queue:), queues (NS:queues), wake (NS:wake), now (unix seconds), batch_ttl.

-- The JSON of an input shape: a step's index is its result, a list is the list of its members' inputs.
local function workflow_input(wkey, shape)
  if type(shape) == 'number' then return redis.call('HGET', wkey, 'r' .. shape) or 'null' end
  local parts = {}
  for _, member in ipairs(shape) do parts[#parts + 1] = workflow_input(wkey, member) end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function workflow_push(E, wkey, step)
  local f = redis.call('HMGET', wkey, 'h' .. step, 't' .. step, 'in' .. step, 'q' .. step)
  if not f[1] then return end  -- pushed already (the counting never does it): a Lua error would fail the settle
  local raw = f[1]
  if f[2] then raw = raw .. workflow_input(wkey, cjson.decode(f[3])) .. f[2] end
  ready(E.qprefix .. f[4], '{"enqueued_at":' .. E.now .. ',' .. string.sub(raw, 2), false)
  redis.call('SADD', E.queues, f[4])
  redis.call('ZADD', E.wake, 0, 'wake')
  redis.call('HSET', wkey, 's' .. step, E.now)
  redis.call('HDEL', wkey, 'h' .. step, 't' .. step)  -- pushed once: its payload is no longer needed here
end

local function workflow_finish(E, wkey, status, field, value)
  redis.call('HSET', wkey, 'status', status, 'finished_at', E.now, field, value)
  local done = wkey .. ':done'
  redis.call('DEL', done)
  redis.call('RPUSH', done, status)
  redis.call('EXPIRE', done, E.batch_ttl)
end

local function workflow_keep(E, wkey)
  redis.call('EXPIRE', wkey, E.batch_ttl)
end

-- A step ended with a job status (done, dead, expired, cancelled; retrying changes nothing); `detail` is its result
-- (done) or error as JSON. Called once per step's first success, any number of times for failures.
local function workflow_end(E, wkey, jid, status, detail)
  local step = redis.call('HGET', wkey, 'j:' .. jid)
  if not step then return end  -- a job a step added to the workflow's batch: not a step
  local running = redis.call('HGET', wkey, 'status') == 'running'
  if status == 'done' then
    redis.call('HSET', wkey, 'r' .. step, detail ~= '' and detail or 'null')
    local left = redis.call('HINCRBY', wkey, 'left', -1)
    if running then
      for next_step in string.gmatch(redis.call('HGET', wkey, 'n' .. step) or '', '[^,]+') do
        if redis.call('HINCRBY', wkey, 'w' .. next_step, -1) == 0 then workflow_push(E, wkey, next_step) end
      end
      if left <= 0 then
        local out = workflow_input(wkey, cjson.decode(redis.call('HGET', wkey, 'out')))
        workflow_finish(E, wkey, 'succeeded', 'result', out)
      end
    end
  elseif running and (status == 'dead' or status == 'expired' or status == 'cancelled') then
    redis.call('HSET', wkey, 'failed_jid', jid)
    workflow_finish(E, wkey, status == 'cancelled' and 'cancelled' or 'failed', 'error', detail)
  end
  workflow_keep(E, wkey)
end
