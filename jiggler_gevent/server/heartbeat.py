"""The Heartbeat: this worker process's record in Redis, written every `interval` seconds (default 5).

Each beat is one round trip (a MULTI pipeline): the process record (identity, concurrency, queues, busy count, RSS,
the jobs running now) with a TTL of 12 intervals (60 s), and the commands of the beat's parts, each a module of its
own: the processed and failed counts (stats.py), the per-job metrics (job_metrics_flush.py), a signal sent through
Redis (redis_signals.py), the periodic table (cron_table.py). After each beat the recovery sweep (sweep.py) may run.
A part takes what it writes before the round trip and gets it back when the beat fails, so nothing counted is lost
while Redis is away. On a clean stop the parts that flush counts write them once more, and the record is deleted.
"""

import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from .. import __version__, config, wire
from ..iterable import live
from ..keys import Keys
from ..middleware import JobContext
from .loop import Loop

log = logging.getLogger("jiggler_gevent.monitor")  # the name the heartbeat's log lines have always had

WORK_ARGS_LIMIT = 2000


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


def _no_jobs() -> dict[int, JobContext]:
    return {}


@dataclass(frozen=True)
class HeartbeatOptions:
    """What the process record shows, and how often it is written."""

    interval: float = config.DEFAULT_HEARTBEAT_INTERVAL
    info: Mapping[str, Any] = field(default_factory=dict)  # shown as given: concurrency, queues, namespace, cron
    busy: Callable[[], int] = lambda: 0  # the jobs running now
    running: Callable[[], dict[int, JobContext]] = _no_jobs  # those jobs, for the work hash

    @property
    def ttl(self) -> float:
        """Seconds the record (and what lives as long as it) outlives the last beat."""
        return self.interval * config.HEARTBEAT_TTL_BEATS


class BeatPart:
    """Something done with each beat, its commands in the beat's round trip. Every hook is a no-op by default."""

    at_stop = False  # its commands are written once more at a clean stop (counts that must not be lost)

    def take(self, client: redis.Redis) -> None:
        """Before the round trip: take what is to be written (and make any call a Cluster pipeline cannot carry)."""

    def queue(self, pipe: Any) -> None:
        """Queue its commands in the beat's pipeline."""

    def written(self, replies: list[Any]) -> None:
        """The round trip succeeded: the replies to its own commands, in order."""

    def failed(self) -> None:
        """The round trip failed: keep what was taken for the next beat."""

    def after(self, ok: bool) -> None:
        """The beat is over; `ok` when it reached Redis."""


class Heartbeat:
    """Writes this process's record, with its parts, every interval until stopped."""

    def __init__(
        self, client: redis.Redis, keys: Keys, identity: str, opts: HeartbeatOptions, parts: Iterable[BeatPart] = ()
    ) -> None:
        self.redis, self.keys, self.identity, self.opts = client, keys, identity, opts
        self.parts = list(parts)
        self.wire = wire.of(keys)
        info = dict(opts.info)
        info.setdefault("cron", None)
        info.update(
            identity=identity,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            version=__version__,
        )
        self.info = info
        self.ttl_ms = int(opts.ttl * 1000)
        self.quiet = False
        self.loop = Loop(self._tick)
        self.next_beat = 0.0  # monotonic time of the next beat: a fixed rate, whatever a beat and a sweep take
        self.last_beat = 0.0
        self.failing_since: float | None = None  # monotonic time of the first failed beat of an outage

    def start(self) -> None:
        """Beat once now (so the process is visible before it takes jobs), then every interval."""
        self.beat()
        self.next_beat = time.monotonic()
        self.loop.first_wait = self._until_next_beat()
        self.loop.start()

    def stop(self) -> None:
        """Stop beating, flush the counts and remove this process's record."""
        self.loop.stop()
        final = [part for part in self.parts if part.at_stop]
        try:
            for part in final:
                part.take(self.redis)
            with self.redis.pipeline(transaction=True) as pipe:
                for part in final:
                    part.queue(pipe)
                pipe.srem(self.keys.processes, self.identity)
                pipe.delete(self.keys.process(self.identity), *self.keys.work_keys(self.identity))
                pipe.execute()
        except redis.RedisError as exc:
            log.error("could not remove this process's record at stop: %s", exc)

    def _tick(self) -> float:
        self.beat()
        return self._until_next_beat()

    def _until_next_beat(self) -> float:
        self.next_beat += self.opts.interval * random.uniform(0.9, 1.1)
        return max(0.0, self.next_beat - time.monotonic())

    def beat(self) -> bool:
        """Write the record and the parts' commands in one round trip; False when Redis could not be reached."""
        ok = self._write()
        for part in self.parts:
            part.after(ok)
        return ok

    def _write(self) -> bool:
        try:
            for part in self.parts:
                part.take(self.redis)
            with self.redis.pipeline(transaction=True) as pipe:
                ends = []
                for part in self.parts:
                    part.queue(pipe)
                    ends.append(len(pipe))
                self._queue_record(pipe)
                replies = pipe.execute()
            self.last_beat = time.time()
            start = 0
            for part, end in zip(self.parts, ends, strict=True):
                part.written(replies[start:end])
                start = end
        except redis.RedisError as exc:
            for part in self.parts:
                part.failed()
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                log.warning("heartbeat failed, retrying every %.1fs until Redis answers: %s", self.opts.interval, exc)
            else:
                log.debug("heartbeat failed again: %s", exc)
            return False
        if self.failing_since is not None:
            log.info("heartbeat restored after %.1fs without Redis", time.monotonic() - self.failing_since)
            self.failing_since = None
        return True

    def _queue_record(self, pipe: Any) -> None:
        k = self.keys
        now = time.time()
        record = dict(self.info, busy=self.opts.busy(), rss=rss_bytes(), beat=now, quiet=self.quiet)
        pipe.sadd(k.processes, self.identity)
        pipe.hset(k.process(self.identity), mapping=self.wire.process_fields(record))
        pipe.pexpire(k.process(self.identity), self.ttl_ms)
        work = self._work()
        for key in k.work_keys(self.identity):
            pipe.delete(key)
            if work:
                pipe.hset(key, mapping=work)
                pipe.pexpire(key, self.ttl_ms)

    def _work(self) -> dict[str, str]:
        work: dict[str, str] = {}
        for key, ctx in list(self.opts.running().items()):
            entry = self.wire.work_entry(ctx.payload.get("queue"), _summary(ctx.payload), ctx.started_at)
            state = live.get(ctx.jid) if live else None  # what the job reported (progress, iterations)
            if state is not None:
                entry.update(state.shown())
            work[str(key)] = json.dumps(entry)
        return work


def _summary(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as shown among running jobs; huge arguments are cut so a heartbeat stays small."""
    if len(repr(payload.get("args"))) + len(repr(payload.get("kwargs"))) <= WORK_ARGS_LIMIT:
        return payload
    cut = {k: v for k, v in payload.items() if k not in ("args", "kwargs")}
    cut["args"] = [repr(payload.get("args"))[:WORK_ARGS_LIMIT] + "..."]
    cut["kwargs"] = {}
    return cut
