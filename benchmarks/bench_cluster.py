"""Redis Cluster next to plain Redis: `python -m benchmarks.bench_cluster [--quick] [--rounds R] [--rows ROW...]`.

The rows `noop` (20,000 jobs, `-c 10`) and `sleep-c1000` (20,000 jobs of time.sleep(0.2), `-c 1000`) of
benchmarks/run.py, each drained by one `gjiggler worker` subprocess, against two private servers started here:
one plain server (`redis://`, the embedded Valkey as in benchmarks/run.py) and a 3-master Redis Cluster
(`redis+cluster://`, tests/cluster_servers.py: three of the test suite's servers joined into one cluster). On the
Cluster the namespace's keys carry the hash tag `{bench}`, so all of them are on one of the three masters. Never
the Redis on 6379.

For each row and target: push the jobs (enqueue_bulk, timed), park the queue (RENAME), start the worker, wait
until it idles, put the queue back and time until the queue and the worker's working list are empty; the worker's
CPU time over the same span, per job. The rows alternate between the targets, `--rounds` times; the table gives
each figure's median (and the spread).
Prints a Markdown table and writes it to benchmarks/results/cluster.md (raw figures to cluster.json).
"""

import argparse
import datetime as dt
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jiggler_gevent import job

NAMESPACE = "bench"
QUEUE = "bench"
SLEEP = 0.2
ROOT = Path(__file__).resolve().parent.parent
POLL = 0.005
ROWS = {"noop": ("noop", 10), "sleep-c1000": ("sleep", 1000)}  # row -> (job, concurrency)


@job(queue=QUEUE, retries=0, name="benchmarks.bench_cluster.noop")  # named: this file also runs as __main__
def noop() -> None:
    """Does nothing."""


@job(queue=QUEUE, retries=0, name="benchmarks.bench_cluster.sleep")
def sleep() -> None:
    """time.sleep(0.2): cooperative in the worker."""
    time.sleep(SLEEP)


JOBS = {"noop": noop, "sleep": sleep}


def start_worker(
    url: str, env: dict[str, str], client: Any, keys: Any, concurrency: int
) -> "tuple[subprocess.Popen[bytes], str]":
    """One worker process (`-c N` on the bench queue); returns it and its working list once it idles."""
    from benchmarks import procs

    return procs.start_bench_worker("benchmarks.bench_cluster", url, env, client, keys, QUEUE, NAMESPACE, concurrency)


def stop_worker(proc: "subprocess.Popen[bytes]") -> None:
    from benchmarks import procs

    procs.stop_bench_worker(proc)


def run_row(row: str, n: int, url: str, env: dict[str, str]) -> dict[str, Any]:
    """Push n jobs of `row` (timed), then drain them with a fresh worker; jobs/s of both."""
    from benchmarks import procs
    from jiggler_gevent import config

    cfg = config.configure(redis_url=url, namespace=NAMESPACE)
    client, keys = config.redis_client(url), cfg.keys
    name, concurrency = ROWS[row]
    queue, parked = keys.queue(QUEUE), keys.queue("parked")
    for key in (queue, parked, keys.processes, keys.dead, keys.queues):
        client.delete(key)
    started = time.perf_counter()
    for start in range(0, n, 1000):
        JOBS[name].enqueue_bulk([()] * min(1000, n - start))
    pushed = n / (time.perf_counter() - started)
    client.rename(queue, parked)
    proc, working = start_worker(url, env, client, keys, concurrency)
    sampler = procs.TreeSampler(proc.pid)
    try:
        sampler.sample()
        cpu_before = sum(sampler.cpu.values())
        started = time.perf_counter()
        client.rename(parked, queue)  # wakes the worker's BLMOVE on that key
        while True:
            time.sleep(POLL)
            if not client.llen(queue) and not client.llen(working):
                break
            if proc.poll() is not None or time.perf_counter() - started > 120 + n * 0.01:
                raise RuntimeError("the worker stopped or stalled")
        elapsed = time.perf_counter() - started
        sampler.sample()
        cpu = sum(sampler.cpu.values()) - cpu_before
    finally:
        stop_worker(proc)
    assert client.zcard(keys.dead) == 0, "jobs died: is the worker loading this module?"
    return {
        "row": row,
        "rate": n / elapsed,
        "cpu_us": 1e6 * cpu / n,
        "enqueue_rate": pushed,
        "n": n,
        "seconds": elapsed,
    }


def med(runs: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in runs]
    text = f"{statistics.median(values):,.0f}"
    return text + (f" ({min(values):,.0f}-{max(values):,.0f})" if len(values) > 1 else "")


def table(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    lines = [
        "| row | plain Redis: jobs/s | Cluster (3 masters): jobs/s | Cluster / plain | worker CPU µs/job, plain "
        "| worker CPU µs/job, Cluster | enqueue_bulk jobs/s, plain | enqueue_bulk jobs/s, Cluster |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["plain"]:
        plain, cluster = results["plain"][row], results["cluster"][row]
        ratio = statistics.median(r["rate"] for r in cluster) / statistics.median(r["rate"] for r in plain)
        lines.append(
            f"| {row} | {med(plain, 'rate')} | {med(cluster, 'rate')} | {ratio:.2f}x "
            f"| {med(plain, 'cpu_us')} | {med(cluster, 'cpu_us')} "
            f"| {med(plain, 'enqueue_rate')} | {med(cluster, 'enqueue_rate')} |"
        )
    return "\n".join(lines)


def header(args: argparse.Namespace, url: str) -> str:
    """The report's first line; the server's name and version are read from the plain server (the Cluster's nodes
    run the same binary as the test suite's servers: tests/redis_servers.py)."""
    from importlib import metadata

    from jiggler_gevent import config, connect

    server = " ".join(connect.server_and_version(config.redis_client(url).info("server")))
    return (
        f"Redis Cluster vs plain Redis, {dt.date.today()}: {args.jobs:,} jobs per row, {args.rounds} round(s), "
        f"Python {platform.python_version()}, redis-py {metadata.version('redis')}, {server}, "
        f"all on one machine (loopback).\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the rows against both targets, alternated; print and write the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 jobs per row, 1 round")
    parser.add_argument("--jobs", type=int, help="jobs per row (default 20,000)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="rows to run (default: all)")
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (2_000 if args.quick else 20_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    from benchmarks import run
    from jiggler_gevent.demo.local_redis import start_private
    from tests.cluster_servers import start_cluster

    run.compile_sources()  # no worker compiles this checkout at its start
    plain_url, stop_plain = start_private()
    cluster, cluster_dir = start_cluster()
    urls = {"plain": plain_url, "cluster": cluster.url}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {t: {row: [] for row in args.rows} for t in urls}
    top = header(args, plain_url)
    try:
        for r in range(args.rounds):
            for row in args.rows:
                for target, url in urls.items():
                    res = run_row(row, args.jobs, url, run.bench_env(url))
                    results[target][row].append(res)
                    print(f"round {r + 1} {row:12} {target:8} {res['rate']:8,.0f} jobs/s", file=sys.stderr, flush=True)
    finally:
        stop_plain()
        cluster.stop()
        shutil.rmtree(cluster_dir, ignore_errors=True)
    text = top + "\n" + table(results)
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "cluster.md").write_text(text + "\n")
    (out / "cluster.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
