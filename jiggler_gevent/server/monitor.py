"""The Monitor: heartbeat, stats flush and the periodic recovery sweep of one worker process.

Every `interval` seconds (default 5) it writes, in one round trip, the process record (identity,
concurrency, queues, busy count, RSS, the jobs running now) with a TTL of 12 intervals (60 s), the processed and
failed counts gathered in memory since the last beat, and, when the process has periodic entries, their table
(NS:cron:table:<signature>, shared by the processes with the same entries: each beat renews its TTL, and writes
it again only when it has gone). Then it asks Recovery to adopt the jobs of any
process whose record has expired. On a clean stop it flushes the counts and deletes its record.
"""

import datetime as dt
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import redis

from .. import __version__, config
from ..gevent_types import Greenlet
from ..keys import Keys
from ..middleware import Disposition, JobContext, ServerMiddleware
from .recovery import Recovery
from .scheduler import Table

log = logging.getLogger("jiggler_gevent.monitor")

DAILY_STATS_TTL = 5 * 365 * 24 * 3600
WORK_ARGS_LIMIT = 2000


class Counters(ServerMiddleware):
    """Counts processed and failed jobs in memory; the Monitor writes them out. Also server middleware."""

    def __init__(self) -> None:
        self.processed = 0
        self.failed = 0

    def count(self, failed: bool) -> None:
        """One more job run; `failed` when it raised or could not run."""
        self.processed += 1
        if failed:
            self.failed += 1

    def after_process(self, ctx: JobContext) -> None:
        if ctx.disposition != Disposition.RESCHEDULE:  # over a limit: not run, put back
            self.count(ctx.exception is not None)

    def take(self) -> "tuple[int, int]":
        """The counts since the last take, zeroed."""
        counts = (self.processed, self.failed)
        self.processed = self.failed = 0
        return counts

    def give_back(self, processed: int, failed: int) -> None:
        """Return counts that could not be written."""
        self.processed += processed
        self.failed += failed


def rss_bytes() -> int:
    """Resident memory of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def new_identity() -> str:
    """host:pid:nonce, unique per process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Monitor:
    """Writes this process's heartbeat and counts, and sweeps for dead processes."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        identity: str,
        info: dict[str, Any],
        counters: Counters,
        recovery: Recovery,
        busy: Callable[[], int],
        running: Callable[[], dict[int, JobContext]],
        interval: float = config.DEFAULT_HEARTBEAT_INTERVAL,
        cron: Table | None = None,
    ) -> None:
        self.redis, self.keys, self.identity = client, keys, identity
        self.cron = cron
        self.cron_published = False  # the table was there at the last beat: renewing its TTL is enough
        self.info = dict(
            info,
            cron=cron.signature if cron is not None else None,
            identity=identity,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            version=__version__,
        )
        self.counters, self.recovery = counters, recovery
        self.busy, self.running = busy, running
        self.interval = interval
        self.ttl_ms = int(interval * config.HEARTBEAT_TTL_BEATS * 1000)
        self.quiet = False
        self.greenlet: Greenlet | None = None
        self.last_beat = 0.0
        self.failing_since: float | None = None  # monotonic time of the first failed beat of an outage
        self.sweep_after = 0.0

    def start(self) -> None:
        """Beat once now (so the process is visible before it takes jobs), then every interval."""
        self.beat()
        self.sweep()
        self.greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        """Stop beating, flush the counts and remove this process's record."""
        if self.greenlet is not None:
            self.greenlet.kill()
            self.greenlet = None
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                processed, failed = self.counters.take()
                self._queue_counts(pipe, processed, failed)
                pipe.srem(self.keys.processes, self.identity)
                pipe.delete(self.keys.process(self.identity), self.keys.work(self.identity))
                pipe.execute()
        except redis.RedisError as exc:
            log.error("could not remove this process's record at stop: %s", exc)

    def _loop(self) -> None:
        next_beat = time.monotonic()
        while True:
            # A fixed rate: the time a beat and a sweep take is not added to the interval.
            next_beat += self.interval * random.uniform(0.9, 1.1)
            gevent.sleep(max(0.0, next_beat - time.monotonic()))
            if self.beat() and time.monotonic() >= self.sweep_after:
                self.sweep()

    def beat(self) -> bool:
        """Write the heartbeat and the counts in one round trip; False when Redis could not be reached."""
        processed, failed = self.counters.take()
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                self._queue_counts(pipe, processed, failed)
                self._queue_heartbeat(pipe)
                self._queue_cron_table(pipe)
                replies = pipe.execute()
            self.last_beat = time.time()
            if self.cron is not None:
                self.cron_published = bool(replies[-1])
        except redis.RedisError as exc:
            self.counters.give_back(processed, failed)
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                log.warning("heartbeat failed, retrying every %.1fs until Redis answers: %s", self.interval, exc)
            else:
                log.debug("heartbeat failed again: %s", exc)
            return False
        if self.failing_since is not None:
            log.info("heartbeat restored after %.1fs without Redis", time.monotonic() - self.failing_since)
            self.failing_since = None
            # The other processes' heartbeats may have expired during the outage too: give them a full TTL
            # to beat again before their held jobs are taken for a dead process's.
            self.sweep_after = time.monotonic() + self.ttl_ms / 1000
        return True

    def sweep(self) -> None:
        """Recover the jobs of processes whose heartbeat expired."""
        try:
            self.recovery.sweep()
        except redis.RedisError as exc:
            log.warning("recovery sweep failed: %s", exc)

    def _queue_counts(self, pipe: Any, processed: int, failed: int) -> None:
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        for name, n in (("processed", processed), ("failed", failed)):
            if n:
                pipe.incrby(self.keys.stat(name), n)
                pipe.incrby(self.keys.stat(name, day), n)
                pipe.expire(self.keys.stat(name, day), DAILY_STATS_TTL)

    def _queue_heartbeat(self, pipe: Any) -> None:
        k = self.keys
        now = time.time()
        record = dict(self.info, busy=self.busy(), rss=rss_bytes(), beat=now, quiet=self.quiet)
        pipe.sadd(k.processes, self.identity)
        pipe.hset(k.process(self.identity), mapping={"info": json.dumps(record)})
        pipe.pexpire(k.process(self.identity), self.ttl_ms)
        pipe.delete(k.work(self.identity))
        work = self._work()
        if work:
            pipe.hset(k.work(self.identity), mapping=work)
            pipe.pexpire(k.work(self.identity), self.ttl_ms)

    def _queue_cron_table(self, pipe: Any) -> None:
        if self.cron is None:
            return
        key = self.keys.cron_table(self.cron.signature)
        if self.cron_published:
            pipe.pexpire(key, self.ttl_ms)
        else:
            pipe.set(key, self.cron.json, px=self.ttl_ms)

    def _work(self) -> dict[str, str]:
        work: dict[str, str] = {}
        for key, ctx in list(self.running().items()):
            work[str(key)] = json.dumps(
                {"queue": ctx.payload.get("queue"), "payload": _summary(ctx.payload), "run_at": ctx.started_at}
            )
        return work


def _summary(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as shown among running jobs; huge arguments are cut so a heartbeat stays small."""
    if len(repr(payload.get("args"))) + len(repr(payload.get("kwargs"))) <= WORK_ARGS_LIMIT:
        return payload
    cut = {k: v for k, v in payload.items() if k not in ("args", "kwargs")}
    cut["args"] = [repr(payload.get("args"))[:WORK_ARGS_LIMIT] + "..."]
    cut["kwargs"] = {}
    return cut
