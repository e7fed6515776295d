"""What Sentinel costs: the noop and sleep-c1000 rows through redis+sentinel:// next to plain redis:// on the same
server.

    python -m benchmarks.bench_sentinel [--jobs 20000] [--rounds 3]

A private Sentinel-managed pair (a master, a replica, a sentinel: tests/sentinel_servers.py) is started; each round
drains the same jobs (benchmarks.sys_jiggler's job) once through the plain URL of the master and once through the
Sentinel URL, alternating which goes first. Jobs/s from the worker's first take until the queue and its working
lists are empty (benchmarks/drain.py); the medians are printed as a table.
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import common
from benchmarks.drain import jobs_per_second
from benchmarks.sys_jiggler import work
from jiggler_gevent import config

NAMESPACE = "bench-sentinel"
ROWS = (("noop", "noop", 10), ("sleep-c1000", "sleep", 1000))  # id, workload, concurrency


def drain(url: str, workload: str, concurrency: int, jobs: int) -> float:
    """Jobs per second of one worker draining `jobs` of `workload` at `url`."""
    config.configure(redis_url=url, namespace=NAMESPACE)
    client = config.redis_client()
    client.flushdb()
    for start in range(0, jobs, common.CHUNK):
        work.enqueue_bulk([(workload,)] * min(common.CHUNK, jobs - start))
    queue = config.current().keys.queue(common.QUEUE)
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "benchmarks.sys_jiggler", "-q", common.QUEUE]
    argv += ["-c", str(concurrency), "--redis-url", url, "--namespace", NAMESPACE]
    return jobs_per_second(argv, queue, NAMESPACE, jobs)


def main() -> None:
    """Print one line per run and the table of medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    from tests.sentinel_servers import SentinelPair

    root = Path(tempfile.mkdtemp(prefix="jiggler-bench-sentinel-"))
    pair = SentinelPair(root)
    plain = f"redis://127.0.0.1:{pair.master.port}/0"
    os.environ["BENCH_REDIS_URL"] = common.REDIS_URL = plain  # the jobs' done counter: the master, directly
    urls = {"redis://": plain, "redis+sentinel://": pair.url}
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        for row, workload, concurrency in ROWS:
            for i in range(opts.rounds):
                order = list(urls) if i % 2 == 0 else list(reversed(urls))
                for scheme in order:
                    rate = drain(urls[scheme], workload, concurrency, opts.jobs)
                    rates.setdefault((row, scheme), []).append(rate)
                    print(f"{row} round {i + 1}, {scheme}: {rate:,.0f} jobs/s", flush=True)
    finally:
        pair.stop()
    print(f"\n| row ({opts.jobs:,} jobs, median of {opts.rounds}) | redis:// jobs/s | redis+sentinel:// jobs/s |")
    print("|---|---:|---:|")
    for row, _, concurrency in ROWS:
        a, b = (statistics.median(rates[(row, s)]) for s in urls)
        print(f"| {row} (-c {concurrency}) | {a:,.0f} | {b:,.0f} |")


if __name__ == "__main__":
    main()
