"""Dramatiq in the benchmark: `dramatiq-gevent benchmarks.sys_dramatiq -p N -t C -Q QUEUE...`, max_retries=0.

An actor has one queue, so the probe is one actor per queue (the same function). Dramatiq has no bulk send:
`group()` sends one message at a time, as the single loop does.
"""

from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks import common

MULTI_PROCESS = True
BULK = None

broker = RedisBroker(url=common.REDIS_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0)
def work(workload: str) -> None:
    """The benchmark's job."""
    common.run(workload)


def probe(enqueued: float) -> None:
    """The latency rows' job."""
    common.probe(enqueued)


PROBES = {
    q: dramatiq.actor(probe, actor_name=f"probe_{q}", queue_name=q, max_retries=0)
    for q in (common.QUEUE, *common.LATENCY_QUEUES)
}


def enqueue(workload: str, n: int) -> None:
    """Push `n` jobs before the worker starts."""
    for _ in range(n):
        push(workload)


def push(workload: str) -> None:
    """One job, one `send`."""
    work.send(workload)


def push_probe(queue: str, enqueued: float) -> None:
    """One latency probe to `queue`."""
    PROBES[queue].send(enqueued)


def command(concurrency: int, processes: int, queues: Sequence[str] = (common.QUEUE,)) -> list[str]:
    """The worker's command line."""
    return [
        common.bin_path("dramatiq-gevent"),
        "benchmarks.sys_dramatiq",
        "-p",
        str(processes),
        "-t",
        str(concurrency),
        "-Q",
        *queues,
    ]
