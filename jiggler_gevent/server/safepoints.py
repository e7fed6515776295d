"""Where an exception thrown into a running greenlet may safely land, and the exceptions waiting for one.

An exception raised at an arbitrary bytecode can leave a lock held or a Redis connection checked out, so at a
forced yield (preempt.py) an exception thrown into a job (its timeout, an interrupt) is raised only when every
frame between the interrupted one and the job's call site is the user's own code ("safe"). Otherwise it is
deferred: kept in `deferrals`, tried again at the greenlet's next forced yield, and thrown at its next ordinary
switch by a short timer. A JobTimeout that finds no safe point within STUCK_FACTOR x its timeout is "stuck":
the switcher then asks the processor to abandon the job.
"""

import os
import site
import sys
import sysconfig
import time
from collections.abc import Iterable
from types import CodeType, FrameType
from typing import Any, cast

import gevent
import gevent.timeout
import greenlet

from ..errors import CancelJob, JobTimeout
from ..gevent_types import Hub, RawGreenlet, Timeout, Watcher

STUCK_FACTOR = 10  # a deferred JobTimeout is "stuck" after max(STUCK_FACTOR x timeout, STUCK_MIN) seconds
STUCK_MIN = 1.0
REDELIVER_PRIORITY = -2  # behind every ordinary event of a loop pass, like the forced yields
PACKAGE = __package__.partition(".")[0]  # jiggler_gevent itself

USER, LIBRARY, MACHINERY = 0, 1, 2


# -- where code lives ----------------------------------------------------------------------------------


def _package_dir(module: Any) -> str | None:
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) if path else None


class CodeMap:
    """Sorts source files into the user's code, libraries, and gevent's machinery (never to be yielded).

    Libraries: the standard library, site-packages, and gevent, greenlet, redis and jiggler_gevent wherever
    they are installed. The packages that define registered jobs count as the user's even when they are
    installed in site-packages (jiggler_gevent's examples: their own folder only).
    """

    def __init__(self, machinery_files: Iterable[str] = ()) -> None:
        self._kinds: dict[str, int] = {}
        self._machinery = tuple(os.path.abspath(p) for p in machinery_files)
        self._machinery_dirs = tuple(d + os.sep for d in filter(None, map(_package_dir, (gevent, greenlet))))
        self._library: tuple[str, ...] | None = None
        self._user: tuple[str, ...] = ()

    def _roots(self) -> None:
        import redis

        from ..job import JobFunction, lookup, registered

        paths = sysconfig.get_paths()
        dirs = [paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
        dirs += list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()]
        dirs += [_package_dir(redis), _package_dir(sys.modules[PACKAGE])]
        self._library = tuple(os.path.abspath(d) + os.sep for d in dirs if d)
        user = set()
        for name in registered():
            module = sys.modules.get(cast(JobFunction, lookup(name)).func.__module__)  # registered: never None
            top = sys.modules.get(module.__name__.partition(".")[0]) if module else None
            if top is sys.modules[PACKAGE]:
                top = module
            d = _package_dir(top)
            if d:
                user.add(d + os.sep)
        self._user = tuple(user)

    def kind(self, filename: str) -> int:
        """USER, LIBRARY or MACHINERY for a code object's `co_filename`."""
        k = self._kinds.get(filename)
        if k is None:
            k = self._kinds[filename] = self._classify(filename)
        return k

    def _classify(self, filename: str) -> int:
        if self._library is None:
            self._roots()
        if filename.startswith("<"):
            return LIBRARY  # frozen importlib, exec'd strings: nothing to tell us they are safe
        path = os.path.abspath(filename)
        if path in self._machinery or path.startswith(self._machinery_dirs):
            return MACHINERY
        if path.startswith(self._user):
            return USER
        return LIBRARY if path.startswith(self._library or ()) else USER

    def scan(self, frame: FrameType | None, boundary: CodeType | None) -> tuple[bool, bool]:
        """(inside gevent's machinery, safe to raise here) for the stack from `frame` outwards.

        Safe: every frame up to the one running `boundary` (the code that calls the job function) is the
        user's. A greenlet that is not running a job is safe only if its whole stack is the user's.
        The outermost frame of a greenlet may be gevent's Greenlet.run (pure-Python builds): not counted.
        """
        safe = True
        f = frame
        while f is not None:
            code = f.f_code
            if code is boundary:
                return False, safe
            k = self.kind(code.co_filename)
            if k == MACHINERY and f.f_back is not None:
                return True, False
            if k != USER:
                safe = False
            f = f.f_back
        return False, safe


