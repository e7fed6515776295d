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
SINGLE_QUEUE_BLOCK = 2.0
MULTI_QUEUE_BLOCK = 0.1


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

    def wait_for_one(self) -> list[str]:
        """Block briefly for one payload when the queues were empty; [] when none came."""
        block = SINGLE_QUEUE_BLOCK if len(self.queues) == 1 else MULTI_QUEUE_BLOCK
        first = queue_order(self.queues, self.strict)[0]
        # A str: the client decodes replies (config.redis_client). redis-py types BLMOVE's timeout as an int, but
        # Redis takes a float number of seconds, and redis-py sends the value as given.
        raw = cast(
            "str | None",
            self.conn.blmove(self.keys.queue(first), self.working, block, "RIGHT", "LEFT"),  # type: ignore[arg-type]
        )
        return [raw] if raw is not None else []

    def requeue(self, raws: Sequence[str]) -> int:
        """Put held payloads back at the front of their queues, unchanged; returns how many were still held."""
        outcomes = [Outcome.requeue(raw, raw, payload_mod.queue_of(raw, config.DEFAULT_QUEUE)) for raw in raws]
        return settle(self.scripts.settle, self.keys, self.working, outcomes)

    def requeue_all(self) -> int:
        """Put everything this process still holds back in its queues (clean shutdown)."""
        return self.requeue(self.held())

    def held(self) -> list[str]:
        """The payloads this process holds now."""
        held = cast("list[str]", self.redis.lrange(self.working, 0, -1))  # decoded replies: str
        return held
