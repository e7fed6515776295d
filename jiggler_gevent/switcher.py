"""The switcher: makes a greenlet that hogs the hub yield, so the others keep their time.

A native OS thread (started with gevent's original `start_new_thread`, sleeping with the original
`time.sleep`) watches how long ago the event loop last completed a pass. Past the threshold it calls
`_thread.interrupt_main(SIGURG)`: the main thread runs our signal handler between two bytecodes of the
greenlet that is running, and the handler yields it with a tiny sleep. Measuring loop passes rather
than switches keeps the worst gap near the threshold when several greenlets burn CPU at once.
The hub and gevent's own machinery are never yielded. The thread holds the hub only by weak reference.
"""
import _thread
import logging
import os
import signal
import time
import weakref
from typing import Any, Optional

import gevent
from gevent import monkey

log = logging.getLogger("jiggler_gevent.switcher")

SIGNUM = signal.SIGURG
YIELD_SLEEP = 1e-4  # gevent.sleep(0) would not let timers or I/O run (see shared notes)
_GEVENT_DIR = os.path.dirname(gevent.__file__)

_real_sleep = monkey.get_original("time", "sleep")
_real_start_thread = monkey.get_original("_thread", "start_new_thread")


class Switcher:
    """Watches the hub and forces a hogging greenlet to yield past `threshold` seconds."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.passes = 0
        self.forced = 0
        self.running = False
        self._hub_ref: Optional["weakref.ref[Any]"] = None
        self._check: Any = None
        self._pid = 0

    def start(self) -> None:
        """Install the handler and the loop watcher and start the thread (on the main thread)."""
        hub = gevent.get_hub()
        self._hub_ref = weakref.ref(hub)
        self._check = hub.loop.check(ref=False)
        self._check.start(self._on_pass)
        signal.signal(SIGNUM, self._on_signal)
        self.running = True
        self._pid = os.getpid()
        _real_start_thread(self._watch, ())

    def stop(self) -> None:
        """Stop the thread and the watcher."""
        self.running = False
        if self._check is not None:
            self._check.stop()
            self._check = None
        signal.signal(SIGNUM, signal.SIG_DFL)

    def _on_pass(self) -> None:
        self.passes += 1

    def _watch(self) -> None:
        interval = self.threshold / 4
        seen, since = self.passes, time.monotonic()
        while self.running and os.getpid() == self._pid:
            _real_sleep(interval)
            now = time.monotonic()
            if self.passes != seen:
                seen, since = self.passes, now
            elif now - since >= self.threshold:
                _thread.interrupt_main(SIGNUM)

    def _on_signal(self, signum: int, frame: Any) -> None:
        hub = self._hub_ref() if self._hub_ref else None
        current = gevent.getcurrent()
        if hub is None or current is hub or frame is None:
            return
        if frame.f_code.co_filename.startswith(_GEVENT_DIR):
            return
        self.forced += 1
        gevent.sleep(YIELD_SLEEP)
