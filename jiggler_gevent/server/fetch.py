"""At-least-once fetch: payloads move from their queues into this process's working list, and back.

Guarantee: a payload leaves its queue only by moving, atomically, into this process's working list
(NS:working:<identity>), and leaves the working list only when it is settled (acker.py): its job has ended and
its outcome is written, or it is put back unrun. On SIGTERM the unfinished ones are put back in their queues.
On SIGKILL they stay in the working list until a live process sees the heartbeat expire and adopts them
(recovery.py): a job may run twice, never zero times.

The fetch script also takes the `concurrent` slot of each payload of a job with `concurrency=N` registered here
(guards.py says what that guarantees); a payload that came another way, or whose job was registered after the
first fetch, has its slot taken by guards.ConcurrencyMiddleware instead.
"""

import itertools
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from redis.typing import EncodableT

from .. import config, scripts, wire
from .. import payload as payload_mod
from ..cluster import is_cluster
from ..connect import MAX_BLOCK
from ..keys import Keys
from . import ending, guards, tracking
from .acker import PARKED_KEEP_MS, Acker, Outcome, Slots, dedicated, settle, settle_argv, slot_of

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
        self.cancelled, self.result_prefix = keys.cancelled, keys.result_prefix  # read once: built on each read
        self.scripts = scripts.register(client)
        # On a Cluster, the slot client follows redirections command by command: nothing is written on its connection
        # directly (a redirection answered there would not move it to the slot's new master).
        self.writes_directly = not is_cluster(client)
        self.conn = dedicated(client, self.working)
        self.oom_since: float | None = None  # monotonic time BLMOVE was first refused for lack of memory
        self.starts: tracking.Starts = {}  # what the fetch script found for the tracked payloads it took
        self.slots: Slots = {}  # the `concurrent` slots it took (acker.Slots)
        self.holds = keys.holds(identity)
        self.batch_prefix = keys.batch_prefix
        # fetch.lua's KEYS before the queues with its extra part, made once: a Keys property builds its name each read
        self.paused_key = keys.paused
        self.extra_keys = [
            *(self.working, self.cancelled, self.paused_key),
            *(self.holds, keys.limits, keys.schedule, keys.queues, keys.wake),
        ]
        self.limited: list[str | int] | None = None  # per limited job: its name, its limiter's, N (guards.fetch_limits)
        self.group_limited = False  # a job with group_concurrency=N is registered: the fetch takes its groups' slots
        self.no_limits = (keys.limit_prefix, 0, "", "", 0, 0, keys.queue_prefix, config.DEFAULT_QUEUE, 0)
        self.token_base = os.urandom(6).hex() + ":"  # slot tokens: this, a count of fetches, the payload's position
        self.fetches = itertools.count()
        self.drained = False  # the last fetch took fewer payloads than asked: the queues were empty then
        self.paused = False  # the last fetch found one of the queues paused (then an idle worker does not BLMOVE)
        # the last fetch found priorities or groups in use on the namespace: such a push does not touch the list
        # BLMOVE waits on, so an idle worker waits on NS:wake instead
        self.arranged = False

    def take(
        self, most: int, acks: Sequence[bytes] = (), ends: Sequence[Outcome] = (), releases: Sequence[str] = ()
    ) -> list[str]:
        """Settle `acks` (payloads of jobs done) and give back `releases` (the slots of jobs that have ended,
        acker.Slots), then take up to `most` payloads without blocking. The tracked ones are started in the same
        step (fetch.lua): what it found for each goes to `starts`, and the slots it took to `slots`. The outcomes
        `ends` (jobs done, not plain) are settled just before, in the same write (settle.lua), but for the batch
        members that succeeded with nothing else to write, which the fetch script counts as it settles them."""
        members: Sequence[Outcome] = ()
        if ends:
            members = [o for o in ends if o.member]
            if members:
                ends = [o for o in ends if not o.member]
        keys, args = self._fetch_argv(most, acks, time.time(), releases, members)
        conn = self._own_connection()
        if conn is None:  # Redis Cluster: a script call at a time, through the slot client
            if ends:
                Acker.report_not_held(ends, settle(self.scripts.settle, self.keys, self.working, ends, self.conn))
            return self._taken(self.scripts.fetch(keys=keys, args=args, client=self.conn), most)
        # Straight on the connection, not through redis-py's execute_command: its plumbing cost as much as the
        # reply's parsing. A lost reply is not sent again: the Manager puts back what such a fetch took.
        fetch = scripts.evalsha(self.scripts.fetch, keys, args)
        if not ends:
            (fetched,) = scripts.pipelined(conn, (fetch,))
        else:
            settle_keys, settle_args = settle_argv(self.keys, self.working, ends)
            settling = scripts.evalsha(self.scripts.settle, settle_keys, settle_args)
            settled, fetched = scripts.pipelined(conn, (settling, fetch))
            if isinstance(settled, redis.exceptions.NoScriptError):  # not loaded yet: settle() loads it
                settled = settle(self.scripts.settle, self.keys, self.working, ends, self.conn)
            if isinstance(settled, Exception):
                raise settled
            Acker.report_not_held(ends, int(cast(int, settled)))
        if isinstance(fetched, redis.exceptions.NoScriptError):  # not loaded yet (or Redis restarted): this loads it
            fetched = self.scripts.fetch(keys=keys, args=args, client=self.conn)
        if isinstance(fetched, Exception):
            raise fetched
        return self._taken(fetched, most)

    def _own_connection(self) -> Any:
        """The fetcher's own connection, to write commands on directly; None on a Redis Cluster."""
        return self.conn.connection if self.writes_directly else None

    def _fetch_argv(
        self,
        most: int,
        acks: Sequence[bytes],
        now: float | str,
        releases: Sequence[str] = (),
        members: Sequence[Outcome] = (),
    ) -> tuple[list[str], list[EncodableT]]:
        """fetch.lua's KEYS and ARGV, in the order of its header: its extra part only when there is something in it
        (a job with `concurrency=N` registered, a slot to give back, a batch member to count)."""
        order = [self.keys.queue(q) for q in queue_order(self.queues, self.strict)]
        head: list[EncodableT] = [most, self.result_prefix, now, config.RESULT_PENDING_TTL]
        if self.limited is None:  # the jobs with `concurrency=N` registered by now (the worker has loaded its modules)
            self.limited = guards.fetch_limits()
            self.group_limited = guards.group_limited()
        if not (self.limited or self.group_limited or releases or members):
            return [self.working, self.cancelled, self.paused_key, *order], [*head, 0, *acks]
        extra: list[EncodableT] = [*self._limits_argv(), len(releases), *releases]
        extra += [self.batch_prefix, config.BATCH_TTL, len(members)]
        for o in members:
            extra += o.member_argv()
        return [*self.extra_keys, *order], [*head, len(extra), *extra, *acks]

    def _limits_argv(self) -> Sequence[EncodableT]:
        """The start of fetch.lua's extra part, E[1..9+3k]: what it needs to take the slots of the jobs with
        `concurrency=N` registered at the first fetch, with a token prefix of this call's own, and to park the
        payloads whose limiter is full."""
        if not (self.limited or self.group_limited):
            return self.no_limits
        field = "class" if self.keys.wire == "sidekiq" else "name"
        token_prefix = f"{self.token_base}{next(self.fetches)}."
        ms = int(guards.SLOT_TIMEOUT * 1000)
        # A parked payload is moved back by the next release of a slot (each wakes one); it falls due on its own only
        # when no release comes, which a slot dropped at its lock timeout (a holder nobody recovered) does not send.
        # A shorter delay would make a backlog over a busy limiter cycle through the queue and be parked again.
        due = time.time() + guards.SLOT_TIMEOUT
        limited = self.limited or ()
        parking = (due, PARKED_KEEP_MS, self.keys.queue_prefix, config.DEFAULT_QUEUE, len(limited) // 3)
        return (self.keys.limit_prefix, ms, token_prefix, field, *parking, *limited)

    def _taken(self, reply: object, most: int) -> list[str]:
        """The payloads of a fetch's reply; what it found for the tracked ones goes to `starts`, the slots it took
        to `slots`, whether a queue is paused to `paused`."""
        taken, parked, paused, arranged = cast("list[str]", reply), 0, 0, 0
        if taken and isinstance(taken[0], list):  # {payloads, marks, slots, parked, paused, prio}: not a plain reply
            taken, marks, slots, parked, paused, arranged = cast(
                "tuple[list[str], str, list[str], int, int, int]", reply
            )
            for raw, mark in zip(taken, marks, strict=True):
                if mark != ".":
                    self.starts[raw] = mark == "c"
            for raw, slot in zip(taken, slots, strict=True) if slots else ():  # none when no job is limited
                if slot:
                    self.slots[raw] = slot
        self.drained = len(taken) + parked < most  # one parked over a full limiter was there to take
        self.paused = paused > 0
        self.arranged = arranged > 0
        return taken

    def wait(self, most: int, hand: Callable[[str], None] | None = None) -> list[str]:
        """After a fetch found the queues empty: block briefly until payloads come, and take up to `most` of them;
        [] when none came. A payload BLMOVE brought goes to `hand` (when given), once the fetch behind it has
        said its queue is not paused; the others are returned.

        On one queue, BLMOVE moves the first payload pushed straight into the working list. On several, on a
        paused one, or once priorities or groups are in use on the namespace (such a job waits beside the list), the
        worker blocks on NS:wake, which every push adds, and so does a resume (a BLMOVE can wait on one queue only,
        and would take from a paused one). Either way a fetch of the rest goes in the same write,
        behind the blocking command: Redis runs it the moment the block ends, so a wake costs one round trip, and
        `drained` then says whether it left the queues empty. It takes in the queues' usual order, so their weights
        hold. One that took all it could leaves NS:wake set for the next idle worker, as there may be more.

        Redis out of memory (maxmemory, noeviction) refuses BLMOVE but not the fetch script nor BZPOPMIN: the
        worker then waits as on several queues, logging once, so it goes on draining the queue (which frees
        memory) without a busy loop or a log line per try.
        """
        if len(self.queues) == 1 and not (self.paused or self.arranged):
            return self._wait_on_queue(most, hand)
        return self._wait_on_wake(most)

    def _wait_on_queue(self, most: int, hand: Callable[[str], None] | None) -> list[str]:
        """BLMOVE, then the fetch behind it. The queue may have been paused while BLMOVE blocked: the fetch says so,
        and the payload BLMOVE brought goes back to the front of its queue unrun (so it is handed over only after
        that fetch's reply is read)."""
        queue = self.keys.queue(self.queues[0][0])
        block = ("BLMOVE", queue, self.working, "RIGHT", "LEFT", SINGLE_QUEUE_BLOCK)
        raw, taken = self._block_then_take(block, most - 1)
        if isinstance(raw, redis.exceptions.OutOfMemoryError):
            self._out_of_memory(raw)
            return taken or self._wait_on_wake(most)
        if isinstance(raw, Exception):
            raise raw
        if self.oom_since is not None:
            log.info("Redis has memory again after %.1fs: waiting with BLMOVE again", time.monotonic() - self.oom_since)
            self.oom_since = None
        if raw is None:
            self.drained = True  # BLMOVE found the queue empty until its timeout
            return taken
        if self.paused:
            self.requeue([cast(str, raw)])
            return taken
        if hand is None:
            return [cast(str, raw), *taken]
        hand(cast(str, raw))
        return taken

    def _out_of_memory(self, exc: redis.RedisError) -> None:
        if self.oom_since is None:
            self.oom_since = time.monotonic()
            log.warning("Redis refuses BLMOVE (out of memory): waiting on the wake set until it has room: %s", exc)

    def _wait_on_wake(self, most: int) -> list[str]:
        woken, taken = self._block_then_take(("BZPOPMIN", self.keys.wake, WAKE_BLOCK), most)
        if isinstance(woken, Exception):
            raise woken
        if len(taken) == most:
            try:
                self.conn.zadd(self.keys.wake, {"wake": 0})
            except redis.exceptions.OutOfMemoryError:
                pass  # a hint only: other idle workers still look again within WAKE_BLOCK
        return taken

    def _block_then_take(self, block: tuple[EncodableT, ...], most: int) -> tuple[object, list[str]]:
        """Run the blocking command `block`, then a fetch of up to `most` payloads as soon as it returns: the
        block's reply (or the error Redis answered) and what the fetch took. On this fetch's own connection both
        go in one write and Redis runs the fetch the moment the block ends: one round trip for both. On a Redis
        Cluster (whose slot client follows redirections command by command) the block runs, then the fetch."""
        conn = self._own_connection()
        if conn is None:
            client: Any = self.conn  # redis-py leaves execute_command unannotated
            first = scripts.answer(lambda: client.execute_command(*block))
            return first, self.take(most)
        keys, args = self._fetch_argv(most, (), "")
        first, second = scripts.pipelined(conn, (block, scripts.evalsha(self.scripts.fetch, keys, args)))
        if isinstance(second, redis.exceptions.NoScriptError):  # not loaded yet (or Redis restarted): take loads it
            return first, self.take(most)
        if isinstance(second, Exception):
            raise second
        return first, self._taken(second, most)

    def requeue(self, raws: Sequence[str]) -> int:
        """Put held payloads back at the front of their queues, unchanged; returns how many were still held.
        A tracked job's status goes back to "queued" in the same step."""
        outcomes, releases = [], []
        for raw in raws:
            self.starts.pop(raw, None)
            slot = slot_of(raw, self.slots) if self.slots else None
            if slot is not None:
                releases.append(slot)
            outcome = Outcome.requeue(raw, raw, payload_mod.queue_of(raw, config.DEFAULT_QUEUE))
            if '"result_ttl"' in raw:
                try:
                    outcome.end = ending.of_put_back(wire.of(self.keys).decode(raw))
                except payload_mod.PayloadError:
                    pass
            outcomes.append(outcome)
        return settle(self.scripts.settle, self.keys, self.working, outcomes, releases=releases)

    def requeue_all(self) -> int:
        """Put everything this process still holds back in its queues (clean shutdown)."""
        return self.requeue(self.held())

    def held(self) -> list[str]:
        """The payloads this process holds now."""
        held = cast("list[str]", self.redis.lrange(self.working, 0, -1))  # decoded replies: str
        return held
