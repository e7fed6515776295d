"""Hooks around each job (server chain) and each push (client chain), and error and death handlers.

A middleware is an object with any of the no-op hooks below. "before" hooks run in the order the
middleware was added, "after" hooks in reverse. A hook that raises is logged and the chain goes on:
a hook can never kill a worker or lose a job. Retries, timeouts and stats are themselves middleware.
"""

import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import payload as payload_mod

if TYPE_CHECKING:
    from .gevent_types import Timeout

log = logging.getLogger("jiggler_gevent.middleware")


class Disposition(enum.StrEnum):
    """What becomes of a fetched payload: one vocabulary for the middleware, the worker and the settle script."""

    ACK = "ack"  # the job is done: the payload is removed
    RETRY = "retry"  # it failed: to the retry set, due at `retry_at`
    DEAD = "dead"  # it failed for good: to the dead set
    DROP = "drop"  # it failed for good with `dead=False`: removed
    REQUEUE = "requeue"  # not run (shutdown): back to the front of its queue
    RECOVER = "recover"  # held by a process that died (recovery): to the back of its queue
    RESCHEDULE = "reschedule"  # over a limit (limits.OverLimit): to the scheduled set at `retry_at`, no retry used
    CANCEL = "cancel"  # cancelled (api.Job.cancel): removed, not retried, not buried, never run again
    EXPIRE = "expire"  # not started by its deadline (expires_in / expires_at): removed unrun, not retried or buried


class JobContext:
    """What the server chain sees of one job run.

    `payload` is the decoded payload; `exception` is set when the job raised; `disposition` (a Disposition,
    equal to its string) is what happens to the job afterwards: "ack", "retry" (at `retry_at`), "dead",
    "drop", "reschedule" (at `retry_at`) or "cancel" ("expire" is written for a job past its deadline, which
    never reaches the chain); hooks may change `payload` before it is stored again. A
    before-hook that sets `exception` refuses the run: the job function is not called, and the after-hooks
    see that exception as if the job had raised it. `view` is what the server reads of the payload (payload.View),
    read as the context is made.
    """

    __slots__ = (
        "payload",
        "raw",
        "func",
        "result",
        "exception",
        "disposition",
        "retry_at",
        "started_at",
        "timer",
        "view",
    )

    def __init__(self, payload: dict[str, Any], raw: str) -> None:
        self.payload = payload
        self.raw = raw
        self.func: Callable[..., Any] | None = None
        self.result: Any = None
        self.exception: BaseException | None = None
        self.disposition = Disposition.ACK
        self.retry_at: float | None = None
        self.started_at = 0.0
        self.timer: Timeout | None = None
        self.view = payload_mod.View(payload)  # what the server reads of it: jid, name, queue, tracking, batch, lock

    @property
    def name(self) -> str:
        """The job's wire name, as its payload says now ('?' when it has none)."""
        name: str = self.payload.get("name", "?")
        return name

    @property
    def display_name(self) -> str:
        """The job its log lines name, as its payload says now: the one a wrapper runs (`wrapped`, a Django task's
        path), else its wire name (payload.display_name)."""
        return payload_mod.display_name(self.payload) if "wrapped" in self.payload else self.name

    @property
    def jid(self) -> str:
        """The job's id, as its payload says now ('?' when it has none)."""
        jid: str = self.payload.get("jid", "?")
        return jid


class ServerMiddleware:
    """Base with no-op hooks around one job run, in the greenlet that runs it."""

    def before_process(self, ctx: JobContext) -> None:
        """Called before the job function."""

    def after_process(self, ctx: JobContext) -> None:
        """Called after it, also when it raised (see `ctx.exception`)."""


class ClientMiddleware:
    """Base with no-op hooks around one push to Redis."""

    def before_push(self, payload: dict[str, Any]) -> None:
        """Called before the payload is encoded and pushed; may change it."""

    def after_push(self, payload: dict[str, Any]) -> None:
        """Called after the push succeeded."""


ErrorHandler = Callable[[BaseException, JobContext], None]
DeathHandler = Callable[[dict[str, Any], BaseException | None], None]


Hook = Callable[[Any], None]


class _Entries(list[Any]):
    """A chain's entries: a list that counts the changes made to it, so the hook lists made of it follow them."""

    changes = 0


