"""What every system's task module shares: settings from the environment, the workloads, and `done()`.

The harness (run.py) sets the environment; each system's worker imports its task module, whose task calls
`run(workload)`: the workload, then an INCR of DONE_KEY that the harness polls. The latency rows' probe task
calls `probe(enqueued)` instead. Nothing here opens a socket at import time, so a worker can still patch
gevent after importing it.
"""

import os
import queue
import time
from collections.abc import Callable
from typing import Any

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
HTTP_URL = os.environ.get("BENCH_HTTP_URL", "http://127.0.0.1:8099/")
PG_DSN = os.environ.get("BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=jiggler_bench")
FILE = os.environ.get("BENCH_FILE", "/tmp/jiggler-bench-lines.txt")
QUEUE = "bench"
DONE_KEY = "bench:done"
LATENCY_KEY = "bench:latency"  # a probe job's first act: RPUSH of (start - enqueued) seconds
WARMUP_KEY = "bench:warmup"  # the same for the warm-up probes (enqueued 0), pushed before the pacing starts
LATENCY_QUEUES = ("mail", "low", "default")  # the latency rows' three queues, in the worker's order
CHUNK = 1000  # jobs per call of a bulk API
SLEEP = 0.2  # the sleep workload; the HTTP server answers after the same
PG_SLEEP = 0.1
FIB_N = 25

_redis: Any = None
_session: Any = None
_pg_pool: "queue.LifoQueue[Any]" = queue.LifoQueue()
_psycopg_ready = False


def redis_client() -> Any:
    """One client per process, its pool large enough for 1,000 greenlets."""
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(REDIS_URL, max_connections=4096)
    return _redis


def done() -> None:
    """The last act of every job: the harness counts these."""
    redis_client().incr(DONE_KEY)


def noop() -> None:
    """Nothing: the job is only its INCR."""


def sleep() -> None:
    """Wait 0.2 s (time.sleep: cooperative wherever gevent has patched it)."""
    time.sleep(SLEEP)


def http() -> None:
    """GET the harness's local server (answers after 0.2 s) on a keep-alive session."""
    global _session
    if _session is None:
        import requests
        from requests.adapters import HTTPAdapter

        _session = requests.Session()
        _session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1024))
    _session.get(HTTP_URL, timeout=30).raise_for_status()


def _green_psycopg() -> None:
    """Under gevent, make psycopg2 wait through the hub (psycogreen), as any gevent user of psycopg2 must."""
    global _psycopg_ready
    if not _psycopg_ready:
        import gevent.monkey

        if gevent.monkey.is_module_patched("socket"):
            from psycogreen.gevent import patch_psycopg

            patch_psycopg()
        _psycopg_ready = True


def pg() -> None:
    """SELECT pg_sleep(0.1) on a pooled connection (one per concurrent job, made on first need)."""
    import psycopg2

    _green_psycopg()
    try:
        conn = _pg_pool.get_nowait()
    except queue.Empty:
        conn = psycopg2.connect(PG_DSN)
        conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(%s)", (PG_SLEEP,))
            cur.fetchall()
    finally:
        _pg_pool.put(conn)


def append_line() -> None:
    """Append one line to the benchmark's file."""
    with open(FILE, "a") as f:
        f.write(f"{os.getpid()} {time.time()}\n")


def fib(n: int = FIB_N) -> int:
    """Pure-Python recursive Fibonacci: CPU only."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


WORKLOADS: dict[str, Callable[[], Any]] = {
    "noop": noop,
    "sleep": sleep,
    "http": http,
    "pg": pg,
    "file": append_line,
    "fib": fib,
}
LATENCY: dict[str, float | None] = {"sleep": SLEEP, "http": SLEEP, "pg": PG_SLEEP}


def run(workload: str) -> None:
    """One job of the benchmark: the workload, then done()."""
    WORKLOADS[workload]()
    done()


def probe(enqueued: float) -> None:
    """A latency probe job: its first act records how long it waited since `enqueued` (the enqueuer's time.time(),
    or 0 for a warm-up)."""
    start = time.time()
    redis_client().rpush(LATENCY_KEY if enqueued > 0 else WARMUP_KEY, start - enqueued)


def bin_path(script: str) -> str:
    """A console script installed beside this interpreter (celery, rq, dramatiq-gevent)."""
    import sys

    return os.path.join(os.path.dirname(sys.executable), script)
