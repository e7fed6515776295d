"""jiggler_gevent in the benchmark: `gjiggler worker -r benchmarks.sys_jiggler -c C [-p N]`."""

import sys

from benchmarks import common
from jiggler_gevent import config, job

NAMESPACE = "bench"
MULTI_PROCESS = True


@job(queue=common.QUEUE, retries=0)
def work(workload: str) -> None:
    common.run(workload)


def enqueue(workload: str, n: int) -> None:
    config.configure(redis_url=common.REDIS_URL, namespace=NAMESPACE)
    work.enqueue_bulk([(workload,)] * n)


def command(concurrency: int, processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jiggler_gevent",
        "worker",
        "-r",
        "benchmarks.sys_jiggler",
        "-q",
        common.QUEUE,
        "-c",
        str(concurrency),
        "-p",
        str(processes),
        "--redis-url",
        common.REDIS_URL,
        "--namespace",
        NAMESPACE,
    ]
