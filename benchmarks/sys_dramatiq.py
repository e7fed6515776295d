"""Dramatiq in the benchmark: `dramatiq-gevent benchmarks.sys_dramatiq -p N -t C`, max_retries=0."""

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks import common

MULTI_PROCESS = True

broker = RedisBroker(url=common.REDIS_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0)
def work(workload: str) -> None:
    common.run(workload)


def enqueue(workload: str, n: int) -> None:
    for _ in range(n):
        work.send(workload)


def command(concurrency: int, processes: int) -> list[str]:
    return [
        common.bin_path("dramatiq-gevent"),
        "benchmarks.sys_dramatiq",
        "-p",
        str(processes),
        "-t",
        str(concurrency),
        "-Q",
        common.QUEUE,
    ]
