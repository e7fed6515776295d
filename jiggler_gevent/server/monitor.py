"""The Monitor: heartbeat, stats flush and the periodic recovery sweep of one worker process.

Every `interval` seconds (default 5) it writes, in one round trip, the process record (identity,
concurrency, queues, busy count, RSS, the jobs running now) with a TTL of 12 intervals (60 s), the processed and
failed counts gathered in memory since the last beat, the per-job metrics of those runs (HINCRBY into one hash per
minute, NS:metrics:<minute>), and, when the process has periodic entries, their table (NS:cron:table:<signature>,
shared by the processes with the same entries: each beat renews its TTL, and writes it again only when it has gone).
When jobs ran, one more call comes first: job_max.lua raises each job's longest run in the same hashes. Then it asks
Recovery to adopt the jobs of any process whose record has expired. On a clean stop it flushes the counts and deletes
its record.
"""

import datetime as dt
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import redis

from .. import __version__, config, scripts, wire
from ..gevent_types import Greenlet
from ..keys import Keys
from ..middleware import JobContext, ServerMiddleware
from . import tally
from .recovery import Recovery
from .scheduler import Table
from .tally import UNKNOWN as UNKNOWN  # decided in tally.py, still importable from here
from .tally import Tallied, registered

log = logging.getLogger("jiggler_gevent.monitor")

DAILY_STATS_TTL = 5 * 365 * 24 * 3600
WORK_ARGS_LIMIT = 2000
# A per-job tally row, by config.JOB_METRIC_FIELDS: runs, failures, total ms, then one count per histogram bucket
# (ROW numbers, added up); then the longest run in microseconds (LONGEST, a maximum: config.JOB_MAX_FIELD).
RUNS, FAILED, MS, HISTOGRAM = 0, 1, 2, 3
ROW = len(config.JOB_METRIC_FIELDS)
LONGEST = ROW
JobTally = dict[tuple[int, str], list[int]]  # (UTC minute, job name) -> row


