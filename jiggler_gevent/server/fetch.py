"""At-least-once fetch: payloads move from their queues into this process's working list, and back.

Guarantee: a payload leaves its queue only by moving, atomically, into this process's working list
(NS:working:<identity>), and leaves the working list only when it is settled (acker.py): its job has ended and
its outcome is written, or it is put back unrun. On SIGTERM the unfinished ones are put back in their queues.
On SIGKILL they stay in the working list until a live process sees the heartbeat expire and adopts them
(recovery.py): a job may run twice, never zero times.
"""

import logging
import random
import time
from collections.abc import Sequence
from typing import cast

import redis

from .. import config, scripts, wire
from .. import payload as payload_mod
from ..connect import MAX_BLOCK
from ..keys import Keys
from . import ending, tracking
from .acker import Outcome, dedicated, settle

log = logging.getLogger("jiggler_gevent.fetch")

QueueWeights = Sequence[tuple[str, int]]
SINGLE_QUEUE_BLOCK = int(MAX_BLOCK)  # seconds an idle worker on one queue blocks in BLMOVE
# Seconds an idle worker on several queues blocks on NS:wake. Every push through jiggler_gevent wakes it at once;
# a payload a foreign producer LPUSHes without touching NS:wake waits for the next try, at most this long.
WAKE_BLOCK = 1.0  # within connect.MAX_BLOCK


def queue_order(queues: QueueWeights, strict: bool) -> list[str]:
    """The order to try queues in: as given when strict, else a weighted random shuffle."""
    if strict or len(queues) == 1:
        return [name for name, _ in queues]
    names = [name for name, _ in queues]
    weights = [float(w) for _, w in queues]
    order: list[str] = []
    while names:
        pick = random.choices(range(len(names)), weights=weights)[0]
        order.append(names.pop(pick))
        weights.pop(pick)
    return order


class ReliableFetch:
    """Moves payloads from the queues into this process's working list, and back."""

    def __init__(
        self, client: redis.Redis, keys: Keys, identity: str, queues: QueueWeights, strict: bool = False
    ) -> None:
        self.redis, self.keys, self.identity = client, keys, identity
        self.queues, self.strict = list(queues), strict
        self.working = keys.working(identity)
        self.scripts = scripts.register(client)
        self.conn = dedicated(client)
        self.oom_since: float | None = None  # monotonic time BLMOVE was first refused for lack of memory
        self.starts: tracking.Starts = {}  # what the fetch script found for the tracked payloads it took

    def take(self, most: int, acks: Sequence[bytes] = ()) -> list[str]:
        """Settle `acks` (payloads of jobs done), then take up to `most` payloads without blocking. The tracked
        ones are started in the same step (fetch.lua): what it found for each goes to `starts`."""
        order = [self.keys.queue(q) for q in queue_order(self.queues, self.strict)]
        keys = [self.working, self.keys.cancelled, *order]
        args: list[bytes | str | float] = [most, self.keys.result_prefix, time.time(), config.RESULT_PENDING_TTL, *acks]
        taken, marks = cast("tuple[list[str], str]", self.scripts.fetch(keys=keys, args=args, client=self.conn))
        if marks.strip("."):
            for raw, mark in zip(taken, marks, strict=True):
                if mark != ".":
                    self.starts[raw] = mark == "c"
        return taken

    def wait(self, most: int) -> list[str]:
        """After `take` found the queues empty: block briefly until payloads come, and take up to `most` of them;
        [] when none came.

        On one queue, BLMOVE moves the first payload pushed straight into the working list. On several, the
        worker blocks on NS:wake, which every push adds (a BLMOVE can wait on one queue only), then takes in
        the queues' usual order, so their weights hold. One that took all it could leaves NS:wake set for the
        next idle worker, as there may be more.

        Redis out of memory (maxmemory, noeviction) refuses BLMOVE but not the fetch script nor BZPOPMIN: the
        worker then waits as on several queues, logging once, so it goes on draining the queue (which frees
        memory) without a busy loop or a log line per try.
        """
        if len(self.queues) == 1:
            try:
                raw = self._blmove()
            except redis.exceptions.OutOfMemoryError as exc:
                self._out_of_memory(exc)
                return self._wait_on_wake(most)
            return [raw] if raw is not None else []
        return self._wait_on_wake(most)

    def _blmove(self) -> str | None:
        queue = self.keys.queue(self.queues[0][0])
        raw = cast("str | None", self.conn.blmove(queue, self.working, SINGLE_QUEUE_BLOCK, "RIGHT", "LEFT"))
        if self.oom_since is not None:
            log.info("Redis has memory again after %.1fs: waiting with BLMOVE again", time.monotonic() - self.oom_since)
            self.oom_since = None
        return raw

    def _out_of_memory(self, exc: redis.RedisError) -> None:
        if self.oom_since is None:
            self.oom_since = time.monotonic()
            log.warning("Redis refuses BLMOVE (out of memory): waiting on the wake set until it has room: %s", exc)

    def _wait_on_wake(self, most: int) -> list[str]:
        if not self.conn.bzpopmin(self.keys.wake, WAKE_BLOCK):
            return []
        taken = self.take(most)
        if len(taken) == most:
            try:
                self.conn.zadd(self.keys.wake, {"wake": 0})
            except redis.exceptions.OutOfMemoryError:
                pass  # a hint only: other idle workers still look again within WAKE_BLOCK
        return taken

    def requeue(self, raws: Sequence[str]) -> int:
        """Put held payloads back at the front of their queues, unchanged; returns how many were still held.
        A tracked job's status goes back to "queued" in the same step."""
        outcomes = []
        for raw in raws:
            self.starts.pop(raw, None)
            outcome = Outcome.requeue(raw, raw, payload_mod.queue_of(raw, config.DEFAULT_QUEUE))
            if '"result_ttl"' in raw:
                try:
                    outcome.end = ending.of_put_back(wire.of(self.keys).decode(raw))
                except payload_mod.PayloadError:
                    pass
            outcomes.append(outcome)
        return settle(self.scripts.settle, self.keys, self.working, outcomes)

    def requeue_all(self) -> int:
        """Put everything this process still holds back in its queues (clean shutdown)."""
        return self.requeue(self.held())

    def held(self) -> list[str]:
        """The payloads this process holds now."""
        held = cast("list[str]", self.redis.lrange(self.working, 0, -1))  # decoded replies: str
        return held
