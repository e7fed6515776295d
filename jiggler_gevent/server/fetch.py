"""At-least-once fetch: payloads move from their queues into this process's working list, and back.

Guarantee: a payload leaves its queue only by moving, atomically, into this process's working list
(NS:working:<identity>), and leaves the working list only when it is settled (acker.py): its job has ended and
its outcome is written, or it is put back unrun. On SIGTERM the unfinished ones are put back in their queues.
On SIGKILL they stay in the working list until a live process sees the heartbeat expire and adopts them
(recovery.py): a job may run twice, never zero times.
"""

import random
from collections.abc import Sequence
from typing import cast

import redis

from .. import config, scripts
from .. import payload as payload_mod
from ..keys import Keys
from .acker import Outcome, dedicated, settle

QueueWeights = Sequence[tuple[str, int]]
SINGLE_QUEUE_BLOCK = 2  # seconds an idle worker on one queue blocks in BLMOVE
# Seconds an idle worker on several queues blocks on NS:wake. Every push through jiggler_gevent wakes it at once;
# a payload a foreign producer LPUSHes without touching NS:wake waits for the next try, at most this long.
WAKE_BLOCK = 1.0


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

    def take(self, most: int, acks: Sequence[bytes] = ()) -> list[str]:
        """Settle `acks` (payloads of jobs done), then take up to `most` payloads without blocking."""
        order = [self.keys.queue(q) for q in queue_order(self.queues, self.strict)]
        taken: list[str] = self.scripts.fetch(keys=[self.working, *order], args=[most, *acks], client=self.conn)
        return taken

    def wait(self, most: int) -> list[str]:
        """After `take` found the queues empty: block briefly until payloads come, and take up to `most` of them;
        [] when none came.

        On one queue, BLMOVE moves the first payload pushed straight into the working list. On several, the
        worker blocks on NS:wake, which every push adds (a BLMOVE can wait on one queue only), then takes in
        the queues' usual order, so their weights hold. One that took all it could leaves NS:wake set for the
        next idle worker, as there may be more.
        """
        if len(self.queues) == 1:
            queue = self.keys.queue(self.queues[0][0])
            raw = cast("str | None", self.conn.blmove(queue, self.working, SINGLE_QUEUE_BLOCK, "RIGHT", "LEFT"))
            return [raw] if raw is not None else []
        if not self.conn.bzpopmin(self.keys.wake, WAKE_BLOCK):
            return []
        taken = self.take(most)
        if len(taken) == most:
            self.conn.zadd(self.keys.wake, {"wake": 0})
        return taken

    def requeue(self, raws: Sequence[str]) -> int:
        """Put held payloads back at the front of their queues, unchanged; returns how many were still held.
        A tracked job's status goes back to "queued" in the same step."""
        outcomes = []
        for raw in raws:
            outcome = Outcome.requeue(raw, raw, payload_mod.queue_of(raw, config.DEFAULT_QUEUE))
            if '"result_ttl"' in raw:
                try:
                    outcome.ending(payload_mod.decode(raw))
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
