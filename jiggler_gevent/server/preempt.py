"""The switcher: a greenlet that holds the hub past the threshold is made to yield.

A native OS thread (gevent's original `start_new_thread`, sleeping with the original `time.sleep`) wakes
every threshold/4 and reads how many passes the event loop has completed (a libev check watcher whose
callback is a C-level counter, so a pass costs no Python bytecode). When no pass has completed for the
threshold, it calls `_thread.interrupt_main(SIGURG)`: the main thread then runs our signal handler between
two bytecodes of the greenlet that is running, and the handler yields it on a timer of the lowest
priority, so every ordinary event of the next pass (timers, I/O, the other jobs' replies) runs before the
preempted greenlets resume. Counting passes rather than per-greenlet slices keeps the worst wait near the
threshold when several greenlets burn CPU at once: while a pass is overdue, each one is cut at the next
wake of the thread.

Never yielded: the hub, and a greenlet whose stack is inside gevent or greenlet. Exceptions thrown into a
greenlet while it is yielded here are raised only at a safe point (safepoints.py). The switcher knows the jobs
only through the JobRunner interface (the Processor): which job a greenlet runs, where a job's stack begins,
and how to give up on a job whose timeout found no safe point. The thread holds the hub
only by weak reference and touches nothing but plain attributes; it is restarted in a forked child.

What it cannot cut short: C code that holds the GIL (the thread itself cannot run), and blocking calls
that gevent does not patch. Both are detected afterwards (the handler runs late, or the thread woke late
while the main thread stayed runnable: MainThreadBusy) and logged with the job's name and how long the hub was held.
"""

import _thread
import ctypes
import itertools
import logging
import math
import os
import signal
import time
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Optional, Protocol, cast

import gevent
from gevent import monkey

from .. import config
from ..gevent_types import Hub, RawGreenlet, Watcher
from ..middleware import JobContext
from . import safepoints

log = logging.getLogger("jiggler_gevent.switcher")

SIGNUM = signal.SIGURG  # ignored by default, so a stray one does no harm
YIELD_SLEEP = 1e-4  # gevent.sleep(0) would not let timers or I/O run (callbacks of the same pass go first)
YIELD_PRIORITY = -2  # libev's lowest
REPORT_EVERY = 10.0  # seconds between two reports of the same job blocking the hub
PROBE_INTERVAL = 0.002  # how often the thread looks for a safe point while an exception waits for one
REPORT_MIN = 0.2  # shorter blocks are not reported (a busy machine can delay a thread that long)

_real_sleep: Callable[[float], None] = monkey.get_original("time", "sleep")
_real_start_thread: Callable[[Callable[..., None], tuple[object, ...]], int] = monkey.get_original(
    "_thread", "start_new_thread"
)
_real_get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
_real_get_native_id: Callable[[], int] = monkey.get_original("_thread", "get_native_id")
_real_lock: Callable[[], _thread.LockType] = monkey.get_original("_thread", "allocate_lock")

Request = tuple[float, float, int]  # (asked at, last pass seen at, passes then)


def resolve_threshold(option: float | None) -> float:
    """The threshold in force: `--preempt` when given, else `configure(preempt=...)`, else the default."""
    value = option if option is not None else config.current().extra.get("preempt", config.DEFAULT_PREEMPT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"preempt must be a number of seconds >= 0 (0 turns pre-emption off), not {value!r}")
    return float(value)


class PassCounter:
    """Counts event-loop passes; `tick` is a C callable, read back by `value` from any thread."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self.tick = self._count.__next__

    @property
    def value(self) -> int:
        return int(repr(self._count)[6:-1])  # "count(N)": reading never advances it


class MainThreadBusy:
    """Seconds the main thread has been runnable: on a CPU, or waiting in a run queue for one (Linux's schedstat
    of that thread), else its CPU time only. Made in the main thread, read from the switcher's thread.

    C code that holds the GIL keeps the main thread runnable throughout; on a loaded machine it gets only a share
    of a CPU, so its CPU time alone would read as if it had been idle (a 1 s hold read 1.0 s of CPU over 5.5 s at
    load 8). An idle main thread (asleep in the loop's poll) is neither. The file is read with libc's pread called
    through ctypes.PyDLL, which keeps the GIL (os.pread lets go of it): the main thread must not run on between the
    switcher's wake and its interrupt, or the report would land in whatever greenlet runs next, often the hub."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.clock: int | None = None
        self.buffer = ctypes.create_string_buffer(128)
        try:
            self.fd = os.open(f"/proc/self/task/{_real_get_native_id()}/schedstat", os.O_RDONLY)
        except OSError:
            try:
                self.clock = time.pthread_getcpuclockid(_real_get_ident())
            except (AttributeError, OSError):
                pass

    def seconds(self) -> float | None:
        """The runnable seconds so far (None when this system tells neither)."""
        try:
            if self.fd is not None and _pread_keeping_gil is not None:
                size = _pread_keeping_gil(self.fd, self.buffer, len(self.buffer), 0)
                on_cpu, waiting, _ = self.buffer.raw[: max(size, 0)].split()
                return (int(on_cpu) + int(waiting)) / 1e9
            return time.clock_gettime(self.clock) if self.clock is not None else None
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Close the schedstat file (in the thread that reads it, as it ends)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _libc_pread() -> Callable[..., int] | None:
    """libc's pread, called with the GIL kept (ctypes.PyDLL); None where there is no such libc."""
    try:
        pread = ctypes.PyDLL(None).pread
    except (OSError, AttributeError):
        return None
    pread.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long]
    pread.restype = ctypes.c_ssize_t
    return cast("Callable[..., int]", pread)


