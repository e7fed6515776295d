"""What --metrics-port costs: noop throughput of one worker with and without Prometheus metrics.

    python -m benchmarks.bench_metrics [--jobs 20000] [--rounds 5] [--processes 1] [--scrape-every 15]

On a private redis-server: N noop jobs drained by one worker (`-c 100`, -p as given), alternating runs without and
with `--metrics-port` (scraped every --scrape-every seconds meanwhile: 15 by default, a common Prometheus
scrape_interval; 1 for a harsher figure), then the median of each and the cost in percent.
The worker loads this module (-r). Shared CPUs blur throughput, so two steadier figures are printed too: the
worker's CPU time per job (its rusage, start-up and exit included), and, first, the recording alone in this
process: CPU microseconds per job of `JobMetrics.after_process` beside the same updates on prometheus_client objects
(the former recording).
"""

import argparse
import resource
import socket
import sys
import threading
import time
import urllib.request

from benchmarks.drain import alternate, jobs_per_second, report
from jiggler_gevent import config, job


@job(name="benchmarks.bench_metrics.noop")  # named: this file also runs as __main__
def noop() -> None:
    """Does nothing."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int, every: float, done: threading.Event) -> None:
    while not done.wait(every):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError:
            pass


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain(
    url: str, namespace: str, jobs: int, processes: int, metrics: bool, scrape_every: float = 15.0
) -> tuple[float, float]:
    """Jobs per second of one worker draining `jobs` noops, and its CPU microseconds per job."""
    config.configure(redis_url=url, namespace=namespace)
    client = config.redis_client()
    client.flushdb()
    noop.enqueue_bulk([()] * jobs)
    queue = config.current().keys.queue("default")
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "benchmarks.bench_metrics", "-c", "100"]
    argv += ["-p", str(processes), "--redis-url", url, "--namespace", namespace]
    argv += ["--job-log", "off"]  # as when the figures in the README were taken: the job line has its own bench
    port = _free_port()
    if metrics:
        argv += ["--metrics-port", str(port)]
    done = threading.Event()
    if metrics:
        threading.Thread(target=_scrape, args=(port, scrape_every, done), daemon=True).start()
    cpu = _children_cpu()
    try:
        rate = jobs_per_second(argv, queue, namespace, jobs)  # waits for the worker: its rusage is counted
    finally:
        done.set()
    return rate, (_children_cpu() - cpu) / jobs * 1e6


def recording_cost(jobs: int = 200_000) -> tuple[float, float]:
    """CPU microseconds per finished job: (JobMetrics.after_process, the same on prometheus_client objects)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from jiggler_gevent.middleware import JobContext
    from jiggler_gevent.server.prometheus import BUCKETS, JobMetrics

    ctx = JobContext({"name": "benchmarks.bench_metrics.noop", "queue": "default"}, "")
    ctx.started_at = time.time()
    metrics = JobMetrics(("default",), 100)
    started = time.process_time()
    for _ in range(jobs):
        metrics.after_process(ctx)
    ours = (time.process_time() - started) / jobs * 1e6
    registry, labels = CollectorRegistry(), ("job", "queue")
    processed = Counter("p", "p", labels, registry=registry).labels("noop", "default")
    failed = Counter("f", "f", labels, registry=registry).labels("noop", "default")
    duration = Histogram("d", "d", labels, registry=registry, buckets=BUCKETS).labels("noop", "default")
    busy = Gauge("b", "b", registry=registry)
    started = time.process_time()
    for _ in range(jobs):
        busy.inc()
        busy.dec()
        processed.inc()
        if ctx.exception is not None:
            failed.inc()
        duration.observe(max(0.0, time.time() - ctx.started_at))
    theirs = (time.process_time() - started) / jobs * 1e6
    return ours, theirs


def main() -> None:
    """Print one line per run and the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--scrape-every", type=float, default=15.0)
    opts = parser.parse_args()
    ours, theirs = recording_cost()
    print(f"recording per job: {ours:.2f} us (prometheus_client objects: {theirs:.2f} us)", flush=True)
    from jiggler_gevent.demo.local_redis import start_private

    url, stop = start_private()
    try:
        samples = alternate(
            opts.rounds,
            lambda on: drain(url, "bench-metrics", opts.jobs, opts.processes, on, opts.scrape_every),
            "metrics",
        )
    finally:
        stop()
    title = f"-p {opts.processes}, -c 100, noop"
    report(samples, title, "without --metrics-port", "with --metrics-port", "without", "with")


if __name__ == "__main__":
    main()
