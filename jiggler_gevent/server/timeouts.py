"""Job timeouts: a job past its `timeout` gets JobTimeout.

TimeoutMiddleware, the last entry of the server chain, arms a gevent.Timeout around the job function only.
The timer fires when the job next yields: at any I/O or sleep (an ordinary switch, where gevent code expects
exceptions), or, in CPU-bound code, at one of the switcher's forced yields (preempt.py), where it is raised
only at a safe point (safepoints.py). A JobTimeout that finds no safe point in time makes the switcher
abandon the job (Processor.abandon) and stop the worker gracefully.
"""

from typing import cast

import gevent

from ..errors import JobTimeout
from ..gevent_types import Timeout
from ..middleware import JobContext, ServerMiddleware
from .safepoints import deferrals


class TimeoutMiddleware(ServerMiddleware):
    """Arms the job's timer before it runs and disarms it after."""

    def before_process(self, ctx: JobContext) -> None:
        seconds = ctx.payload.get("timeout")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
            exc = JobTimeout(f"job {ctx.name} ({ctx.jid}) ran past its timeout of {seconds}s", seconds)
            ctx.timer = cast(Timeout, gevent.Timeout(seconds, exc))
            ctx.timer.start()

    def after_process(self, ctx: JobContext) -> None:
        disarm(ctx)


def disarm(ctx: JobContext) -> None:
    """Disarm the job's timer, and drop any exception still waiting for a safe point in this greenlet."""
    timer: Timeout | None = ctx.timer
    if timer is not None:
        timer.close()
        ctx.timer = None
    deferrals.forget(gevent.getcurrent())
