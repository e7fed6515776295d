"""Runs one fetched payload: decode, look up, call through the server chain, hand the outcome to the Acker.

A job's behaviour never escapes this module: whatever it raises (SystemExit and GreenletExit included) is
recorded as a failure. Only the GreenletExit of the Manager killing the job at shutdown (`stopping` set)
passes; such a job is not acknowledged, so the shutdown puts it back in its queue.

The seam for stopping a running job from outside (timeouts and cancellation) is three public methods:
`interrupt` raises an exception in a job at its next switch, `abandon` gives up on a job that could not be
stopped safely, and `call_site` is where a job's own stack begins, so that pre-emption (preempt.py) can tell
the job's frames from the worker's. `cancel` uses it to stop a running job; a payload whose jid is in
`cancelled` (kept by cancels.py) is not started at all, whoever fetched it and however (recovered ones too).
"""

import logging
import time
import types
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import CodeType
from typing import Any

import gevent
from greenlet import GreenletExit

from .. import middleware, wire
from .. import payload as payload_mod
from ..batch import running_bid
from ..errors import CancelJob, JobTimeout
from ..gevent_types import Hub, RawGreenlet
from ..job import lookup
from ..logs import current_job, job_fields
from ..middleware import Chain, Disposition, JobContext, call_each
from . import async_jobs, ending, tracking
from .acker import Acker, Outcome
from .guards import GUARDS, guarded
from .iteration import Iterations, Paused
from .recovery import suspect
from .timeouts import disarm

log = logging.getLogger("jiggler_gevent.processor")

# What a call returns without running the body it stands for: a coroutine (an async def job) is run on the
# process's asyncio loop (async_jobs.py); a generator (a generator function reached through a wrapper @job could not
# see through) fails the run, which never counts as a success.
NEVER_RUN = frozenset({types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType})


def call(ctx: JobContext, tracked: bool) -> None:
    """Call the job's function (and await the coroutine an async def returns); its result, or why it cannot count
    (a body never run, a result a tracked job cannot keep), in `ctx`. The function's own exception propagates."""
    assert ctx.func is not None
    ctx.result = ctx.func(*ctx.payload["args"], **ctx.payload["kwargs"])
    if type(ctx.result) in NEVER_RUN:
        if type(ctx.result) is not types.CoroutineType:
            ctx.exception = never_ran(ctx.result)
            return
        ctx.result = async_jobs.run(ctx.result)
    if tracked:
        ctx.exception = tracking.result_error(ctx)


def never_ran(result: Any) -> TypeError:
    """The failure of a job whose function returned `result`, a generator, closed so that it never runs."""
    if not isinstance(result, types.AsyncGeneratorType):
        result.close()  # closed, it never runs
    kind = type(result).__name__
    return TypeError(
        f"the job's function returned a {kind} without running its body: jobs are plain or async def "
        "functions (@job(iterable=True) for a generator whose yields are checkpoints)"
    )


job_log = logging.getLogger("jiggler_gevent.jobs")  # one INFO line per finished job: its outcome and run time
ACK, RETRY, DEAD, RESCHEDULE, CANCEL = (
    Disposition.ACK,
    Disposition.RETRY,
    Disposition.DEAD,
    Disposition.RESCHEDULE,
    Disposition.CANCEL,
)  # module-level: looking a member up on the enum costs more than the test it is used in
BEFORE, AFTER = "before_process", "after_process"
OUTCOMES = {
    Disposition.ACK: "done",
    Disposition.RETRY: "retry",
    Disposition.DEAD: "dead",
    Disposition.DROP: "failed",  # out of retries with dead=False: dropped
    Disposition.CANCEL: "cancelled",
    Disposition.RESCHEDULE: "rescheduled",
}


