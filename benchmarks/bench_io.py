"""What one blocking call made by job code costs: CPU per call and calls/s, under this worker and elsewhere.

    python -m benchmarks.bench_io [--rounds 3] [--calls 20000] [--kinds redis,pg2,...] [--modes worker,gevent,...]

Calls (`--kinds`): `redis` an INCR through a redis-py client of its own (`redis.Redis.from_url`), `jredis` the same
through `config.redis_client()` (the worker's own pool and settings), `redis1` the same through a client per
greenlet or thread, each holding one connection (`single_connection_client=True`, no pool checkout), `pg2`
`SELECT 1` with psycopg2 (through psycogreen under gevent), `pg3` `SELECT 1` with psycopg 3, `http` a GET with
requests (one keep-alive Session) to a local server that answers at once.
Callers (`--modes`), ten at a time each:
- `worker`: jobs of a real `gjiggler worker -c 10`, each making 10 calls; the worker's CPU from its /proc entry
  while it drains the jobs, less the CPU of as many jobs that make no call, divided by the calls;
- `gevent`: a process patched as the worker patches itself, 10 greenlets; `threads`: 10 OS threads, no gevent;
  the process's own CPU (getrusage) over the calls, after a warm-up;
- `ruby`: benchmarks/io_calls.rb, 10 Ruby threads (redis gem, pg gem; redis and pg only).
Connections are made once per process and reused (a pool the callers share). The cells run in alternating rounds
(the order reversed every round); the table gives the median of the rounds and the range.
Servers: a private redis-server, a private PostgreSQL (tests/pg.py's, Debian's binaries), benchmarks.slow_http.
"""

import sys

if __name__ == "__main__" and sys.argv[1:3] == ["inner", "gevent"]:
    from jiggler_gevent.patch import patch

    patch()  # as the worker does, before anything else is imported

import argparse
import json
import os
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jiggler_gevent import config, job

ROOT = Path(__file__).resolve().parent.parent
CALLERS = 10
PER_JOB = 10  # calls per job in `worker` mode
WARM = 200  # calls per caller before the measured ones
NAMESPACE = "bench-io"
QUEUE = "io"
KINDS = ("redis", "jredis", "redis1", "pg2", "pg3", "http")
MODES = ("worker", "gevent", "threads", "ruby")
RUBY_KINDS = ("redis", "pg2")
COUNTER = "bench-io:n"

_made: dict[str, Callable[[], object]] = {}


def _target(kind: str) -> str:
    name = {"redis": "REDIS", "jredis": "REDIS", "redis1": "REDIS", "pg2": "PG", "pg3": "PG", "http": "HTTP"}[kind]
    return os.environ[f"BENCH_IO_{name}"]


def _pooled(connect: Callable[[], Any], use: Callable[[Any], object]) -> Callable[[], object]:
    """One call on a connection taken from a LIFO pool the callers share (a new one when all are in use)."""
    pool: queue.LifoQueue[Any] = queue.LifoQueue()

    def call() -> object:
        try:
            conn = pool.get_nowait()
        except queue.Empty:
            conn = connect()
        try:
            return use(conn)
        finally:
            pool.put(conn)

    return call


def _make(kind: str) -> Callable[[], object]:
    url = _target(kind)
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(url, max_connections=64)
        return lambda: client.incr(COUNTER)
    if kind == "jredis":
        shared = config.redis_client(url)
        return lambda: shared.incr(COUNTER)
    if kind == "redis1":
        return _per_caller(url)
    if kind == "pg2":
        import psycopg2

        def pg2_connect() -> Any:
            conn = psycopg2.connect(url)
            conn.autocommit = True
            return conn

        return _pooled(pg2_connect, _select_one)
    if kind == "pg3":
        import psycopg

        return _pooled(lambda: psycopg.connect(url, autocommit=True), _select_one)
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=64))
    return lambda: session.get(url, timeout=30).content


def _per_caller(url: str) -> Callable[[], object]:
    """INCR on the calling greenlet's (or thread's) own client of one connection, made on its first call."""
    import redis

    mine = threading.local()  # greenlet-local once gevent has patched threading

    def call() -> object:
        client = getattr(mine, "client", None)
        if client is None:
            client = mine.client = redis.Redis.from_url(url, single_connection_client=True)
        return client.incr(COUNTER)

    return call