class Counters(ServerMiddleware):
    """Counts the jobs run, in memory; the Monitor writes the counts with its heartbeat. A sink of tally.Tally,
    which decides what counts (`add`); also server middleware on its own (tests, embedders).

    Two tallies: processed and failed for the process (NS:stat:*), and per job wire name and UTC minute the runs,
    failures, total run time (ms) and a run-time histogram (NS:metrics:<minute>, buckets config.JOB_TIME_BUCKETS).
    Recording is plain dict arithmetic, never a Redis call. A name no registered job has is tallied as "unknown"
    (tally.UNKNOWN), so payloads with made-up names cannot grow the tally, nor the hash, without bound.

    What it guarantees: counts reach Redis at most one heartbeat interval late while Redis answers; when a beat
    fails they are kept for the next one (per-job minutes older than JOB_METRICS_TTL are dropped then); a clean
    stop writes them; what a process counted since its last beat is lost if it is killed (SIGKILL, out of memory).
    """

    def __init__(self, known: Callable[[str], bool] = registered) -> None:
        self.processed = 0
        self.failed = 0
        self.jobs: JobTally = {}
        self.known = known

    def count(self, failed: bool) -> None:
        """One more job run; `failed` when it raised or could not run."""
        self.processed += 1
        if failed:
            self.failed += 1

    def add(self, tallied: Tallied, processed: bool = True) -> None:
        """One finished job, as tally.py decided it; `processed` False: in its per-job row only."""
        job, _, failed, seconds, bucket = tallied
        if processed:
            self.processed += 1
            if failed:
                self.failed += 1
        key = (int(time.time() // 60), job)
        row = self.jobs.get(key)
        if row is None:
            row = self.jobs[key] = [0] * (ROW + 1)
        row[RUNS] += 1
        if failed:
            row[FAILED] += 1
        if seconds is not None and bucket is not None:
            row[MS] += round(seconds * 1000)
            row[HISTOGRAM + bucket] += 1
            micros = math.ceil(seconds * 1_000_000) or 1  # 0 means "no run with a time"
            if micros > row[LONGEST]:
                row[LONGEST] = micros

    def unrunnable(self, entry: dict[str, Any]) -> None:
        """A payload buried without running (its dead-set entry): processed and failed, no run time."""
        self.add(tally.of_unrunnable(entry, self.known))

    def after_process(self, ctx: JobContext) -> None:
        tally.Tally((self,), self.known).after_process(ctx)  # on its own; in a worker the chain's Tally feeds it

    def record(self, name: object, seconds: float | None, failed: bool) -> None:
        """One run of job `name` ending now, that took `seconds` (None: it could not run): its per-job row only."""
        self.add(tally.decide(name, None, failed, seconds, self.known), processed=False)

    def take(self) -> "tuple[int, int]":
        """The counts since the last take, zeroed."""
        counts = (self.processed, self.failed)
        self.processed = self.failed = 0
        return counts

    def give_back(self, processed: int, failed: int) -> None:
        """Return counts that could not be written."""
        self.processed += processed
        self.failed += failed

    def take_jobs(self) -> JobTally:
        """The per-job tally since the last take, emptied."""
        jobs, self.jobs = self.jobs, {}
        return jobs

    def give_back_jobs(self, jobs: JobTally) -> None:
        """Return a per-job tally that could not be written, but for minutes already expired in Redis."""
        oldest = int(time.time() // 60) - config.JOB_METRICS_TTL // 60
        for key, row in jobs.items():
            if key[0] < oldest:
                continue
            mine = self.jobs.get(key)
            if mine is None:
                self.jobs[key] = row
            else:
                merged = [a + b for a, b in zip(mine[:ROW], row[:ROW], strict=True)]
                self.jobs[key] = [*merged, max(mine[LONGEST], row[LONGEST])]


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
        on_signal: Callable[[str], None] | None = None,
    ) -> None:
        self.redis, self.keys, self.identity = client, keys, identity
        self.wire = wire.of(keys)
        self.on_signal = on_signal  # called with each signal name popped from keys.signals (Sidekiq's Web UI)
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
            jobs = self.counters.take_jobs()
            self._raise_longest(jobs)
            with self.redis.pipeline(transaction=True) as pipe:
                processed, failed = self.counters.take()
                self._queue_counts(pipe, processed, failed)
                self._queue_job_metrics(pipe, jobs)
                pipe.srem(self.keys.processes, self.identity)
                pipe.delete(self.keys.process(self.identity), *self.keys.work_keys(self.identity))
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
        jobs = self.counters.take_jobs()
        try:
            self._raise_longest(jobs)
            with self.redis.pipeline(transaction=True) as pipe:
                self._queue_counts(pipe, processed, failed)
                self._queue_job_metrics(pipe, jobs)
                self._queue_heartbeat(pipe)
                signal_at = self._queue_signal(pipe)
                self._queue_cron_table(pipe)
                replies = pipe.execute()
            self.last_beat = time.time()
            if self.cron is not None:
                self.cron_published = bool(replies[-1])
            if signal_at is not None:
                self._act_on(replies[signal_at])
        except redis.RedisError as exc:
            self.counters.give_back(processed, failed)
            self.counters.give_back_jobs(jobs)
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

    def _queue_job_metrics(self, pipe: Any, jobs: JobTally) -> None:
        expiring: set[int] = set()
        for (minute, job), row in jobs.items():
            key = self.keys.metrics(minute)
            for field, n in zip(config.JOB_METRIC_FIELDS, row[:ROW], strict=True):
                if n:
                    pipe.hincrby(key, f"{job}|{field}", n)
            expiring.add(minute)
        for minute in expiring:
            pipe.expireat(self.keys.metrics(minute), minute * 60 + config.JOB_METRICS_TTL)

    def _raise_longest(self, jobs: JobTally) -> None:
        """Raise each job's longest run of each minute in NS:metrics:<minute> (job_max.lua, one call per minute).

        Before the beat's pipeline, not in it: a Cluster pipeline cannot reload a script that EVALSHA misses. A
        maximum can be written twice, so when the beat fails after this, the tally given back is written again."""
        longest: dict[int, list[str | int]] = {}  # minute -> job_max.lua's ARGV
        for (minute, job), row in jobs.items():
            if row[LONGEST]:
                longest.setdefault(minute, []).extend((f"{job}|{config.JOB_MAX_FIELD}", row[LONGEST]))
        job_max = scripts.register(self.redis).job_max
        for minute, pairs in longest.items():
            job_max(keys=[self.keys.metrics(minute)], args=pairs)

    def _queue_heartbeat(self, pipe: Any) -> None:
        k = self.keys
        now = time.time()
        record = dict(self.info, busy=self.busy(), rss=rss_bytes(), beat=now, quiet=self.quiet)
        pipe.sadd(k.processes, self.identity)
        pipe.hset(k.process(self.identity), mapping=self.wire.process_fields(record))
        pipe.pexpire(k.process(self.identity), self.ttl_ms)
        work = self._work()
        for key in k.work_keys(self.identity):
            pipe.delete(key)
            if work:
                pipe.hset(key, mapping=work)
                pipe.pexpire(key, self.ttl_ms)

    def _queue_signal(self, pipe: Any) -> int | None:
        """Pop one signal sent through Redis, as Sidekiq does, if the layout has a list for them; the index of
        its reply in the pipeline's, or None."""
        key = self.keys.signals(self.identity)
        if key is None:
            return None
        pipe.rpop(key)
        return len(pipe) - 1

    def _act_on(self, signal_name: object) -> None:
        if signal_name and self.on_signal is not None:
            log.info("signal %s received through Redis", signal_name)
            self.on_signal(str(signal_name))

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
                self.wire.work_entry(ctx.payload.get("queue"), _summary(ctx.payload), ctx.started_at)
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
