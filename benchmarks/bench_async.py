"""Async jobs, measured: `python -m benchmarks.bench_async [--quick]`.

1. Worker drains, each by a fresh `gjiggler worker` on a private server (started here, removed after): wall time from
   the worker's first take until the queue and its working list are empty, and the worker's CPU (user + system,
   from /proc) over the same span, per job.
   - mixed: 1,000 async jobs each `await asyncio.sleep(1)` and 1,000 blocking jobs each `time.sleep(1)`, interleaved,
     at -c 1000: 2,000 one-second jobs on 1,000 slots, so 2 s is the bound nothing can beat.
   - async only, and blocking only: 1,000 of each at -c 1000 (bound: 1 s).
   - noop: 10,000 async noop jobs; 10,000 blocking noop jobs; and one async noop job then 9,999 blocking ones (a
     worker whose loop exists, its greenlet trace on), at -c 10, in rotating rounds: CPU per job.
2. Designs compared in this (gevent-patched) process, with no Redis: (a) the worker's design, the loop in a greenlet
   on gevent's hub (server/async_jobs.py); (b) the loop in a native OS thread (gevent's original thread start, the
   original selector), each result handed back through a gevent async watcher. 1,000 coroutines awaiting
   asyncio.sleep(1) from 1,000 greenlets, then 10,000 noop coroutines from 10 greenlets: wall time, CPU per
   coroutine.

Prints Markdown tables. The plain path's cost is measured by `python -m benchmarks.ab REV --kind noop|sleep`.
"""

if __name__ == "__main__":  # run as the benchmark: patch before anything else (a worker's -r import does not)
    from jiggler_gevent.patch import patch

    patch()

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from jiggler_gevent import config, job

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench-async"
TICKS = os.sysconf("SC_CLK_TCK")


# -- jobs the benchmark's workers run (`-r benchmarks.bench_async`) ----------------------------------------


@job(retries=0, name="bench_async.async_sleep")  # named: this file also runs as __main__
async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@job(retries=0, name="bench_async.blocking_sleep")
def blocking_sleep(seconds: float) -> None:
    time.sleep(seconds)


@job(retries=0, name="bench_async.async_noop")
async def async_noop() -> None:
    pass


@job(retries=0, name="bench_async.blocking_noop")
def blocking_noop() -> None:
    pass