# -- exceptions waiting for a safe point ------------------------------------------------------------------


def _stuck_limit(exc: BaseException) -> float | None:
    """Seconds a deferred JobTimeout or CancelJob may wait for a safe point; None: other exceptions wait as long
    as it takes."""
    if isinstance(exc, JobTimeout) and exc.seconds > 0:
        return max(STUCK_FACTOR * exc.seconds, STUCK_MIN)
    if isinstance(exc, CancelJob):
        return exc.stop_within
    return None


class Deferred:
    """An exception thrown into a greenlet at a point where it could not be raised."""

    __slots__ = ("exc", "since", "limit", "escalated", "timer")

    def __init__(self, exc: BaseException, since: float) -> None:
        self.exc = exc
        self.since = since
        self.limit = _stuck_limit(exc)
        self.escalated = False
        self.timer: Watcher | None = None

    def stuck(self, now: float) -> bool:
        """True once, when a JobTimeout has waited past its limit."""
        if self.escalated or self.limit is None or now - self.since < self.limit:
            return False
        self.escalated = True
        return True


class Deferrals:
    """The deferred exception of each greenlet, and the timer that throws it at its next ordinary switch."""

    def __init__(self) -> None:
        self._by_greenlet: dict[RawGreenlet, Deferred] = {}
        self.waiting: dict[RawGreenlet, Deferred] = self._by_greenlet  # read-only: empty when nothing waits

    def get(self, glet: RawGreenlet) -> Deferred | None:
        """The exception waiting in `glet`, if any (and still wanted)."""
        record = self._by_greenlet.get(glet)
        if record is not None and _is_closed_timeout(record.exc):
            self.forget(glet)
            return None
        return record

    def defer(self, glet: RawGreenlet, exc: BaseException) -> Deferred:
        """Keep `exc` for `glet` (the newest wins; the wait counts from the first) and arm redelivery."""
        record = self._by_greenlet.get(glet)
        if record is None:
            record = self._by_greenlet[glet] = Deferred(exc, time.monotonic())
        elif record.exc is not exc:
            record.exc = exc
            record.limit = record.limit or _stuck_limit(exc)
        if record.timer is None:
            # Fires at the next loop pass, which runs only once glet has switched out: if that was an
            # ordinary switch the exception lands there; if a forced yield, the switcher decides again.
            hub: Hub = gevent.get_hub()
            record.timer = hub.loop.timer(0.0, priority=REDELIVER_PRIORITY)
            record.timer.start(self._redeliver, glet, record)
        return record

    def forget(self, glet: RawGreenlet) -> Deferred | None:
        """Drop what waits in `glet` (delivered, or no longer wanted)."""
        record = self._by_greenlet.pop(glet, None)
        if record is not None:
            self._close(record)
        return record

    @staticmethod
    def _close(record: Deferred) -> None:
        if record.timer is not None:
            record.timer.stop()
            record.timer.close()
            record.timer = None

    def _redeliver(self, glet: RawGreenlet, record: Deferred) -> None:
        self._close(record)
        if self._by_greenlet.get(glet) is not record:
            return
        if glet.dead or _is_closed_timeout(record.exc):
            # Never throw into a dead greenlet (it would raise here, in the hub), nor a user's
            # gevent.Timeout whose `with` block has ended since.
            self._by_greenlet.pop(glet, None)
            return
        glet.throw(record.exc)

    def __len__(self) -> int:
        return len(self._by_greenlet)


_CLOSED_TIMER: object = getattr(gevent.timeout, "_FakeTimer", None)  # what Timeout.close() leaves in .timer


def _is_closed_timeout(exc: BaseException) -> bool:
    return isinstance(exc, gevent.Timeout) and _CLOSED_TIMER is not None and cast(Timeout, exc).timer is _CLOSED_TIMER


deferrals = Deferrals()


def describe_stack(frame: FrameType | None, limit: int = 6) -> list[str]:
    """`file:line function` for the innermost frames, for logs."""
    out: list[str] = []
    while frame is not None and len(out) < limit:
        out.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return out
