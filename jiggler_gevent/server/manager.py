"""The Manager: keeps up to `concurrency` jobs running on a fixed set of worker greenlets.

`concurrency` worker greenlets live as long as the process and run one job after another, as Sidekiq's
threads do (a greenlet per job would cost a greenlet and a fresh frame stack each time). One fetcher
greenlet takes exactly as many payloads as there are idle workers (so nothing waits in memory unstarted)
and hands them over through an in-memory inbox; one Acker greenlet writes outcomes in batches. Lifecycle:
start, quiet (stop fetching), stop(deadline) (quiet, let the workers finish what they hold until the
deadline, kill the rest, write every outcome, put every payload still held back in its queue). See fetch.py
and acker.py for the delivery guarantee. With `max_jobs` the fetcher takes exactly that many payloads in the
process's life, then ends and calls `on_max_jobs` (--max-jobs: the process is then replaced).

A suspect job (held by processes as they died: recovery.py) runs alone. Guarantee: while it runs, this process
holds no other payload, so if it dies then, the recovery blames that job alone. The fetcher takes nothing from
the moment the suspect comes until it has ended; the suspect starts once the jobs already running have ended
and their outcomes are written; a second suspect that comes meanwhile is put back in its queue.
"""

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import gevent
import gevent.event
import gevent.lock
import gevent.queue
import redis
from greenlet import GreenletExit

from ..gevent_types import BoundedSemaphore, Event, Greenlet, Queue
from .acker import Acker, Outcome
from .backoff import Backoff
from .fetch import ReliableFetch
from .processor import Processor

log = logging.getLogger("jiggler_gevent.manager")

_FINISH = None  # put in the inbox once per worker: finish what came before it, then end
ALONE_POLL = 0.02  # seconds between looks, while a suspect job waits to be alone


