"""Sweeper: when this process runs the recovery sweep (Recovery.sweep: the jobs of processes whose record expired).

After the first beat whatever its outcome, then after each beat that reached Redis. After an outage it waits one
full record TTL first: the other processes' records may have expired during the outage too, and they are given the
time to beat again before their held jobs are taken for a dead process's.
"""

import logging
import time

import redis

from .heartbeat import BeatPart
from .recovery import Recovery

log = logging.getLogger("jiggler_gevent.monitor")  # the name of the heartbeat's lines, which this line was


class Sweeper(BeatPart):
    """Runs the recovery sweep after the heartbeat's beats (the rule above)."""

    def __init__(self, recovery: Recovery, grace: float) -> None:
        self.recovery = recovery
        self.grace = grace  # seconds without a sweep after an outage: the record TTL
        self.first = True
        self.down = False  # the last beat failed
        self.sweep_after = 0.0  # monotonic time

    def after(self, ok: bool) -> None:
        first, self.first = self.first, False
        if not ok:
            self.down = True
        elif self.down:
            self.down = False
            self.sweep_after = time.monotonic() + self.grace
        if first or (ok and time.monotonic() >= self.sweep_after):
            self.sweep()

    def sweep(self) -> None:
        """Recover the jobs of processes whose heartbeat expired."""
        try:
            self.recovery.sweep()
        except redis.RedisError as exc:
            log.warning("recovery sweep failed: %s", exc)
