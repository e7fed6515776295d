"""RQ in the benchmark: `rq worker-pool QUEUE... -n C -w rq.worker.SimpleWorker` (RQ has no gevent mode: C processes).

Several queues are served in the order given (RQ's default). The bulk API is `Queue.enqueue_many`, 1,000 a call.
"""

from collections.abc import Sequence
from typing import Any

from benchmarks import common

MULTI_PROCESS = False
MAX_CONCURRENCY = 50  # one process per slot: more would measure process boot, and the machine's memory
BULK = "enqueue_many"

_queues: dict[str, Any] = {}


def work(workload: str) -> None:
    """The benchmark's job."""
    common.run(workload)


def probe(enqueued: float) -> None:
    """The latency rows' job."""
    common.probe(enqueued)


def setup() -> None:
    """The enqueuer's queues, on one connection."""
    from redis import Redis
    from rq import Queue

    connection = Redis.from_url(common.REDIS_URL)
    for name in (common.QUEUE, *common.LATENCY_QUEUES):
        _queues[name] = Queue(name, connection=connection)


def enqueue(workload: str, n: int) -> None:
    """Push `n` jobs before the worker starts."""
    push_bulk(workload, n)


def push(workload: str) -> None:
    """One job, one `enqueue`."""
    _queues[common.QUEUE].enqueue(work, workload, result_ttl=0, failure_ttl=0)


def push_bulk(workload: str, n: int) -> None:
    """`n` jobs through `enqueue_many`, 1,000 a call."""
    from rq import Queue

    q = _queues[common.QUEUE]
    for start in range(0, n, common.CHUNK):
        q.enqueue_many(
            [
                Queue.prepare_data(work, (workload,), result_ttl=0, failure_ttl=0)
                for _ in range(min(common.CHUNK, n - start))
            ]
        )


def push_probe(queue: str, enqueued: float) -> None:
    """One latency probe to `queue`."""
    _queues[queue].enqueue(probe, enqueued, result_ttl=0, failure_ttl=0)


def command(concurrency: int, processes: int, queues: Sequence[str] = (common.QUEUE,)) -> list[str]:
    """The worker's command line."""
    return [
        common.bin_path("rq"),
        "worker-pool",
        *queues,
        "-n",
        str(concurrency),
        "-w",
        "rq.worker.SimpleWorker",
        "-u",
        common.REDIS_URL,
        "-l",
        "WARNING",
    ]
