"""Huey in the benchmark: `huey_consumer benchmarks.sys_huey.huey -k greenlet -w C`, results off.

huey_consumer does not patch gevent itself, so the worker is started through huey_gevent.py, which does.
A Huey instance is one queue and a consumer runs one instance, so there is no row on several queues; there
is no bulk enqueue either (`task.map()` enqueues one message at a time, as the single loop does).
"""

import sys
from collections.abc import Sequence

import redis
from huey import RedisHuey

from benchmarks import common

MULTI_PROCESS = False
NO_MULTI_QUEUE = "one queue per Huey instance, and a consumer runs one instance"
BULK = None

# redis-py caps a pool at 100 connections unless told otherwise; -w 1000 needs more.
huey = RedisHuey(
    common.QUEUE, results=False, connection_pool=redis.ConnectionPool.from_url(common.REDIS_URL, max_connections=4096)
)


@huey.task()
def work(workload: str) -> None:
    """The benchmark's job."""
    common.run(workload)


@huey.task()
def probe(enqueued: float) -> None:
    """The latency rows' job."""
    common.probe(enqueued)


def enqueue(workload: str, n: int) -> None:
    """Push `n` jobs before the worker starts."""
    for _ in range(n):
        push(workload)


def push(workload: str) -> None:
    """One job, one call of the task."""
    work(workload)


def push_probe(queue: str, enqueued: float) -> None:
    """One latency probe (Huey's one queue: `queue` is always common.QUEUE here)."""
    probe(enqueued)


def command(concurrency: int, processes: int, queues: Sequence[str] = (common.QUEUE,)) -> list[str]:
    """The worker's command line (`queues` is the Huey instance's one queue)."""
    return [
        sys.executable,
        "-m",
        "benchmarks.huey_gevent",
        "benchmarks.sys_huey.huey",
        "-k",
        "greenlet",
        "-w",
        str(concurrency),
        "-q",
        "-n",
    ]
