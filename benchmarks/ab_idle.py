"""This tree against a git revision on an idle worker: latency enqueue -> start at a steady rate, in alternating rounds.

    python -m benchmarks.ab_idle REV [--rate 50] [--seconds 6] [--rounds 4] [--queues 1 3]

Each round starts a worker (`-c 20`) of REV and one of this tree in turn (the order flipped every round) on one
private server, on one queue or on three (`mail`, `low`, `default`), and pushes probes at `--rate` per second
from this process (the same client for both), each to a random one of the queues, carrying the time it was
enqueued; a probe's first act is to RPUSH its start minus that. Per side: p50 and p99 of those delays (medians
over the rounds), and per probe the worker's CPU, the round trips Redis served (INFO stats
total_reads_processed: the probe's push and its own RPUSH included, so a worker's own are 2 fewer) and the Redis
commands run (INFO commandstats, Lua's included, the pushes and RPUSHes included), each less the idle rate of
the same worker, measured for as long before the probes.
"""

import argparse
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import ab
from benchmarks.ab_kinds import alternating, commands, tree_cpu
from jiggler_gevent import config

JOBS_MODULE = """import time

from jiggler_gevent import config, job


@job(name="ab.probe", retries=0)
def probe(sent, key):
    config.redis_client().rpush(key, time.time() - sent)
"""
QUEUES = {1: ["default"], 3: ["mail", "low", "default"]}
DELAYS = "ab-idle:delays"
Counts = tuple[float, int, int]  # worker CPU s, Redis read events, Redis commands


def reads() -> int:
    """Read events Redis has processed so far: one per round trip a client makes (a pipeline's commands arrive
    together)."""
    return int(config.redis_client().info("stats")["total_reads_processed"])


def counts(pid: int) -> Counts:
    """What the worker `pid` and Redis have spent so far."""
    return tree_cpu(pid), reads(), commands()


def run(tree: Path, argv: list[str], queues: list[str], rate: float, seconds: float) -> tuple[float, ...]:
    """One worker of `tree` on `queues`, idle for `seconds`, then probed at `rate`/s for `seconds`: p50 and p99
    (ms), and per probe CPU (us), write syscalls and Redis commands, each less the idle rate."""
    client = config.redis_client()
    client.flushdb()
    import ab_jobs  # type: ignore[import-not-found]  # written to ab.JOBS_DIR at start

    argv = [*argv, *(a for q in queues for a in ("-q", q))]
    proc = subprocess.Popen(argv, cwd=tree, env=ab._env(tree), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for q in queues:  # warm-up: one probe per queue has run
            ab_jobs.probe.set(queue=q).enqueue(time.time(), DELAYS)
        _wait(lambda: client.llen(DELAYS) == len(queues))
        client.delete(DELAYS)
        idle0 = counts(proc.pid)
        time.sleep(seconds)
        idle1 = counts(proc.pid)
        n = int(rate * seconds)
        start = time.perf_counter()
        for i in range(n):
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
            ab_jobs.probe.set(queue=random.choice(queues)).enqueue(time.time(), DELAYS)
        _wait(lambda: client.llen(DELAYS) == n)
        busy = counts(proc.pid)
        span = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(30)
    delays = sorted(float(d) * 1000 for d in client.lrange(DELAYS, 0, -1))
    idle_per_s = [(b - a) / seconds for a, b in zip(idle0, idle1, strict=True)]
    per_probe = [(b - a - r * span) / n for a, b, r in zip(idle1, busy, idle_per_s, strict=True)]
    p50, p99 = delays[len(delays) // 2], delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return p50, p99, per_probe[0] * 1e6, per_probe[1], per_probe[2]


def _wait(done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the worker did not run the probes"
        time.sleep(0.01)


def main() -> None:
    """Alternate REV's worker and this tree's, for each queue setup; print the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("rev")
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--queues", type=int, nargs="+", choices=(1, 3), default=[1, 3])
    opts = parser.parse_args()
    measure = lambda tree, argv, q: run(tree, argv, QUEUES[q], opts.rate, opts.seconds)  # noqa: E731
    rows = alternating(opts.rev, JOBS_MODULE, 20, opts.rounds, opts.queues, measure)
    print(
        f"\n| {opts.rate:g}/s, medians of {opts.rounds} alternating rounds | p50 ms | p99 ms | worker CPU us/probe "
        "| round trips/probe | Redis cmds/probe |\n|---|---:|---:|---:|---:|---:|"
    )
    for (q, side), samples in rows.items():
        med = [statistics.median(col) for col in zip(*samples, strict=True)]
        name = "this tree" if side else opts.rev
        print(f"| {q} queue(s), {name} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.0f} | {med[3]:.2f} | {med[4]:.2f} |")


if __name__ == "__main__":
    main()
