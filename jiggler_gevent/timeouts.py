"""Job timeouts: a job that runs past its `timeout` is stopped and counts as failed.

The timer is a gevent.Timeout armed in the job's own greenlet by TimeoutMiddleware, the last entry of
the server chain, so it covers the job function only. It fires when the job next yields to the hub:
at any I/O or sleep, and in pure-Python CPU loops at the switcher's forced yields (switcher.py).
"""
from typing import Any

import gevent

from .middleware import JobContext, ServerMiddleware


class JobTimeout(BaseException):
    """Raised in a job that ran past its timeout. A BaseException, so `except Exception` cannot swallow it."""


class TimeoutMiddleware(ServerMiddleware):
    """Arms the job's timer before it runs and disarms it after."""

    def before_process(self, ctx: JobContext) -> None:
        seconds = ctx.payload.get("timeout")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
            ctx.timer = gevent.Timeout(seconds, JobTimeout(f"job {ctx.name} ({ctx.jid}) ran past its timeout of {seconds}s"))
            ctx.timer.start()

    def after_process(self, ctx: JobContext) -> None:
        cancel(ctx)


def cancel(ctx: Any) -> None:
    """Disarm the job's timer if it has one."""
    timer = getattr(ctx, "timer", None)
    if timer is not None:
        timer.close()
        ctx.timer = None
