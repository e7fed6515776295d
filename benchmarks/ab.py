"""This tree against a git revision, on the plain path: noop jobs drained by one worker of each, in alternating rounds.

    python -m benchmarks.ab REV [--jobs 20000] [--rounds 5] [--concurrency 10] [--kind noop|incr|sleep|enqueue|...]

REV is checked out into a temporary git worktree. Each round drains `--jobs` noop jobs with a worker of REV, then
with a worker of this tree (the order alternates), on one private server; the enqueue side is this tree's, so only
the worker differs. `--kind incr` jobs make one INCR each through a redis-py client with its pool, as the
benchmark rows' jobs do: what one blocking call from job code costs under each worker. `--kind sleep-incr` jobs
sleep 0.2 s, then INCR: the sleep row's job (with `--concurrency 1000`). Prints each drain, then
the median jobs/s and worker CPU per job of each side and their ratio.
Workers run with `--job-log off` where the revision has it (the peers in benchmarks/ log no line per job either).
State each change's cost on the plain path with it: `python -m benchmarks.ab main`. The cost of a worker option:
`python -m benchmarks.ab HEAD --this-args "--health-port 8188"` (the option on this tree's side only).

`--kind enqueue` times the client instead: each round a process of REV, then one of this tree (alternating), pushes
`--jobs` noop jobs with one `enqueue()` call each (`enqueue-bulk`: `enqueue_bulk`, 1,000 a call), after one untimed
push; jobs/s and CPU per job are of the timed loop only. Each side's paired ratio to REV is printed too.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.drain import alternate, jobs_per_second, report
from jiggler_gevent import config
from jiggler_gevent.demo.local_redis import start_private

HERE = Path(__file__).resolve().parent.parent
NAMESPACE = "bench-ab"
JOBS_DIR = tempfile.mkdtemp(prefix="jiggler-ab-jobs-")  # holds ab_jobs.py, the jobs both sides load
JOBS_MODULE = """import os
import time

import redis

from jiggler_gevent import job

_counter = None


@job(name="ab.noop")
def noop():
    pass


@job(name="ab.sleep")
def sleep():
    time.sleep(0.2)


@job(name="ab.incr")
def incr():
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(os.environ["AB_REDIS_URL"], max_connections=4096)
    _counter.incr("ab:count")


@job(name="ab.sleep_incr")
def sleep_incr():
    time.sleep(0.2)
    incr()
"""


def checkout(rev: str) -> Path:
    """A temporary worktree of `rev` (removed by `remove`)."""
    path = Path(tempfile.mkdtemp(prefix="jiggler-ab-")) / "tree"
    subprocess.run(
        ["git", "-C", str(HERE), "worktree", "add", "--detach", str(path), rev], check=True, capture_output=True
    )
    return path


def remove(tree: Path) -> None:
    subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(tree)], capture_output=True)
    shutil.rmtree(tree.parent, ignore_errors=True)


def worker_argv(tree: Path, url: str, concurrency: int) -> list[str]:
    """The worker command of `tree`; `--job-log off` when that tree has the option."""
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "ab_jobs", "-c", str(concurrency)]
    argv += ["--redis-url", url, "--namespace", NAMESPACE]
    helptext = subprocess.run([*argv[:4], "--help"], cwd=tree, env=_env(tree), capture_output=True, text=True).stdout
    return argv + (["--job-log", "off"] if "--job-log" in helptext else [])


def _env(tree: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{JOBS_DIR}")


def drain(url: str, tree: Path, argv: list[str], jobs: int, kind: str) -> tuple[float, float]:
    """Jobs per second of one worker of `tree` draining `jobs` jobs of `kind` (noop, an INCR, a 0.2 s sleep, or both),
    and its CPU microseconds per job."""
    config.configure(redis_url=url, namespace=NAMESPACE)
    config.redis_client().flushdb()
    import ab_jobs  # type: ignore[import-not-found]  # written to JOBS_DIR at start

    getattr(ab_jobs, kind.replace("-", "_")).enqueue_bulk([()] * jobs)
    before = _children_cpu()
    queue = config.current().keys.queue("default")
    rate = jobs_per_second(argv, queue, NAMESPACE, jobs, tree=tree, pythonpath=_env(tree)["PYTHONPATH"])
    return rate, (_children_cpu() - before) / jobs * 1e6


ENQUEUER = """import json, sys, time
import ab_jobs
from jiggler_gevent import config

