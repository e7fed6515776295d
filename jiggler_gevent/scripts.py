"""The Lua scripts jiggler_gevent runs in Redis. Each is atomic: no other client sees it half done.

Every key a script touches is passed in KEYS or, where the number of queues varies, built from a
prefix in ARGV; the header of each script names them. Key names themselves come from keys.py.
"""
from typing import Any, Dict

import redis

FETCH = """
-- fetch: acknowledge the payloads finished since the last call, then pop up to ARGV[1] payloads, oldest
-- first, trying the queues in the order given, and hold each one in this process's working list until it
-- is acknowledged (at-least-once delivery). One round trip per batch does both.
-- KEYS[1]     NS:working:<identity>
-- KEYS[2..n]  NS:queue:<name>, in the order to try them
-- ARGV[1]     the most payloads to take
-- ARGV[2..]   payloads that finished: removed from the working list first
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
"""

ACK = """
-- ack: write the outcome of finished jobs: each leaves the working list, and a failed one is added to the
-- retry or the dead set in the same step; the dead set is trimmed by age and size.
-- KEYS[1]  NS:working:<identity>
-- KEYS[2]  NS:retry
-- KEYS[3]  NS:dead
-- ARGV[1]  the oldest score kept in the dead set (now - 180 days)
-- ARGV[2]  the most entries kept in the dead set
-- ARGV     then groups of 4: payload held, target ("" done, "retry", "dead"), payload to add, score
-- returns  how many payloads were acknowledged
local buried = false
for i = 3, #ARGV, 4 do
  redis.call('LREM', KEYS[1], -1, ARGV[i])
  local target = ARGV[i + 1]
  if target == 'retry' then
    redis.call('ZADD', KEYS[2], ARGV[i + 3], ARGV[i + 2])
  elseif target == 'dead' then
    redis.call('ZADD', KEYS[3], ARGV[i + 3], ARGV[i + 2])
    buried = true
  end
end
if buried then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[2]) - 1)
end
return (#ARGV - 2) / 4
"""

REQUEUE = """
-- requeue: put payloads held in a working list back at the front of their queues, unchanged.
-- KEYS[1]  NS:working:<identity>
-- KEYS[2]  NS:queues
-- ARGV     pairs of (queue name, payload), and ARGV[#ARGV] the queue key prefix NS:queue:
-- returns  how many were put back (a payload no longer held is skipped, so nothing runs twice)
local prefix = ARGV[#ARGV]
local n = 0
for i = 1, #ARGV - 1, 2 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i + 1]) > 0 then
    redis.call('RPUSH', prefix .. ARGV[i], ARGV[i + 1])
    redis.call('SADD', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
"""

ADOPT = """
-- adopt: take over the working list of a process whose heartbeat has expired, so that exactly one
-- live process recovers each of its jobs.
-- KEYS[1]  NS:process:<dead identity>   (its heartbeat)
-- KEYS[2]  NS:working:<dead identity>
-- KEYS[3]  NS:working:<my identity>
-- KEYS[4]  NS:processes
-- KEYS[5]  NS:work:<dead identity>
-- ARGV[1]  the dead identity
-- ARGV[2]  "force" to adopt even if the heartbeat is still there (the supervisor saw the process die)
-- returns  the payloads adopted, or false when that process is still alive
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[1]) == 1 then return false end
local moved = {}
while true do
  local p = redis.call('RPOPLPUSH', KEYS[2], KEYS[3])
  if not p then break end
  moved[#moved + 1] = p
end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[5])
return moved
"""

MOVE_DUE = """
-- move_due: move payloads whose time has come from a sorted set to the back of their queues.
-- KEYS[1]  NS:schedule or NS:retry
-- KEYS[2]  NS:queues
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  the most payloads to move in one call
-- ARGV[3]  the queue key prefix NS:queue:
-- returns  how many were moved
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, p in ipairs(due) do
  redis.call('ZREM', KEYS[1], p)
  local ok, job = pcall(cjson.decode, p)
  local queue = 'default'
  if ok and type(job) == 'table' and type(job.queue) == 'string' and job.queue ~= '' then queue = job.queue end
  redis.call('LPUSH', ARGV[3] .. queue, p)
  redis.call('SADD', KEYS[2], queue)
end
return #due
"""

MOVE_ONE = """
-- move_one: move one payload from a sorted set to the back of its queue, if it is still in the set.
-- KEYS[1]  the sorted set (NS:schedule, NS:retry or NS:dead)
-- KEYS[2]  NS:queues
-- KEYS[3]  NS:queue:<name>
-- ARGV[1]  the payload as stored in the set
-- ARGV[2]  the payload to push (the same job, its enqueued_at refreshed)
-- ARGV[3]  the queue name
-- returns  1 when moved, 0 when it was no longer in the set
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[3], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
  return 1
end
return 0
"""

_SOURCES = {"fetch": FETCH, "ack": ACK, "requeue": REQUEUE, "adopt": ADOPT, "move_due": MOVE_DUE, "move_one": MOVE_ONE}


def register(client: redis.Redis) -> Dict[str, Any]:
    """The scripts bound to `client`, by name; each call uses EVALSHA and reloads after a Redis restart."""
    return {name: client.register_script(source) for name, source in _SOURCES.items()}
