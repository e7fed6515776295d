"""This tree against a git revision, on the plain path: noop jobs drained by one worker of each, in alternating rounds.

    python -m benchmarks.ab REV [--jobs 20000] [--rounds 5] [--concurrency 10] [--kind noop|sleep]

REV is checked out into a temporary git worktree. Each round drains `--jobs` noop jobs with a worker of REV, then
with a worker of this tree (the order alternates), on one private server; the enqueue side is this tree's, so only
the worker differs. Prints each drain, then the median jobs/s and worker CPU per job of each side and their ratio.
Workers run with `--job-log off` where the revision has it (the peers in benchmarks/ log no line per job either).
State each change's cost on the plain path with it: `python -m benchmarks.ab main`.
"""

import argparse
import os
import shutil
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
JOBS_MODULE = """import time

from jiggler_gevent import job


@job(name="ab.noop")
def noop():
    pass


@job(name="ab.sleep")
def sleep():
    time.sleep(0.2)
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
    """Jobs per second of one worker of `tree` draining `jobs` jobs of `kind` (noop, or a 0.2 s sleep), and its CPU
    microseconds per job."""
    config.configure(redis_url=url, namespace=NAMESPACE)
    config.redis_client().flushdb()
    import ab_jobs  # type: ignore[import-not-found]  # written to JOBS_DIR at start

    getattr(ab_jobs, kind).enqueue_bulk([()] * jobs)
    before = _children_cpu()
    queue = config.current().keys.queue("default")
    rate = jobs_per_second(argv, queue, NAMESPACE, jobs, tree=tree, pythonpath=_env(tree)["PYTHONPATH"])
    return rate, (_children_cpu() - before) / jobs * 1e6


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
    parser.add_argument("--kind", choices=("noop", "sleep"), default="noop", help="sleep: 0.2 s per job")
    opts = parser.parse_args()
    Path(JOBS_DIR, "ab_jobs.py").write_text(JOBS_MODULE)
    sys.path.insert(0, JOBS_DIR)
    base = checkout(opts.rev)
    url, stop = start_private()
    try:
        argv = {False: worker_argv(base, url, opts.concurrency), True: worker_argv(HERE, url, opts.concurrency)}
        tree = {False: base, True: HERE}
        measure = lambda now: drain(url, tree[now], argv[now], opts.jobs, opts.kind)  # noqa: E731
        samples = alternate(opts.rounds, measure, "this tree")
    finally:
        stop()
        remove(base)
        shutil.rmtree(JOBS_DIR, ignore_errors=True)
    title = f"-c {opts.concurrency}, {opts.kind}, {opts.jobs} jobs"
    report(samples, title, opts.rev, "this tree", opts.rev, "this tree")


if __name__ == "__main__":
    main()
