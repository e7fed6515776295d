"""Runs one fetched payload: decode, look up, call through the server chain, hand the outcome to the Acker.

A job's behaviour never escapes this module: whatever it raises (SystemExit and GreenletExit included) is
recorded as a failure. Only the GreenletExit of the Manager killing the job at shutdown (`stopping` set)
passes; such a job is not acknowledged, so the shutdown puts it back in its queue.

The seam for stopping a running job from outside (timeouts today, cancellation next) is three public
methods: `interrupt` raises an exception in a job at its next switch, `abandon` gives up on a job that
could not be stopped safely, and `call_site` is where a job's own stack begins, so that pre-emption
(preempt.py) can tell the job's frames from the worker's.
"""

import logging
import time
from collections.abc import Callable
from types import CodeType

import gevent
from greenlet import GreenletExit

from .. import middleware
from .. import payload as payload_mod
from ..errors import JobTimeout
from ..gevent_types import Hub, RawGreenlet
from ..job import lookup
from ..middleware import Chain, Disposition, JobContext
from .acker import Acker, Outcome
from .timeouts import disarm

log = logging.getLogger("jiggler_gevent.processor")


class Processor:
    """Turns raw payloads into job runs and outcomes."""

    def __init__(self, acker: Acker, chain: Chain | None = None, on_failure: Callable[[], None] | None = None) -> None:
        self.acker = acker
        self.chain = chain if chain is not None else middleware.server
        self.running: dict[int, JobContext] = {}  # by id() of the greenlet running the job
        self.on_failure = on_failure
        self.stopping = False  # set by the Manager before it kills the jobs still running at shutdown
        self._abandoned: set[int] = set()  # id() of the contexts whose outcome `abandon` wrote
        self._interrupts: dict[int, BaseException] = {}  # by id() of the context: asked for, job not ended yet

    @property
    def call_site(self) -> CodeType:
        """The code of the frame that calls a job function: a job's own frames are those inside it."""
        return Processor._run.__code__

    def running_job(self, glet: RawGreenlet) -> JobContext | None:
        """The job `glet` is running now, if any."""
        return self.running.get(id(glet))

    def process(self, raw: str) -> None:
        """Run one payload to its outcome (in the calling greenlet)."""
        try:
            payload = payload_mod.decode(raw)
        except payload_mod.PayloadError as exc:
            self._bury_unrunnable(raw, str(exc))
            return
        func = lookup(payload["name"])
        if func is None:
            self._bury_unrunnable(
                raw,
                f"no job named {payload['name']!r} is registered in this worker "
                "(start it with -r MODULE for the module that defines it)",
            )
            return
        mismatch = func.arguments_error(payload["args"], payload["kwargs"])
        if mismatch:
            self._bury_unrunnable(raw, mismatch)
            return
        ctx = JobContext(payload, raw)
        ctx.func = func.func
        if self._run(ctx):
            self._finish(ctx)

    def _run(self, ctx: JobContext) -> bool:
        """Run the job inside the server chain; False when its outcome was already written (abandoned)."""
        key = id(gevent.getcurrent())
        self.running[key] = ctx
        ctx.started_at = time.time()
        log.debug("start %s jid=%s", ctx.name, ctx.jid)
        try:
            try:
                self.chain.before("before_process", ctx)
                if self._interrupts:
                    self._raise_interrupt(ctx)  # asked for while the before-hooks ran (a hook may swallow it)
                assert ctx.func is not None
                if ctx.exception is None:  # else a before-hook refused the run (e.g. a full concurrency limit)
                    ctx.result = ctx.func(*ctx.payload["args"], **ctx.payload["kwargs"])
            except GreenletExit as exc:
                if self.stopping:
                    raise
                ctx.exception = exc  # raised by the job itself
            except BaseException as exc:  # a job's behaviour must never kill the worker
                ctx.exception = exc
            if self._interrupts:
                self._interrupts.pop(id(ctx), None)  # the job has ended: an interrupt not delivered yet is moot
            if id(ctx) in self._abandoned:
                self._abandoned.discard(id(ctx))
                disarm(ctx)
                return False
            self.chain.after("after_process", ctx)
        except JobTimeout:
            # The timer fired after the job had returned but before it was disarmed: the job is done.
            disarm(ctx)
            self.chain.after("after_process", ctx)
        finally:
            self.running.pop(key, None)
        return True

    def interrupt(self, glet: RawGreenlet, exc: BaseException) -> bool:
        """Raise `exc` in the job `glet` runs, at its next switch (at a forced yield only where that is safe:
        preempt.py). The job ends as if it had raised `exc`. False when `glet` runs no job now."""
        ctx = self.running_job(glet)
        if ctx is None:
            return False
        self._interrupts[id(ctx)] = exc
        hub: Hub = gevent.get_hub()
        hub.loop.run_callback(self._throw, glet, ctx)
        return True

    def _throw(self, glet: RawGreenlet, ctx: JobContext) -> None:
        exc = self._interrupts.get(id(ctx))  # None once the job has ended: never into the greenlet's next job
        if exc is not None and self.running_job(glet) is ctx:
            glet.throw(exc)

    def _raise_interrupt(self, ctx: JobContext) -> None:
        exc = self._interrupts.pop(id(ctx), None)
        if exc is not None:
            raise exc

    def abandon(self, glet: RawGreenlet, exc: BaseException) -> JobContext | None:
        """Give up on the job `glet` runs: fail it as if it had raised `exc` and write its outcome now, while
        it goes on running (it found no point where it could be stopped safely). When it ends, nothing more
        is written for it. Called from another greenlet than the job's; None when `glet` runs no job."""
        ctx = self.running_job(glet)
        if ctx is None or id(ctx) in self._abandoned:
            return None
        self._abandoned.add(id(ctx))
        ctx.exception = exc
        self.chain.after("after_process", ctx)
        self._finish(ctx)
        return ctx

    def _finish(self, ctx: JobContext) -> None:
        elapsed = time.time() - ctx.started_at
        if ctx.disposition == Disposition.RESCHEDULE:
            log.info("over limit %s jid=%s: %s; rescheduled", ctx.name, ctx.jid, ctx.exception)
        elif ctx.exception is None:
            log.debug("done %s jid=%s in %.3fs", ctx.name, ctx.jid, elapsed)
        else:
            exc = ctx.exception
            log.warning(
                "fail %s jid=%s after %.3fs: %s: %s -> %s",
                ctx.name,
                ctx.jid,
                elapsed,
                type(exc).__name__,
                exc,
                ctx.disposition,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            middleware.notify_error(exc, ctx)
        self._commit(ctx)

    def _commit(self, ctx: JobContext) -> None:
        d = ctx.disposition
        if d in (Disposition.RETRY, Disposition.RESCHEDULE) and ctx.retry_at is not None:
            make = Outcome.retry if d == Disposition.RETRY else Outcome.reschedule
            self.acker.add(make(ctx.raw, payload_mod.encode(ctx.payload), ctx.retry_at))  # a unique lock stays held
        elif d in (Disposition.DEAD, Disposition.RETRY, Disposition.RESCHEDULE):
            # RETRY without a time means the retry middleware failed (e.g. a mistyped retry_count): bury
            # the job rather than acknowledge a failure that was never recorded anywhere.
            self.acker.add(self._unlocking(ctx, Outcome.dead(ctx.raw, payload_mod.encode(ctx.payload), time.time())))
            middleware.notify_death(ctx.payload, ctx.exception)
        else:
            outcome = Outcome(ctx.raw, Disposition.DROP if d == Disposition.DROP else Disposition.ACK)
            self.acker.add(self._unlocking(ctx, outcome))

    def _unlocking(self, ctx: JobContext, outcome: Outcome) -> Outcome:
        """The outcome of a job that ended for good, releasing its unique lock in the same settle step."""
        digest = payload_mod.unique_lock(ctx.payload)
        if digest is None or ctx.payload.get("unique_until") == "start":  # released when it started
            return outcome
        return outcome.releasing(self.acker.keys.unique(digest), ctx.jid)

    def _bury_unrunnable(self, raw: str, error: str) -> None:
        entry = payload_mod.salvage(raw, error)
        log.error("dead %s jid=%s: %s", entry.get("name", "?"), entry["jid"], error)
        self.acker.add(Outcome.dead(raw, payload_mod.encode(entry), time.time()))
        if self.on_failure is not None:
            self.on_failure()
        middleware.notify_death(entry, None)
