"""Soak: one worker runs a steady mix of jobs for a long time; its memory, greenlets and sockets must stay flat.

    python -m benchmarks.soak --minutes 30            # the README figure
    python -m benchmarks.soak --minutes 3 --rate 150  # a quick check

A private redis-server is started on a free port (unless --redis-url is given), so nothing floods a shared
Redis. The driver enqueues `--rate` jobs per second, a mix of: no-op, sleep (0-50 ms), Redis round trips,
a little CPU, a failure (dropped), a job that times out, and a job that enqueues another. Every
`--sample` seconds it reads the worker's RSS from /proc. Twice, after a warm-up and at the end, it lets the
queue drain and asks the worker for a census (live greenlets, open sockets, RSS) from inside: the two idle
censuses must match (no leaked greenlets or connections) and RSS growth between them must stay under 5%.
Results go to stdout and to benchmarks/results/soak-<time>.json.
"""

import argparse
import gc
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jiggler_gevent import config, job

ROOT = Path(__file__).resolve().parent.parent
CENSUS_KEY = "t:census"  # under the soak namespace
RSS_GROWTH_LIMIT = 0.05


def _client() -> Any:
    return config.redis_client()


@job(retries=0)
def noop() -> None:
    """Nothing: the cost of the machinery alone."""


@job(retries=0)
def nap(seconds: float) -> None:
    time.sleep(seconds)


@job(retries=0)
def redis_io(n: int) -> None:
    c = _client()
    key = f"{config.current().namespace}:t:io"
    for _ in range(n):
        c.incr(key)


@job(retries=0)
def cpu(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


@job(retries=0, dead=False)
def fail() -> None:
    raise RuntimeError("planned failure (dropped: dead=False)")


@job(retries=0, dead=False, timeout=0.05)
def overrun() -> None:
    time.sleep(0.2)


@job(retries=0)
def chain(depth: int) -> None:
    """Enqueue another job from inside a job (the client path in the worker)."""
    if depth > 0:
        chain.enqueue(depth - 1)


@job(retries=0)
def census() -> None:
    """Record, from inside the worker: live greenlets, open sockets and fds, RSS, and the Redis pool's size.

    Sockets may grow while the pool opens connections up to its cap (concurrency + 10) under a busier moment;
    a leak is a socket outside the pool, so sockets minus pool connections must stay the same.
    """
    from greenlet import greenlet

    gc.collect()
    greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet))
    fds = os.listdir("/proc/self/fd")
    sockets = 0
    for fd in fds:
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    pool = _client().connection_pool
    report = {
        "greenlets": greenlets,
        "sockets": sockets,
        "fds": len(fds),
        "rss": _rss(os.getpid()),
        "pool_connections": len(getattr(pool, "_connections", [])),
        "pool_max": pool.max_connections,
    }
    _client().rpush(f"{config.current().namespace}:{CENSUS_KEY}", json.dumps(report))


MIX = [
    (noop, lambda: ()),
    (nap, lambda: (random.uniform(0, 0.05),)),
    (redis_io, lambda: (3,)),
    (cpu, lambda: (2000,)),
    (fail, lambda: ()),
    (overrun, lambda: ()),
    (chain, lambda: (2,)),
]
WEIGHTS = [30, 30, 15, 10, 5, 5, 5]


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Soak:
    """Drives one worker process for a while and measures it."""

    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args, self.url = args, url
        self.namespace = f"soak-{os.getpid()}"
        config.configure(redis_url=url, namespace=self.namespace)
        self.redis = _client()
        self.keys = config.current().keys
        self.samples: list[dict[str, float]] = []
        self.enqueued = 0
        self.log = open(ROOT / "benchmarks" / "results" / f"soak-worker-{self.namespace}.log", "wb")
        self.worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jiggler_gevent",
                "worker",
                "-r",
                "benchmarks.soak",
                "-c",
                str(args.concurrency),
                "--redis-url",
                url,
                "--namespace",
                self.namespace,
                "--heartbeat-interval",
                "1",
                "--poll-interval",
                "1",
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )

    def produce_for(self, seconds: float) -> None:
        """Enqueue the mix at the target rate for `seconds`, sampling RSS as it goes."""
        end = time.monotonic() + seconds
        next_sample = time.monotonic()
        tick = 0.5
        while time.monotonic() < end:
            t0 = time.monotonic()
            batch = int(self.args.rate * tick)
            picks = random.choices(MIX, weights=WEIGHTS, k=batch)
            by_job: dict[Any, list[tuple]] = {}
            for func, make_args in picks:
                by_job.setdefault(func, []).append(make_args())
            for func, arg_list in by_job.items():
                func.enqueue_bulk(arg_list)
            self.enqueued += batch
            if time.monotonic() >= next_sample:
                self._sample()
                next_sample += self.args.sample
            time.sleep(max(0.0, tick - (time.monotonic() - t0)))

    def _sample(self) -> None:
        pid = self.worker.pid
        self.samples.append(
            {
                "t": time.time(),
                "rss": _rss(pid),
                "cpu": _cpu_seconds(pid),
                "queued": self.redis.llen(self.keys.queue("default")),
                "enqueued": self.enqueued,
            }
        )
        s = self.samples[-1]
        print(
            f"  t+{s['t'] - self.samples[0]['t']:7.0f}s  rss {s['rss'] / 2**20:6.1f} MiB  queued {s['queued']:5d}  "
            f"enqueued {self.enqueued}",
            flush=True,
        )

    def idle_census(self) -> dict[str, int]:
        """Wait for the queue to drain and the worker to go idle, then take a census from inside it."""
        key = f"{self.namespace}:{CENSUS_KEY}"
        deadline = time.monotonic() + 120
        while self.redis.llen(self.keys.queue("default")) or self._busy():
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not drain its queue within 120 s")
            time.sleep(0.2)
        time.sleep(1.0)  # let the last acks and the chained jobs settle
        before = self.redis.llen(key)
        census.enqueue()
        while self.redis.llen(key) == before:
            if time.monotonic() > deadline:
                raise RuntimeError("no census came back")
            time.sleep(0.1)
        return json.loads(self.redis.lindex(key, -1))

    def _busy(self) -> int:
        return sum(self.redis.llen(k) for k in self.redis.scan_iter(self.keys.working("*")))

    def stop(self) -> int:
        self.worker.send_signal(signal.SIGTERM)
        code = self.worker.wait(60)
        for key in self.redis.scan_iter(f"{self.namespace}:*"):
            self.redis.delete(key)
        self.log.close()
        return code


