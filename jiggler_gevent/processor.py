"""Runs one fetched payload: decode, look up, call through the server chain, hand the outcome to the Acker.

A job's behaviour never escapes this module: whatever it raises (SystemExit and GreenletExit included) is
recorded as a failure. Only the GreenletExit of the Manager killing the job at shutdown (`stopping` set)
passes; such a job is not acknowledged, so the shutdown puts it back in its queue.
"""
import logging
import time
from typing import Callable, Dict, Optional

import gevent
from greenlet import GreenletExit

from . import middleware, payload as payload_mod
from .job import lookup
from .fetch import Acker, Outcome
from .middleware import Chain, JobContext
from .timeouts import JobTimeout, abandoned, cancel

log = logging.getLogger("jiggler_gevent.processor")


class Processor:
    """Turns raw payloads into job runs and outcomes."""

    def __init__(self, acker: Acker, chain: Optional[Chain] = None,
                 on_failure: Optional[Callable[[], None]] = None) -> None:
        self.acker = acker
        self.chain = chain if chain is not None else middleware.server
        self.running: Dict[int, JobContext] = {}
        self.on_failure = on_failure
        self.stopping = False  # set by the Manager before it kills the jobs still running at shutdown

    def process(self, raw: str) -> None:
        """Run one payload to its outcome (in the calling greenlet)."""
        try:
            payload = payload_mod.decode(raw)
        except payload_mod.PayloadError as exc:
            self._bury_unrunnable(raw, str(exc))
            return
        func = lookup(payload["name"])
        if func is None:
            self._bury_unrunnable(raw, f"no job named {payload['name']!r} is registered in this worker "
                                       "(start it with -r MODULE for the module that defines it)")
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
                ctx.result = ctx.func(*ctx.payload["args"], **ctx.payload["kwargs"])
            except GreenletExit as exc:
                if self.stopping:
                    raise
                ctx.exception = exc  # raised by the job itself
            except BaseException as exc:  # a job's behaviour must never kill the worker
                ctx.exception = exc
            if abandoned(ctx):
                # Its timeout found no safe point in time: timeouts.abandon already failed it and wrote that.
                cancel(ctx)
                return False
            self.chain.after("after_process", ctx)
        except JobTimeout:
            # The timer fired after the job had returned but before it was disarmed: the job is done.
            cancel(ctx)
            self.chain.after("after_process", ctx)
        finally:
            self.running.pop(key, None)
        return True

    def _finish(self, ctx: JobContext) -> None:
        elapsed = time.time() - ctx.started_at
        if ctx.exception is None:
            log.debug("done %s jid=%s in %.3fs", ctx.name, ctx.jid, elapsed)
        else:
            exc = ctx.exception
            log.warning("fail %s jid=%s after %.3fs: %s: %s -> %s", ctx.name, ctx.jid, elapsed,
                        type(exc).__name__, exc, ctx.disposition, exc_info=(type(exc), exc, exc.__traceback__))
            middleware.notify_error(exc, ctx)
        self._commit(ctx)

    def _commit(self, ctx: JobContext) -> None:
        d = ctx.disposition
        if d == "retry" and ctx.retry_at is not None:
            self.acker.add(Outcome(ctx.raw, "retry", payload_mod.encode(ctx.payload), ctx.retry_at))
        elif d == "dead" or d == "retry":
            # "retry" without a time means the retry middleware failed (e.g. a mistyped retry_count): bury
            # the job rather than acknowledge a failure that was never recorded anywhere.
            self.acker.add(Outcome(ctx.raw, "dead", payload_mod.encode(ctx.payload), time.time()))
            middleware.notify_death(ctx.payload, ctx.exception)
        else:
            self.acker.add(Outcome(ctx.raw))

    def _bury_unrunnable(self, raw: str, error: str) -> None:
        entry = payload_mod.salvage(raw, error)
        log.error("dead %s jid=%s: %s", entry.get("name", "?"), entry["jid"], error)
        self.acker.add(Outcome(raw, "dead", payload_mod.encode(entry), time.time()))
        if self.on_failure is not None:
            self.on_failure()
        middleware.notify_death(entry, None)
