"""The Manager: keeps up to `concurrency` jobs running on a pool of greenlets.

One fetcher greenlet takes exactly as many payloads as there are free slots (so nothing waits in
memory unstarted), one Acker greenlet writes outcomes in batches. Lifecycle: start, quiet (stop
fetching), stop(deadline) (quiet, wait for running jobs until the deadline, kill the rest, write every
outcome, put every payload still held back in its queue). See fetch.py for the delivery guarantee.
"""
import logging
import time
from typing import Optional

import gevent
import gevent.pool
import redis

from .fetch import Acker, ReliableFetch
from .processor import Processor

log = logging.getLogger("jiggler_gevent.manager")

MAX_BACKOFF = 5.0


class Manager:
    """Fetches and runs jobs until quieted or stopped."""

    def __init__(self, fetch: ReliableFetch, processor: Processor, acker: Acker, concurrency: int) -> None:
        self.fetch, self.processor, self.acker = fetch, processor, acker
        self.concurrency = concurrency
        self.pool = gevent.pool.Pool(concurrency)
        self.fetcher: Optional[gevent.Greenlet] = None
        self.acker_greenlet: Optional[gevent.Greenlet] = None

    @property
    def busy(self) -> int:
        """Jobs running now."""
        return len(self.pool)

    def start(self) -> None:
        """Start fetching and acknowledging."""
        self.acker_greenlet = gevent.spawn(self.acker.run)
        self.fetcher = gevent.spawn(self._fetch_loop)

    def quiet(self) -> None:
        """Stop fetching new jobs; running ones go on."""
        if self.fetcher is not None:
            # Killing it mid-command is safe: a payload it moved is in the working list, swept at stop.
            self.fetcher.kill(block=True)
            self.fetcher = None

    def stop(self, timeout: float) -> int:
        """Quiet, wait up to `timeout` s for running jobs, kill the rest and put back what was not done.

        Returns how many payloads went back to their queues.
        """
        self.quiet()
        if not self.pool.join(timeout=timeout):
            log.warning("%d job(s) still running after %.1fs; stopping them and putting them back", len(self.pool), timeout)
            self.pool.kill(block=True, timeout=5)
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
        backoff = 0.1
        while True:
            self.pool.wait_available()
            gevent.sleep(0)  # let the jobs that are finishing now finish, so one round trip acks them all
            acks = self.acker.take_plain()
            try:
                raws = self.fetch.take(self.pool.free_count(), acks) or self.fetch.wait_for_one()
                backoff = 0.1
            except BaseException as exc:
                self.acker.give_back(acks)
                if not isinstance(exc, redis.RedisError):
                    raise
                log.warning("fetch failed, retrying in %.1fs: %s", backoff, exc)
                gevent.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            for raw in raws:
                self.pool.spawn(self.processor.process, raw)
