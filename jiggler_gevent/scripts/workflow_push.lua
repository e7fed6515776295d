--#include lib_workflow
-- workflow_push: create a workflow and push its first steps, all in one atomic step (nothing is written when it
-- fails). The workflow's hash holds every step's payload; its batch (whose members are the steps, all counted as
-- pending from the start) names the workflow's hash, so that the end of each step reaches it (lib_ending).
-- KEYS[1]  NS:queues
-- KEYS[2]  NS:wake
-- KEYS[3]  NS:workflows
-- KEYS[4]  NS:workflow:<id>
-- KEYS[5]  NS:batch:<id>
-- ARGV[1]  the queue key prefix NS:queue:
-- ARGV[2]  now (unix seconds)
-- ARGV[3]  seconds a workflow (and a batch) is kept after its last change
-- ARGV[4]  the workflow id
-- ARGV[5]  the workflow hash's fields, alternating names and values, JSON-encoded (an array of strings)
-- ARGV[6]  the batch hash's fields, the same way
-- ARGV[7]  the oldest creation time kept in NS:workflows (now - ARGV[3])
-- ARGV[8]  the status key prefix NS:result: (each step's status hash names its workflow: field `workflow`)
-- ARGV[9..] the indexes of the steps to push now (those that wait for none)
-- returns  the number of steps pushed
local E = { qprefix = ARGV[1], queues = KEYS[1], wake = KEYS[2], now = ARGV[2], batch_ttl = ARGV[3] }
local CHUNK = 1000  -- unpack() has a limit on how many values it returns: a big workflow is written in parts

local function hset_all(key, fields)
  for first = 1, #fields, CHUNK do
    redis.call('HSET', key, unpack(fields, first, math.min(first + CHUNK - 1, #fields)))
  end
  redis.call('EXPIRE', key, E.batch_ttl)
end

hset_all(KEYS[4], cjson.decode(ARGV[5]))
hset_all(KEYS[5], cjson.decode(ARGV[6]))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[7])
for _, step in ipairs(cjson.decode(redis.call('HGET', KEYS[4], 'steps'))) do
  local rkey = ARGV[8] .. step[1]
  redis.call('HSET', rkey, 'workflow', ARGV[4])
  redis.call('EXPIRE', rkey, E.batch_ttl)
end
for i = 9, #ARGV do workflow_push(E, KEYS[4], ARGV[i]) end
return #ARGV - 8
