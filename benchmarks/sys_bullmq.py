"""BullMQ (Node.js) in the benchmark: `node benchmarks/bullmq/worker.js C QUEUE...`, its jobs async.

BullMQ, ioredis and pg are pinned in benchmarks/bullmq/package.json and its package-lock.json; the first use
runs `npm ci` there (node_modules/ is git-ignored). The worker and the enqueuer (`node enqueue.js ...`, BullMQ's
own Queue client) read the harness's settings from its environment (BENCH_REDIS_URL and the rest, as
benchmarks/common.py). BullMQ's keys keep its own prefix (`bull:`); jobs are added with `removeOnComplete`, so a
finished job leaves nothing behind, as in the other systems, and with BullMQ's default of one attempt (no retry).
The row's concurrency is the Worker's `concurrency` option; `-p 2` rows start two node processes side by side. A
BullMQ Worker serves one queue: on several queues the worker process runs one Worker per queue, each with the
row's concurrency. The bulk API is `Queue.addBulk`, 1,000 a call.
"""

import json
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from benchmarks import common

MULTI_PROCESS = True
BULK = "addBulk"
FOLDER = Path(__file__).resolve().with_name("bullmq")


def _node() -> str:
    return shutil.which("node") or "node"


def command(concurrency: int, processes: int, queues: Sequence[str] = (common.QUEUE,)) -> list[str]:
    """The worker's command line: `processes` node processes (through `sh` when more than one)."""
    one = [_node(), str(FOLDER / "worker.js"), str(concurrency), *queues]
    if processes == 1:
        return one
    return ["sh", "-c", " & ".join([shlex.join(one)] * processes) + " & wait"]


def enqueuer(args: Sequence[str]) -> list[str]:
    """The enqueuer's command line: `node enqueue.js preload|single|bulk|paced ...`."""
    return [_node(), str(FOLDER / "enqueue.js"), *args]


@cache
def _install_problem() -> str | None:
    """Install the pinned packages (`npm ci`) unless they are there; why that failed, or None."""
    if not shutil.which("node") or not shutil.which("npm"):
        return "Node.js or npm missing: apt-get install -y nodejs npm (Node 20 or later)"
    lock = FOLDER / "package-lock.json"
    marker = FOLDER / "node_modules" / ".package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return None
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=FOLDER, capture_output=True, text=True, timeout=600
    )
    return f"npm ci failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}" if done.returncode else None


def unavailable(workload: str) -> str | None:
    """Why this machine cannot run BullMQ (every workload runs once its packages are installed), or None."""
    return _install_problem()


def version() -> str:
    """Node's, BullMQ's and ioredis's versions."""
    if _install_problem():
        return "bullmq ?"
    found = {}
    for package in ("bullmq", "ioredis"):
        manifest = FOLDER / "node_modules" / package / "package.json"
        found[package] = json.loads(manifest.read_text())["version"]
    node = subprocess.run([_node(), "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
    return f"bullmq {found['bullmq']} on Node {node}, ioredis {found['ioredis']}"
