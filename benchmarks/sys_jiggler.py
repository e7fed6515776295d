"""jiggler_gevent in the benchmark: `gjiggler worker -r benchmarks.sys_jiggler -q QUEUE... -c C [-p N]`.

Several queues are given as `-q mail -q low -q default` (weight 1 each: a random order at each fetch).
"""

import sys
from collections.abc import Sequence

from benchmarks import common
from jiggler_gevent import config, job

NAMESPACE = "bench"
MULTI_PROCESS = True
BULK = "enqueue_bulk"


@job(queue=common.QUEUE, retries=0)
def work(workload: str) -> None:
    """The benchmark's job."""
    common.run(workload)


@job(queue=common.QUEUE, retries=0)
def probe(enqueued: float) -> None:
    """The latency rows' job."""
    common.probe(enqueued)


PROBES = {q: probe.set(queue=q) for q in (common.QUEUE, *common.LATENCY_QUEUES)}


def setup() -> None:
    """The enqueuer's settings (the worker takes them from its command line)."""
    config.configure(redis_url=common.REDIS_URL, namespace=NAMESPACE)


def enqueue(workload: str, n: int) -> None:
    """Push `n` jobs before the worker starts."""
    work.enqueue_bulk([(workload,)] * n)


def push(workload: str) -> None:
    """One job, one call."""
    work.enqueue(workload)


def push_bulk(workload: str, n: int) -> None:
    """`n` jobs through `enqueue_bulk`, 1,000 a call."""
    for start in range(0, n, common.CHUNK):
        work.enqueue_bulk([(workload,)] * min(common.CHUNK, n - start))


def push_probe(queue: str, enqueued: float) -> None:
    """One latency probe to `queue`."""
    PROBES[queue].enqueue(enqueued)


def command(concurrency: int, processes: int, queues: Sequence[str] = (common.QUEUE,)) -> list[str]:
    """The worker's command line."""
    return [
        sys.executable,
        "-m",
        "jiggler_gevent",
        "worker",
        "-r",
        "benchmarks.sys_jiggler",
        *[arg for q in queues for arg in ("-q", q)],
        "-c",
        str(concurrency),
        "-p",
        str(processes),
        "--redis-url",
        common.REDIS_URL,
        "--namespace",
        NAMESPACE,
        "--job-log",  # no line per job, as the peers run at their warning level (bench_job_log measures it)
        "off",
    ]
