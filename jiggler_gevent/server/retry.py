"""What happens to a job that failed: back to the retry set with back-off, to the dead set, or dropped (a
cancelled one, CancelJob: only removed); and to
a job that met a full limiter (limits.OverLimit): back to the scheduled set, without using a retry, for its
first MAX_RESCHEDULES times (delay: limits.reschedule_delay), then failed like any exception.

RetryMiddleware only decides (sets `ctx.disposition` and updates the payload); the Processor writes
the decision through the Acker, in the same script call that settles the failed run.
"""

import random
import time
import traceback
from collections.abc import Callable

from ..config import DEFAULT_RETRIES
from ..errors import CancelJob
from ..limits import MAX_RESCHEDULES, OverLimit, reschedule_delay
from ..middleware import Disposition, JobContext, ServerMiddleware

BACKTRACE_LINES = 20


def backoff(retry_count: int, rand: random.Random | None = None) -> float:
    """Seconds before retry number `retry_count` (0-based): Sidekiq's count**4 + 15 + rand(10) * (count + 1),
    so that a job retried by either side (wire="sidekiq") waits as Sidekiq would have it wait."""
    r = rand or random
    return retry_count**4 + 15 + r.randrange(10) * (retry_count + 1)


def record_error(ctx: JobContext, exc: BaseException, now: float) -> None:
    """Write the error class, message and a short backtrace into the payload."""
    p = ctx.payload
    p["error_class"] = type(exc).__name__
    p["error_message"] = str(exc)[:2000]
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    p["error_backtrace"] = "".join(lines)[-BACKTRACE_LINES * 160 :]
    p.setdefault("failed_at", now)
    p["retried_at"] = now


class RetryMiddleware(ServerMiddleware):
    """Decides retry, dead or drop for every failed job, from the payload's `retries` and `dead`."""

    def __init__(self, clock: Callable[[], float] = time.time, rand: random.Random | None = None) -> None:
        self.clock, self.rand = clock, rand

    def after_process(self, ctx: JobContext) -> None:
        if ctx.exception is None:
            return
        if isinstance(ctx.exception, CancelJob):
            ctx.disposition = Disposition.CANCEL  # not retried, not buried
            return
        now = self.clock()
        if isinstance(ctx.exception, OverLimit) and self._reschedule(ctx, now):
            return
        record_error(ctx, ctx.exception, now)
        p = ctx.payload
        count = p["retry_count"] + 1 if isinstance(p.get("retry_count"), int) else 0
        retries = p.get("retries", DEFAULT_RETRIES)
        retries = retries if isinstance(retries, int) and not isinstance(retries, bool) else DEFAULT_RETRIES
        if count < retries:
            p["retry_count"] = count
            ctx.disposition = Disposition.RETRY
            ctx.retry_at = now + backoff(count, self.rand)
        else:
            if count:
                p["retry_count"] = count
            ctx.disposition = Disposition.DEAD if p.get("dead", True) is not False else Disposition.DROP

    def _reschedule(self, ctx: JobContext, now: float) -> bool:
        """Put a job over a limit back in the scheduled set; False once it has been put back MAX_RESCHEDULES times."""
        p = ctx.payload
        k = p.get("reschedules", 0)
        k = k if isinstance(k, int) and not isinstance(k, bool) and k >= 0 else 0
        if k >= MAX_RESCHEDULES:
            return False
        p["reschedules"] = k + 1
        ctx.disposition = Disposition.RESCHEDULE
        ctx.retry_at = now + reschedule_delay(k, self.rand)
        return True
