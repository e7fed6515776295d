"""Jobs for tests/test_recycle.py (`-r tests.recycle_jobs`): counting runs per token and per process, and a
job that keeps memory."""

import os

from jiggler_gevent import config, job

HELD: list[bytes] = []  # what `hog` allocates stays referenced here, so the process's RSS stays up


@job
def count(key: str, token: str) -> None:
    """Count a run of `token` (hash `key`) and of this process (hash `key`:pids)."""
    with config.redis_client().pipeline(transaction=False) as pipe:
        pipe.hincrby(key, token, 1)
        pipe.hincrby(key + ":pids", str(os.getpid()), 1)
        pipe.execute()


@job
def hog(key: str, megabytes: int) -> None:
    """Allocate `megabytes` MB (touched, so resident) and keep them; record the pid."""
    HELD.append(b"x" * (megabytes * 1024 * 1024))
    config.redis_client().rpush(key, str(os.getpid()))
