"""The Scheduler: enqueues this process's periodic entries (periodic.py) at their fire times.

Every worker process that loaded entries runs one, whatever queues it reads. The processes with the same
entries (the same signature: a hash of their published table) share one lease in Redis; only its holder
enqueues, sleeping until the next fire time, and the others ask for the lease about once a second. Each
fire goes through one script call (cron_fire.lua) that checks the lease and pushes a fire time only if it
is later than the last one recorded for the entry. Processes with other entries (another -r module, another
release during a deploy) have their own lease; an entry that several sets share is still enqueued once per
fire time, by that same check. The heartbeat publishes the table (cron_table.py: NS:cron:table:<sig>).
"""

# What is guaranteed. At most once: a fire time of an entry is enqueued at most once per namespace, however many
# processes and hosts run it, whatever their clocks, restarts, SIGKILLs or Redis outages, because cron_fire.lua
# pushes it only if it is later than the entry's last recorded fire time (NS:cron:last) and records it in the same
# atomic step; a holder fires an entry's times in order, so a later holder, or a stale one, can only be refused.
# At least once: a fire time is enqueued if at that time a process with the entry runs and reaches Redis. The
# lease holder enqueues it on time (within a fraction of a second; pre-emption keeps the hub on time while jobs
# burn CPU); when the holder dies or stops, or Redis is away for a while, the next holder (a few seconds later)
# enqueues, late, the fire times of the last `catch_up` seconds (the lease + 5 s, 15 s by default) not yet
# recorded. Skipped: fire times older than that when a holder gets to them (a longer outage), and those that passed
# while no process of the set ran (a process that takes the lease when none of the set has asked for it for
# `seen_gap` seconds starts from now). Both rest on NS:cron:last: a Redis that loses it (a restart without
# persistence) may repeat the fire times of the last `catch_up` seconds.

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from .. import config, middleware, wire
from ..keys import Keys
from ..periodic import Entry
from ..scripts import Scripts
from .backoff import Backoff
from .loop import Loop

log = logging.getLogger("jiggler_gevent.scheduler")

LEASE_BEATS = 2  # the lease lasts two heartbeat intervals: 10 s by default
FOLLOW_INTERVAL = 1.0  # a process without the lease asks for it about this often
CATCH_UP_MARGIN = 5.0
SEEN_TTL = 24 * 3600
BATCH = 500  # fire times per script call


@dataclass(frozen=True)
class Table:
    """What a process publishes of its entries: the table (JSON) and its signature."""

    signature: str
    json: str

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> "Table":
        """The table of `entries`; processes with the same entries get the same signature."""
        text = json.dumps([e.published for e in sorted(entries, key=lambda e: e.name)], sort_keys=True)
        return cls(hashlib.sha1(text.encode()).hexdigest()[:16], text)


def _wire(fire_at: float) -> int | float:
    """A fire time as stored: whole seconds as an int."""
    return int(fire_at) if float(fire_at).is_integer() else fire_at


