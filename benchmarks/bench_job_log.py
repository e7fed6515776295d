"""What the one INFO line per finished job costs: noop throughput and worker CPU per job with the line and without.

    python -m benchmarks.bench_job_log [--jobs 20000] [--rounds 5] [--concurrency 10]

On a private redis-server. The worker loads this module (-r) and writes its stderr to a file, as under a service
manager; `--job-log off` is the "off" case, the default (`info`) the "on" one. Runs alternate (benchmarks/drain.py).
"""

import argparse
import resource
import sys
import tempfile
from typing import IO

from benchmarks.drain import alternate, jobs_per_second, report
from jiggler_gevent import config, job


@job(name="benchmarks.bench_job_log.noop")  # named: this file also runs as __main__
def noop() -> None:
    """Does nothing."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain(url: str, jobs: int, concurrency: int, on: bool) -> tuple[float, float]:
    """Jobs per second of one worker draining `jobs` noops, and its CPU microseconds per job."""
    config.configure(redis_url=url, namespace="bench-job-log")
    client = config.redis_client()
    client.flushdb()
    noop.enqueue_bulk([()] * jobs)
    queue = config.current().keys.queue("default")
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "benchmarks.bench_job_log"]
    argv += ["-c", str(concurrency), "--redis-url", url, "--namespace", "bench-job-log"]
    argv += ["--job-log", "info" if on else "off"]
    cpu = _children_cpu()
    with tempfile.TemporaryFile() as log:
        rate = jobs_per_second(argv, queue, "bench-job-log", jobs, log)
        lines = _count_job_lines(log)
    assert lines == (jobs if on else 0), f"{lines} job lines with the line {'on' if on else 'off'}"
    return rate, (_children_cpu() - cpu) / jobs * 1e6


def _count_job_lines(log: IO[bytes]) -> int:
    log.seek(0)
    return sum(1 for line in log if b" INFO jiggler_gevent.jobs: done " in line)


def main() -> None:
    """One line per drain, then the medians of each side."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    opts = parser.parse_args()
    from jiggler_gevent.demo.local_redis import start_private

    url, stop = start_private()
    try:
        samples = alternate(opts.rounds, lambda on: drain(url, opts.jobs, opts.concurrency, on), "job line")
    finally:
        stop()
    report(samples, f"-c {opts.concurrency}, noop", "no job line", "one INFO line per job", "off", "on")


if __name__ == "__main__":
    main()
