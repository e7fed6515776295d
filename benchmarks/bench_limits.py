"""What unique jobs and limiters cost: Redis round trips and time per operation, and worker throughput.

    python -m benchmarks.bench_limits [--jobs 20000] [--ops 3000]

On a private redis-server: per `concurrent` acquire+release, per unique enqueue, next to a plain enqueue
(round trips counted from Redis' total_commands_processed); then N noop jobs drained by one worker
subprocess (`-c 100`), plain and with `@job(concurrency=1000)`. The worker loads this module (-r).
"""

import argparse
import sys
import time
from collections.abc import Callable

from benchmarks.drain import jobs_per_second
from jiggler_gevent import config, job, limits


@job
def noop() -> None:
    """Does nothing."""


@job(concurrency=1000)
def noop_limited() -> None:
    """Does nothing, at most 1000 at once."""


def _counts(client) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(EVALSHA calls, every command including those run inside scripts) so far."""
    evalsha = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    return int(evalsha), int(client.info("stats")["total_commands_processed"])


def per_op(label: str, ops: int, fn: Callable[[int], object]) -> None:
    client = config.redis_client()
    fn(-1)  # warm: scripts loaded, connection open
    trips0, commands0 = _counts(client)
    started = time.perf_counter()
    for i in range(ops):
        fn(i)
    elapsed = time.perf_counter() - started
    trips1, commands1 = _counts(client)
    commands = (commands1 - commands0 - 2) / ops  # less the two INFO calls that read the counts
    print(f"| {label} | {(trips1 - trips0) / ops:.2f} | {commands:.2f} | {elapsed / ops * 1e6:.0f} |")


def drain(url: str, namespace: str, fn: Callable[..., object], jobs: int) -> float:
    fn.enqueue_bulk([()] * jobs)  # type: ignore[attr-defined]
    queue = config.current().keys.queue("default")
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "benchmarks.bench_limits", "-c", "100"]
    argv += ["--redis-url", url, "--namespace", namespace]
    argv += ["--job-log", "off"]  # as when the figures in the README were taken: the job line has its own bench
    return jobs_per_second(argv, queue, namespace, jobs)


def main() -> None:
    """Print the two tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--ops", type=int, default=3000)
    opts = parser.parse_args()
    from benchmarks import bench_limits as jobs  # the jobs under the name the worker loads, not __main__
    from jiggler_gevent.demo.local_redis import start_private

    url, stop = start_private()
    try:
        config.configure(redis_url=url, namespace="bench")
        limiter = limits.concurrent("bench", 10)
        print("| operation | round trips (EVALSHA) | Redis commands, inside scripts too | µs |\n|---|---:|---:|---:|")
        per_op("plain enqueue", opts.ops, lambda i: jobs.noop.enqueue())
        unique = jobs.noop.set(unique_for=3600)
        per_op("unique enqueue (pushed)", opts.ops, lambda i: unique.enqueue(i))
        per_op("unique enqueue (duplicate, skipped)", opts.ops, lambda i: unique.enqueue(0))
        per_op("concurrent acquire + release", opts.ops, lambda i: limiter.release(limiter.acquire()))
        config.redis_client().flushdb()
        print("\n| worker, -c 100 | jobs/s |\n|---|---:|")
        for label, fn in (("noop", jobs.noop), ("noop, @job(concurrency=1000)", jobs.noop_limited)):
            config.configure(namespace=f"bench-{fn.__name__}")
            print(f"| {label} | {drain(url, f'bench-{fn.__name__}', fn, opts.jobs):,.0f} |")
    finally:
        stop()


if __name__ == "__main__":
    main()