_pread_keeping_gil = _libc_pread()


class JobRunner(Protocol):
    """What the switcher knows of whatever runs the jobs (the Processor)."""

    @property
    def call_site(self) -> CodeType:
        """The code of the frame that calls a job function: a job's own frames are those inside it."""

    def job_on(self, glet: RawGreenlet) -> JobContext | None:
        """The job whose code `glet` runs now, if any (named in reports)."""

    def abandon(self, glet: RawGreenlet, exc: BaseException) -> JobContext | None:
        """Fail the job `glet` runs as if it had raised `exc`, while it goes on running."""


class Switcher:
    """Watches the hub and forces a greenlet that holds it past `threshold` seconds to yield.

    With a `runner`, a JobTimeout that found no safe point in time makes it abandon the job, and then
    `on_abandon()` is called (the Launcher stops the worker gracefully), in a new greenlet.
    """

    def __init__(
        self, threshold: float, runner: JobRunner | None = None, on_abandon: Callable[[], None] | None = None
    ) -> None:
        if threshold <= 0:
            raise ValueError("the switcher needs a threshold > 0")
        self.threshold = threshold
        self.interval = max(threshold / 4, 0.001)
        self.runner = runner
        self.on_abandon = on_abandon
        # Stack scans stop at the job's call site; without a runner they cover the whole stack.
        self.boundary: CodeType | None = runner.call_site if runner is not None else None
        self.code_map = safepoints.CodeMap([__file__, safepoints.__file__])
        self.forced = self.deferred = self.reports = 0
        self.running = False
        self._passes = PassCounter()
        self._hub_ref: weakref.ref[Hub] | None = None
        self._check: Watcher | None = None
        self._previous: Callable[[int, FrameType | None], object] | int | signal.Handlers | None = None
        self._request: Request | None = None
        self._stall = 0.0
        self._probe = False
        self._pid = 0
        self._alive: _thread.LockType | None = None
        self._last_report: dict[str, float] = {}

    def start(self) -> None:
        """Install the signal handler and the loop watcher, then start the thread. Main thread only."""
        global _active
        self.code_map.kind(__file__)  # read the library and job folders now, not inside a signal handler
        hub: Hub = gevent.get_hub()
        self._hub_ref = weakref.ref(hub)
        self._check = hub.loop.check(ref=False)
        self._check.start(self._passes.tick)
        self._previous = signal.signal(SIGNUM, self._on_signal)
        self.running = True
        _active = weakref.ref(self)
        self._start_thread()

    def stop(self) -> None:
        """Stop the thread (waiting up to a second for it), the watcher and the handler."""
        if self.running:
            log.info(
                "switcher stopped: %d forced yield(s), %d exception(s) deferred to a safe point, "
                "%d report(s) of a blocked hub",
                self.forced,
                self.deferred,
                self.reports,
            )
        self.running = False
        if self._check is not None:
            self._check.stop()
            self._check.close()
            self._check = None
        signal.signal(SIGNUM, self._previous if self._previous is not None else signal.SIG_DFL)
        if self._alive is not None and self._pid == os.getpid():
            if self._alive.acquire(True, 1.0):
                self._alive.release()

    def _start_thread(self) -> None:
        if not self.running or self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._request, self._stall = None, 0.0
        self._alive = _real_lock()
        self._alive.acquire()
        _real_start_thread(self._watch, (self._alive, MainThreadBusy()))

    def _after_fork_in_child(self) -> None:
        hub = self._hub_ref() if self._hub_ref else None
        if self.running and hub is not None:
            # Started from the child's loop, so a child that only execs (subprocess) never starts one.
            hub.loop.run_callback(self._start_thread)

    # -- the thread ----------------------------------------------------------------------------------

    def _watch(self, alive: _thread.LockType, busy: MainThreadBusy) -> None:
        pid = os.getpid()
        try:
            seen, since, last, ran = self._passes.value, time.monotonic(), time.monotonic(), busy.seconds()
            while self.running and self._pid == pid:
                # While an exception waits for a safe point, probe often: each probe is a cheap look at
                # the stack, and the sooner one lands in the user's code, the sooner the job stops.
                nap = PROBE_INTERVAL if len(safepoints.deferrals) else self.interval
                _real_sleep(nap)
                now, passes, ran_now = time.monotonic(), self._passes.value, busy.seconds()
                overslept = now - last - nap
                if overslept >= self.threshold and (ran is None or ran_now is None or ran_now - ran >= overslept / 2):
                    # This thread could not run while the main thread wanted a CPU: C code held the GIL.
                    # Interrupt at once, so the handler runs in the greenlet that did it, as it resumes.
                    self._stall = overslept
                    self._request = (now, now - overslept, passes)
                    _thread.interrupt_main(SIGNUM)
                    seen, since = passes, now
                elif passes != seen:
                    seen, since = passes, now
                elif now - since >= self.threshold:
                    if self._request is None:
                        self._request = (now, since, passes)
                    _thread.interrupt_main(SIGNUM)
                if nap == PROBE_INTERVAL:
                    self._probe = True
                    _thread.interrupt_main(SIGNUM)
                last, ran = now, ran_now
        finally:
            busy.close()
            alive.release()

    # -- the main thread ------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        request, self._request = self._request, None
        stall, self._stall = self._stall, 0.0
        probe, self._probe = self._probe, False
        hub = self._hub_ref() if self._hub_ref else None
        if hub is None:
            self.running = False
            return
        current: RawGreenlet = gevent.getcurrent()
        if current is hub or frame is None:
            return  # the hub also runs signal handlers when it wakes from its poll: it is never held
        if request is not None and (stall or self._passes.value == request[2]):
            now = time.monotonic()
            late = stall or now - request[0]  # how long the hub was held beyond what a forced yield allows
            if late >= max(self.threshold, REPORT_MIN):
                self._report_blocked(current, now, stall or now - request[1])
            self._preempt(current, hub, frame)
        elif probe:
            self._deliver_if_safe(current, frame)
        # Otherwise a stray SIGURG, or the loop has passed since the request (it was idle, not held).

    def _deliver_if_safe(self, current: RawGreenlet, frame: FrameType, scan: tuple[bool, bool] | None = None) -> None:
        """Raise the exception waiting in `current` if `frame` is a safe point; escalate if it waited too long."""
        pending = safepoints.deferrals.get(current)
        if pending is None:
            return
        in_machinery, safe = scan or self.code_map.scan(frame, self.boundary)
        now = time.monotonic()
        if pending.stuck(now):
            self._escalate(pending, frame, now)
        if safe and not in_machinery:
            safepoints.deferrals.forget(current)
            raise pending.exc

    def _preempt(self, current: RawGreenlet, hub: Hub, frame: FrameType) -> None:
        scan = in_machinery, safe = self.code_map.scan(frame, self.boundary)
        self._deliver_if_safe(current, frame, scan)
        if in_machinery:
            return  # never switched from inside gevent
        self.forced += 1
        try:
            self._yield(hub)
        except BaseException as exc:  # thrown in while it was switched out: a timeout, a kill
            if safe:
                safepoints.deferrals.forget(current)
                raise
            safepoints.deferrals.defer(current, exc)
            self.deferred += 1

    @staticmethod
    def _yield(hub: Hub) -> None:
        timer = hub.loop.timer(YIELD_SLEEP, priority=YIELD_PRIORITY)
        try:
            hub.wait(timer)
        finally:
            timer.close()

    def _who(self, glet: RawGreenlet) -> tuple[str, str]:
        ctx = self.runner.job_on(glet) if self.runner is not None else None
        if ctx is None:
            return repr(glet), f"greenlet {glet!r}"
        return ctx.name, f"job {ctx.name} (jid {ctx.jid})"

    def _report_blocked(self, current: RawGreenlet, now: float, held: float) -> None:
        key, who = self._who(current)
        if now - self._last_report.get(key, -math.inf) < REPORT_EVERY:
            return
        self._last_report[key] = now
        self.reports += 1
        # Logged from a new greenlet: the interrupted code may be inside logging, holding its lock.
        gevent.spawn(
            log.warning,
            "%s held the hub for %.2fs in code that cannot be pre-empted (C code that "
            "holds the GIL, or a blocking call gevent does not patch, such as psycopg2 without "
            "psycogreen); nothing else ran meanwhile",
            who,
            held,
        )

    def _escalate(self, pending: safepoints.Deferred, frame: FrameType, now: float) -> None:
        where = " <- ".join(safepoints.describe_stack(frame, 4))
        gevent.spawn(
            log.error,
            "%s, but for %.1fs it found no point where it could be stopped safely (it "
            "runs in library code: %s); it is failed now and this worker stops gracefully",
            pending.exc,
            now - pending.since,
            where,
        )
        gevent.spawn(self._give_up, gevent.getcurrent(), pending.exc)

    def _give_up(self, glet: RawGreenlet, exc: BaseException) -> None:
        if self.runner is not None and self.runner.abandon(glet, exc) is not None and self.on_abandon is not None:
            self.on_abandon()


_active: Optional["weakref.ref[Switcher]"] = None


def _after_fork_in_child() -> None:
    switcher = _active() if _active is not None else None
    if switcher is not None:
        switcher._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
