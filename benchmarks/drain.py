"""Timing a `gjiggler worker` subprocess draining a queue: what bench_limits and bench_metrics share."""

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from jiggler_gevent import config

ROOT = Path(__file__).resolve().parent.parent
Samples = dict[bool, tuple[list[float], list[float]]]  # off/on -> (jobs/s, CPU us per job) of each run


def jobs_per_second(
    argv: list[str],
    queue: str,
    namespace: str,
    jobs: int,
    log: IO[bytes] | None = None,
    tree: Path = ROOT,
    pythonpath: str | None = None,
) -> float:
    """Start the worker `argv` on `jobs` queued jobs; jobs/s from its first take until the queue and every working
    list of `namespace` are empty. Fails if any job died (the worker did not load the jobs' module). Its stderr
    goes to `log` (a file, as a service manager's would), else nowhere. It runs in `tree` (another checkout's, to
    compare revisions) with `pythonpath` (default: `tree`)."""
    client = config.redis_client()
    env = dict(os.environ, PYTHONPATH=pythonpath or str(tree))
    sink = log if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        while client.llen(queue) == jobs:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with code {proc.returncode} before taking a job: {argv}")
            time.sleep(0.001)
        started = time.perf_counter()
        working = f"{namespace}:working:*"
        while client.llen(queue) > 0 or any(client.llen(k) for k in client.scan_iter(working)):
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        assert client.zcard(config.current().keys.dead) == 0, "jobs died: is the worker loading this module?"
        return jobs / elapsed
    finally:
        proc.terminate()
        proc.wait(30)


def alternate(rounds: int, measure: "Callable[[bool], tuple[float, float]]", what: str) -> "Samples":
    """`measure(on)` -> (jobs/s, CPU us per job), `rounds` times each way, the order flipped every round so that
    drift in the machine's load falls on both sides; prints one line per run."""
    samples: Samples = {False: ([], []), True: ([], [])}
    for i in range(rounds):
        for on in (False, True) if i % 2 == 0 else (True, False):
            rate, cpu = measure(on)
            samples[on][0].append(rate)
            samples[on][1].append(cpu)
            state = "on " if on else "off"
            print(f"round {i + 1}, {what} {state}: {rate:,.0f} jobs/s, {cpu:.1f} us CPU/job", flush=True)
    return samples


def report(
    samples: "Samples", title: str, off: str, on: str, off_word: str, on_word: str, cpu: str = "worker CPU per job"
) -> None:
    """The medians of `alternate`'s samples as a table, the throughput cost and the CPU per job of each side."""
    rate_off, rate_on = (statistics.median(samples[side][0]) for side in (False, True))
    rounds = len(samples[False][0])
    print(f"\n| {title} | jobs/s (median of {rounds}) |\n|---|---:|")
    print(f"| {off} | {rate_off:,.0f} |\n| {on} | {rate_on:,.0f} |")
    print(f"\ncost: {100 * (rate_off - rate_on) / rate_off:.1f}%")
    cpu_off, cpu_on = (statistics.median(samples[side][1]) for side in (False, True))
    change = 100 * (cpu_on / cpu_off - 1)
    print(f"{cpu}: {cpu_off:.1f} us {off_word}, {cpu_on:.1f} us {on_word}: {change:+.1f}%")
