"""Iterable jobs for tests/test_iterable.py (`-r tests.iter_jobs`).

`steps` records each step it runs in the list `key` as "<step>:<pid>", so a test sees which steps ran, in which
process, and whether one ran twice.
"""

import os
import time

from jiggler_gevent import config, job, progress


def _redis():
    return config.redis_client()


@job(iterable=True, retries=0, result_ttl=600)
def steps(key: str, total: int, pause: float = 0.0, cursor: int | None = None):
    """Steps from the one after `cursor` to `total` - 1: each recorded, its progress reported, then `pause`
    seconds of sleep (I/O), then its checkpoint. Returns `total`."""
    first = 0 if cursor is None else cursor + 1
    for step in range(first, total):
        _redis().rpush(key, f"{step}:{os.getpid()}")
        progress((step + 1) / total, f"step {step + 1} of {total}")
        time.sleep(pause)
        yield step
    return total


@job(iterable=True, retries=1)
def fails_once_at(key: str, total: int, at: int, cursor: int | None = None):
    """Like `steps` (no pause), but the first time it reaches step `at` it raises before recording it."""
    first = 0 if cursor is None else cursor + 1
    for step in range(first, total):
        if step == at and _redis().set(key + ":failed", "1", nx=True):
            raise RuntimeError(f"planned failure at step {step}")
        _redis().rpush(key, f"{step}:{os.getpid()}")
        yield step


def _burn(seconds: float) -> int:
    """Pure CPU for `seconds` (no switch: only a forced yield can interrupt it)."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


@job(iterable=True, retries=0, result_ttl=600)
def burn_steps(key: str, total: int, seconds: float, cursor: int | None = None):
    """`total` CPU-bound steps of `seconds` each; only the start (step 0) is written to Redis, the rest is counted
    in memory and reported at the end through the return value."""
    first = 0 if cursor is None else cursor + 1
    _redis().rpush(key, f"start {first}")
    for step in range(first, total):
        _burn(seconds)
        yield step
    return total


@job(iterable=True, retries=0)
def bad_cursor(key: str, cursor=None):
    """Yields a cursor JSON cannot store (a set)."""
    _redis().rpush(key, "ran")
    yield {1, 2}