def _select_one(conn: Any) -> object:
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone()


def caller(kind: str) -> Callable[[], object]:
    """The process's one caller of `kind` (made on first use)."""
    if kind not in _made:
        _made[kind] = _make(kind)
    return _made[kind]


@job(queue=QUEUE, retries=0, name="bench_io.calls")
def calls(kind: str, n: int) -> None:
    """`n` calls of `kind` (none for kind "none")."""
    if kind != "none":
        call = caller(kind)
        for _ in range(n):
            call()


# --- gevent and threads: one process, ten callers -------------------------------------------------------


def _run_callers(call: Callable[[], object], each: int) -> None:
    """`CALLERS` threads (greenlets once gevent has patched threading) making `each` calls."""
    threads = [threading.Thread(target=lambda: [call() for _ in range(each)]) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def inner(kind: str, n: int) -> None:
    """Print {"cpu_us": CPU per call, "rate": calls/s} of `n` calls of `kind` by this process."""
    call = caller(kind)
    _run_callers(call, WARM)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    _run_callers(call, n // CALLERS)
    elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"cpu_us": cpu / n * 1e6, "rate": n / elapsed}))


def in_process(mode: str, kind: str, n: int, env: dict[str, str]) -> tuple[float, float]:
    """(CPU µs per call, calls/s) of `inner` in a new Python process (gevent or threads) or of io_calls.rb."""
    if mode == "ruby":
        argv = ["ruby", str(ROOT / "benchmarks" / "io_calls.rb"), kind, str(n), _target_in(env, kind)]
    else:
        argv = [sys.executable, "-m", "benchmarks.bench_io", "inner", mode, kind, str(n)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["cpu_us"], result["rate"]


def _target_in(env: dict[str, str], kind: str) -> str:
    return env[f"BENCH_IO_{'REDIS' if kind == 'redis' else 'PG'}"]


# --- worker: jobs of a real worker ----------------------------------------------------------------------


class Worker:
    """A `gjiggler worker -c 10` loading this module, idle on QUEUE until `stop()`."""

    def __init__(self, url: str, env: dict[str, str], extra: tuple[str, ...] = ()) -> None:
        from benchmarks.procs import start_bench_worker

        self.client = config.redis_client()
        keys = config.current().keys
        self.proc, self.working = start_bench_worker(
            "benchmarks.bench_io", url, env, self.client, keys, QUEUE, NAMESPACE, CALLERS, ("--job-log", "off", *extra)
        )
        self.queue = keys.queue(QUEUE)

    def cpu(self) -> float:
        """The worker's CPU seconds so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def drain(self, kind: str, jobs: int) -> tuple[float, float]:
        """(CPU µs per job, seconds) to run `jobs` jobs of `kind`, from the push until the queue and the worker's
        working list are empty."""
        cpu, started = self.cpu(), time.perf_counter()
        calls.enqueue_bulk([(kind, PER_JOB)] * jobs)
        deadline = started + 600
        while self.client.llen(self.queue) or self.client.llen(self.working):
            if time.perf_counter() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the worker did not drain its jobs")
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        assert self.client.zcard(config.current().keys.dead) == 0, "jobs died"
        return (self.cpu() - cpu) / jobs * 1e6, elapsed

    def stop(self) -> None:
        """SIGTERM, and wait."""
        from benchmarks.procs import stop_bench_worker

        stop_bench_worker(self.proc)


def in_worker(worker: Worker, kind: str, n: int) -> tuple[float, float]:
    """(CPU µs per call, calls/s) of `kind` in jobs: the drain of n/10 jobs less that of as many jobs without a
    call. The calls/s include each job's own cost."""
    jobs = n // PER_JOB
    worker.drain(kind, CALLERS * 2)  # the connections made
    base, _ = worker.drain("none", jobs)
    spent, elapsed = worker.drain(kind, jobs)
    return (spent - base) / PER_JOB, n / elapsed


# --- servers and the rounds -----------------------------------------------------------------------------


@contextmanager
def servers(kinds: list[str]) -> Iterator[dict[str, str]]:
    """The environment naming the private servers the kinds need: BENCH_IO_REDIS, BENCH_IO_PG, BENCH_IO_HTTP."""
    from jiggler_gevent.demo.local_redis import free_port, start_private

    url, stop_redis = start_private()
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_IO_REDIS=url)
    stops: list[Callable[[], None]] = [stop_redis]
    try:
        if {"pg2", "pg3"} & set(kinds):
            from tests.pg import PrivatePostgres

            pg = PrivatePostgres()
            stops.append(pg.stop)
            env["BENCH_IO_PG"] = pg.start()
        if "http" in kinds:
            port = free_port()
            argv = [sys.executable, "-m", "benchmarks.slow_http", str(port), "0"]
            http = subprocess.Popen(argv, cwd=ROOT, env=env)
            stops.append(lambda: (http.terminate(), http.wait(10)) and None)
            env["BENCH_IO_HTTP"] = f"http://127.0.0.1:{port}/"
            _wait_http(env["BENCH_IO_HTTP"])
        yield env
    finally:
        for stop in reversed(stops):
            stop()


