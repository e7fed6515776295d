"""RQ in the benchmark: `rq worker-pool -n C -w rq.worker.SimpleWorker` (RQ has no gevent mode: C processes)."""

from benchmarks import common

MULTI_PROCESS = False
MAX_CONCURRENCY = 50  # one process per slot: more would measure process boot, and the machine's memory


def work(workload: str) -> None:
    common.run(workload)


def enqueue(workload: str, n: int) -> None:
    from redis import Redis
    from rq import Queue

    q = Queue(common.QUEUE, connection=Redis.from_url(common.REDIS_URL))
    for start in range(0, n, 1000):
        q.enqueue_many(
            [Queue.prepare_data(work, (workload,), result_ttl=0, failure_ttl=0) for _ in range(min(1000, n - start))]
        )


def command(concurrency: int, processes: int) -> list[str]:
    return [
        common.bin_path("rq"),
        "worker-pool",
        common.QUEUE,
        "-n",
        str(concurrency),
        "-w",
        "rq.worker.SimpleWorker",
        "-u",
        common.REDIS_URL,
        "-l",
        "WARNING",
    ]
