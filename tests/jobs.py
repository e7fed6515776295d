"""Jobs the tests enqueue and the worker subprocesses run (`-r tests.jobs`).

Each job records what it did in Redis under a key the test passes in, so the test can count runs.
"""

import math
import os
import time

from greenlet import GreenletExit

from jiggler_gevent import config, job


def _redis():
    return config.redis_client()


@job
def record(key: str, value: str) -> None:
    """RPUSH value to key."""
    _redis().rpush(key, value)


@job(retries=0)
def enqueue_record(key: str, value: str) -> None:
    """Enqueue `record(key, value)` from inside a job (with the worker's configure() settings)."""
    record.enqueue(key, value)


@job
def nap(key: str, seconds: float) -> None:
    """time.sleep, then record the pid that ran it."""
    time.sleep(seconds)
    _redis().rpush(key, str(os.getpid()))


@job
def started_then_nap(key: str, seconds: float) -> None:
    """Record that it started, sleep, then record that it finished."""
    _redis().rpush(key + ":started", str(os.getpid()))
    time.sleep(seconds)
    _redis().rpush(key + ":finished", str(os.getpid()))


@job(retries=2)
def fail_times(key: str, times: int) -> None:
    """Fail the first `times` runs, then succeed; each run is recorded."""
    runs = _redis().rpush(key, "run")
    if runs <= times:
        raise ValueError(f"planned failure {runs} of {times}")


@job(retries=0)
def always_fail(key: str) -> None:
    _redis().rpush(key, "run")
    raise RuntimeError("this job always fails")


@job(retries=0, dead=False)
def fail_and_vanish(key: str) -> None:
    _redis().rpush(key, "run")
    raise RuntimeError("gone")


@job
def exit_process(key: str) -> None:
    """Record, then kill the worker process outright, as a segfault or OOM kill would."""
    _redis().rpush(key, str(os.getpid()))
    os._exit(9)


@job
def exit_after(key: str, seconds: float) -> None:
    """Record, then after `seconds` kill the worker process outright (as a job that blows its memory would)."""
    _redis().rpush(key, str(os.getpid()))
    time.sleep(seconds)
    os._exit(9)


@job
def raise_system_exit(key: str) -> None:
    _redis().rpush(key, "run")
    raise SystemExit(3)


@job
def raise_greenlet_exit(key: str) -> None:
    _redis().rpush(key, "run")
    raise GreenletExit


@job(queue="other")
def on_other_queue(key: str) -> None:
    _redis().rpush(key, "other")


@job(queue="reports", retries=1, timeout=12.5, dead=False, result_ttl=60, unique_for=30)
def report(key: str, value: str = "report") -> None:
    """RPUSH value to key; its options are what `gjiggler enqueue -r` must apply (tests/test_cli.py)."""
    _redis().rpush(key, value)


@job(retries=0, timeout=0.5)
def slow_io(key: str, seconds: float) -> None:
    _redis().rpush(key, "start")
    time.sleep(seconds)
    _redis().rpush(key, "end")


@job(retries=0, timeout=0.5)
def burn_cpu(key: str, seconds: float) -> None:
    """Pure-Python CPU work for `seconds`."""
    _redis().rpush(key, "start")
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    _redis().rpush(key, "end")


# -- pre-emption and timeouts (tests/test_preempt.py, tests/test_timeouts.py) ----------------------------
# Imported here rather than at the top so that this block stays self-contained.
import itertools as _itertools  # noqa: E402
import json as _json  # noqa: E402
import logging as _logging  # noqa: E402
import statistics as _statistics  # noqa: E402
import threading as _threading  # noqa: E402


@job(retries=0)
def ticker(key: str, seconds: float, period: float = 0.05) -> None:
    """Sleep `period` again and again for `seconds`; record the worst gap between two wake-ups."""
    _redis().rpush(key + ":started", "1")
    start = last = time.monotonic()
    worst = 0.0
    while last - start < seconds:
        time.sleep(period)
        now = time.monotonic()
        worst = max(worst, now - last)
        last = now
    _redis().rpush(key, _json.dumps({"worst": worst}))


@job(retries=0)
def cpu_hog(key: str, seconds: float) -> None:
    """Pure-Python CPU work for `seconds`, no timeout."""
    _redis().rpush(key + ":started", "1")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    _redis().rpush(key, "done")


@job(retries=1, timeout=0.3)
def stuck_in_library(key: str, seconds: float) -> None:
    """Burn CPU for `seconds` entirely inside the standard library, where no timeout can land safely."""
    _redis().rpush(key, "start")
    end = time.monotonic() + seconds
    _statistics.mean(_itertools.takewhile(lambda _: time.monotonic() < end, _itertools.repeat(1.0)))
    _redis().rpush(key, "end")


