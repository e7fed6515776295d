"""This tree against a git revision, by kind of job: worker CPU and Redis commands per job, in alternating rounds.

    python -m benchmarks.ab_kinds REV [--jobs 5000] [--rounds 5] [--kinds plain tracked concurrent batch]

The kinds are a job that does nothing (`plain`), the same with `result_ttl=60` (`tracked`), with
`concurrency=5` (`concurrent`), and a plain job enqueued inside a `Batch` (`batch`: all of a round's jobs in one
batch, without callbacks). Each round drains `--jobs` jobs of each kind with a worker (`-c 10`) of REV and
one of this tree, the order flipped every round, on one private server; the enqueue side is this tree's. A drain
lasts from the worker's first take (its start-up left out) until the queue, the scheduled set and every working
list are empty; the worker's CPU (its process tree, /proc) and Redis commands (INFO commandstats, the commands
Lua scripts run included, this process's polls left out) are counted over that window. Prints each drain, then
per kind the medians of each side, the median of the paired CPU ratios, and each side's CPU per job against its
own plain kind.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from benchmarks import ab
from jiggler_gevent import Batch, config
from jiggler_gevent.demo.local_redis import start_private

JOBS_MODULE = """from jiggler_gevent import job


@job(name="ab.plain")
def plain():
    pass


@job(name="ab.tracked", result_ttl=60)
def tracked():
    pass


@job(name="ab.concurrent", concurrency=5)
def concurrent():
    pass


@job(name="ab.batch")
def batch():
    pass
"""
POLLS = {"llen", "scan", "info", "zcard", "flushdb", "config|resetstat", "config"}  # this process's own commands
Sample = tuple[float, float, float]  # jobs/s, worker CPU us per job, Redis commands per job
T = TypeVar("T")
Measure = Callable[[Path, list[str], T], tuple[float, ...]]


def commands() -> int:
    """Redis commands run so far, this process's polls left out."""
    stats = config.redis_client().info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.removeprefix("cmdstat_") not in POLLS)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and its children so far, from /proc."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def enqueue(kind: str, jobs: int) -> None:
    """`jobs` jobs of `kind`, in one bulk push (for `batch`, inside one Batch)."""
    import ab_jobs  # type: ignore[import-not-found]  # written to ab.JOBS_DIR at start

    if kind != "batch":
        getattr(ab_jobs, kind).enqueue_bulk([()] * jobs)
        return
    with Batch(description="ab_kinds"):
        ab_jobs.batch.enqueue_bulk([()] * jobs)


def drain(tree: Path, argv: list[str], jobs: int, kind: str) -> Sample:
    """One worker of `tree` drains `jobs` jobs of `kind`."""
    client = config.redis_client()
    client.flushdb()
    enqueue(kind, jobs)
    keys = config.current().keys
    queue = keys.queue("default")
    proc = subprocess.Popen(argv, cwd=tree, env=ab._env(tree), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while client.llen(queue) == jobs:
            time.sleep(0.001)
        started, before, before_cpu = time.perf_counter(), commands(), tree_cpu(proc.pid)
        while (
            client.llen(queue)
            or client.zcard(keys.schedule)
            or any(client.llen(k) for k in client.scan_iter(f"{ab.NAMESPACE}:working:*"))
        ):
            time.sleep(0.005)
        elapsed, ran = time.perf_counter() - started, commands() - before
        cpu = tree_cpu(proc.pid) - before_cpu
        assert client.zcard(keys.dead) == 0, "jobs died"
    finally:
        proc.terminate()
        proc.wait(30)
    return jobs / elapsed, cpu / jobs * 1e6, ran / jobs


def alternating(
    rev: str, jobs_module: str, concurrency: int, rounds: int, cases: Sequence[T], measure: Measure[T]
) -> dict[tuple[T, bool], list[tuple[float, ...]]]:
    """`measure(tree, worker argv, case)` for a worker of REV (False) and of this tree (True) on one private server,
    case by case, `rounds` times, the order of the two flipped every round; `jobs_module` is ab_jobs, which both
    load. Prints each measure; returns them by (case, this tree?)."""
    Path(ab.JOBS_DIR, "ab_jobs.py").write_text(jobs_module)
    sys.path.insert(0, ab.JOBS_DIR)
    base = ab.checkout(rev)
    url, stop = start_private()
    config.configure(redis_url=url, namespace=ab.NAMESPACE)
    samples: dict[tuple[T, bool], list[tuple[float, ...]]] = {(c, s): [] for c in cases for s in (False, True)}
    try:
        trees = {False: base, True: ab.HERE}
        argv = {side: ab.worker_argv(tree, url, concurrency) for side, tree in trees.items()}
        for i in range(rounds):
            for case in cases:
                for side in (False, True) if i % 2 == 0 else (True, False):
                    got = measure(trees[side], argv[side], case)
                    samples[case, side].append(got)
                    name = "this tree" if side else rev
                    print(f"round {i + 1} {case} {name}: " + " ".join(f"{v:,.2f}" for v in got), flush=True)
    finally:
        stop()
        ab.remove(base)
        shutil.rmtree(ab.JOBS_DIR, ignore_errors=True)
    return samples


def main() -> None:
    """Alternate rounds of REV's worker and this tree's, kind by kind; print the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("rev")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=["plain", "tracked", "concurrent", "batch"])
    opts = parser.parse_args()
    measure = lambda tree, argv, kind: drain(tree, argv, opts.jobs, kind)  # noqa: E731
    samples = alternating(opts.rev, JOBS_MODULE, 10, opts.rounds, opts.kinds, measure)
    report(samples, opts.kinds, opts.rev, opts.rounds)


def report(samples: dict[tuple[str, bool], list[tuple[float, ...]]], kinds: list[str], rev: str, rounds: int) -> None:
    """Per kind and side: median jobs/s, CPU and commands per job; the paired CPU ratio; CPU against plain."""
    med = {key: [statistics.median(col) for col in zip(*rows, strict=True)] for key, rows in samples.items()}
    print(
        f"\n| kind (medians of {rounds} alternating rounds) | side | jobs/s | worker CPU us/job | x plain | cmds/job |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for kind in kinds:
        for side in (False, True):
            rate, cpu, cmds = med[kind, side]
            plain = med["plain", side][1] if ("plain", side) in med else cpu
            name = "this tree" if side else rev
            print(f"| {kind} | {name} | {rate:,.0f} | {cpu:.1f} | {cpu / plain:.2f} | {cmds:.2f} |")
    for kind in kinds:
        pairs = zip(samples[kind, False], samples[kind, True], strict=True)
        ratio = statistics.median(new[1] / old[1] for old, new in pairs)
        print(f"{kind}: CPU per job, this tree / {rev}, median of the paired ratios: {ratio:.2f}")


if __name__ == "__main__":
    main()
