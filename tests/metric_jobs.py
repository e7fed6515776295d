"""Jobs for tests/test_job_metrics.py (workers load them with `-r tests.metric_jobs`): fast, failing and sleeping
ones with known run times, so the per-job metrics they leave can be checked exactly."""

import time

from jiggler_gevent import config, job


@job
def quick(key: str) -> None:
    """INCR key: as fast as a job gets."""
    config.redis_client().incr(key)


@job(retries=0)
def broken(key: str) -> None:
    """INCR key, then raise (no retry: it goes to the dead set at once)."""
    config.redis_client().incr(key)
    raise ValueError("broken on purpose")


@job
def sleepy(key: str, seconds: float) -> None:
    """Sleep `seconds`, then INCR key."""
    time.sleep(seconds)
    config.redis_client().incr(key)
