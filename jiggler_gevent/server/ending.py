"""The end of a job: one object per finished job, what the settle step writes for it beside moving its payload.

settle.lua takes ten arguments per held payload: the four that move it (acker.Outcome: held payload, disposition,
payload to store, where) and the six of its `Ending` (`argv`): the unique lock to release, the jid, the batch that
counts it, its result_ttl when tracked, its result or error as JSON, the `concurrent` limiter to park it on. They
are decided here only, from the payload's view (payload.View) and the disposition:
- the lock is released when the job ended for good (not a retry or a reschedule, which keep it) unless it was
  released as the job started (`unique_until="start"`); a payload buried unrun keeps it until it expires;
- a tracked job's status is written by disposition (settle.lua), with its result (done) or error (dead, dropped,
  cancelled), nothing more for a retry, a reschedule or a put-back;
- a batch member is counted (settle.lua skips the put-backs and reschedules);
- a reschedule over a full `concurrent` limiter is parked on it.
A job that uses none of these has no Ending (None), and pays nothing more for it: its outcome may be a plain
acknowledgement, which the fetcher carries.
"""

from typing import Any

from .. import payload as payload_mod
from ..errors import CancelJob
from ..keys import Keys
from ..limits import OverLimit
from ..middleware import Disposition, JobContext
from ..payload import View

NONE = ("", "", "", "", "", "")  # the settle arguments of an outcome without an Ending
KEEPS_LOCK = (Disposition.RETRY, Disposition.RESCHEDULE, Disposition.REQUEUE, Disposition.RECOVER)


class Ending:
    """What the settle step writes for one finished job beside moving its payload (settle.lua's last six ARGV)."""

    __slots__ = ("lock", "jid", "bid", "ttl", "detail", "park")

    def __init__(self, jid: str, lock: str = "", bid: str = "", ttl: int | str = "", detail: str = "", park: str = ""):
        self.jid = jid
        self.lock = lock  # the unique lock key released if it still holds `jid` ('' none)
        self.bid = bid  # the batch that counts this end ('' none)
        self.ttl = ttl  # the job's result_ttl when its status is tracked ('' untracked)
        self.detail = detail  # JSON: its result (done) or {"error_class", "error_message"} (dead, cancelled)
        self.park = park  # a rescheduled job: the `concurrent` limiter whose next release moves it to its queue

    @property
    def counts_only(self) -> bool:
        """True when all there is to write is a batch's count of the job: no lock, status or limiter."""
        return bool(self.bid) and not self.lock and self.ttl == "" and not self.park

    def argv(self) -> tuple[str, str, str, int | str, str, str]:
        """Its arguments to settle.lua, in the order of the script's header."""
        return self.lock, self.jid, self.bid, self.ttl, self.detail, self.park


def of(
    view: View, disposition: Disposition, keys: Keys | None = None, detail: str = "", park: str = ""
) -> Ending | None:
    """The Ending of a job that ends as `disposition`, releasing its unique lock when `keys` are given and the
    disposition lets it go; `detail` is stored only for a tracked job. None when there is nothing to write."""
    lock = ""
    if keys is not None and view.unique_lock is not None and disposition not in KEEPS_LOCK:
        lock = keys.unique(view.unique_lock)
    ttl, bid = view.result_ttl, view.bid
    if not lock and ttl is None and bid is None and not park:
        return None
    if ttl is None:
        return Ending(view.jid, lock, bid or "", "", "", park)
    return Ending(view.jid, lock, bid or "", ttl, detail, park)


def of_run(ctx: JobContext, disposition: Disposition, keys: Keys) -> Ending | None:
    """The Ending of a job that ran (or was refused by a before-hook) and ends as `disposition`."""
    view = ctx.view
    if view.unique_lock is None and view.bid is None and not view.tracked and disposition != Disposition.RESCHEDULE:
        return None  # a job that uses none of these pays for nothing more
    started_unlocked = view.unique_until == "start"  # UniqueStartMiddleware released it as the job started
    detail, park = "", ""
    if disposition == Disposition.ACK:
        detail = payload_mod.encode(ctx.result) if view.tracked else ""
    elif disposition == Disposition.RESCHEDULE:
        full = ctx.exception
        if isinstance(full, OverLimit) and full.kind == "concurrent":
            park = full.name  # woken by the limiter's next release (settle.lua, lib_holds.lua)
    elif disposition != Disposition.RETRY:
        detail = error(ctx, ctx.exception)
    return of(view, disposition, None if started_unlocked else keys, detail, park)


def of_unstarted(ctx: JobContext, keys: Keys) -> Ending | None:
    """The Ending of a job cancelled before it started: its lock released (whatever `unique_until` says)."""
    return of(ctx.view, Disposition.CANCEL, keys, error(ctx, None))


def of_expired(ctx: JobContext, keys: Keys) -> Ending | None:
    """The Ending of a job not started by its deadline: its lock released, its tracked status "expired" with a
    JobExpired error, counted as failed in its batch."""
    detail = ""
    if ctx.view.tracked:
        why = f"job {ctx.jid} did not start by its deadline ({ctx.payload.get('expires_at')})"
        detail = payload_mod.encode({"error_class": "JobExpired", "error_message": why})
    return of(ctx.view, Disposition.EXPIRE, keys, detail)


def of_unrunnable(payload: dict[str, Any], why: str) -> Ending | None:
    """The Ending of a valid payload buried without running (unknown name, bad arguments): counted in its batch,
    its tracked status dead with a PayloadError; its unique lock is kept until it expires."""
    view = View(payload)
    detail = payload_mod.encode({"error_class": "PayloadError", "error_message": why}) if view.tracked else ""
    return of(view, Disposition.DEAD, None, detail)


def of_put_back(payload: dict[str, Any]) -> Ending | None:
    """The Ending of a payload put back in its queue unrun (shutdown): a tracked status back to "queued"."""
    return of(View(payload), Disposition.REQUEUE)


def error(ctx: JobContext, exc: BaseException | None) -> str:
    """A tracked job's error as stored with its status (JSON), or '' for an untracked job."""
    if not ctx.view.tracked:
        return ""
    detail: dict[str, Any] = {"error_class": "JobCancelled", "error_message": f"job {ctx.jid} was cancelled"}
    if exc is not None and not isinstance(exc, CancelJob):
        detail = {"error_class": type(exc).__name__, "error_message": str(exc)[:2000]}
    return payload_mod.encode(detail)
