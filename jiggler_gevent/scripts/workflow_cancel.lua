--#include lib_workflow
-- workflow_cancel: mark a running workflow cancelled, so that no step not yet pushed ever is (lib_workflow pushes
-- only while it is running). The caller then cancels the steps already pushed that have not ended, as
-- api.Job.cancel does (cancel.lua): the set of pushed steps cannot grow once this has run.
-- KEYS[1]  NS:workflow:<id>
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  seconds a workflow is kept after its last change
-- returns  the indexes of the steps pushed (as strings), or false when the workflow was not running
local E = { now = ARGV[1], batch_ttl = ARGV[2] }
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return false end
workflow_finish(E, KEYS[1], 'cancelled', 'error', '{"error_class":"JobCancelled"}')
workflow_keep(E, KEYS[1])
local pushed = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local step = string.match(fields[i], '^s(%d+)$')
  if step then pushed[#pushed + 1] = step end
end
return pushed
