"""At-least-once fetch and acknowledgement.

Guarantee: a payload leaves its queue only by moving, atomically, into this process's working list
(NS:working:<identity>), and leaves the working list only when the job has finished and the Acker has
written its outcome (removed it, or moved it to the retry or dead set) in the same MULTI transaction.
On SIGTERM the unfinished ones are moved back to their queues. On SIGKILL they stay in the working list
until a live process sees the heartbeat expire and adopts them (see recovery.py): a job may run twice,
never zero times. Only the Acker acknowledges.
"""
import logging
import random
import time
from typing import Any, List, Sequence, Tuple

import gevent
import gevent.event
import redis

from . import config, payload as payload_mod, scripts
from .keys import Keys

log = logging.getLogger("jiggler_gevent.fetch")

QueueWeights = Sequence[Tuple[str, int]]
SINGLE_QUEUE_BLOCK = 2.0
MULTI_QUEUE_BLOCK = 0.1


def queue_order(queues: QueueWeights, strict: bool) -> List[str]:
    """The order to try queues in: as given when strict, else a weighted random shuffle."""
    if strict or len(queues) == 1:
        return [name for name, _ in queues]
    names = [name for name, _ in queues]
    weights = [float(w) for _, w in queues]
    order: List[str] = []
    while names:
        pick = random.choices(range(len(names)), weights=weights)[0]
        order.append(names.pop(pick))
        weights.pop(pick)
    return order


class ReliableFetch:
    """Moves payloads from the queues into this process's working list, and back."""

    def __init__(self, client: redis.Redis, keys: Keys, identity: str, queues: QueueWeights,
                 strict: bool = False) -> None:
        self.redis, self.keys, self.identity = client, keys, identity
        self.queues, self.strict = list(queues), strict
        self.working = keys.working(identity)
        self.scripts = scripts.register(client)
        self.conn = dedicated(client)

    def take(self, most: int, acks: Sequence[bytes] = ()) -> List[str]:
        """Acknowledge `acks` (finished payloads), then take up to `most` payloads without blocking."""
        order = [self.keys.queue(q) for q in queue_order(self.queues, self.strict)]
        return self.scripts["fetch"](keys=[self.working, *order], args=[most, *acks], client=self.conn)

    def wait_for_one(self) -> List[str]:
        """Block briefly for one payload when the queues were empty; [] when none came."""
        if len(self.queues) == 1:
            raw = self.conn.blmove(self.keys.queue(self.queues[0][0]), self.working, SINGLE_QUEUE_BLOCK,
                                   "RIGHT", "LEFT")
        else:
            first = queue_order(self.queues, self.strict)[0]
            raw = self.conn.blmove(self.keys.queue(first), self.working, MULTI_QUEUE_BLOCK, "RIGHT", "LEFT")
        return [raw] if raw is not None else []

    def requeue(self, raws: Sequence[str]) -> int:
        """Put held payloads back at the front of their queues, unchanged; returns how many."""
        if not raws:
            return 0
        args: List[str] = []
        for raw in raws:
            args += [payload_mod.queue_of(raw, config.DEFAULT_QUEUE), payload_mod.wire(raw)]
        args.append(self.keys.queue_prefix)
        return int(self.scripts["requeue"](keys=[self.working, self.keys.queues], args=args))

    def requeue_all(self) -> int:
        """Put everything this process still holds back in its queues (clean shutdown)."""
        return self.requeue(self.held())

    def held(self) -> List[str]:
        """The payloads this process holds now."""
        return self.redis.lrange(self.working, 0, -1)


class Outcome:
    """What to write for one finished payload: remove it from the working list and, when `target` is
    "retry" or "dead", add `new_raw` to that sorted set with `score` (the ack script's targets)."""

    __slots__ = ("raw", "target", "new_raw", "score")

    def __init__(self, raw: str, target: str = "", new_raw: str = "", score: float = 0.0) -> None:
        self.raw, self.target, self.new_raw, self.score = raw, target, new_raw, score


def dedicated(client: redis.Redis) -> redis.Redis:
    """A client that keeps one connection of `client`'s pool for itself: no pool checkout per command."""
    return redis.Redis(connection_pool=client.connection_pool, single_connection_client=True)


