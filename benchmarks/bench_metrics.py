"""What --metrics-port costs: noop throughput of one worker with and without Prometheus metrics.

    python -m benchmarks.bench_metrics [--jobs 20000] [--rounds 5] [--processes 1]

On a private redis-server: N noop jobs drained by one worker (`-c 100`, -p as given), alternating runs without and
with `--metrics-port` (a scrape every second meanwhile), then the median of each and the cost in percent.
The worker loads this module (-r).
"""

import argparse
import socket
import statistics
import sys
import threading
import urllib.request

from benchmarks.drain import jobs_per_second
from jiggler_gevent import config, job


@job(name="benchmarks.bench_metrics.noop")  # named: this file also runs as __main__
def noop() -> None:
    """Does nothing."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape_every_second(port: int, done: threading.Event) -> None:
    while not done.wait(1.0):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError:
            pass


def drain(url: str, namespace: str, jobs: int, processes: int, metrics: bool) -> float:
    """Jobs per second of one worker draining `jobs` noops."""
    config.configure(redis_url=url, namespace=namespace)
    client = config.redis_client()
    client.flushdb()
    noop.enqueue_bulk([()] * jobs)
    queue = config.current().keys.queue("default")
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "benchmarks.bench_metrics", "-c", "100"]
    argv += ["-p", str(processes), "--redis-url", url, "--namespace", namespace]
    port = _free_port()
    if metrics:
        argv += ["--metrics-port", str(port)]
    done = threading.Event()
    if metrics:
        threading.Thread(target=_scrape_every_second, args=(port, done), daemon=True).start()
    try:
        return jobs_per_second(argv, queue, namespace, jobs)
    finally:
        done.set()


def main() -> None:
    """Print one line per run and the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1)
    opts = parser.parse_args()
    from jiggler_gevent.demo.local_redis import start_private

    url, stop = start_private()
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        for i in range(opts.rounds):
            for metrics in (False, True) if i % 2 == 0 else (True, False):
                rate = drain(url, "bench-metrics", opts.jobs, opts.processes, metrics)
                rates[metrics].append(rate)
                print(f"round {i + 1}, metrics {'on ' if metrics else 'off'}: {rate:,.0f} jobs/s", flush=True)
    finally:
        stop()
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"\n| -p {opts.processes}, -c 100, noop | jobs/s (median of {opts.rounds}) |\n|---|---:|")
    print(f"| without --metrics-port | {off:,.0f} |\n| with --metrics-port | {on:,.0f} |")
    print(f"\ncost: {100 * (off - on) / off:.1f}%")


if __name__ == "__main__":
    main()
