"""Settling held payloads: what becomes of each one, written to Redis in batches by the Acker.

Guarantee (with fetch.py): a payload leaves this process's working list only through the settle script
(settle.lua) or the fetch script, each atomic, and only once its job has ended (done, retry, dead) or when it
is put back unrun (shutdown, recovery). Two writers settle: the Acker, for every outcome, and the fetcher,
which carries plain acknowledgements (job done, nothing to store) in its next fetch while it rides. Until an
outcome is written the payload stays held, so a crash then means the job runs again, never that it is lost.
"""

import logging
import time
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
import redis
from redis.commands.core import Script

from .. import config, scripts
from .. import payload as payload_mod
from ..cluster import is_cluster, slot_client
from ..gevent_types import Event
from ..keys import Keys
from ..limits import MAX_RESCHEDULE_DELAY
from ..middleware import Disposition
from ..payload import View
from . import ending
from .backoff import Backoff
from .ending import Ending

log = logging.getLogger("jiggler_gevent.acker")

PLAIN = (Disposition.ACK, Disposition.DROP)
# A limiter's parked list outlives its last push by the longest reschedule delay and a minute: by then every
# payload in it has become due, so the Poller has moved it and the entry is stale.
PARKED_KEEP_MS = int((MAX_RESCHEDULE_DELAY + 60) * 1000)


class Outcome:
    """What to write for one held payload (`raw`): its disposition, what to store where, and, for a job that used
    a unique lock, tracking, a batch or a limiter, its Ending (ending.py): the rest of its settle arguments."""

    __slots__ = ("raw", "disposition", "new_raw", "where", "end")

    def __init__(
        self,
        raw: str,
        disposition: Disposition = Disposition.ACK,
        new_raw: str = "",
        where: float | str = 0.0,
        end: Ending | None = None,
    ) -> None:
        self.raw, self.disposition, self.new_raw, self.where, self.end = raw, disposition, new_raw, where, end

    def ending(self, payload: dict[str, Any], detail: str = "") -> "Outcome":
        """This outcome, also writing the job's tracked status and counting it in its batch, if it has them
        (no lock released: the Processor builds the whole Ending of the jobs it ran, ending.of_run)."""
        self.end = ending.of(View(payload), self.disposition, None, detail)
        return self

    @classmethod
    def retry(cls, raw: str, new_raw: str, at: float) -> "Outcome":
        """Failed: `new_raw` to the retry set, due at unix time `at`."""
        return cls(raw, Disposition.RETRY, new_raw, at)

    @classmethod
    def dead(cls, raw: str, new_raw: str, at: float, end: Ending | None = None) -> "Outcome":
        """Failed for good: `new_raw` to the dead set, died at unix time `at`."""
        return cls(raw, Disposition.DEAD, new_raw, at, end)

    @classmethod
    def reschedule(cls, raw: str, new_raw: str, at: float) -> "Outcome":
        """Over a limit: `new_raw` to the scheduled set, due at unix time `at`."""
        return cls(raw, Disposition.RESCHEDULE, new_raw, at)

    @classmethod
    def requeue(cls, raw: str, new_raw: str, queue: str) -> "Outcome":
        """Not run: `new_raw` back to the front of `queue`."""
        return cls(raw, Disposition.REQUEUE, new_raw, queue)

    @classmethod
    def recover(cls, raw: str, new_raw: str, queue: str) -> "Outcome":
        """Held by a process that died: `new_raw` to the back of `queue`."""
        return cls(raw, Disposition.RECOVER, new_raw, queue)

    @property
    def plain(self) -> bool:
        """True when nothing is stored: the payload is only removed (a job done, or dropped), and no lock
        released, status written or batch counted (the fetch script, which carries plain acknowledgements,
        does none of these)."""
        return self.end is None and self.disposition in PLAIN

    @property
    def member(self) -> bool:
        """True for a batch member that succeeded with nothing else to write: the fetch that carries it counts it
        in its batch as it settles it (fetch.lua), as settle.lua would."""
        end = self.end
        return end is not None and self.disposition is Disposition.ACK and end.counts_only

    def member_argv(self) -> tuple[bytes, str, str]:
        """Its three arguments to fetch.lua as a batch member (`member`): the payload held, its jid, its batch."""
        assert self.end is not None
        return payload_mod.wire(self.raw), self.end.jid, self.end.bid

    def argv(self) -> tuple[Any, ...]:
        """Its ten arguments to settle.lua, in the order of the script's header."""
        end = ending.NONE if self.end is None else self.end.argv()
        return (payload_mod.wire(self.raw), self.disposition.value, payload_mod.wire(self.new_raw), self.where, *end)


