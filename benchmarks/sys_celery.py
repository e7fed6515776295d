"""Celery in the benchmark: `celery -A benchmarks.sys_celery worker -P gevent -c C -Q QUEUE[,QUEUE...]`, results off.

Prefetch is Celery's default (worker_prefetch_multiplier 4, so 4 x C messages reserved); acks are early
(Celery's default, at most once), unlike jiggler_gevent's and Dramatiq's at-least-once acks. Jobs are sent with
`apply_async` on one producer held for the whole run. Celery has no bulk send: `group()` publishes one message
per task, as the single loop does.
"""

from collections.abc import Sequence
from typing import Any

from celery import Celery

from benchmarks import common

MULTI_PROCESS = False
BULK = None

app = Celery("bench", broker=common.REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_default_queue=common.QUEUE,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)
_producer: Any = None


@app.task(name="bench.work")
def work(workload: str) -> None:
    """The benchmark's job."""
    common.run(workload)


@app.task(name="bench.probe")
def probe(enqueued: float) -> None:
    """The latency rows' job."""
    common.probe(enqueued)


def setup() -> None:
    """The enqueuer's producer, held for the whole run (its connection opens on the first send)."""
    global _producer
    _producer = app.producer_pool.acquire(block=True)


def enqueue(workload: str, n: int) -> None:
    """Push `n` jobs before the worker starts."""
    for _ in range(n):
        push(workload)


def push(workload: str) -> None:
    """One job, one `apply_async`."""
    work.apply_async((workload,), producer=_producer)


def push_probe(queue: str, enqueued: float) -> None:
    """One latency probe to `queue`."""
    probe.apply_async((enqueued,), queue=queue, producer=_producer)


def command(concurrency: int, processes: int, queues: Sequence[str] = (common.QUEUE,)) -> list[str]:
    """The worker's command line."""
    return [
        common.bin_path("celery"),
        "-A",
        "benchmarks.sys_celery",
        "worker",
        "-P",
        "gevent",
        "-c",
        str(concurrency),
        "-Q",
        ",".join(queues),
        "-l",
        "warning",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
    ]
