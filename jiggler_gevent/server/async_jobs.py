"""The asyncio event loop that `async def` jobs run on: one per worker process, made when the first one runs.

The loop runs in a greenlet of its own on gevent's hub, with gevent's selector, so the loop's wait for I/O and
timers is a cooperative switch: the loop, the blocking jobs and the worker's own greenlets take turns on one thread.
A job's worker greenlet hands its coroutine over (`call_soon`, then a wake of the loop's wait through the selector's
gevent Event: no system call) and waits on a gevent Event for the task to end. So an async job holds one of the
`-c` slots while it runs, as a blocking job does, and everything around the call (retries, results, limits, the
timeout's timer, cancellation) is unchanged. What the worker greenlet gets while it waits (JobTimeout, CancelJob,
the GreenletExit of a shutdown) cancels the task: the coroutine sees `asyncio.CancelledError` at its next `await`,
and the worker greenlet waits up to CANCEL_GRACE seconds for it to end, then raises what it got.

Guarantees: each coroutine handed over runs at most once, in its job's context (contextvars copied from the worker
greenlet); its job's outcome is decided by the worker greenlet alone, as for a blocking job (at least once across
processes, as every job). A coroutine that computes without awaiting holds the loop, but not the hub: the switcher
(preempt.py) makes the loop's greenlet yield like any other. It cannot be cancelled until it awaits; past
CANCEL_GRACE its job ends anyway (its outcome is written) and the coroutine goes on running in the loop.

The running loop: CPython keeps it per OS thread, not per greenlet, and the loop's greenlet is always inside
`run_forever`, even while it waits. A greenlet trace (installed with the loop) swaps it only at the switches into and
out of the loop's greenlet: the loop's greenlet sees this loop, and the rest of the thread sees what it would see
had the loop never been made. So a blocking job may call `asyncio.run()` while the loop waits, and libraries that
run asyncio through greenlets of their own (Playwright's sync API, SQLAlchemy's asyncio bridge) keep the per-thread
behaviour they rely on.
"""

import asyncio
import contextvars
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

import gevent
import gevent.event
import gevent.selectors
import greenlet
from greenlet import GreenletExit

from ..gevent_types import Event, Greenlet, RawGreenlet

log = logging.getLogger("jiggler_gevent.async_jobs")

CANCEL_GRACE = 3.0  # seconds a cancelled coroutine has to end (the shutdown kills with a 5 s bound)

Trace = Callable[[str, tuple[RawGreenlet, RawGreenlet]], None]


class RunningLoops:
    """Hides the loop's running state from every greenlet but its own: swapped in as that greenlet switches in, and
    the thread's own state put back as it switches out (no other switch is touched)."""

    def __init__(self, owner: RawGreenlet) -> None:
        self.owner = owner  # the loop's greenlet
        self.own: asyncio.AbstractEventLoop | None = None  # its running loop while it is switched out
        self.outside: asyncio.AbstractEventLoop | None = None  # the thread's, while the loop's greenlet runs
        self._previous: Trace | None = greenlet.settrace(self._on_switch)  # chained: a trace set before still runs

    def _on_switch(self, event: str, args: tuple[RawGreenlet, RawGreenlet]) -> None:
        origin, target = args
        if origin is self.owner:
            self.own = asyncio._get_running_loop()
            asyncio._set_running_loop(self.outside)
        elif target is self.owner:
            self.outside = asyncio._get_running_loop()
            asyncio._set_running_loop(self.own)
        if self._previous is not None:
            self._previous(event, args)


class HubSelector(gevent.selectors.GeventSelector):  # type: ignore[misc]
    """gevent's selector, which another greenlet can wake from its wait without the loop's self-pipe: a handover
    then costs no system call (call_soon_threadsafe writes a byte that the loop reads back)."""

    def wake(self) -> None:
        """End the loop's wait now (or its next one): it then runs the callbacks added meanwhile."""
        self._ready.set()