def settle(
    script: Script,
    keys: Keys,
    working: str,
    outcomes: Sequence[Outcome],
    client: redis.Redis | None = None,
    releases: Sequence[str] = (),
) -> int:
    """Write `outcomes` for payloads held in `working`, and give back the slots `releases` (Slots), in one atomic
    script call; returns how many payloads were held."""
    if not outcomes and not releases:
        return 0
    script_keys, args = settle_argv(keys, working, outcomes, releases)
    return int(script(keys=script_keys, args=args, client=client))


def settle_argv(
    keys: Keys, working: str, outcomes: Sequence[Outcome], releases: Sequence[str] = ()
) -> tuple[list[str], list[Any]]:
    """settle.lua's KEYS and ARGV for `outcomes` and `releases`, in the order of its header."""
    now = time.time()
    args: list[Any] = [now - config.DEAD_MAX_AGE, config.DEAD_MAX_JOBS, keys.queue_prefix, keys.result_prefix]
    args += [keys.batch_prefix, now, config.RESULT_PENDING_TTL, config.BATCH_TTL, keys.limit_prefix, PARKED_KEEP_MS]
    args += [config.DEFAULT_QUEUE, len(releases), *releases]
    for o in outcomes:
        args += o.argv()
    holds = keys.holds(working.removeprefix(keys.working("")))  # of the process whose working list this is
    return [working, keys.retry, keys.dead, keys.queues, keys.wake, keys.schedule, holds, keys.limits], args


# The `concurrent` slots the fetch script took for the payloads it took, by raw payload: the field of
# NS:holds:<identity> that records the slot, or FULL when the job's limiter was full (the job is refused, and
# rescheduled). Filled by fetch.ReliableFetch, read by guards.ConcurrencyMiddleware as the job starts, emptied as
# the payload's outcome is added (Acker.add; fetch.requeue), whose slot is then given back by the first write to
# Redis that follows: the next fetch, which carries it as it carries plain acknowledgements, or the settle the Acker
# writes. A payload taken twice at once by this process keeps the last slot only, and the slots of a fetch whose
# reply was lost are not known here: those are freed by their lock timeout, or by this process's stop or recovery
# (never an extra holder, only a slot held longer).
Slots = dict[str, str]
FULL = "!"


def slot_of(raw: str, slots: Slots) -> str | None:
    """The slot the fetch took for `raw`, taken out of `slots` to be given back; None when it took none."""
    slot = slots.pop(raw, None)
    return None if slot == FULL else slot


def rides(outcome: Outcome) -> bool:
    """Whether `outcome` may wait for the fetcher's next fetch: a plain one, or any of a job done (ACK). Its job's
    worker is idle as it is added, so that fetch follows at once; a failure may be written while its job still
    runs (Processor.abandon), with no fetch on its way."""
    return outcome.disposition is Disposition.ACK or outcome.plain


def dedicated(client: redis.Redis, key: str) -> redis.Redis:
    """A client that keeps one connection of `client`'s pool for itself: no pool checkout per command. On a Redis
    Cluster, one connection of its own to the master of `key`'s slot (the namespace's: every key it is used for)."""
    if is_cluster(client):
        return slot_client(client, key)
    return redis.Redis(connection_pool=client.connection_pool, single_connection_client=True)


