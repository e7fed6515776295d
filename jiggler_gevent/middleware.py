"""Hooks around each job (server chain) and each push (client chain), and error and death handlers.

A middleware is an object with any of the no-op hooks below. "before" hooks run in the order the
middleware was added, "after" hooks in reverse. A hook that raises is logged and the chain goes on:
a hook can never kill a worker or lose a job. Retries, timeouts and stats are themselves middleware.
"""
import logging
from typing import Any, Callable, Dict, List, Optional

log = logging.getLogger("jiggler_gevent.middleware")


class JobContext:
    """What the server chain sees of one job run.

    `payload` is the decoded payload; `exception` is set when the job raised; `disposition` is what
    happens to the job afterwards: "ack" (done), "retry" (with `retry_at`), "dead" or "drop";
    hooks may change `payload` before it is stored again.
    """

    __slots__ = ("payload", "raw", "func", "result", "exception", "disposition", "retry_at", "started_at",
                 "timer")

    def __init__(self, payload: Dict[str, Any], raw: str) -> None:
        self.payload = payload
        self.raw = raw
        self.func: Optional[Callable[..., Any]] = None
        self.result: Any = None
        self.exception: Optional[BaseException] = None
        self.disposition = "ack"
        self.retry_at: Optional[float] = None
        self.started_at = 0.0
        self.timer: Any = None

    @property
    def name(self) -> str:
        return self.payload.get("name", "?")

    @property
    def jid(self) -> str:
        return self.payload.get("jid", "?")


class ServerMiddleware:
    """Base with no-op hooks around one job run, in the greenlet that runs it."""

    def before_process(self, ctx: JobContext) -> None:
        """Called before the job function."""

    def after_process(self, ctx: JobContext) -> None:
        """Called after it, also when it raised (see `ctx.exception`)."""


class ClientMiddleware:
    """Base with no-op hooks around one push to Redis."""

    def before_push(self, payload: Dict[str, Any]) -> None:
        """Called before the payload is encoded and pushed; may change it."""

    def after_push(self, payload: Dict[str, Any]) -> None:
        """Called after the push succeeded."""


ErrorHandler = Callable[[BaseException, JobContext], None]
DeathHandler = Callable[[Dict[str, Any], Optional[BaseException]], None]


class Chain:
    """An ordered list of middleware whose hooks are called safely."""

    def __init__(self) -> None:
        self.entries: List[Any] = []

    def add(self, middleware: Any) -> None:
        """Append `middleware` to the chain."""
        self.entries.append(middleware)

    def remove(self, middleware: Any) -> None:
        """Take `middleware` out of the chain if it is there."""
        if middleware in self.entries:
            self.entries.remove(middleware)

    def before(self, hook: str, arg: Any) -> None:
        """Call `hook` on each entry in order."""
        for entry in self.entries:
            _call_safely(entry, hook, arg)

    def after(self, hook: str, arg: Any) -> None:
        """Call `hook` on each entry in reverse order."""
        for entry in reversed(self.entries):
            _call_safely(entry, hook, arg)


def _call_safely(entry: Any, hook: str, arg: Any) -> None:
    method = getattr(entry, hook, None)
    if method is None:
        return
    try:
        method(arg)
    except Exception:
        log.exception("middleware %s.%s failed; going on", type(entry).__name__, hook)


server = Chain()
client = Chain()
error_handlers: List[ErrorHandler] = []
death_handlers: List[DeathHandler] = []


def notify_error(exc: BaseException, ctx: JobContext) -> None:
    """Call every error handler with the exception and the job; a failing handler is logged."""
    for handler in list(error_handlers):
        try:
            handler(exc, ctx)
        except Exception:
            log.exception("error handler %r failed", handler)


def notify_death(payload: Dict[str, Any], exc: Optional[BaseException]) -> None:
    """Call every death handler with the payload that went to the dead set and its exception."""
    for handler in list(death_handlers):
        try:
            handler(payload, exc)
        except Exception:
            log.exception("death handler %r failed", handler)
