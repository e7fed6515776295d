"""Jobs for tests/test_limits.py and tests/test_unique.py (workers load them with `-r tests.limit_jobs`).

Each records into Redis under keys the test passes in. Holders count themselves in and out of a critical
section with one Lua call each (INCR and keep the maximum), so the test reads the most seen at once.
"""

import os
import time

from jiggler_gevent import config, job, limits

_ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""


def _redis():
    return config.redis_client()


def enter(key: str) -> None:
    """One more holder now: KEY:cur + 1, and KEY:max the most seen."""
    _redis().eval(_ENTER, 2, key + ":cur", key + ":max")


def leave(key: str) -> None:
    """One holder fewer; KEY:done counts the completed holds."""
    _redis().decr(key + ":cur")
    _redis().incr(key + ":done")


@job(retries=0)
def hold_x(key: str, seconds: float) -> None:
    """Hold concurrent("x", 3) for `seconds`."""
    with limits.concurrent("x", 3, wait_timeout=60):
        enter(key)
        time.sleep(seconds)
        leave(key)


@job(retries=0)
def window_start(key: str) -> None:
    """Take window("w", 50, per=2), then record when the limiter admitted it: its acquisition's time in the
    limiter's sorted set (µs, Redis' clock), which is what the limiter counts."""
    token = limits.window("w", 50, per=2, wait_timeout=30).acquire()
    admitted = _redis().zscore(config.current().keys.limit("w"), token)
    _redis().rpush(key, "missing" if admitted is None else str(int(admitted)))


@job(retries=0)
def hold_and_report(key: str, lock_timeout: float) -> None:
    """Take concurrent("k", 1, lock_timeout), record the time, then sleep (the test kills the worker)."""
    with limits.concurrent("k", 1, lock_timeout=lock_timeout):
        _redis().rpush(key, repr(time.time()))
        time.sleep(120)


@job(retries=3)
def over_limit(key: str) -> None:
    """Record a run, then meet a full limiter."""
    _redis().rpush(key, "run")
    raise limits.OverLimit("test", "concurrent", 0.0)


@job(concurrency=2, retries=0)
def two_at_once(key: str, seconds: float) -> None:
    """At most 2 of these run at once (`concurrency=2`)."""
    enter(key)
    time.sleep(seconds)
    leave(key)


@job(unique_for=60, retries=0)
def unique_record(key: str) -> None:
    """A unique job that records its run."""
    _redis().rpush(key, "run")


@job(unique_for=60, retries=0)
def unique_fail(key: str) -> None:
    """A unique job that fails with no retries: to the dead set."""
    _redis().rpush(key, "run")
    raise RuntimeError("planned")


@job(unique_for=60, retries=2)
def unique_fail_retry(key: str) -> None:
    """A unique job that fails, with retries left: to the retry set."""
    _redis().rpush(key, "run")
    raise RuntimeError("planned")


@job(unique_for=60, unique_until="start", retries=0)
def unique_start_nap(key: str, seconds: float) -> None:
    """Released when it starts; records the start, then sleeps."""
    _redis().rpush(key, "started")
    time.sleep(seconds)


@job(concurrency=1, retries=0)
def one_at_a_time(key: str, seconds: float) -> None:
    """At most one of these runs at once (`concurrency=1`): records `start <time>` and `end <time>` (RPUSH), and
    `<pid>` under KEY:pids, so a test sees when each run held the slot and in which process."""
    _redis().rpush(key + ":pids", str(os.getpid()))
    _redis().rpush(key, f"start {time.time()!r}")
    time.sleep(seconds)
    _redis().rpush(key, f"end {time.time()!r}")


@job(concurrency=3, retries=0)
def three_at_once(key: str, seconds: float) -> None:
    """At most 3 of these run at once (`concurrency=3`); records the tokens holding its limiter as it runs (KEY:tokens),
    so a test sees who took its slot: the fetch script (`<hex>:<fetch>.<position>`) or the middleware (hex only)."""
    enter(key)
    limiter = config.current().keys.limit(three_at_once.name.replace(":", "."))
    _redis().rpush(key + ":tokens", *(_redis().zrange(limiter, 0, -1) or ["none"]))
    time.sleep(seconds)
    leave(key)
