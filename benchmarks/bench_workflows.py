"""What a workflow step costs: `python -m benchmarks.bench_workflows [--rounds R]`.

On a private redis-server (never the one on 6379), one worker process (`-c 10`, loading this module) runs, in turn
and `--rounds` times:
  - 1,000 plain jobs (one enqueue_bulk call), timed from the push until the queue and the working list are empty;
  - a 1,000-member group of the same no-op job (`group(step.si() ...)`), from enqueue() until result() returns;
  - a 100-step chain (`chain(step.si(), step.s(), ...)`: each step gets the previous result), the same way;
  - 100 tracked jobs one after the other from the client (enqueue, then api.Job.result(), then the next): the
    sequence a chain replaces.
For each: wall time per job or step, the worker's CPU per job or step (its process tree, /proc) and Redis' own CPU
per job (INFO cpu), and the time of the enqueue call. The tables give each figure's median over the rounds. Prints
Markdown and writes it to benchmarks/results/workflows.md.
"""

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jiggler_gevent import chain, group, job

NAMESPACE = "bench"
QUEUE = "bench"
ROOT = Path(__file__).resolve().parent.parent


@job(queue=QUEUE, retries=0, name="benchmarks.bench_workflows.noop")  # named: this file also runs as __main__
def noop() -> None:
    """Does nothing."""


@job(queue=QUEUE, retries=0, name="benchmarks.bench_workflows.step")
def step(prev: int = 0) -> int:
    """Returns the previous result plus one."""
    return prev + 1


TRACKED = step.set(result_ttl=60)


def _drained(client: Any, keys: Any, working: str) -> Callable[[], bool]:
    def idle() -> bool:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(keys.queue(QUEUE))
            pipe.llen(working)
            return not sum(pipe.execute())

    return idle


def plain(n: int, client: Any, keys: Any, working: str) -> float:
    """Push n plain jobs in one call and wait until all are settled; the enqueue's seconds."""
    started = time.perf_counter()
    noop.enqueue_bulk([()] * n)
    pushed = time.perf_counter() - started
    idle = _drained(client, keys, working)
    while not idle():
        time.sleep(0.002)
    return pushed


def a_group(n: int) -> float:
    started = time.perf_counter()
    wf = group(step.si() for _ in range(n)).enqueue()
    pushed = time.perf_counter() - started
    assert wf.result(timeout=120) == [1] * n
    return pushed


def a_chain(n: int) -> float:
    started = time.perf_counter()
    wf = chain(step.si(), *(step.s() for _ in range(n - 1))).enqueue()
    pushed = time.perf_counter() - started
    assert wf.result(timeout=120) == n
    return pushed


def one_by_one(n: int) -> float:
    from jiggler_gevent import api

    value = 0
    for _ in range(n):
        jid = TRACKED.enqueue(value)
        assert jid is not None
        value = api.Job(jid).result(timeout=30)
    assert value == n
    return 0.0  # no one enqueue call: each job's enqueue is part of the sequence


def measure(label: str, n: int, run: Callable[[], float], pid: int, client: Any) -> dict[str, Any]:
    """Run one case; wall, worker CPU and Redis CPU per job (µs), and the enqueue's ms."""
    from benchmarks.bench_results import redis_cpu, tree_cpu

    cpu0, rcpu0, started = tree_cpu(pid), redis_cpu(client), time.perf_counter()
    pushed = run()
    wall = time.perf_counter() - started
    cpu1, rcpu1 = tree_cpu(pid), redis_cpu(client)
    return {
        "case": label,
        "n": n,
        "wall_us": 1e6 * wall / n,
        "cpu_us": 1e6 * (cpu1 - cpu0) / n,
        "redis_us": 1e6 * (rcpu1 - rcpu0) / n,
        "enqueue_ms": 1e3 * pushed,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """Medians per case, and each case's worker CPU against a plain job's."""
    cases: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        cases.setdefault(row["case"], []).append(row)
    med = {
        c: {k: statistics.median(r[k] for r in rs) for k in ("wall_us", "cpu_us", "redis_us", "enqueue_ms")}
        for c, rs in cases.items()
    }
    base = med["1,000 plain jobs (enqueue_bulk)"]["cpu_us"]
    lines = [
        "| case | wall per job/step | worker CPU per job/step | vs a plain job | Redis CPU per job/step | enqueue |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c, m in med.items():
        pushed = f"{m['enqueue_ms']:,.1f} ms" if m["enqueue_ms"] else "–"
        lines.append(
            f"| {c} | {m['wall_us']:,.0f} µs | {m['cpu_us']:,.0f} µs | {m['cpu_us'] / base:.2f}x | "
            f"{m['redis_us']:,.0f} µs | {pushed} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the cases `--rounds` times, alternated; print and write the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_workflows", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four cases, alternated (default 3)")
    args = parser.parse_args(argv)
    import redis

    from benchmarks import procs, run
    from jiggler_gevent import config
    from jiggler_gevent.demo.local_redis import start_private

    run.compile_sources()
    url, stop = start_private()
    rows: list[dict[str, Any]] = []
    try:
        env = run.bench_env(url)
        config.configure(redis_url=url, namespace=NAMESPACE)
        client = redis.Redis.from_url(url, decode_responses=True)
        keys = config.current().keys
        proc, working = procs.start_bench_worker(
            "benchmarks.bench_workflows", url, env, client, keys, QUEUE, NAMESPACE, 10
        )
        try:
            a_chain(5)  # warm: scripts loaded, connections open
            cases: list[tuple[str, int, Callable[[], float]]] = [
                ("1,000 plain jobs (enqueue_bulk)", 1000, lambda: plain(1000, client, keys, working)),
                ("1,000-member group", 1000, lambda: a_group(1000)),
                ("100-step chain", 100, lambda: a_chain(100)),
                ("100 tracked jobs one after the other from the client", 100, lambda: one_by_one(100)),
            ]
            for r in range(args.rounds):
                for label, n, fn in cases:
                    row = measure(label, n, fn, proc.pid, client)
                    rows.append(row)
                    print(
                        f"round {r + 1} {label:55} {row['wall_us']:8,.0f} µs/job {row['cpu_us']:6,.0f} µs CPU",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            procs.stop_bench_worker(proc)
    finally:
        stop()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    top = (
        f"`python -m benchmarks.bench_workflows --rounds {args.rounds}`, {dt.datetime.now():%Y-%m-%d %H:%M}: Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average at start {load}; one worker, -c 10.\n"
    )
    text = top + "\n" + table(rows)
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "workflows.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
