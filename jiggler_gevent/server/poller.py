"""The Poller: moves due jobs from the scheduled and retry sets to their queues.

Each move is one Lua script (move_due.lua), so two processes polling at once never move the same
job twice. The wait between polls is drawn at random from 0.5x to 1.5x the interval, so that many
processes started together do not poll in step.
"""

import logging
import random
import time

import redis

from .. import config
from ..keys import Keys
from ..scripts import Scripts
from .loop import Loop

log = logging.getLogger("jiggler_gevent.poller")

BATCH = 100


class Poller:
    """Polls the scheduled and retry sets until stopped."""

    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, interval: float = config.DEFAULT_POLL_INTERVAL
    ) -> None:
        self.redis, self.keys, self.scripts = client, keys, scripts
        self.interval = interval
        self.loop = Loop(self._poll)
        self.failing_since: float | None = None  # one warning per outage (Redis away or refusing writes), not per poll

    def start(self) -> None:
        """Poll once now, then every interval or so."""
        self.loop.start()

    def stop(self) -> None:
        """Stop polling."""
        self.loop.stop()

    def _poll(self) -> float:
        try:
            self.enqueue_due()
        except redis.RedisError as exc:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                log.warning("polling the scheduled and retry sets failed, retrying every poll: %s", exc)
        else:
            if self.failing_since is not None:
                log.info("polling works again after %.1fs", time.monotonic() - self.failing_since)
                self.failing_since = None
        return self.interval * random.uniform(0.5, 1.5)

    def enqueue_due(self, now: float | None = None) -> int:
        """Move every job due by `now` to its queue; returns how many moved."""
        moved = 0
        for zset in (self.keys.schedule, self.keys.retry):
            while True:
                n = int(
                    self.scripts.move_due(
                        keys=[zset, self.keys.queues, self.keys.wake],
                        args=[
                            now if now is not None else time.time(),
                            BATCH,
                            self.keys.queue_prefix,
                            config.DEFAULT_QUEUE,
                        ],
                    )
                )
                moved += n
                if n < BATCH:
                    break
        return moved
