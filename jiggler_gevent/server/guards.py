"""Server middleware that guard a job's start: `@job(concurrency=N)` and `unique_until="start"`.

Guarantee: every run of a job with `concurrency=N` holds a slot of a `concurrent` limiter named after the job while
it runs, so never more than N run at once across every worker; each slot is given back at most once, after its job
has ended (lib_holds.lua). The slot is taken in one of two ways:
- by the fetch script, in the same step that takes the payload from its queue (fetch.lua; the worker names its
  limited jobs in each fetch), and given back by the first write after the job's outcome: the next fetch, or the
  settle the Acker writes (acker.Slots): no round trip of its own, however the payload was enqueued (older
  clients, Sidekiq). Over a full limiter the fetch parks the payload instead of taking it (fetch.lua);
- by ConcurrencyMiddleware before the job runs, for a payload the fetch script did not see (BLMOVE on an idle
  worker's one queue) or whose job was registered after the first fetch, and given back by it after the run.
When the limiter is full the run is refused with limits.OverLimit (the middleware sets `ctx.exception`, so the
job function is not called), and RetryMiddleware reschedules the job as for any OverLimit. Slots are
taken with a lock timeout of SLOT_TIMEOUT and renewed every third of it while the job runs, so a job may run
for longer. A worker that is SIGKILLed has its slots freed by the recovery that declares it dead (lib_holds.lua:
at its heartbeat's expiry, or at once under a supervisor), SLOT_TIMEOUT being only the bound for a process
nobody recovers. A job refused here is parked on the limiter: the next release of a slot moves it to its queue.

UniqueStartMiddleware releases the unique lock of a job with `unique_until="start"` as it starts.
"""

import logging

import gevent

from .. import config, limits, scripts
from ..gevent_types import Greenlet
from ..job import JobFunction, lookup, registered
from ..middleware import JobContext, ServerMiddleware
from ..payload import View
from .acker import FULL, Slots

log = logging.getLogger("jiggler_gevent.guards")

SLOT_TIMEOUT = 60.0


def job_limiter_name(job_name: str) -> str:
    """The name of the `concurrent` limiter of a job with `concurrency=N`: its wire name, ':' made '.'."""
    return job_name.replace(":", ".")[: limits.MAX_NAME]


def fetch_limits() -> list[str | int]:
    """What fetch.lua needs to take the slots of the jobs with `concurrency=N` registered now: per job, its wire
    name, its limiter's name and N."""
    table: list[str | int] = []
    for name in registered():
        func = lookup(name)
        if func is not None and func.concurrency is not None:
            table += [name, job_limiter_name(name), func.concurrency]
    return table


def group_limited() -> bool:
    """Whether a job with `group_concurrency=N` is registered now: then the fetch script takes its groups' slots."""
    return any(getattr(lookup(name), "group_concurrency", None) is not None for name in registered())


class ConcurrencyMiddleware(ServerMiddleware):
    """At most N of a job with `concurrency=N` run at once across every worker on the namespace."""

    def __init__(self, fetched: Slots | None = None) -> None:
        self.limiters: dict[str, limits.Concurrent] = {}
        # by id() of the JobContext: the limiter, the token, and whether the fetch took it (then the write that follows
        # the outcome gives it back, acker.Slots)
        self.held: dict[int, tuple[limits.Concurrent, str, bool]] = {}
        self.renewer: Greenlet | None = None
        self.fetched: Slots = {} if fetched is None else fetched  # the fetch's (acker.Slots)

    def _limiter(self, name: str, size: int) -> limits.Concurrent:
        limiter = self.limiters.get(name)
        if limiter is None or limiter.size != size:
            limiter = self.limiters[name] = limits.concurrent(job_limiter_name(name), size, lock_timeout=SLOT_TIMEOUT)
        return limiter

    def before_process(self, ctx: JobContext) -> None:
        func = lookup(ctx.name)
        if func is not None and func.group_concurrency is not None:
            self._renew_group_slot(ctx, func.group_concurrency)
        if func is None or func.concurrency is None:
            return
        limiter = self._limiter(ctx.name, func.concurrency)
        slot = self.fetched.get(ctx.raw) if self.fetched else None
        if slot == FULL:
            ctx.exception = limits.OverLimit(limiter.name, limiter.kind, 0.0)
            return
        if slot is not None:
            self._hold(ctx, limiter, slot.split(":", 2)[2], fetched=True)  # slot:<limiter>:<token>
            return
        try:
            token = limiter.acquire(wait_timeout=0)
        except Exception as exc:  # OverLimit is rescheduled; a Redis error fails the job (retried), never unlimited
            ctx.exception = exc
            return
        self._hold(ctx, limiter, token, fetched=False)

    def _renew_group_slot(self, ctx: JobContext, size: int) -> None:
        """Keep renewed the slot of its group's limiter the fetch took for this run (fetch.lua), if it took one; it
        goes back with the outcome, as a fetched slot does."""
        slot = self.fetched.get(ctx.raw) if self.fetched else None
        if slot is None or not slot.startswith("slot:group."):
            return
        _, name, token = slot.split(":", 2)  # slot:<limiter>:<token>
        limiter = self.limiters.get(name)
        if limiter is None or limiter.size != size:
            limiter = self.limiters[name] = limits.concurrent(name, size, lock_timeout=SLOT_TIMEOUT)
        self._hold(ctx, limiter, token, fetched=True)

    def _hold(self, ctx: JobContext, limiter: limits.Concurrent, token: str, fetched: bool) -> None:
        """Keep the slot renewed while the job runs."""
        self.held[id(ctx)] = (limiter, token, fetched)
        if self.renewer is None:
            self.renewer = gevent.spawn(self._renew_forever)

    def after_process(self, ctx: JobContext) -> None:
        held = self.held.pop(id(ctx), None)
        if held is not None and not held[2]:  # a slot the fetch took goes back with the outcome (settle.lua)
            limiter, token, _ = held
            limiter.release(token)

    def _renew_forever(self) -> None:
        while True:
            gevent.sleep(SLOT_TIMEOUT / 3)
            for limiter, token, _ in list(self.held.values()):
                try:
                    if not limiter.renew(token):
                        log.warning("%r: the slot of a running job had expired and the limiter is full", limiter)
                except Exception:
                    log.exception("could not renew a slot of %r", limiter)


class UniqueStartMiddleware(ServerMiddleware):
    """Releases the unique lock of a job with `unique_until="start"` when it starts (if it still holds its jid)."""

    def before_process(self, ctx: JobContext) -> None:
        digest = ctx.view.unique_lock
        if digest is None or ctx.view.unique_until != "start":
            return
        cfg = config.current()
        client = config.redis_client(cfg.url)
        scripts.register(client).unique_release(keys=[cfg.keys.unique(digest)], args=[ctx.jid], client=client)


GUARDS = (UniqueStartMiddleware, ConcurrencyMiddleware)  # what a job that `guarded` says no to runs without


def guarded(job: JobFunction, view: View) -> bool:
    """Whether a guard has anything to do for a run of `job` with a payload read as `view`: a concurrency slot to
    take, a group's slot to renew, or a unique lock to release as it starts. The guards' hooks do nothing for any
    other run."""
    return job.concurrency is not None or job.group_concurrency is not None or view.unique_until == "start"