class AsyncJobs:
    """The loop and its greenlet; `run(coro)` runs one coroutine on it from a worker greenlet."""

    def __init__(self) -> None:
        # gevent's selector, whether or not the process is patched: the loop's waits switch to the hub
        self.selector = HubSelector()
        self.loop = asyncio.SelectorEventLoop(self.selector)
        self.greenlet: Greenlet = gevent.spawn(self._serve)
        self.running_loops = RunningLoops(self.greenlet)  # before the greenlet first runs
        self.workers: dict[asyncio.Task[Any], RawGreenlet] = {}  # each task's worker greenlet, while it runs

    def worker_now(self) -> RawGreenlet | None:
        """The worker greenlet whose coroutine the loop is running at this moment (None between tasks): what
        pre-emption's reports name when the loop's greenlet holds the hub. Only reads: safe from a signal handler."""
        task = asyncio.current_task(self.loop)
        return self.workers.get(task) if task is not None else None

    def _serve(self) -> None:
        """Run the loop for as long as the process lives: a job's coroutine that stops it (`loop.stop()`), or raises
        SystemExit or KeyboardInterrupt (which asyncio lets out of the loop, its task failed with it), does not end
        it: the worker greenlets waiting on it would wait forever."""
        while True:
            try:
                self.loop.run_forever()
            except GreenletExit:
                raise  # the process is going away
            except BaseException as exc:
                log.error("%r raised by an async job reached the event loop: the job fails, the loop goes on", exc)
            else:
                log.warning("an async job stopped the event loop: it goes on")

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` to its end on the loop and return its value (or raise its exception). An exception thrown
        into the calling greenlet meanwhile cancels it first, then propagates."""
        task = Handover(coro, contextvars.copy_context(), gevent.getcurrent(), self.workers)
        self.soon(task.start, self.loop)
        try:
            task.done.wait()
        except BaseException:
            task.cancel(self.soon)
            raise
        assert task.task is not None
        return task.task.result()

    def soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Have the loop call `callback(*args)` at its next turn, woken if it waits (from any greenlet of its
        thread: the loop runs on this thread's hub)."""
        self.loop.call_soon(callback, *args)
        self.selector.wake()


class Handover:
    """One coroutine on its way to the loop, and the Event its worker greenlet waits on."""

    __slots__ = ("coro", "context", "worker", "workers", "done", "task", "dropped")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        context: contextvars.Context,
        worker: RawGreenlet,
        workers: dict["asyncio.Task[Any]", RawGreenlet],
    ) -> None:
        self.coro = coro
        self.context = context
        self.worker, self.workers = worker, workers  # AsyncJobs.workers: the task is in it while it runs
        self.done: Event = gevent.event.Event()
        self.task: asyncio.Task[Any] | None = None
        self.dropped = False  # given up before the loop started it: it never runs

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the loop: the coroutine becomes a task (unless given up on meanwhile)."""
        if self.dropped:
            self.coro.close()
            return
        self.task = loop.create_task(self.coro, context=self.context)
        self.workers[self.task] = self.worker
        self.task.add_done_callback(self._ended)

    def _ended(self, task: "asyncio.Task[Any]") -> None:
        self.workers.pop(task, None)
        self.done.set()

    def cancel(self, soon: Callable[..., None]) -> None:
        """Cancel the task (through `soon`, AsyncJobs.soon) and wait up to CANCEL_GRACE for it to end; anything
        thrown in meanwhile ends the wait."""
        if self.task is None:
            self.dropped = True  # the loop has not started it yet; start() closes it unrun
            return
        soon(self.task.cancel)
        try:
            if self.done.wait(CANCEL_GRACE):
                return
        except BaseException:  # a second interrupt: the first one is what propagates
            pass
        log.warning(
            "the coroutine of a cancelled job has not ended after %.1fs (it does not await): it goes on running",
            CANCEL_GRACE,
        )


_jobs: AsyncJobs | None = None
_pid = 0


def worker_running(glet: RawGreenlet) -> RawGreenlet | None:
    """When `glet` is this process's loop greenlet: the worker greenlet whose async job it runs now, else None."""
    jobs = _jobs
    if jobs is None or glet is not jobs.greenlet or _pid != os.getpid():
        return None
    return jobs.worker_now()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` on this process's loop (made now if this is the first async job the process runs)."""
    global _jobs, _pid
    if _jobs is None or _pid != os.getpid():
        _jobs, _pid = AsyncJobs(), os.getpid()
    return _jobs.run(coro)