class Processor:
    """Turns raw payloads into job runs and outcomes."""

    def __init__(
        self,
        acker: Acker,
        chain: Chain | None = None,
        on_failure: Callable[[dict[str, Any]], None] | None = None,
        job_log_level: int | None = logging.INFO,
        on_expired: Callable[[object, object], None] | None = None,
    ) -> None:
        self.acker = acker
        self.job_log_level = job_log_level  # of the line per finished job (--job-log); None: no line
        self.wire = wire.of(acker.keys)  # the payload format on the wire (jiggler's or Sidekiq's)
        self.chain = chain if chain is not None else middleware.server
        self.running: dict[int, JobContext] = {}  # by id() of the greenlet running the job
        self.on_failure = on_failure
        self.on_expired = on_expired  # called with the name and queue of each job dropped past its deadline
        self.stopping = False  # set by the Manager before it kills the jobs still running at shutdown
        self._abandoned: set[int] = set()  # id() of the contexts whose outcome `abandon` wrote
        self._interrupts: dict[int, BaseException] = {}  # by id() of the context: asked for, job not ended yet
        self._greenlets: dict[int, RawGreenlet] = {}  # the greenlet of each running job, by its id()
        self._ending: set[int] = set()  # id() of the contexts whose function has ended: their after-hooks run
        self.cancelled: dict[str, float] = {}  # jid -> when it was cancelled (cancels.py keeps it)
        self.starts: tracking.Starts = {}  # tracked payloads the fetch started (the Manager shares its fetch's)
        self.cancel_within = 1.0  # seconds a cancelled job may wait for a safe point before it is given up on
        # Runs a suspect job (recovery.suspect) alone: entered with the payload, it yields False when the job
        # was put back instead (manager.py sets it).
        self.isolate: Callable[[str], AbstractContextManager[bool]] | None = None
        self.iterations = Iterations(acker.redis, acker.keys)  # runs @job(iterable=True) jobs

    @property
    def call_site(self) -> CodeType:
        """The code of the frame that calls a job function: a job's own frames are those inside it."""
        return call.__code__

    def running_job(self, glet: RawGreenlet) -> JobContext | None:
        """The job `glet` is running now, if any."""
        return self.running.get(id(glet))

    def job_on(self, glet: RawGreenlet) -> JobContext | None:
        """The job whose code `glet` runs now, for reports: its own job, or for the asyncio loop's greenlet the
        async job whose coroutine the loop is in (that job's worker greenlet only waits meanwhile)."""
        ctx = self.running.get(id(glet))
        if ctx is None:
            worker = async_jobs.worker_running(glet)
            ctx = self.running.get(id(worker)) if worker is not None else None
        return ctx

    def process(self, raw: str) -> None:
        """Run one payload to its outcome (in the calling greenlet)."""
        try:
            payload = self.wire.decode(raw)
        except payload_mod.PayloadError as exc:
            self._bury_unrunnable(raw, str(exc))
            return
        func = lookup(payload["name"])
        if func is None:
            self._bury_unrunnable(
                raw,
                f"no job named {payload['name']!r} is registered in this worker "
                "(start it with -r MODULE for the module that defines it)",
                payload,
            )
            return
        mismatch = func.arguments_error(payload["args"], payload["kwargs"])
        if mismatch:
            self._bury_unrunnable(raw, mismatch, payload)
            return
        ctx = JobContext(payload, raw)
        if (self.cancelled and ctx.jid in self.cancelled) or (ctx.view.tracked and tracking.start(ctx, self.starts)):
            log.info(
                "cancelled %s jid=%s: not started",
                ctx.display_name,
                ctx.jid,
                extra=job_fields(ctx.display_name, ctx.jid),
            )
            self.acker.add(Outcome(raw, CANCEL, end=ending.of_unstarted(ctx, self.acker.keys)))
            return
        if "expires_at" in payload and payload_mod.expired(payload, time.time()):
            self._expire(ctx)
            return
        ctx.func = self.iterations.runner(func, ctx) if func.iterable else func.func
        hooks = self.chain.hooks(BEFORE, AFTER, () if guarded(func, ctx.view) else GUARDS)
        if self.isolate is not None and "recoveries" in payload and suspect(payload):
            log.warning(
                "%s jid=%s was held by %d processes as they died: running it alone",
                ctx.display_name,
                ctx.jid,
                payload["recoveries"],
                extra=job_fields(ctx.display_name, ctx.jid),
            )
            with self.isolate(raw) as alone:
                if alone and self._run(ctx, hooks):
                    self._finish(ctx)
            return
        if self._run(ctx, hooks):
            self._finish(ctx)

    def _run(self, ctx: JobContext, hooks: tuple[list[middleware.Hook], list[middleware.Hook]]) -> bool:
        """Run the job inside the server chain's `hooks` (before, after); False when its outcome was already written
        (abandoned)."""
        glet = gevent.getcurrent()
        key, cid = id(glet), id(ctx)
        self.running[key] = ctx
        self._greenlets[key] = glet
        ctx.started_at = time.time()
        view = ctx.view
        if log.isEnabledFor(logging.DEBUG):
            log.debug("start %s jid=%s", view.shown, view.jid, extra=job_fields(view.shown, view.jid))
        batch_token = running_bid.set(view.bid) if view.bid is not None else None
        log_token = current_job.set((view.shown, view.jid))  # what the job's own log lines carry (logs.JobFilter)
        tracked = view.tracked
        befores, afters = hooks
        try:
            try:
                call_each(befores, ctx)
                if self._interrupts:
                    self._raise_interrupt(ctx)  # asked for while the before-hooks ran (a hook may swallow it)
                if ctx.exception is None:  # else a before-hook refused the run (e.g. a full concurrency limit)
                    call(ctx, tracked)
            except GreenletExit as exc:
                if self.stopping:
                    raise
                ctx.exception = exc  # raised by the job itself
            except BaseException as exc:  # a job's behaviour must never kill the worker
                ctx.exception = exc
            self._ending.add(cid)  # no interrupt from here on: one landing in an after-hook would escape
            if self._interrupts:
                self._interrupts.pop(cid, None)  # the job has ended: an interrupt not delivered yet is moot
            if (self._abandoned or ctx.exception is not None) and self._no_outcome(ctx, cid):
                return False
            call_each(afters, ctx)
        except JobTimeout:
            # The timer fired after the job had returned but before it was disarmed: the job is done.
            disarm(ctx)
            call_each(afters, ctx)
        finally:
            self._ending.discard(cid)
            self.running.pop(key, None)
            self._greenlets.pop(key, None)
            if batch_token is not None:
                running_bid.reset(batch_token)
            current_job.reset(log_token)
        return True

    def _no_outcome(self, ctx: JobContext, cid: int) -> bool:
        """True when nothing is to be written for the job `ctx` now: it was abandoned (its outcome is
        written already), or it is an iterable job paused at a checkpoint as the worker stops (its cursor is
        stored; like a job killed at shutdown it is not acknowledged, and goes back to its queue)."""
        if self._abandoned and cid in self._abandoned:
            self._abandoned.discard(cid)
        elif type(ctx.exception) is Paused:
            log.info(
                "paused %s jid=%s at a checkpoint: put back",
                ctx.display_name,
                ctx.jid,
                extra=job_fields(ctx.display_name, ctx.jid),
            )
        else:
            return False
        disarm(ctx)
        return True

    def interrupt(self, glet: RawGreenlet, exc: BaseException) -> bool:
        """Raise `exc` in the job `glet` runs, at its next switch (at a forced yield only where that is safe:
        preempt.py). The job ends as if it had raised `exc`. False when `glet` runs no job now, or its job
        function has already returned (its after-hooks run)."""
        ctx = self.running_job(glet)
        if ctx is None or id(ctx) in self._ending:
            return False
        self._interrupts[id(ctx)] = exc
        hub: Hub = gevent.get_hub()
        hub.loop.run_callback(self._throw, glet, ctx)
        return True

    def cancel(self, jid: str) -> bool:
        """Stop the running job `jid` at its next safe point (CancelJob); False when no job of that jid runs here."""
        for key, ctx in list(self.running.items()):
            glet = self._greenlets.get(key)
            if ctx.jid == jid and glet is not None:
                exc = CancelJob(f"job {ctx.name} ({jid}) was cancelled", self.cancel_within)
                return self.interrupt(glet, exc)
        return False

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
        exc = ctx.exception
        logged = self.job_log_level is not None and job_log.isEnabledFor(self.job_log_level)
        elapsed = time.time() - ctx.started_at if logged or exc is not None else 0.0  # only the log lines use it
        if logged:
            self._log_outcome(ctx, elapsed)
        if exc is not None and ctx.disposition not in (RESCHEDULE, CANCEL):
            log.warning(
                "fail %s jid=%s after %.3fs: %s: %s -> %s",
                ctx.display_name,
                ctx.jid,
                elapsed,
                type(exc).__name__,
                exc,
                ctx.disposition,
                exc_info=(type(exc), exc, exc.__traceback__),
                extra=job_fields(ctx.display_name, ctx.jid),
            )
            middleware.notify_error(exc, ctx)
        self._commit(ctx)

    def _log_outcome(self, ctx: JobContext, elapsed: float) -> None:
        """The job's one line (at INFO unless --job-log says otherwise), as Sidekiq's done/fail lines: `OUTCOME NAME
        jid=JID in SECONDSs` (and why, when it was put back over a limit)."""
        d = ctx.disposition
        outcome = "dead" if d == RETRY and ctx.retry_at is None else OUTCOMES.get(d, str(d))
        why = f": {ctx.exception}" if d == RESCHEDULE else ""
        name = ctx.display_name  # a Django task's path, not its wrapper's
        level = self.job_log_level or logging.INFO
        job_log.log(
            level, "%s %s jid=%s in %.3fs%s", outcome, name, ctx.jid, elapsed, why, extra=job_fields(name, ctx.jid)
        )

    def _commit(self, ctx: JobContext) -> None:
        """Hand the job's outcome to the Acker: its payload moved by its disposition, and its Ending (ending.py)."""
        d, p = ctx.disposition, ctx.payload
        if d is ACK and ctx.view.plain:  # `is` first: a hook may also have set the string "ack"
            self.acker.add(Outcome(ctx.raw))  # done, and nothing else to write: the fetcher may carry it
            return
        if d in (RETRY, RESCHEDULE) and ctx.retry_at is not None:
            make = Outcome.retry if d == RETRY else Outcome.reschedule
            outcome = make(ctx.raw, self.wire.encode(p), ctx.retry_at)  # a unique lock stays held
        elif d in (DEAD, RETRY, RESCHEDULE):
            # RETRY without a time means the retry middleware failed (e.g. a mistyped retry_count): bury
            # the job rather than acknowledge a failure that was never recorded anywhere.
            outcome = Outcome.dead(ctx.raw, self.wire.encode(p), time.time())
        else:
            outcome = Outcome(ctx.raw, d)  # ack, drop, cancel
        outcome.end = ending.of_run(ctx, outcome.disposition, self.acker.keys)
        self.acker.add(outcome)
        if outcome.disposition == DEAD:
            middleware.notify_death(p, ctx.exception)

    def _expire(self, ctx: JobContext) -> None:
        """A job not started by its deadline (first run or retry): dropped unrun, neither retried nor buried."""
        if self.job_log_level is not None:  # the job's one line, as _log_outcome writes it
            fields = job_fields(ctx.display_name, ctx.jid)
            job_log.log(
                self.job_log_level,
                "expired %s jid=%s: not started by its deadline",
                ctx.display_name,
                ctx.jid,
                extra=fields,
            )
        self.acker.add(Outcome(ctx.raw, Disposition.EXPIRE, end=ending.of_expired(ctx, self.acker.keys)))
        if self.on_expired is not None:
            self.on_expired(ctx.view.name, ctx.view.queue)

    def _bury_unrunnable(self, raw: str, error: str, payload: dict[str, Any] | None = None) -> None:
        entry = self.wire.salvage(raw, error)
        name = str(entry.get("name", "?"))
        log.error("dead %s jid=%s: %s", name, entry["jid"], error, extra=job_fields(name, entry["jid"]))
        end = ending.of_unrunnable(payload, error) if payload is not None else None  # a valid payload: its batch
        self.acker.add(Outcome.dead(raw, self.wire.encode(entry), time.time(), end))
        if self.on_failure is not None:
            self.on_failure(entry)
        middleware.notify_death(entry, None)
