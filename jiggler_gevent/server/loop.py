"""Loop: a greenlet that runs one step again and again, started and killed (the heartbeat, the Poller, the periodic
Scheduler and the Prometheus snapshots of a supervised child each run one).

Each step returns the seconds to sleep before the next, so that a loop chooses its own rate: a fixed one, a jittered
one, or a back-off after failures. A step handles its own errors: an exception that escapes it ends the loop.
"""

from collections.abc import Callable

import gevent

from ..gevent_types import Greenlet


class Loop:
    """Runs `step` in a greenlet of its own until stopped, sleeping what each run returns in between."""

    def __init__(self, step: Callable[[], float], first_wait: float | None = None) -> None:
        self.step = step
        self.first_wait = first_wait  # seconds to sleep before the first step; None: the first step runs at once
        self.greenlet: Greenlet | None = None

    def start(self) -> None:
        self.greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Kill the greenlet, a step under way included."""
        if self.greenlet is not None:
            self.greenlet.kill()
            self.greenlet = None

    def _run(self) -> None:
        if self.first_wait is not None:
            gevent.sleep(self.first_wait)
        while True:
            gevent.sleep(self.step())
