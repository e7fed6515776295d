"""What the switcher buys and what it costs: `python -m benchmarks.bench_preempt [--quick]`.

1. Hub latency: a ticker greenlet sleeps 10 ms again and again beside 0, 1 or 5 greenlets burning CPU in
   pure Python, switcher off and on (threshold 0.1 s); latency is how late each wake-up is. Worst and
   99th percentile. Runs in this (gevent-patched) process.
2. Throughput: real `gjiggler worker` processes (-c 10) run N no-op jobs, then N CPU jobs (a fixed
   amount of pure-Python work, about 0.2 s each, past the threshold), with --preempt 0.1 and
   --preempt 0, alternating, median
   of the repeats. Redis: $BENCH_REDIS_URL (default redis://127.0.0.1:6379/15), a private namespace
   deleted afterwards.
Prints a Markdown table and writes it to benchmarks/results/preempt.md.
"""

if __name__ == "__main__":  # run as the benchmark: patch before anything else (a worker's -r import does not)
    from jiggler_gevent.patch import patch

    patch()

import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from jiggler_gevent import config, job

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
THRESHOLD = 0.1
TICK = 0.01


# -- jobs the benchmark's workers run (`-r benchmarks.bench_preempt`) -------------------------------------


@job(retries=0, name="benchmarks.bench_preempt.noop")  # named: this file also runs as __main__
def noop(key: str) -> None:
    config.redis_client().incr(key)


@job(retries=0, name="benchmarks.bench_preempt.cpu")
def cpu(key: str, iterations: int) -> None:
    """A fixed amount of pure-Python work (not a wall-clock deadline, which preempted jobs would share)."""
    for _ in range(iterations):
        pass
    config.redis_client().incr(key)


def iterations_for(seconds: float) -> int:
    """How many empty loop turns take about `seconds` here."""
    n = 2_000_000
    t = time.perf_counter()
    for _ in range(n):
        pass
    return int(n * seconds / (time.perf_counter() - t))


# -- 1. hub latency -----------------------------------------------------------------------------------


def hub_latency(hogs: int, switcher_on: bool, seconds: float) -> tuple[float, float]:
    """(worst, p99) lateness in seconds of a TICK sleeper beside `hogs` CPU-bound greenlets."""
    import gevent

    from jiggler_gevent.server.preempt import Switcher

    switcher = Switcher(THRESHOLD) if switcher_on else None
    if switcher is not None:
        switcher.start()
    late: list[float] = []
    stop = time.monotonic() + seconds

    def ticker() -> None:
        while time.monotonic() < stop:
            t = time.monotonic()
            gevent.sleep(TICK)
            late.append(time.monotonic() - t - TICK)

    def hog() -> None:
        while time.monotonic() < stop:
            pass

    greenlets = [gevent.spawn(ticker)] + [gevent.spawn(hog) for _ in range(hogs)]
    gevent.joinall(greenlets)
    if switcher is not None:
        switcher.stop()
    late.sort()
    return late[-1], late[int(len(late) * 0.99)]


# -- 2. throughput ------------------------------------------------------------------------------------


def _worker(namespace: str, preempt: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jiggler_gevent",
            "worker",
            "-r",
            "benchmarks.bench_preempt",
            "-c",
            "10",
            "--redis-url",
            REDIS_URL,
            "--namespace",
            namespace,
            "--preempt",
            preempt,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def throughput(preempt: str, n: int, cpu_seconds: float) -> float:
    """Jobs per second of one worker over `n` jobs (no-op when cpu_seconds is 0)."""
    namespace = f"bench-preempt-{uuid.uuid4().hex[:8]}"
    cfg = config.configure(redis_url=REDIS_URL, namespace=namespace)
    r = config.redis_client(cfg.url)
    proc = _worker(namespace, preempt)
    try:
        deadline = time.monotonic() + 30
        while not r.smembers(cfg.keys.processes):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
            time.sleep(0.05)
        key = f"{namespace}:done"
        t0 = time.monotonic()
        if cpu_seconds:
            cpu.enqueue_bulk([(key, iterations_for(cpu_seconds))] * n)
        else:
            noop.enqueue_bulk([(key,)] * n)
        while int(r.get(key) or 0) < n:
            if time.monotonic() - t0 > 600:
                raise RuntimeError("the jobs did not finish")
            time.sleep(0.01)
        return n / (time.monotonic() - t0)
    finally:
        proc.terminate()
        proc.wait(60)
        keys = list(r.scan_iter(f"{namespace}:*", count=1000))
        if keys:
            r.delete(*keys)


def _median_pair(repeats: int, n: int, cpu_seconds: float) -> dict[str, float]:
    runs: dict[str, list[float]] = {"0.1": [], "0": []}
    for _ in range(repeats):
        for preempt in ("0.1", "0"):
            runs[preempt].append(throughput(preempt, n, cpu_seconds))
    return {p: statistics.median(v) for p, v in runs.items()}


def main() -> None:
    quick = "--quick" in sys.argv
    seconds = 2.0 if quick else 5.0
    lines = ["| CPU hogs | switcher | worst hub latency | p99 hub latency |", "|---|---|---|---|"]
    for hogs in (0, 1, 5):
        for on in (False, True):
            worst, p99 = hub_latency(hogs, on, seconds)
            lines.append(f"| {hogs} | {'on (0.1 s)' if on else 'off'} | {worst * 1000:.0f} ms | {p99 * 1000:.0f} ms |")
            print(lines[-1], flush=True)
    repeats = 1 if quick else 3
    lines += ["", "| jobs (one worker, -c 10) | --preempt 0.1 | --preempt 0 | cost |", "|---|---|---|---|"]
    workloads = (("no-op", 2000 if quick else 10000, 0.0), ("CPU, about 0.2 s each", 20 if quick else 50, 0.2))
    for label, n, cpu_seconds in workloads:
        rates = _median_pair(repeats, n, cpu_seconds)
        cost = (rates["0"] - rates["0.1"]) / rates["0"] * 100
        lines.append(f"| {n} {label} | {rates['0.1']:.1f}/s | {rates['0']:.1f}/s | {cost:+.1f}% |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    out = ROOT / "benchmarks" / "results" / "preempt.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        f"Measured {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}{' (quick)' if quick else ''}\n\n{text}"
    )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
