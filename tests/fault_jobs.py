"""Jobs for the fault-injection tests (`-r tests.fault_jobs`).

Each job records the jid it runs under, taken from a server middleware registered at import (before the
Launcher builds its chain), so a test can tell which enqueued jobs ran and how often. Jobs that record
into Redis take the URL to record into, because the Redis they are fetched from may be down or private.
"""

import contextlib
import gc
import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import gevent
import psycopg2
import redis
from greenlet import greenlet

from jiggler_gevent import job, limits, middleware

_jids: dict[int, str] = {}
_recorders: dict[str, redis.Redis] = {}
_pg_pools: dict[str, "_PgPool"] = {}
PG_POOL_SIZE = 6
RUNS_TABLE = "runs"


class CurrentJid(middleware.ServerMiddleware):
    """Remembers the jid of the job each greenlet runs, for `current_jid()`."""

    def before_process(self, ctx: middleware.JobContext) -> None:
        _jids[id(gevent.getcurrent())] = ctx.jid

    def after_process(self, ctx: middleware.JobContext) -> None:
        _jids.pop(id(gevent.getcurrent()), None)


middleware.server.add(CurrentJid())


def current_jid() -> str:
    """The jid of the job running in this greenlet."""
    return _jids[id(gevent.getcurrent())]


def _recorder(url: str) -> redis.Redis:
    client = _recorders.get(url)
    if client is None:
        client = _recorders[url] = redis.Redis.from_url(url, decode_responses=True, max_connections=20)
    return client


class _PgPool:
    """A few connections per process (the workers together stay under max_connections); blocks when all are out."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.slots = threading.BoundedSemaphore(PG_POOL_SIZE)  # patched: a gevent semaphore in the worker
        self.idle: list[Any] = []

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        with self.slots:
            conn = self.idle.pop() if self.idle else psycopg2.connect(self.dsn)
            conn.autocommit = True
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            self.idle.append(conn)


def _pg(dsn: str) -> _PgPool:
    pool = _pg_pools.get(dsn)
    if pool is None:
        pool = _pg_pools[dsn] = _PgPool(dsn)
    return pool


def create_runs_table(dsn: str) -> None:
    """The table `pg_record` writes: one row per jid with how many times it ran."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (jid text PRIMARY KEY, n integer NOT NULL)")
    finally:
        conn.close()


@job(retries=0)
def pg_record(dsn: str, max_sleep: float) -> None:
    """Sleep up to `max_sleep` s (so jobs are in flight when a worker is killed), then count this jid in PG."""
    time.sleep(random.uniform(0, max_sleep))
    with _pg(dsn).connection() as conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {RUNS_TABLE} (jid, n) VALUES (%s, 1) ON CONFLICT (jid) DO UPDATE SET n = {RUNS_TABLE}.n + 1",
            (current_jid(),),
        )


@job
def mark(url: str, key: str, seconds: float = 0.0) -> None:
    """Sleep `seconds`, then RPUSH this jid to `key` on the Redis at `url`."""
    if seconds:
        time.sleep(seconds)
    _recorder(url).rpush(key, current_jid())


@job(retries=0)
def mark_then_fail(url: str, key: str) -> None:
    """Record this jid, then raise."""
    _recorder(url).rpush(key, current_jid())
    raise RuntimeError("planned failure")


@job(retries=0)
def hold(url: str, key: str, seconds: float) -> None:
    """Record this jid under key:started, sleep, then under key:finished."""
    _recorder(url).rpush(key + ":started", current_jid())
    time.sleep(seconds)
    _recorder(url).rpush(key + ":finished", current_jid())


@job
def takes_two(a: int, b: int) -> int:
    """A job with a fixed signature, for argument-mismatch payloads."""
    return a + b


def census() -> dict[str, int | None]:
    """What a leak would grow: live greenlets, open file descriptors, RSS and Redis connections in the pools."""
    greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet))
    try:
        fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = None
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {"greenlets": greenlets, "fds": fds, "rss": rss}


@job
def report_census(url: str, key: str) -> None:
    """RPUSH this process's census (pid, greenlets, fds, rss) to `key` as `pid greenlets fds rss`."""
    c = census()
    _recorder(url).rpush(key, f"{os.getpid()} {c['greenlets']} {c['fds']} {c['rss']}")


@job(retries=0)
def hold_limiter(url: str, key: str, name: str, size: int, seconds: float) -> None:
    """Hold a slot of limits.concurrent(name, size) for `seconds`, then RPUSH this jid to `key` at `url`."""
    with limits.concurrent(name, size, wait_timeout=30):
        time.sleep(seconds)
    _recorder(url).rpush(key, current_jid())


@job(concurrency=2, retries=0)
def two_at_a_time(url: str, key: str, seconds: float) -> None:
    """At most two run at once (`concurrency=2`): sleep, then RPUSH this jid to `key` at `url`."""
    time.sleep(seconds)
    _recorder(url).rpush(key, current_jid())


@job(concurrency=1, retries=0)
def one_at_a_time(url: str, key: str, seconds: float) -> None:
    """At most one runs at once (`concurrency=1`): RPUSH this jid to `key` at `url`, then sleep."""
    _recorder(url).rpush(key, current_jid())
    time.sleep(seconds)


@job(retries=0)
def batch_ended(bid: str, url: str, key: str) -> None:
    """A batch callback: RPUSH the batch id to `key` at `url`."""
    _recorder(url).rpush(key, bid)
