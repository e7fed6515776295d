"""StatsFlush: the processed, failed and expired counts of this process (Counters), added to NS:stat:* with each
heartbeat.

Two counters per name, the total and the UTC day's (kept five years), as Sidekiq's Dashboard reads them. What a
beat fails to write is given back to Counters for the next one; a clean stop writes what is left.
"""

import datetime as dt
from typing import Any

import redis

from ..keys import Keys
from .heartbeat import BeatPart
from .job_metrics import Counters

DAILY_STATS_TTL = 5 * 365 * 24 * 3600


class StatsFlush(BeatPart):
    """Writes the counts Counters gathered since the last beat."""

    at_stop = True

    def __init__(self, keys: Keys, counters: Counters) -> None:
        self.keys, self.counters = keys, counters
        self.taken = (0, 0, 0)  # processed, failed, expired: taken for the beat under way

    def take(self, client: redis.Redis) -> None:
        self.taken = self.counters.take()

    def queue(self, pipe: Any) -> None:
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        for name, n in zip(("processed", "failed", "expired"), self.taken, strict=True):
            if n:
                pipe.incrby(self.keys.stat(name), n)
                pipe.incrby(self.keys.stat(name, day), n)
                pipe.expire(self.keys.stat(name, day), DAILY_STATS_TTL)

    def written(self, replies: list[Any]) -> None:
        self.taken = (0, 0, 0)

    def failed(self) -> None:
        self.counters.give_back(*self.taken)
        self.taken = (0, 0, 0)
