-- job_max: raise fields of one minute's per-job metrics hash to at least the values given (each job's longest run
-- in that minute, in microseconds): what HINCRBY is to the counts, a maximum over every worker's heartbeats.
-- KEYS[1]  NS:metrics:<minute>
-- ARGV     pairs: the field <job>|max_us, then a whole number of microseconds
-- returns  how many fields were raised
local raised = 0
for i = 1, #ARGV, 2 do
  local value = tonumber(ARGV[i + 1])
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if value > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    raised = raised + 1
  end
end
return raised