# -- 1. worker drains -------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def drain(pushes: list[tuple[Any, tuple[Any, ...]]], concurrency: int) -> tuple[float, float]:
    """(wall seconds, worker CPU microseconds per job) for one worker draining `pushes` (job, args)."""
    cfg = config.current()
    r = config.redis_client()
    leftovers = list(r.scan_iter(f"{NAMESPACE}:*"))
    if leftovers:
        r.delete(*leftovers)
    by_job: dict[Any, list[tuple[Any, ...]]] = {}
    for func, args in pushes:
        by_job.setdefault(func, []).append(args)
    if len(by_job) == 1:
        [(func, args_list)] = by_job.items()
        func.enqueue_bulk(args_list)
    else:  # one by one, interleaved, so that both kinds are among the first jobs taken
        for func, args in pushes:
            func.enqueue(*args)
    queue = cfg.keys.queue("default")
    total = r.llen(queue)
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "benchmarks.bench_async", "-c", str(concurrency)]
    argv += ["--redis-url", cfg.url, "--namespace", NAMESPACE, "--job-log", "off"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while r.llen(queue) == total:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with code {proc.returncode}")
            time.sleep(0.001)
        started, cpu0 = time.perf_counter(), _cpu_seconds(proc.pid)
        working = f"{NAMESPACE}:working:*"
        while r.llen(queue) > 0 or any(r.llen(k) for k in r.scan_iter(working)):
            time.sleep(0.005)
        elapsed, cpu = time.perf_counter() - started, _cpu_seconds(proc.pid) - cpu0
        assert r.zcard(cfg.keys.dead) == 0 and r.zcard(cfg.keys.retry) == 0, "jobs failed"
        return elapsed, 1e6 * cpu / total
    finally:
        proc.terminate()
        proc.wait(30)


def worker_rows(sleepers: int, noops: int, rounds: int) -> None:
    print("\n| worker drain | jobs | -c | wall s | worker CPU us/job |\n|---|---:|---:|---:|---:|")
    mixed = [(async_sleep, (1.0,)), (blocking_sleep, (1.0,))] * sleepers
    for what, pushes in [
        ("mixed: async sleep(1) + blocking sleep(1)", mixed),
        ("async only: await asyncio.sleep(1)", [(async_sleep, (1.0,))] * sleepers),
        ("blocking only: time.sleep(1)", [(blocking_sleep, (1.0,))] * sleepers),
    ]:
        wall, cpu = drain(pushes, sleepers)
        print(f"| {what} | {len(pushes):,} | {sleepers:,} | {wall:.2f} | {cpu:.0f} |", flush=True)
    # "after one async job": blocking noops in a worker whose loop exists, so its greenlet trace runs at every switch
    kinds: list[tuple[str, list[tuple[Any, tuple[Any, ...]]]]] = [
        ("async", [(async_noop, ())] * noops),
        ("blocking", [(blocking_noop, ())] * noops),
        ("blocking, after one async job", [(async_noop, ())] + [(blocking_noop, ())] * (noops - 1)),
    ]
    samples: dict[str, list[float]] = {name: [] for name, _ in kinds}
    for i in range(rounds):
        for name, pushes in kinds[i % 3 :] + kinds[: i % 3]:
            samples[name].append(drain(pushes, 10)[1])
    cpu = {name: statistics.median(values) for name, values in samples.items()}
    for name, _ in kinds:
        print(f"| noop, {name} (median of {rounds}) | {noops:,} | 10 | | {cpu[name]:.1f} |")
    a, b = cpu["async"], cpu["blocking"]
    print(f"\nasync noop / blocking noop CPU per job: {a / b:.2f}x ({a - b:+.1f} us)")


# -- 2. the designs, in this process ------------------------------------------------------------------------


class NativeThreadLoop:
    """Design (b): an asyncio loop in a native OS thread; each result handed back through a gevent async watcher."""

    def __init__(self) -> None:
        import selectors

        from gevent import monkey

        original_selector = monkey.get_original("selectors", "DefaultSelector")
        self.loop = asyncio.SelectorEventLoop(original_selector())
        assert isinstance(self.loop._selector, selectors.BaseSelector)  # type: ignore[attr-defined]
        start = monkey.get_original("_thread", "start_new_thread")
        start(self.loop.run_forever, ())

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        import gevent
        import gevent.event

        done = gevent.event.Event()
        watcher = gevent.get_hub().loop.async_()
        watcher.start(done.set)
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        future.add_done_callback(lambda _: watcher.send())
        try:
            done.wait()
        finally:
            watcher.close()
        return future.result()


def self_pipe_design() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Design (a) as first built: each handover through call_soon_threadsafe (the loop's self-pipe: a write and a
    read system call) instead of call_soon and a wake of the selector's gevent Event."""
    from jiggler_gevent.server import async_jobs

    class SelfPipe(async_jobs.AsyncJobs):
        def soon(self, callback: Callable[..., object], *args: Any) -> None:
            self.loop.call_soon_threadsafe(callback, *args)

    return SelfPipe().run


def _timed(run: Callable[[Coroutine[Any, Any, Any]], Any], greenlets: int, each: int, make: Callable[[], Any]) -> str:
    import gevent

    def worker() -> None:
        for _ in range(each):
            run(make())

    wall0, cpu0 = time.perf_counter(), time.process_time()
    gevent.joinall([gevent.spawn(worker) for _ in range(greenlets)], raise_error=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return f"{wall:.2f} | {1e6 * cpu / (greenlets * each):.0f}"


def design_rows(sleepers: int, noops: int) -> None:
    from jiggler_gevent.server import async_jobs

    async def nap() -> None:
        await asyncio.sleep(1.0)

    async def noop() -> None:
        pass

    designs: list[tuple[str, Callable[[Coroutine[Any, Any, Any]], Any]]] = [
        ("(a) loop in a greenlet on the hub", async_jobs.run),
        ("(a) the same, handed over through the self-pipe", self_pipe_design()),
        ("(b) loop in a native thread", NativeThreadLoop().run),
    ]
    print("\n| design | workload | wall s | CPU us/coroutine |\n|---|---|---:|---:|")
    for name, run in designs:
        run(noop())  # made, warmed
        print(f"| {name} | {sleepers:,} x sleep(1) from {sleepers:,} greenlets | {_timed(run, sleepers, 1, nap)} |")
        print(f"| {name} | {noops:,} noop from 10 greenlets | {_timed(run, 10, noops // 10, noop)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs and rounds (a smoke run)")
    quick = parser.parse_args().quick
    sleepers, noops, rounds = (200, 2_000, 1) if quick else (1_000, 10_000, 3)
    from jiggler_gevent.demo.local_redis import start_private

    url, stop = start_private()
    try:
        config.configure(redis_url=url, namespace=NAMESPACE)
        design_rows(sleepers, noops)
        worker_rows(sleepers, noops, rounds)
    finally:
        stop()


if __name__ == "__main__":
    main()