def _start_redis(url: str | None) -> "tuple[str, Any]":
    if url:
        return url, lambda: None
    from jiggler_gevent.demo.local_redis import start_private

    return start_private()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="Length of the measured run (default 30).")
    p.add_argument("--warmup", type=float, default=None, help="Warm-up seconds (default 10%% of the run, >= 30).")
    p.add_argument("--rate", type=float, default=200.0, help="Jobs enqueued per second (default 200).")
    p.add_argument("--concurrency", type=int, default=50, help="Worker -c (default 50).")
    p.add_argument("--sample", type=float, default=10.0, help="Seconds between RSS samples (default 10).")
    p.add_argument("--redis-url", default=None, help="Use this Redis instead of starting a private one.")
    args = p.parse_args(argv)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    url, stop_redis = _start_redis(args.redis_url)
    warmup = args.warmup if args.warmup is not None else max(30.0, args.minutes * 6)
    soak = Soak(args, url)
    try:
        print(f"soak: warm-up {warmup:.0f}s, then {args.minutes:g} min at {args.rate:g} jobs/s, -c {args.concurrency}")
        soak.produce_for(warmup)
        first = soak.idle_census()
        print(f"idle census after warm-up: {first}")
        started = time.monotonic()
        soak.produce_for(args.minutes * 60)
        measured = time.monotonic() - started
        last = soak.idle_census()
        print(f"idle census at the end:   {last}")
        cpu = soak.samples[-1]["cpu"] - soak.samples[0]["cpu"]
    finally:
        code = soak.stop()
        stop_redis()
    growth = (last["rss"] - first["rss"]) / first["rss"]
    result = {
        "minutes": round(measured / 60, 2),
        "rate": args.rate,
        "concurrency": args.concurrency,
        "jobs_enqueued": soak.enqueued,
        "worker_cpu_seconds": round(cpu, 1),
        "idle_after_warmup": first,
        "idle_at_end": last,
        "rss_growth": round(growth, 4),
        "rss_samples_mib": [round(s["rss"] / 2**20, 1) for s in soak.samples],
        "worker_exit_code": code,
    }
    out = ROOT / "benchmarks" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    outside_pool = (first["sockets"] - first["pool_connections"], last["sockets"] - last["pool_connections"])
    ok = (
        growth < RSS_GROWTH_LIMIT
        and last["greenlets"] <= first["greenlets"] + 2
        and outside_pool[1] <= outside_pool[0]
        and last["pool_connections"] <= last["pool_max"]
        and code == 0
    )
    print(
        f"\n{soak.enqueued} jobs (+ chained) in {measured / 60:.1f} min; RSS idle {first['rss'] / 2**20:.1f} -> "
        f"{last['rss'] / 2**20:.1f} MiB ({growth:+.1%}); greenlets {first['greenlets']} -> {last['greenlets']}; "
        f"sockets {first['sockets']} -> {last['sockets']} (Redis pool {first['pool_connections']} -> "
        f"{last['pool_connections']} of {last['pool_max']}, others {outside_pool[0]} -> {outside_pool[1]}); "
        f"worker CPU {cpu:.0f}s; exit {code}\n{'PASS' if ok else 'FAIL'} (written to {out.relative_to(ROOT)})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    # Run the imported module's main, so the jobs are named benchmarks.soak.*, as the worker registers them.
    from benchmarks import soak

    sys.exit(soak.main())
