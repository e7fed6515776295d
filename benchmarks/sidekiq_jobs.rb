# frozen_string_literal: true

# Sidekiq in the benchmark (see sys_sidekiq.py). The worker loads this file: `sidekiq -r FILE -c C -q QUEUE`,
# with REDIS_URL set to the harness's Redis. Run as a script, it is the enqueuer, Sidekiq's own client:
#
#   ruby FILE preload WORKLOAD N               push N jobs with Sidekiq::Client.push_bulk, 1,000 a call
#   ruby FILE single N | bulk N                timed pushes of noop jobs; prints {"jobs": N, "seconds": S}
#   ruby FILE paced RATE SECONDS QUEUE...      probe jobs at a steady rate; prints {"sent", "seconds", "behind_ms"}
#
# The workloads match benchmarks/common.py; every job ends with an INCR of the done key, and a probe's first act
# is an RPUSH of (start - enqueued) seconds, on a connection pool of the job's own (as common.redis_client()).

require "json"
require "net/http"
require "sidekiq"

Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)
Sidekiq.logger.level = Logger::WARN

# Settings and workloads shared by the jobs and the enqueuer.
module Bench
  REDIS_URL = ENV.fetch("REDIS_URL")
  HTTP_URI = URI(ENV.fetch("BENCH_HTTP_URL", "http://127.0.0.1:8099/"))
  PG_DSN = ENV.fetch("BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=jiggler_bench")
  FILE_PATH = ENV.fetch("BENCH_FILE", "/tmp/jiggler-bench-lines.txt")
  QUEUE = "bench"
  DONE_KEY = "bench:done"
  LATENCY_KEY = "bench:latency"
  WARMUP_KEY = "bench:warmup"
  SLEEP = 0.2
  PG_SLEEP = 0.1
  FIB_N = 25
  CHUNK = 1_000

  REDIS = ConnectionPool.new(size: 1024, timeout: 5) { Redis.new(url: REDIS_URL) }

  def self.fib(n)
    n < 2 ? n : fib(n - 1) + fib(n - 2)
  end

  # One keep-alive HTTP connection per thread, as a requests.Session pool gives each greenlet.
  def self.http
    conn = Thread.current[:bench_http] ||= Net::HTTP.start(HTTP_URI.host, HTTP_URI.port)
    conn.request(Net::HTTP::Get.new(HTTP_URI)).value
  end

  # One PostgreSQL connection per thread, made on first need.
  def self.pg
    require "pg"
    conn = Thread.current[:bench_pg] ||= PG.connect(PG_DSN)
    conn.exec_params("SELECT pg_sleep($1)", [PG_SLEEP]).values
  end

  def self.append_line
    File.open(FILE_PATH, "a") { |f| f.write("#{Process.pid} #{Time.now.to_f}\n") }
  end

  WORKLOADS = {
    "noop" => -> {},
    "sleep" => -> { sleep(SLEEP) },
    "http" => -> { http },
    "pg" => -> { pg },
    "file" => -> { append_line },
    "fib" => -> { fib(FIB_N) }
  }.freeze

  def self.done
    REDIS.with { |c| c.incr(DONE_KEY) }
  end

  # A probe's first act: how long it waited, from its enqueuer's clock to this job's start.
  def self.record(enqueued)
    start = Time.now.to_f
    REDIS.with { |c| c.rpush(enqueued.positive? ? LATENCY_KEY : WARMUP_KEY, start - enqueued) }
  end

  def self.monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end

# The benchmark's job: the workload, then the INCR the harness counts.
class BenchJob
  include Sidekiq::Worker
  sidekiq_options queue: Bench::QUEUE, retry: false

  def perform(workload)
    Bench::WORKLOADS.fetch(workload).call
    Bench.done
  end
end

# The latency rows' job: `enqueued` is the enqueuer's Time.now.to_f (0 for a warm-up).
class ProbeJob
  include Sidekiq::Worker
  sidekiq_options queue: Bench::QUEUE, retry: false

  def perform(enqueued)
    Bench.record(enqueued)
  end
end

# The enqueuer's commands (see the top of this file).
module Enqueuer
  module_function

  def push_bulk(workload, count)
    count.times.each_slice(Bench::CHUNK) do |slice|
      Sidekiq::Client.push_bulk("class" => BenchJob, "args" => slice.map { [workload] })
    end
  end

  def timed(mode, count)
    BenchJob.perform_async("noop") # untimed: opens the connection
    started = Bench.monotonic
    if mode == "bulk"
      push_bulk("noop", count)
    else
      count.times { BenchJob.perform_async("noop") }
    end
    {jobs: count, seconds: Bench.monotonic - started}
  end

  # One warm-up probe per queue; returns when the worker has run them all, and has had time to go idle again.
  def warm_up(queues, deadline = 60)
    queues.each { |q| ProbeJob.set(queue: q).perform_async(0) }
    ends = Bench.monotonic + deadline
    sleep(0.01) while Bench::REDIS.with { |c| c.llen(Bench::WARMUP_KEY) } < queues.size && Bench.monotonic < ends
    sleep(1.0)
  end

  # Probes at `rate` per second for `seconds`, each to a random one of `queues`, against absolute deadlines.
  def paced(rate, seconds, queues)
    warm_up(queues)
    rng = Random.new(13)
    targets = Array.new((rate * seconds).round) { queues[rng.rand(queues.size)] }
    behind = 0.0
    started = Bench.monotonic
    targets.each_with_index do |queue, i|
      wait = started + i / rate - Bench.monotonic
      wait.positive? ? sleep(wait) : behind = [behind, -wait].max
      ProbeJob.set(queue: queue).perform_async(Time.now.to_f)
    end
    {sent: targets.size, seconds: Bench.monotonic - started, behind_ms: behind * 1000}
  end

  def main(argv)
    case argv[0]
    when "preload" then push_bulk(argv[1], Integer(argv[2]))
    when "single", "bulk" then puts JSON.generate(timed(argv[0], Integer(argv[1])))
    when "paced" then puts JSON.generate(paced(Float(argv[1]), Float(argv[2]), argv[3..]))
    else abort("usage: ruby #{__FILE__} preload WORKLOAD N | single N | bulk N | paced RATE SECONDS QUEUE...")
    end
  end
end

Enqueuer.main(ARGV) if $PROGRAM_NAME == __FILE__
