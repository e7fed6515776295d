"""Timing a `gjiggler worker` subprocess draining a queue: what bench_limits and bench_metrics share."""

import os
import subprocess
import time
from pathlib import Path

from jiggler_gevent import config

ROOT = Path(__file__).resolve().parent.parent


def jobs_per_second(argv: list[str], queue: str, namespace: str, jobs: int) -> float:
    """Start the worker `argv` on `jobs` queued jobs; jobs/s from its first take until the queue and every working
    list of `namespace` are empty. Fails if any job died (the worker did not load the jobs' module)."""
    client = config.redis_client()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while client.llen(queue) == jobs:
            time.sleep(0.001)
        started = time.perf_counter()
        working = f"{namespace}:working:*"
        while client.llen(queue) > 0 or any(client.llen(k) for k in client.scan_iter(working)):
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        assert client.zcard(config.current().keys.dead) == 0, "jobs died: is the worker loading this module?"
        return jobs / elapsed
    finally:
        proc.terminate()
        proc.wait(30)