class Manager:
    """Fetches and runs jobs until quieted or stopped."""

    def __init__(
        self,
        fetch: ReliableFetch,
        processor: Processor,
        acker: Acker,
        concurrency: int,
        max_jobs: int | None = None,
        on_max_jobs: Callable[[], None] | None = None,
    ) -> None:
        self.fetch, self.processor, self.acker = fetch, processor, acker
        self.concurrency = concurrency
        self.max_jobs, self.on_max_jobs = max_jobs, on_max_jobs
        self.taken = 0  # payloads fetched in this process's life
        self.failing_since: float | None = None  # monotonic time of the first failed fetch of an outage, if failing
        # idle workers; only the fetcher acquires
        self.idle: BoundedSemaphore = gevent.lock.BoundedSemaphore(concurrency)
        self.inbox: Queue[str | None] = gevent.queue.Queue()
        self.workers: list[Greenlet] = []
        self.fetcher: Greenlet | None = None
        self.acker_greenlet: Greenlet | None = None
        self.in_hand: dict[str, int] = {}  # raw payloads handed to the workers and not yet processed
        self.running_jobs = 0
        self.finishing = False
        self.gate: Event = gevent.event.Event()  # cleared while a suspect job waits or runs: no fetch then
        self.gate.set()
        self.fetching = False  # a fetch is on its way to Redis (what it brings will run)
        self.quieted = False  # quiet() was called: no fetcher from then on, even one start() would begin later
        self.solo: str | None = None  # the suspect job running alone (or waiting to)
        processor.isolate = self.alone
        fetch.starts = processor.starts  # the fetch script starts tracked jobs; the Processor reads what it found
        acker.slots = fetch.slots  # the fetch script takes `concurrent` slots; each outcome gives its own back

    @property
    def busy(self) -> int:
        """Jobs running now."""
        return self.running_jobs

    def start(self) -> None:
        """Start the workers, fetching and acknowledging."""
        self.workers = [gevent.spawn(self._work) for _ in range(self.concurrency)]
        self.acker_greenlet = gevent.spawn(self.acker.run)
        if not self.quieted:  # a TSTP while the process was starting (its heartbeat already listed) still holds
            self.fetcher = gevent.spawn(self._fetch_loop)

    def quiet(self) -> None:
        """Stop fetching new jobs, for good (also when called before start()); running ones go on."""
        self.quieted = True
        if self.fetcher is not None:
            # Killing it mid-command is safe: a payload it moved is in the working list, swept at stop.
            self.fetcher.kill(block=True)
            self.fetcher = None

    def join(self, timeout: float | None = None) -> bool:
        """After quiet(): let the workers finish the jobs they hold, waiting up to `timeout` s (None: no limit).

        True when every worker has finished.
        """
        if not self.finishing:
            self.finishing = True
            for _ in self.workers:
                self.inbox.put(_FINISH)
        # Read whether they are dead, not what joinall returns: with timeout 0 its timer can fire before the links
        # of greenlets already dead have run, and it then leaves some of them out (seen 3 times in 200 with 50).
        if not all(w.dead for w in self.workers):
            gevent.joinall(self.workers, timeout=timeout)
        return all(w.dead for w in self.workers)

    def stop(self, timeout: float) -> int:
        """Quiet, wait up to `timeout` s for running jobs, kill the rest and put back what was not done.

        Returns how many payloads went back to their queues.
        """
        self.quiet()
        if not self.join(timeout):
            log.warning("%d job(s) still running after %.1fs; stopping them and putting them back", self.busy, timeout)
            self.processor.stopping = True
            gevent.killall(self.workers, block=True, timeout=5)
        self._stop_acker()
        return self._requeue_held()

    def _stop_acker(self) -> None:
        """Write every outcome before anything is requeued, or a finished job would run again."""
        if self.acker_greenlet is not None:
            self.acker.close()
            self.acker_greenlet.join(timeout=10)
            self.acker_greenlet.kill()
            self.acker_greenlet = None
        self.acker.drain(time.monotonic() + 10)

    def _requeue_held(self) -> int:
        deadline = time.monotonic() + 10
        while True:
            try:
                count = self.fetch.requeue_all()
                if count:
                    log.info("put %d unfinished job(s) back in their queues", count)
                return count
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    log.error("could not put unfinished jobs back (they stay held and will be recovered): %s", exc)
                    return 0
                gevent.sleep(0.5)

    def _fetch_loop(self) -> None:
        try:
            self._fetch_until_killed()
        finally:
            self.acker.ride(False)

    def _fetch_until_killed(self) -> None:
        backoff = Backoff()
        while self._may_take():
            # The last fetch found the queues empty: block again at once (no fetch that would find them empty
            # again), and the Acker writes acknowledgements itself meanwhile, as none rides a fetch then.
            drained = self.fetch.drained
            self.acker.ride(not drained)
            self.idle.wait()
            gevent.sleep(0)  # let the jobs that are finishing now finish, so one round trip acks them all
            if not self.gate.is_set():  # a suspect job is to run alone: take nothing until it has ended
                self.acker.ride(False)
                self.gate.wait()
                continue
            self.fetching = True
            acks, ends = ([], []) if drained else (self.acker.take_plain(), self.acker.take_ends())
            releases = [] if drained else self.acker.take_releases()
            try:
                if backoff.failing:
                    self._put_back_orphans(acks, ends)
                raws = [] if drained else self.fetch.take(self._most(), acks, ends, releases)
                if not raws and self.fetch.drained:  # (a fetch that parked all it found did not empty them)
                    self.acker.ride(False)  # the queues are empty: no fetch soon to carry acknowledgements
                    raws = self.fetch.wait(self._most(), self._hand)
                self._fetch_succeeded(backoff)
            except BaseException as exc:
                self.fetching = False
                self.acker.give_back(acks, ends, releases)
                if not isinstance(exc, Exception):  # GreenletExit (quiet, stop): the fetcher ends
                    raise
                self.acker.ride(False)
                gevent.sleep(self._fetch_failed(backoff, exc))
                continue
            self.fetching = False
            for raw in raws:
                self._hand(raw)

    def _hand(self, raw: str) -> None:
        """Give a payload taken to an idle worker."""
        self.taken += 1
        self.idle.acquire(blocking=False)
        self.in_hand[raw] = self.in_hand.get(raw, 0) + 1
        self.inbox.put(raw)

    def _fetch_failed(self, backoff: Backoff, exc: BaseException) -> float:
        """The seconds to wait before the next try; one warning per outage, the later failures at debug level."""
        if not backoff.failing:
            self.failing_since = time.monotonic()
            if isinstance(exc, redis.RedisError):
                log.warning(
                    "fetch failed, retrying with back-off (up to %.0fs) until Redis answers: %s", backoff.cap, exc
                )
            else:  # a bug of ours: the fetcher goes on (what the failed fetch took is put back), and says where
                log.error("fetch failed, retrying with back-off (up to %.0fs): %r", backoff.cap, exc, exc_info=exc)
        delay = backoff.failed()
        log.debug("fetch failed again, retrying in %.1fs: %s", delay, exc)
        return delay

    def _fetch_succeeded(self, backoff: Backoff) -> None:
        if backoff.failing and self.failing_since is not None:
            log.info("fetch works again after %.1fs", time.monotonic() - self.failing_since)
        self.failing_since = None
        backoff.succeeded()

    def _may_take(self) -> bool:
        """False once --max-jobs payloads have been taken: the fetcher ends, and says so."""
        if self.max_jobs is None or self.taken < self.max_jobs:
            return True
        log.info("max jobs reached (%d taken): no new jobs will be fetched", self.taken)
        if self.on_max_jobs is not None:
            self.on_max_jobs()
        return False

    def _most(self) -> int:
        """How many payloads the next fetch may take: one per idle worker, within --max-jobs."""
        if self.max_jobs is None:
            return self.idle.counter
        return min(self.idle.counter, self.max_jobs - self.taken)

    def _work(self) -> None:
        """One worker greenlet: runs the payloads from the inbox, one at a time, until told to finish.

        Nothing a job does ends it: Processor.process keeps every job's exception; anything else that
        reaches here (a bug of ours) is logged, the payload stays held and goes back at shutdown.
        """
        while True:
            try:
                raw = self.inbox.get()
                if raw is _FINISH:
                    return
                self._run_one(raw)
            except GreenletExit:
                raise
            except BaseException:
                log.exception("worker greenlet: unexpected error outside a job; going on")

    def _run_one(self, raw: str) -> None:
        self.running_jobs += 1
        try:
            self.processor.process(raw)
        finally:
            self.running_jobs -= 1
            if self.processor.starts:
                self.processor.starts.pop(raw, None)  # one not run (buried unrunnable, put back) never got there
            left = self.in_hand.pop(raw) - 1
            if left:
                self.in_hand[raw] = left
            self.idle.release()

    @contextlib.contextmanager
    def alone(self, raw: str) -> Iterator[bool]:
        """Run the suspect job `raw` alone (the guarantee above): yields True once this process holds nothing
        else, or False when another suspect runs alone here already and `raw` was put back instead."""
        if self.solo is not None:
            self._put_back(raw)
            yield False
            return
        self.solo = raw
        self.gate.clear()
        self.acker.ride(False)  # plain acknowledgements are written now, not carried by a fetch that waits
        try:
            while not self._holds_only(raw):
                gevent.sleep(ALONE_POLL)
            yield True
        finally:
            self.solo = None
            self.gate.set()

    def _holds_only(self, raw: str) -> bool:
        return self.running_jobs == 1 and not self.fetching and set(self.in_hand) == {raw} and not self.acker.holding()

    def _put_back(self, raw: str) -> None:
        try:
            self.fetch.requeue([raw])
        except redis.RedisError as exc:  # it stays held: the next orphan sweep or the shutdown puts it back
            log.warning("could not put back a suspect job while another one runs alone: %s", exc)

    def _put_back_orphans(self, acks: list[bytes], ends: Sequence[Outcome] = ()) -> None:
        """After a failed fetch: requeue what Redis moved to the working list but whose reply was lost.

        A payload held in Redis that no greenlet runs and no pending outcome covers was taken by a fetch whose
        answer never arrived; left there it would wait for this process's shutdown. Called from the fetcher,
        so no fetch runs meanwhile; one acknowledged in between is skipped by the requeue script.
        """
        held = Counter(self.fetch.held())  # first: a job that ends during this round trip is then counted below
        done = Counter(a.decode("utf-8", "surrogateescape") for a in acks) + Counter(self.acker.holding())
        done += Counter(o.raw for o in ends)
        orphans = held - Counter(self.in_hand) - done
        if orphans:
            n = self.fetch.requeue(list(orphans.elements()))
            log.warning("put back %d job(s) taken by a fetch whose reply was lost", n)
