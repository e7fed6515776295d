"""What an iterable job's checkpoints and progress() cost: nanoseconds per iteration against a plain loop, and
per call of progress().

    python -m benchmarks.bench_iterable [--steps 1000000] [--rounds 5]

In one process, on a private redis-server (the worker's own code path: Iterations.runner reads the stored cursor
at the start and writes it every CHECKPOINT_EVERY seconds and at the end). Each case runs `--rounds` times,
alternating; the best round counts (the least disturbed by other work on the machine).
- plain loop: a function that calls an empty step `--steps` times (what a job that does not iterate does);
- checkpoints: a generator that calls the same step and yields its index, run by the worker's runner;
- checkpoints, list cursor: the same, yielding a two-item list (checked as JSON at each checkpoint);
- progress(): `--steps` calls of jiggler_gevent.progress(fraction, message) inside a running job (memory only:
  the heartbeat writes what changed).
"""

import argparse
import time
from collections.abc import Callable

from jiggler_gevent import config, job, progress
from jiggler_gevent import payload as payload_mod
from jiggler_gevent.job import JobFunction
from jiggler_gevent.logs import current_job
from jiggler_gevent.middleware import JobContext


def step(i: int) -> int:
    """The work of one iteration: none."""
    return i


def plain(steps: int) -> int:
    """A loop that does not checkpoint."""
    for i in range(steps):
        step(i)
    return steps


@job(name="benchmarks.bench_iterable.scalar", iterable=True)
def scalar(steps: int, cursor: int | None = None):  # type: ignore[no-untyped-def]
    """Yields an int cursor per step."""
    for i in range(0 if cursor is None else cursor + 1, steps):
        step(i)
        yield i
    return steps


@job(name="benchmarks.bench_iterable.listed", iterable=True)
def listed(steps: int, cursor: list[int] | None = None):  # type: ignore[no-untyped-def]
    """Yields a two-item list cursor per step."""
    for i in range(0 if cursor is None else cursor[0] + 1, steps):
        step(i)
        yield [i, i]
    return steps


def reporting(steps: int) -> int:
    """progress() at every step, as a job that reports too often would."""
    for i in range(steps):
        progress(i / steps, "working")
    return steps


def runner_of(func: JobFunction) -> Callable[..., object]:
    """The worker's runner for the iterable job `func`, with a fresh jid each time (no stored cursor)."""
    from jiggler_gevent.server.iteration import Iterations

    cfg = config.current()
    payload = payload_mod.build(func.name, [0])
    ctx = JobContext(payload, "")
    return Iterations(config.redis_client(), cfg.keys).runner(func, ctx)


def timed(call: Callable[[], object], steps: int) -> float:
    """Nanoseconds per step of one run of `call`."""
    token = current_job.set(("bench", "jid-bench"))  # as in a running job (progress() reads it)
    try:
        start = time.perf_counter_ns()
        call()
        return (time.perf_counter_ns() - start) / steps
    finally:
        current_job.reset(token)


def main() -> None:
    """Print the best nanoseconds per step of each case, and the difference to the plain loop."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    from jiggler_gevent.demo.local_redis import start_private

    url, stop = start_private()
    config.configure(redis_url=url, namespace="bench-iterable")
    n = opts.steps
    cases: dict[str, Callable[[], object]] = {
        "plain loop": lambda: plain(n),
        "checkpoints": lambda: runner_of(scalar)(n),
        "checkpoints, list cursor": lambda: runner_of(listed)(n),
        "progress() per call": lambda: reporting(n),
    }
    best: dict[str, float] = {}
    try:
        for _ in range(opts.rounds):
            for name, call in cases.items():
                ns = timed(call, n)
                best[name] = min(ns, best.get(name, ns))
    finally:
        stop()
    base = best["plain loop"]
    print(f"{n:,} steps, best of {opts.rounds} rounds (ns per step)")
    for name, ns in best.items():
        extra = "" if name == "plain loop" else f"  (+{ns - base:.0f} ns over the plain loop)"
        print(f"  {name:28s} {ns:8.0f}{extra}")


if __name__ == "__main__":
    main()