def _counting(name: str) -> Callable[..., Any]:
    change = getattr(list, name)

    def changed(self: _Entries, *args: Any, **kwargs: Any) -> Any:
        self.changes += 1
        return change(self, *args, **kwargs)

    return changed


for _name in (
    "append",
    "extend",
    "insert",
    "remove",
    "pop",
    "clear",
    "sort",
    "reverse",
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
):
    setattr(_Entries, _name, _counting(_name))


class Chain:
    """An ordered list of middleware whose hooks are called safely."""

    def __init__(self) -> None:
        self._entries = _Entries()
        self._built = -1  # the number of changes to `entries` the cached hook lists were made at
        self._hooks: dict[tuple[str, str, tuple[type, ...]], tuple[list[Hook], list[Hook]]] = {}

    @property
    def entries(self) -> list[Any]:
        """The middleware, outermost first; may be changed in place or replaced."""
        return self._entries

    @entries.setter
    def entries(self, entries: list[Any]) -> None:
        self._entries = _Entries(entries)
        self._built = -1

    def add(self, middleware: Any) -> None:
        """Append `middleware` to the chain."""
        self._entries.append(middleware)

    def remove(self, middleware: Any) -> None:
        """Take `middleware` out of the chain if it is there."""
        if middleware in self._entries:
            self._entries.remove(middleware)

    def before(self, hook: str, arg: Any) -> None:
        """Call `hook` on each entry in order."""
        call_each(self.hooks(hook, hook)[0], arg)

    def after(self, hook: str, arg: Any) -> None:
        """Call `hook` on each entry in reverse order."""
        call_each(self.hooks(hook, hook)[1], arg)

    def hooks(self, before: str, after: str, leave_out: tuple[type, ...] = ()) -> tuple[list[Hook], list[Hook]]:
        """The entries' `before` methods in order and their `after` methods in reverse order, leaving out the base
        classes' no-ops and the entries whose type is one of `leave_out`; made once per state of `entries`."""
        entries = self._entries
        if entries.changes != self._built:
            self._built = entries.changes
            self._hooks = {}
        key = (before, after, leave_out)
        found = self._hooks.get(key)
        if found is None:
            kept = [e for e in entries if type(e) not in leave_out]  # a subclass is someone else's: kept
            found = self._hooks[key] = (_methods(kept, before), _methods(kept, after)[::-1])
        return found


def _methods(entries: list[Any], hook: str) -> list[Hook]:
    """The entries' `hook` methods in their order, leaving out the base classes' no-ops."""
    found = (getattr(e, hook, None) for e in entries)
    return [m for m in found if m is not None and not _is_noop(m)]


def call_each(hooks: list[Hook], arg: Any) -> None:
    """Call each of `hooks` with `arg` in order; one that raises Exception is logged and the next ones still run.
    One loop under one try: resuming the same iterator after a failure goes on with the next hook."""
    remaining = iter(hooks)
    while True:
        hook = None
        try:
            for hook in remaining:
                hook(arg)
            return
        except Exception:
            owner = getattr(hook, "__self__", hook)
            name = getattr(hook, "__name__", "?")
            log.exception("middleware %s.%s failed; going on", type(owner).__name__, name)


_NOOPS = {
    ServerMiddleware.before_process,
    ServerMiddleware.after_process,
    ClientMiddleware.before_push,
    ClientMiddleware.after_push,
}


def _is_noop(method: Any) -> bool:
    return getattr(method, "__func__", None) in _NOOPS


server = Chain()
client = Chain()
error_handlers: list[ErrorHandler] = []
death_handlers: list[DeathHandler] = []


def notify_error(exc: BaseException, ctx: JobContext) -> None:
    """Call every error handler with the exception and the job; a failing handler is logged."""
    for handler in list(error_handlers):
        try:
            handler(exc, ctx)
        except Exception:
            log.exception("error handler %r failed", handler)


def notify_death(payload: dict[str, Any], exc: BaseException | None) -> None:
    """Call every death handler with the payload that went to the dead set and its exception."""
    for handler in list(death_handlers):
        try:
            handler(payload, exc)
        except Exception:
            log.exception("death handler %r failed", handler)
