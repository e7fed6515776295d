"""Celery in the benchmark: `celery -A benchmarks.sys_celery worker -P gevent -c C`, results off.

Prefetch is Celery's default (worker_prefetch_multiplier 4, so 4 x C messages reserved); acks are early
(Celery's default, at most once), unlike jiggler_gevent's and Dramatiq's at-least-once acks.
"""

from celery import Celery

from benchmarks import common

MULTI_PROCESS = False

app = Celery("bench", broker=common.REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_default_queue=common.QUEUE,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)


@app.task(name="bench.work")
def work(workload: str) -> None:
    common.run(workload)


def enqueue(workload: str, n: int) -> None:
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            work.apply_async((workload,), producer=producer)


def command(concurrency: int, processes: int) -> list[str]:
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
        common.QUEUE,
        "-l",
        "warning",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
    ]