class Acker:
    """Acknowledges finished jobs in batches: one script call for all that finished meanwhile.

    While the fetcher is about to fetch again (`riding`), plain acknowledgements (job done, nothing to add
    to a set) wait for it: it carries them in its next fetch (`take_plain`), so under load a batch of jobs
    costs one round trip for fetch and acknowledgement. The Acker writes them itself when the fetcher
    blocks on an empty queue, backs off or stops, and always writes failed jobs' outcomes at once.

    If Redis cannot be reached the batch is kept and retried with back-off; until it is written the
    payloads stay in the working list, so a crash then means they run again, never that they are lost.
    """

    def __init__(self, client: redis.Redis, keys: Keys, working: str) -> None:
        self.redis, self.keys, self.working = client, keys, working
        self.conn = dedicated(client)
        self.ack_script = scripts.register(client)["ack"]
        self.pending: List[Outcome] = []
        self.writing: List[Outcome] = []  # the batch on its way to Redis now
        self.wake = gevent.event.Event()
        self.closing = False
        self.riding = False  # True while the fetcher will carry plain acknowledgements on its next fetch

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome for the next flush (or, for a plain one while the fetcher rides, its next fetch)."""
        self.pending.append(outcome)
        if outcome.target or not self.riding:
            self.wake.set()

    def run(self) -> None:
        """Flush whenever something is pending, until closed (runs in its own greenlet)."""
        backoff = 0.1
        while not (self.closing and not self.pending):
            self.wake.wait()
            if self.riding and not self.closing and all(not o.target for o in self.pending):
                self.wake.clear()
                continue
            try:
                self.flush()
                backoff = 0.1
            except redis.RedisError as exc:
                log.warning("could not acknowledge %d job(s), retrying in %.1fs: %s", len(self.pending), backoff, exc)
                gevent.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def ride(self, riding: bool) -> None:
        """Say whether the fetcher will carry plain acknowledgements; when it stops doing so, write them now."""
        self.riding = riding
        if not riding and self.pending:
            self.wake.set()

    def take_plain(self) -> List[bytes]:
        """Hand over the pending plain acknowledgements (jobs done, nothing to add to a set)."""
        if not self.pending:
            return []
        plain = [payload_mod.wire(o.raw) for o in self.pending if not o.target]
        if plain:
            self.pending = [o for o in self.pending if o.target]
        return plain

    def give_back(self, raws: Sequence[bytes]) -> None:
        """Take back acknowledgements that could not be sent (writing one twice is harmless)."""
        for raw in raws:
            self.add(Outcome(raw.decode("utf-8", "surrogateescape")))

    def close(self) -> None:
        """Let run() return once everything pending is written."""
        self.closing = True
        self.wake.set()

    def flush(self) -> None:
        """Write every pending outcome in one transaction."""
        batch, self.pending = self.pending, []
        self.wake.clear()
        if not batch:
            return
        self.writing = batch
        try:
            self._write(batch)
        except BaseException:
            self.pending[:0] = batch
            self.wake.set()
            raise
        finally:
            self.writing = []

    def holding(self) -> List[str]:
        """The raw payloads whose outcome is waiting to be written (still in the working list meanwhile)."""
        return [o.raw for o in self.pending] + [o.raw for o in self.writing]

    def _write(self, batch: List[Outcome]) -> None:
        now = time.time()
        args: List[Any] = [now - config.DEAD_MAX_AGE, config.DEAD_MAX_JOBS]
        for o in batch:
            args += [payload_mod.wire(o.raw), o.target, o.new_raw, o.score]
        self.ack_script(keys=[self.working, self.keys.retry, self.keys.dead], args=args, client=self.conn)

    def drain(self, deadline: float) -> bool:
        """Flush until nothing is pending or `deadline` (monotonic) passes; True when all was written."""
        while self.pending and time.monotonic() < deadline:
            try:
                self.flush()
            except redis.RedisError as exc:
                log.warning("could not acknowledge at shutdown, retrying: %s", exc)
                gevent.sleep(0.2)
        return not self.pending


def add_dead(pipe: Any, keys: Keys, encoded: str, now: float) -> None:
    """Queue on `pipe` the commands that add a payload to the dead set and trim it by age and size."""
    pipe.zadd(keys.dead, {encoded: now})
    pipe.zremrangebyscore(keys.dead, "-inf", now - config.DEAD_MAX_AGE)
    pipe.zremrangebyrank(keys.dead, 0, -config.DEAD_MAX_JOBS - 1)
