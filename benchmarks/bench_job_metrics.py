"""What the always-on per-job metrics cost: the recording per job, a heartbeat carrying 50 jobs' metrics, and the
noop throughput of one worker with the recording on and off.

    python -m benchmarks.bench_job_metrics [--jobs 20000] [--rounds 5]

On a private redis-server. The worker loads this module (-r); with BENCH_JOB_METRICS=off in its environment the
module replaces Counters.record with a no-op before the worker starts, which is the "off" case (the product has
no switch: the metrics are always on).
"""

import argparse
import os
import resource
import statistics
import sys
import time

from benchmarks.drain import alternate, jobs_per_second, report
from jiggler_gevent import config, job
from jiggler_gevent.server import job_metrics
from jiggler_gevent.server.heartbeat import Heartbeat, HeartbeatOptions
from jiggler_gevent.server.job_metrics_flush import JobMetricsFlush
from jiggler_gevent.server.stats import StatsFlush

if os.environ.get("BENCH_JOB_METRICS") == "off":
    job_metrics.Counters.record = lambda self, name, seconds, failed: None  # type: ignore[method-assign]


@job(name="benchmarks.bench_job_metrics.noop")  # named: this file also runs as __main__
def noop() -> None:
    """Does nothing."""


def recording_cost(jobs: int = 200_000) -> float:
    """CPU microseconds of Counters.after_process per finished job (count and per-job record)."""
    from jiggler_gevent.middleware import JobContext

    counters = job_metrics.Counters()
    ctx = JobContext({"name": "benchmarks.bench_job_metrics.noop", "queue": "default"}, "")
    ctx.started_at = time.time()
    started = time.process_time()
    for _ in range(jobs):
        counters.after_process(ctx)
    return (time.process_time() - started) / jobs * 1e6


def beat_cost(url: str, names: int = 50, beats: int = 200) -> tuple[float, float, int]:
    """Milliseconds of one Heartbeat.beat, without and with `names` jobs' metrics of one minute (each with runs,
    failures, time and three buckets used), and the Redis commands those metrics add to the beat."""
    config.configure(redis_url=url, namespace="bench-job-metrics")
    client = config.redis_client()
    counters = job_metrics.Counters(known=lambda name: True)
    keys = config.current().keys
    parts = [StatsFlush(keys, counters), JobMetricsFlush(keys, counters)]
    beat = Heartbeat(client, keys, "bench:1:x", HeartbeatOptions(), parts)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(beats):
        with_jobs = i % 2 == 1
        if with_jobs:
            for n in range(names):
                for seconds in (0.002, 0.04, 0.3):
                    counters.record(f"app.jobs.job_{n}", seconds, n % 10 == 0)
        started = time.perf_counter()
        assert beat.beat()
        times[with_jobs].append((time.perf_counter() - started) * 1000)
    fields = names * (3 + 3) + 1  # runs, ms, failed on one in ten, three buckets; one EXPIREAT
    client.flushdb()
    return statistics.median(times[False]), statistics.median(times[True]), fields


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain(url: str, jobs: int, on: bool) -> tuple[float, float]:
    """Jobs per second of one worker (-c 100) draining `jobs` noops, and its CPU microseconds per job."""
    config.configure(redis_url=url, namespace="bench-job-metrics")
    client = config.redis_client()
    client.flushdb()
    noop.enqueue_bulk([()] * jobs)
    queue = config.current().keys.queue("default")
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "benchmarks.bench_job_metrics", "-c", "100"]
    argv += ["--redis-url", url, "--namespace", "bench-job-metrics"]
    argv += ["--job-log", "off"]  # as when the figures in the README were taken: the job line has its own bench
    os.environ["BENCH_JOB_METRICS"] = "on" if on else "off"
    cpu = _children_cpu()
    rate = jobs_per_second(argv, queue, "bench-job-metrics", jobs)
    return rate, (_children_cpu() - cpu) / jobs * 1e6


def main() -> None:
    """Print the recording and beat costs, one line per drain, and the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    print(f"recording per job (Counters.after_process): {recording_cost():.2f} us CPU", flush=True)
    from jiggler_gevent.demo.local_redis import start_private

    url, stop = start_private()
    try:
        plain, loaded, fields = beat_cost(url)
        print(f"one beat: {plain:.2f} ms alone, {loaded:.2f} ms with 50 jobs' metrics ({fields} more commands)")
        samples = alternate(opts.rounds, lambda on: drain(url, opts.jobs, on), "per-job metrics")
    finally:
        stop()
    report(samples, "-c 100, noop", "per-job recording off", "per-job recording on", "off", "on")


if __name__ == "__main__":
    main()