class Acker:
    """Writes outcomes in batches: one script call for all that ended meanwhile.

    While the fetcher is about to fetch again (`riding`), the outcomes of jobs done wait for it: it carries the
    plain acknowledgements in its next fetch (`take_plain`) and writes the others in the same write (`take_ends`),
    so under load a batch of jobs costs one round trip for fetch and acknowledgement. The Acker writes them
    itself when the fetcher blocks on an empty queue, backs off or stops, and always writes failed jobs'
    outcomes at once. If Redis cannot be reached or refuses writes
    (READONLY, MISCONF, NOREPLICAS) the batch is kept, its payloads stay held, and it is retried with back-off,
    logged once per outage. Out of memory (maxmemory, noeviction) does not stop it: the settle script's first
    write is an LREM, which Redis allows then, and a script that has written may go on.
    """

    def __init__(self, client: redis.Redis, keys: Keys, working: str) -> None:
        self.redis, self.keys, self.working = client, keys, working
        self.conn = dedicated(client, working)
        self.script = scripts.register(client).settle
        self.pending: list[Outcome] = []
        self.writing: list[Outcome] = []  # the batch on its way to Redis now
        self.wake: Event = gevent.event.Event()
        self.closing = False
        self.riding = False  # True while the fetcher will carry the outcomes of jobs done on its next fetch
        self.slots: Slots = {}  # the fetch's, shared (manager.py): each outcome gives back its payload's slot
        self.releases: list[str] = []  # slots of jobs that have ended, to give back with the next write
        self.failing_since: float | None = None  # monotonic time of the first failed write of an outage

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome for the next flush (or, for a plain one while the fetcher rides, its next fetch)."""
        if self.slots:
            slot = slot_of(outcome.raw, self.slots)
            if slot is not None:
                self.releases.append(slot)
        self.pending.append(outcome)
        if not self.riding or not rides(outcome):
            self.wake.set()

    def run(self) -> None:
        """Flush whenever something is pending, until closed (runs in its own greenlet)."""
        backoff = Backoff()
        while not (self.closing and not self.pending):
            self.wake.wait()
            if self.riding and not self.closing and all(rides(o) for o in self.pending):
                self.wake.clear()
                continue
            try:
                self.flush()
            except redis.RedisError as exc:
                self._failed(exc)
                gevent.sleep(backoff.failed())
            else:
                self._succeeded()
                backoff.succeeded()

    def _failed(self, exc: redis.RedisError) -> None:
        """Log the first failure of an outage only: the jobs stay held, the batch is retried with back-off."""
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning(
                "could not acknowledge %d job(s); they stay held, retrying with back-off until Redis takes writes: %s",
                len(self.pending),
                exc,
            )
        else:
            log.debug("acknowledging failed again (%d job(s) held): %s", len(self.pending), exc)

    def _succeeded(self) -> None:
        if self.failing_since is not None:
            log.info("acknowledgements written again after %.1fs", time.monotonic() - self.failing_since)
            self.failing_since = None

    def ride(self, riding: bool) -> None:
        """Say whether the fetcher will carry plain acknowledgements; when it stops doing so, write them now."""
        self.riding = riding
        if not riding and (self.pending or self.releases):
            self.wake.set()

    def take_plain(self) -> list[bytes]:
        """Hand over the pending plain acknowledgements, as the bytes held in Redis."""
        if not self.pending:
            return []
        plain = [payload_mod.wire(o.raw) for o in self.pending if o.plain]
        if plain:
            self.pending = [o for o in self.pending if not o.plain]
        return plain

    def take_ends(self) -> list[Outcome]:
        """Hand over the pending outcomes of jobs done that are not plain (a status, a batch or a lock to write):
        the fetcher writes them in the same write as its next fetch (fetch.ReliableFetch.take)."""
        if not self.pending:
            return []
        ends = [o for o in self.pending if not o.plain and rides(o)]
        if ends:
            self.pending = [o for o in self.pending if o.plain or not rides(o)]
        return ends

    def take_releases(self) -> list[str]:
        """Hand over the slots to give back: the fetcher carries them in its next fetch."""
        releases, self.releases = self.releases, []
        return releases

    def give_back(self, raws: Sequence[bytes], ends: Sequence[Outcome] = (), releases: Sequence[str] = ()) -> None:
        """Take back acknowledgements, outcomes and slots to give back that could not be sent (writing one twice is
        harmless)."""
        self.releases[:0] = releases
        for raw in raws:
            self.add(Outcome(raw.decode("utf-8", "surrogateescape")))
        for outcome in ends:
            self.add(outcome)

    def close(self) -> None:
        """Let run() return once everything pending is written."""
        self.closing = True
        self.wake.set()

    def flush(self) -> None:
        """Write every pending outcome in one script call."""
        batch, self.pending = self.pending, []
        releases, self.releases = self.releases, []
        self.wake.clear()
        if not batch and not releases:
            return
        self.writing = batch
        try:
            held = settle(self.script, self.keys, self.working, batch, self.conn, releases)
        except BaseException:
            self.pending[:0] = batch
            self.releases[:0] = releases
            self.wake.set()
            raise
        finally:
            self.writing = []
        self.report_not_held(batch, held)

    @staticmethod
    def report_not_held(batch: Sequence[Outcome], held: int) -> None:
        """Say when outcomes found their payload gone from the working list: nothing was stored for them.

        A plain acknowledgement may be written twice (given back after a fetch that did run), so only more
        misses than plain ones in the batch prove a failure's outcome dropped: this process was cut off from
        Redis past its heartbeat TTL and another one adopted its jobs (and runs them again).
        """
        missed = len(batch) - held
        if missed > sum(1 for o in batch if o.plain):
            log.warning(
                "%d of %d outcome(s) not written: this process no longer holds those jobs (adopted by another "
                "process while this one could not reach Redis; they run there again)",
                missed,
                len(batch),
            )
        elif missed:
            log.debug("%d acknowledgement(s) were written already", missed)

    def holding(self) -> list[str]:
        """The raw payloads whose outcome is waiting to be written (still in the working list meanwhile)."""
        return [o.raw for o in self.pending] + [o.raw for o in self.writing]

    def drain(self, deadline: float) -> bool:
        """Flush until nothing is pending or `deadline` (monotonic) passes; True when all was written."""
        while (self.pending or self.releases) and time.monotonic() < deadline:
            try:
                self.flush()
            except redis.RedisError as exc:
                self._failed(exc)
                gevent.sleep(0.2)
        return not self.pending and not self.releases
