"""Jobs the tests enqueue and the worker subprocesses run (`-r tests.jobs`).

Each job records what it did in Redis under a key the test passes in, so the test can count runs.
"""
import os
import time

from jiggler_gevent import config, job


def _redis():
    return config.redis_client()


@job
def record(key: str, value: str) -> None:
    """RPUSH value to key."""
    _redis().rpush(key, value)


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
def raise_system_exit(key: str) -> None:
    _redis().rpush(key, "run")
    raise SystemExit(3)


@job(queue="other")
def on_other_queue(key: str) -> None:
    _redis().rpush(key, "other")


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
