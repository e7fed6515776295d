"""`gjiggler demo`: enqueue a batch of example jobs, run a worker on them, report what happened.

It uses a namespace of its own and removes it afterwards; if no Redis answers it starts a private one.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import TYPE_CHECKING

import gevent
from gevent.pywsgi import WSGIServer

from .. import api, config, gevent_types
from . import jobs as examples
from . import local_redis

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment


def _slow_app(environ: "WSGIEnvironment", start_response: "StartResponse") -> list[bytes]:
    gevent.sleep(0.2)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from the demo's local HTTP server\n"]


def _enqueue(n: int, url: str, path: str) -> None:
    for i in range(n):
        kind = i % 4
        if kind == 0:
            examples.nap.enqueue(0.5)
        elif kind == 1:
            examples.fetch_url.enqueue(url)
        elif kind == 2:
            examples.write_line.enqueue(path, f"line {i}")
        elif i == 3:
            examples.explode.enqueue("this example job always fails")
        else:
            examples.nap.enqueue(0.1)


def _wait_until_done(deadline: float) -> bool:
    while time.monotonic() < deadline:
        if api.Queue().size == 0 and api.in_flight() == 0:
            return True
        time.sleep(0.05)
    return False


def run_demo(n: int, redis_url: str | None, namespace: str | None) -> int:
    """Run the demo; returns the exit code."""
    try:
        url, private = local_redis.ensure_redis(redis_url)
    except local_redis.NoRedis as exc:
        print(f"gjiggler demo: {exc}", file=sys.stderr)
        return 1
    if private is not None:
        print(f"No Redis answers at {config.DEFAULT_REDIS_URL}: started {private.description} for this demo")
    ns = namespace or f"demo-{uuid.uuid4().hex[:8]}"
    config.configure(redis_url=url, namespace=ns)
    http: gevent_types.WSGIServer = WSGIServer(("127.0.0.1", 0), _slow_app, log=None)
    http.start()
    out_dir = tempfile.mkdtemp(prefix="jiggler-demo-")
    path = os.path.join(out_dir, "lines.txt")
    worker = None
    try:
        print(f"Redis at {config.redacted(url)}, namespace {ns}")
        _enqueue(n, f"http://127.0.0.1:{http.server_port}/", path)
        print(f"enqueued {n} example jobs (sleeps, HTTP GETs, file writes, one that raises); starting a worker, -c 20")
        started = time.monotonic()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jiggler_gevent",
                "worker",
                "-r",
                "jiggler_gevent.demo.jobs",
                "-c",
                "20",
                "--redis-url",
                url,
                "--namespace",
                ns,
            ]
        )
        finished = _wait_until_done(time.monotonic() + 120)
        wall = time.monotonic() - started
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        stats = api.Stats()
        print(
            f"\nprocessed {stats.processed}, failed {stats.failed}, dead {stats.dead_size}, "
            f"retries {stats.retry_size}; wall time {wall:.2f}s (serially the sleeps alone take "
            f"{sum(0.5 if i % 4 == 0 else 0.1 if i % 4 == 3 and i != 3 else 0 for i in range(n)):.1f}s)"
        )
        print(f"lines written to {path}: {sum(1 for _ in open(path)) if os.path.exists(path) else 0}")
        for entry in api.DeadSet():
            print(f"dead: {entry.name} ({entry.jid}): {entry.error_class}: {entry.error_message}")
        return 0 if finished and code == 0 else 1
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        http.stop()
        _cleanup(ns)
        shutil.rmtree(out_dir, ignore_errors=True)
        if private is not None:
            private.stop()
            print(f"stopped and removed {private.description}")


def _cleanup(ns: str) -> None:
    try:
        client = config.redis_client()
        keys = list(client.scan_iter(f"{ns}:*"))
        if keys:
            client.delete(*keys)
    except Exception:  # the demo's own clean-up must not hide its result
        pass