def _wait_http(url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


Samples = dict[tuple[str, str], list[tuple[float, float]]]


def rounds(cells: list[tuple[str, str]], n: int, count: int, env: dict[str, str]) -> Samples:
    """Each cell `count` times, in alternating order; prints one line per measurement."""
    samples: Samples = {cell: [] for cell in cells}
    os.environ.update(env)  # this process's jobs module reads the targets as the worker's does
    config.configure(redis_url=env["BENCH_IO_REDIS"], namespace=NAMESPACE)
    for i in range(count):
        worker = Worker(env["BENCH_IO_REDIS"], env) if any(m == "worker" for m, _ in cells) else None
        try:
            for mode, kind in cells if i % 2 == 0 else cells[::-1]:
                if mode == "worker":
                    assert worker is not None
                    cpu, rate = in_worker(worker, kind, n)
                else:
                    cpu, rate = in_process(mode, kind, n, env)
                samples[(mode, kind)].append((cpu, rate))
                print(f"round {i + 1}, {kind} in {mode}: {cpu:.1f} µs CPU/call, {rate:,.0f} calls/s", flush=True)
        finally:
            if worker is not None:
                worker.stop()
    return samples


def table(samples: Samples, kinds: list[str], modes: list[str]) -> None:
    """One row per call, one column per caller: median CPU µs per call (range), median calls/s."""
    heads = {"worker": "in jobs, worker -c 10", "gevent": "gevent, 10 greenlets", "threads": "10 OS threads"}
    heads["ruby"] = "Ruby, 10 threads"
    print("\n| call | " + " | ".join(heads[m] for m in modes) + " |")
    print("|---|" + "---:|" * len(modes))
    for kind in kinds:
        cells = []
        for mode in modes:
            got = samples.get((mode, kind))
            if not got:
                cells.append("-")
                continue
            cpu = [c for c, _ in got]
            rate = statistics.median(r for _, r in got)
            cells.append(f"{statistics.median(cpu):.1f} ({min(cpu):.1f}-{max(cpu):.1f}) µs, {rate:,.0f}/s")
        print(f"| {kind} | " + " | ".join(cells) + " |")


def main() -> None:
    """Measure the chosen calls under the chosen callers; print each round, then the table of medians."""
    if sys.argv[1:2] == ["inner"]:
        inner(sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20000, help="per cell and round")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--modes", default=",".join(MODES))
    opts = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the servers and the worker are stopped on the way out
    kinds, modes = opts.kinds.split(","), opts.modes.split(",")
    if "ruby" in modes and not shutil.which("ruby"):
        sys.exit("--modes ruby needs Ruby and its redis and pg gems (apt-get install ruby-redis ruby-pg)")
    cells = [(m, k) for k in kinds for m in modes if m != "ruby" or k in RUBY_KINDS]
    with servers(kinds) as env:
        samples = rounds(cells, opts.calls, opts.rounds, env)
    table(samples, kinds, modes)


if __name__ == "__main__":
    main()
