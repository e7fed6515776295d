# bench_io's Ruby column: `ruby benchmarks/io_calls.rb redis|pg2 N URL`.
# 10 threads, each with its own connection (redis gem: INCR; pg gem: SELECT 1), WARM calls each, then N calls in
# all; prints {"cpu_us": process CPU per call, "rate": calls/s} as one JSON line.
require "json"

kind, n, url = ARGV[0], ARGV[1].to_i, ARGV[2]
CALLERS = 10
WARM = 200

def connect(kind, url)
  if kind == "redis"
    require "redis"
    r = Redis.new(url: url)
    -> { r.incr("bench-io:n") }
  else
    require "pg"
    conn = PG.connect(url)
    -> { conn.exec("SELECT 1").getvalue(0, 0) }
  end
end

def run(calls, each)
  calls.map { |call| Thread.new { each.times { call.call } } }.each(&:join)
end

calls = Array.new(CALLERS) { connect(kind, url) }
run(calls, WARM)
cpu0 = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
run(calls, n / CALLERS)
elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
cpu = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) - cpu0
puts JSON.generate({ cpu_us: cpu / n * 1e6, rate: n / elapsed })