def _hold_gil(seconds: float) -> None:
    """One C call that holds the GIL for at least about `seconds`, calibrated here on the fastest of five short
    runs: one slowed by other load would make the call too short (a 1 s hold once lasted 0.42 s under a full suite)."""
    n = 500_000
    fastest = math.inf
    for _ in range(5):
        t = time.perf_counter()
        sum(_itertools.repeat(1, n))
        fastest = min(fastest, time.perf_counter() - t)
    sum(_itertools.repeat(1, int(seconds / max(fastest / n, 1e-10))))


@job(retries=0)
def block_hub(key: str, kind: str, seconds: float) -> None:
    """Block the hub in a way no forced yield can cut short: "gil" (C code holding the GIL), "sleep" (an
    unpatched blocking call) or "pg" (psycopg2 with psycogreen's wait callback removed)."""
    if kind == "gil":
        _hold_gil(seconds)
    elif kind == "sleep":
        from gevent import monkey

        monkey.get_original("time", "sleep")(seconds)
    elif kind == "pg":
        import psycopg2
        import psycopg2.extensions

        previous = psycopg2.extensions.get_wait_callback()
        psycopg2.extensions.set_wait_callback(None)
        try:
            dsn = os.environ.get("JIGGLER_TEST_PG_DSN", "host=127.0.0.1 user=postgres dbname=postgres")
            with psycopg2.connect(dsn) as conn:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_sleep(%s)", (seconds,))
            conn.close()
        finally:
            psycopg2.extensions.set_wait_callback(previous)
    _redis().rpush(key, kind)


STRESS_LOCK = _threading.Lock()
STRESS_RLOCK = _threading.RLock()
_stress_log = _logging.getLogger("tests.jobs.stress")


class _CountingHandler(_logging.Handler):
    """A logging handler that only counts (its lock is the one that matters)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: _logging.LogRecord) -> None:
        self.count += len(record.getMessage())


_stress_handler = _CountingHandler()
_stress_log.addHandler(_stress_handler)
_stress_log.setLevel(_logging.INFO)
_stress_log.propagate = False


@job(retries=0, dead=False, timeout=0.2)
def stress_locks(key: str, seconds: float) -> None:
    """Loop over patched locks, logging and Redis calls, with CPU work in between, until the timeout stops
    it (or `seconds` pass: then it records "survived")."""
    r = _redis()
    end = time.monotonic() + seconds
    next_io = time.monotonic() + 0.3
    i = 0
    while time.monotonic() < end:
        i += 1
        with STRESS_LOCK:
            sum(range(50))
        with STRESS_RLOCK:
            with STRESS_RLOCK:
                sum(range(50))
        _stress_log.info("iteration %d of %s", i, key)
        if time.monotonic() >= next_io:  # mostly CPU, so most timeouts arrive at forced yields
            next_io = time.monotonic() + 0.3
            r.incr(key + ":calls")
            r.get(key + ":calls")
    r.rpush(key + ":survived", "1")


@job(retries=0)
def stress_probe(key: str, echoes: int) -> None:
    """Report, from inside the worker, whether a stress lock is still held and how the Redis pool looks,
    after checking that `echoes` concurrent ECHOs through the pool each get their own reply back."""
    import gevent

    client = _redis()
    pool = client.connection_pool
    idle = [c for c in pool.pool.queue if c is not None]
    report = {
        "lock_held": STRESS_LOCK.locked(),
        "rlock_owner": STRESS_RLOCK._owner is not None,
        "handler_lock_free": _stress_handler.lock.acquire(blocking=False),
        "logging_lock_free": _logging._lock.acquire(blocking=False),
        "slots": pool.pool.qsize(),
        "max_connections": pool.max_connections,
        "created": len(pool._connections),
        "idle": len(idle),
    }
    if report["handler_lock_free"]:
        _stress_handler.lock.release()
    if report["logging_lock_free"]:
        _logging._lock.release()

    def echo(i: int) -> bool:
        token = f"{key}-{i}-{os.urandom(4).hex()}"
        return client.echo(token) == token

    greenlets = [gevent.spawn(echo, i) for i in range(echoes)]
    gevent.joinall(greenlets, timeout=20)
    report["echo_ok"] = sum(1 for g in greenlets if g.value is True)
    client.rpush(key, _json.dumps(report))


@job(retries=0, timeout=0.5)
def burn_cpu_then_nap(key: str, seconds: float) -> None:
    """Pure-Python CPU work for `seconds`, then an ordinary wait: the first point where a timer can fire
    without pre-emption."""
    _redis().rpush(key, "start")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    time.sleep(0.2)
    _redis().rpush(key, "end")


@job
def record_loaded_modules(key: str) -> None:
    """RPUSH the names of the jiggler_gevent modules loaded in this worker process (tests/test_boundaries.py)."""
    import sys

    _redis().rpush(key, *sorted(m for m in sys.modules if m == "jiggler_gevent" or m.startswith("jiggler_gevent.")))


@job
def record_wait(key: str, enqueued_at: float) -> None:
    """RPUSH how long this job waited between its enqueue and its start, in seconds."""
    _redis().rpush(key, time.time() - enqueued_at)
