"""The tally of finished jobs: one decision per job, fed to every sink that counts it.

What counts is decided here only, once per finished job (`Tallied`):
- a job rescheduled over a limit did not run: it is not counted;
- any other end of a run counts as processed, and as failed when the job raised (or a before-hook refused it);
- a payload buried without running (unknown name, bad arguments, not a payload) counts as processed and failed,
  with no run time;
- a job not started by its deadline (expires_in / expires_at) counts as expired only (`expire`): it did not run;
- a name no registered job has counts as UNKNOWN, so made-up names cannot grow a tally without bound;
- a job that runs another (`wrapped`: a Django task's path) counts under the wrapped name, as Sidekiq keeps an
  ActiveJob's metrics under its class, when that name is an object of a module this worker has imported (the task
  the wrapper ran): bounded by the code loaded, as registered names are; else under the wrapper's name;
- a run time falls in bucket `bisect_left(config.JOB_TIME_BUCKETS, seconds)`: the first bound it does not
  exceed, len(JOB_TIME_BUCKETS) past the last one.
The sinks: monitor.Counters (processed and failed, and the per-minute metrics in Redis, written with the
heartbeat) and, with --metrics-port, metrics.JobMetrics (Prometheus). `Tally` is the server middleware that
decides and feeds them; the sinks only add up.
"""

import bisect
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..config import JOB_TIME_BUCKETS
from ..job import lookup
from ..middleware import Disposition, JobContext, ServerMiddleware

UNKNOWN = "unknown"  # the job name tallied for every payload naming no registered job
RESCHEDULE = Disposition.RESCHEDULE


def registered(name: str) -> bool:
    """True when a job is registered under wire name `name` in this worker."""
    return lookup(name) is not None


def loaded(path: str) -> bool:
    """True when dotted `path` names an object of a module already imported (a Django task's module_path: its
    module, then attributes, as `pkg.mod.func` or `pkg.mod.Class.method`); nothing is imported here."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        found: object = sys.modules.get(".".join(parts[:cut]))
        if found is None:
            continue
        for attr in parts[cut:]:
            found = getattr(found, attr, None)
            if found is None:
                return False
        return True
    return False


# One finished job as every sink counts it: (job, queue, failed, seconds, bucket). `job` is its wire name or UNKNOWN;
# `queue` its payload's queue as read (a sink that labels by queue bounds it); `seconds` its run time, None when it
# could not run; `bucket` the index of that run time among JOB_TIME_BUCKETS (their length past the last), or None.
# A plain tuple: one is made per finished job, and a class would cost more than the rest of the decision.
Tallied = tuple[str, object, bool, float | None, int | None]


class Sink(Protocol):
    """What the tally feeds: adds one finished job to its counts (plain arithmetic, never a Redis call).
    `per_wrapped`: a wrapper's run counts under the job it ran (the per-job metrics in Redis), else under the
    wrapper's wire name (Prometheus' `job` label is the wire name)."""

    per_wrapped: bool

    def add(self, tallied: Tallied) -> None:
        """Count one finished job."""

    def expire(self, job: str, queue: object) -> None:
        """Count one job that was not started by its deadline (never run): `job` bounded as in Tallied."""


def decide(
    name: object, queue: object, failed: bool, seconds: float | None, known: Callable[[str], bool] = registered
) -> Tallied:
    """One finished job: `name` bounded to the known ones, `seconds` (None: it could not run) to its bucket."""
    job = name if isinstance(name, str) and known(name) else UNKNOWN
    if seconds is None:
        return job, queue, failed, None, None
    seconds = max(0.0, seconds)
    return job, queue, failed, seconds, bisect.bisect_left(JOB_TIME_BUCKETS, seconds)


def of_unrunnable(entry: dict[str, Any], known: Callable[[str], bool] = registered) -> Tallied:
    """A payload buried without running (`entry`, its dead-set entry): processed and failed, no run time."""
    return decide(entry.get("name"), entry.get("queue"), True, None, known)


class Tally(ServerMiddleware):
    """Server middleware (outermost): decides once about each finished job and feeds `sinks`."""

    def __init__(self, sinks: Iterable[Sink | None], known: Callable[[str], bool] = registered) -> None:
        self.sinks = tuple(s for s in sinks if s is not None)
        self.known = known
        self._known: set[str] = set()  # names `known` said yes to: a registered job is never unregistered

    def after_process(self, ctx: JobContext) -> None:
        """A job whose run has just ended; one rescheduled over a limit was not run (put back): not counted."""
        if ctx.disposition == RESCHEDULE:
            return
        view = ctx.view
        tallied = decide(view.name, view.queue, ctx.exception is not None, time.time() - ctx.started_at, self._knows)
        if "wrapped" in ctx.payload:
            self._add_wrapped(tallied, self._wrapped(view.name, ctx.payload["wrapped"]))
            return
        for sink in self.sinks:
            sink.add(tallied)

    def _add_wrapped(self, tallied: Tallied, wrapped: str) -> None:
        """A wrapper's run: under the job it ran for the sinks that count so, under its own name for the others."""
        shown: Tallied = (wrapped, *tallied[1:]) if tallied[0] != UNKNOWN else tallied
        for sink in self.sinks:
            sink.add(shown if sink.per_wrapped else tallied)

    def _knows(self, name: str) -> bool:
        """`known`, remembered for the names it said yes to."""
        if name in self._known:
            return True
        if not self.known(name):
            return False
        self._known.add(name)
        return True

    def _wrapped(self, name: str, wrapped: object) -> str:
        """The name a wrapper's run counts under: the job it ran (`wrapped`) when that is loaded here, else its own.
        A wrapped name found loaded joins the known names (a module once imported stays so)."""
        if isinstance(wrapped, str) and self._knows(name) and (wrapped in self._known or loaded(wrapped)):
            self._known.add(wrapped)
            return wrapped
        return name

    def expired(self, name: object, queue: object) -> None:
        """A job not started by its deadline was dropped unrun: counted as expired only."""
        job = name if isinstance(name, str) and self._knows(name) else UNKNOWN
        for sink in self.sinks:
            sink.expire(job, queue)

    def unrunnable(self, entry: dict[str, Any]) -> None:
        """A payload that could not run was buried (`entry` is its dead-set entry): a failure."""
        tallied = of_unrunnable(entry, self.known)
        for sink in self.sinks:
            sink.add(tallied)