class Scheduler:
    """Holds or waits for the lease of this process's entries, and enqueues them while it holds it."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        identity: str,
        entries: Sequence[Entry],
        scripts: Scripts,
        heartbeat_interval: float = config.DEFAULT_HEARTBEAT_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis, self.keys, self.identity, self.scripts = client, keys, identity, scripts
        self.entries = sorted(entries, key=lambda e: e.name)
        self.table = Table.of(self.entries)
        self.clock = clock
        self.lease = max(1.0, LEASE_BEATS * heartbeat_interval)
        self.catch_up = self.lease + CATCH_UP_MARGIN
        # Longer than any pause between two lease calls of a running scheduler (the holder renews every third of
        # the lease, the others ask every ~FOLLOW_INTERVAL): a longer silence means none of the set ran.
        self.seen_gap = self.lease / 2 + 2 * FOLLOW_INTERVAL
        self.leader = False
        self.renew_at = 0.0
        self.cursors: dict[str, float] = {}  # per entry, the last fire time handled (enqueued or skipped)
        self.next_at: dict[str, float] = {}  # per entry, its next fire time
        self.backoff = Backoff(0.5, 5.0)
        self.failing_since: float | None = None
        self.loop = Loop(self._step)

    @property
    def lease_key(self) -> str:
        return self.keys.cron_leader(self.table.signature)

    def start(self) -> None:
        """Ask for the lease now, then schedule until stopped."""
        self.loop.start()

    def stop(self) -> None:
        """Stop scheduling and give the lease back, so that another process takes over at once."""
        self.loop.stop()
        if self.leader:
            self.leader = False
            try:
                self._lease_call(0)
            except redis.RedisError as exc:
                log.warning("could not give the periodic scheduler's lease back (it lapses by itself): %s", exc)

    def _step(self) -> float:
        """One step, whatever it raises; the seconds to wait before the next."""
        try:
            delay = self.step()
        except redis.RedisError as exc:
            return self._failed(exc)
        except Exception:  # a bug must not end periodic jobs for good: log it and try again
            log.exception("the periodic scheduler failed; trying again")
            return self.backoff.failed()
        self._succeeded()
        return delay

    def _failed(self, exc: redis.RedisError) -> float:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("periodic scheduler: Redis unreachable, retrying with back-off until it answers: %s", exc)
        self.renew_at = 0.0  # ask at the next step: the lease may have lapsed meanwhile
        return self.backoff.failed()

    def _succeeded(self) -> None:
        if self.failing_since is not None:
            log.info("periodic scheduler: Redis answers again after %.1fs", time.monotonic() - self.failing_since)
            self.failing_since = None
        self.backoff.succeeded()

    def step(self) -> float:
        """Keep or ask for the lease, enqueue what is due; returns the seconds to sleep before the next step."""
        now = self.clock()
        if self.leader:  # fire first: cron_fire.lua checks the lease itself, and renewing costs a round trip
            self.fire_due(now)
        if not self.leader or now >= self.renew_at:
            was_leader = self.leader
            self._ask(now)
            if self.leader and not was_leader:
                self.fire_due(self.clock())  # what the previous holder left, at once
        if not self.leader:
            return FOLLOW_INTERVAL * random.uniform(0.8, 1.2)
        wake = min(self.renew_at, min(self.next_at.values()))
        return max(0.0, wake - self.clock())

    def _lease_call(self, lease_ms: int) -> tuple[int, int, int]:
        reply = self.scripts.cron_lease(
            keys=[self.lease_key, self.keys.cron_seen(self.table.signature), self.keys.holds(self.identity)],
            args=[self.identity, lease_ms, SEEN_TTL, self.table.signature],
            client=self.redis,
        )
        held, seen, redis_now = (int(x) for x in cast("list[Any]", reply))
        return held, seen, redis_now

    def _ask(self, now: float) -> None:
        """Take or renew the lease; on taking it, start from where the entries were left."""
        held, seen, redis_now = self._lease_call(int(self.lease * 1000))
        if held and not self.leader:
            self._lead(now, continuous=seen > 0 and redis_now - seen <= self.seen_gap * 1000)
        elif not held and self.leader:
            log.info("periodic scheduler: another process holds the lease now")
            self.leader = False
        if held:
            self.renew_at = now + self.lease / 3 * random.uniform(0.9, 1.0)

    def _lead(self, now: float, continuous: bool) -> None:
        """Become the holder: each entry goes on from its last recorded fire time when a scheduler of the set ran
        until now (a handover: catch up to `catch_up` seconds), else from now (nothing ran: skip what passed)."""
        floor = now - self.catch_up if continuous else now
        recorded = cast("list[str | None]", self.redis.hmget(self.keys.cron_last, [e.name for e in self.entries]))
        for entry, last in zip(self.entries, recorded, strict=True):
            cursor = max(floor, _number(last))
            self.cursors[entry.name] = cursor
            self.next_at[entry.name] = entry.next_after(cursor)
        self.leader = True
        log.info(
            "periodic scheduler: holding the lease for %d entr%s (%s)",
            len(self.entries),
            "y" if len(self.entries) == 1 else "ies",
            "catching up from the last fire times" if continuous else "no scheduler ran before: starting from now",
        )

    def fire_due(self, now: float) -> None:
        """Enqueue every fire time due by `now` (those older than `catch_up` are skipped); nothing of the plan
        is kept unless Redis took it, so a failed call is repeated and the script drops what it already has."""
        fires: list[tuple[Entry, float]] = []
        plan: dict[str, tuple[float, float]] = {}
        late: list[str] = []
        for entry in self.entries:
            if self.next_at[entry.name] > now:
                continue
            cursor = self.cursors[entry.name]
            if cursor < now - self.catch_up:
                if entry.next_after(cursor) <= now - self.catch_up:
                    late.append(entry.name)
                cursor = now - self.catch_up
            fire = entry.next_after(cursor)
            while fire <= now:
                fires.append((entry, fire))
                cursor, fire = fire, entry.next_after(fire)
            plan[entry.name] = (cursor, fire)
        if late:
            log.warning(
                "periodic scheduler: fire times more than %.0fs late skipped for %d entr%s: %s",
                self.catch_up,
                len(late),
                "y" if len(late) == 1 else "ies",
                ", ".join(late[:10]) + (", ..." if len(late) > 10 else ""),
            )
        if fires and not self._enqueue(fires):
            log.info("periodic scheduler: the lease lapsed before these fire times; another process has them")
            self.leader = False
            return
        for name, (cursor, fire) in plan.items():
            self.cursors[name], self.next_at[name] = cursor, fire

    def _enqueue(self, fires: list[tuple[Entry, float]]) -> bool:
        """Push the payloads of `fires` through the client middleware and cron_fire.lua; False if not the holder."""
        chain = middleware.client
        for start in range(0, len(fires), BATCH):
            payloads = []
            args: list[Any] = [self.identity, self.keys.queue_prefix]
            for entry, fire in fires[start : start + BATCH]:
                payload = entry.payload(_wire(fire))
                if chain.entries:
                    chain.before("before_push", payload)
                payloads.append(payload)
                args += [entry.name, _wire(fire), payload["queue"], wire.of(self.keys).encode(payload)]
            keys = [self.lease_key, self.keys.cron_last, self.keys.queues, self.keys.wake]
            results = self.scripts.cron_fire(keys=keys, args=args, client=self.redis)
            if not isinstance(results, list):
                return False
            if chain.entries:
                for payload, pushed in zip(payloads, results, strict=True):
                    if pushed:
                        chain.after("after_push", payload)
        return True


def _number(text: str | None) -> float:
    """A recorded fire time, or minus infinity when there is none (or it is not a number)."""
    try:
        return float(text) if text is not None else float("-inf")
    except ValueError:
        return float("-inf")