config.configure(redis_url=sys.argv[1], namespace=sys.argv[2])
jobs, bulk = int(sys.argv[3]), sys.argv[4] == "bulk"
ab_jobs.noop.enqueue()
cpu, wall = time.process_time(), time.perf_counter()
for start in range(0, jobs, 1000 if bulk else 1):
    ab_jobs.noop.enqueue_bulk([()] * min(1000, jobs - start)) if bulk else ab_jobs.noop.enqueue()
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"rate": jobs / wall, "cpu_us": cpu / jobs * 1e6}))
"""


def enqueue(url: str, tree: Path, jobs: int, kind: str) -> tuple[float, float]:
    """Jobs per second of a process of `tree` pushing `jobs` noop jobs (one call each, or in bulk), and its CPU
    microseconds per job: of the timed loop only."""
    config.configure(redis_url=url, namespace=NAMESPACE)
    config.redis_client().flushdb()
    argv = [sys.executable, "-c", ENQUEUER, url, NAMESPACE, str(jobs), "bulk" if kind == "enqueue-bulk" else "single"]
    out = subprocess.run(argv, cwd=tree, env=_env(tree), capture_output=True, text=True, check=True).stdout
    result = json.loads(out.splitlines()[-1])
    return result["rate"], result["cpu_us"]


def _paired(samples: dict[bool, tuple[list[float], list[float]]]) -> str:
    """The median of the per-round ratios this tree / REV, of jobs/s and of CPU per job."""
    rates = [now / base for base, now in zip(samples[False][0], samples[True][0], strict=True)]
    cpus = [now / base for base, now in zip(samples[False][1], samples[True][1], strict=True)]
    rate, cpu = statistics.median(rates), statistics.median(cpus)
    return f"paired per round, this tree / REV: jobs/s {rate:.2f}x, CPU per job {cpu:.2f}x"


def _children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def main() -> None:
    """Alternate rounds of REV's worker and this tree's; print the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("rev")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    kinds = ("noop", "incr", "sleep", "sleep-incr", "enqueue", "enqueue-bulk")
    parser.add_argument(
        "--kind",
        choices=kinds,
        default="noop",
        help="incr: one Redis call; sleep: 0.2 s per job; sleep-incr: both (the benchmark rows' sleep job); enqueue: "
        "the client",
    )
    parser.add_argument(
        "--this-args", default="", help="worker options for this tree's side only: the cost of an option, against HEAD"
    )
    opts = parser.parse_args()
    Path(JOBS_DIR, "ab_jobs.py").write_text(JOBS_MODULE)
    sys.path.insert(0, JOBS_DIR)
    base = checkout(opts.rev)
    url, stop = start_private()
    os.environ["AB_REDIS_URL"] = url  # where the incr jobs count
    try:
        tree = {False: base, True: HERE}
        if opts.kind.startswith("enqueue"):
            measure = lambda now: enqueue(url, tree[now], opts.jobs, opts.kind)  # noqa: E731
        else:
            argv = {False: worker_argv(base, url, opts.concurrency), True: worker_argv(HERE, url, opts.concurrency)}
            argv[True] += opts.this_args.split()
            measure = lambda now: drain(url, tree[now], argv[now], opts.jobs, opts.kind)  # noqa: E731
        samples = alternate(opts.rounds, measure, "this tree")
    finally:
        stop()
        remove(base)
        shutil.rmtree(JOBS_DIR, ignore_errors=True)
    if opts.kind.startswith("enqueue"):
        report(samples, f"{opts.kind}, {opts.jobs} jobs", opts.rev, "this tree", opts.rev, "this tree", "CPU per job")
    else:
        title = f"-c {opts.concurrency}, {opts.kind}, {opts.jobs} jobs"
        report(samples, title, opts.rev, "this tree", opts.rev, "this tree")
    print(_paired(samples))


if __name__ == "__main__":
    main()
