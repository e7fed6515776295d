"""Jobs for tests/test_results.py and tests/test_cancel.py (workers load them with `-r tests.result_jobs`).

Each job records each of its runs in Redis (RPUSH to `key`) before it does anything else, so a test can tell
how many times it started. Most are tracked (`result_ttl=60`); a test makes one untracked with
`.set(result_ttl=None)`.
"""

import itertools
import statistics
import time

from jiggler_gevent import config, job, middleware

TTL = 60


def _redis():
    return config.redis_client()


def _started(key: str) -> None:
    _redis().rpush(key, "run")


@job(result_ttl=TTL, retries=0)
def give(key: str, value):
    """Return `value` as it came."""
    _started(key)
    return value


@job(result_ttl=TTL, retries=0)
def nap_then_give(key: str, seconds: float, value):
    """Sleep `seconds`, then return `value`."""
    _started(key)
    time.sleep(seconds)
    _redis().rpush(key, "end")
    return value


@job(result_ttl=TTL, retries=0)
def slow_first_time(key: str, value):
    """The first run sleeps a minute (the test kills its worker meanwhile); any later run returns `value` at once."""
    if _redis().rpush(key, "run") == 1:
        time.sleep(60)
    return value


@job(result_ttl=TTL, retries=0)
def fail(key: str, message: str) -> None:
    """Fail with ValueError(message)."""
    _started(key)
    raise ValueError(message)


@job(result_ttl=TTL, retries=0)
def give_a_set(key: str):
    """Return a set: not JSON, so the job fails with TypeError."""
    _started(key)
    return {1, 2, 3}


@job(result_ttl=TTL, retries=0)
def spin(key: str) -> None:
    """Burn the CPU forever (only a cancellation or a timeout stops it)."""
    _started(key)
    n = 0
    while True:
        n += 1


@job(result_ttl=TTL, retries=3)
def sleep_long(key: str, seconds: float = 60) -> None:
    """Sleep in short naps for `seconds`; records "end" if it ever gets there. Retries left, so a failure would
    go to the retry set (a cancelled one must not)."""
    _started(key)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    _redis().rpush(key, "end")


@job(result_ttl=TTL, retries=3)
def stuck_in_library(key: str, seconds: float) -> None:
    """Burn CPU for `seconds` inside the standard library, where no exception can land safely."""
    _started(key)
    end = time.monotonic() + seconds
    statistics.mean(itertools.takewhile(lambda _: time.monotonic() < end, itertools.repeat(1.0)))
    _redis().rpush(key, "end")


@job(result_ttl=TTL, unique_for=60, retries=0)
def unique_sleep(key: str, seconds: float) -> None:
    """A unique job that sleeps."""
    _started(key)
    time.sleep(seconds)


@job(result_ttl=TTL, concurrency=1, retries=0)
def single(key: str, seconds: float) -> None:
    """At most one of these runs at once, across every worker."""
    _started(key)
    time.sleep(seconds)
    _redis().rpush(key, "end")


@job(result_ttl=TTL, retries=3)
def ends_in_slow_hook(key: str, hook_seconds: float) -> str:
    """Returns at once; then SlowAfterHook holds its end for `hook_seconds`."""
    _started(key)
    return "returned"


class SlowAfterHook(middleware.ServerMiddleware):
    """For `ends_in_slow_hook` only: after the job has returned, record "after-hook" and sleep, as a middleware
    that reports somewhere would; so a test can cancel a job while it ends. A no-op for every other job."""

    def after_process(self, ctx: middleware.JobContext) -> None:
        if ctx.name == ends_in_slow_hook.name:
            key, seconds = ctx.payload["args"]
            _redis().rpush(key, "after-hook")
            time.sleep(seconds)


middleware.server.add(SlowAfterHook())
