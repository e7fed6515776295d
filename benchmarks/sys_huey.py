"""Huey in the benchmark: `huey_consumer benchmarks.sys_huey.huey -k greenlet -w C`, results off.

huey_consumer does not patch gevent itself, so the worker is started through huey_gevent.py, which does.
"""

import sys

import redis
from huey import RedisHuey

from benchmarks import common

MULTI_PROCESS = False

# redis-py caps a pool at 100 connections unless told otherwise; -w 1000 needs more.
huey = RedisHuey(
    common.QUEUE, results=False, connection_pool=redis.ConnectionPool.from_url(common.REDIS_URL, max_connections=4096)
)


@huey.task()
def work(workload: str) -> None:
    common.run(workload)


def enqueue(workload: str, n: int) -> None:
    for _ in range(n):
        work(workload)


def command(concurrency: int, processes: int) -> list[str]:
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
