"""Batches: a group of jobs with callbacks when all of them have run (`on_complete`) or succeeded (`on_success`).

    batch = Batch(description="import 42", on_success=notify, on_complete=report, callback_args=("import-42",))
    with batch:                  # all or nothing: the jobs enqueued inside are pushed at the end, in one step
        for row in rows:
            import_row.enqueue(row)

Guarantees (the counting is done by Lua scripts, lib_ending.lua): the batch's totals grow in the same atomic step
as its jobs are pushed; each job is counted once when it first succeeds, or as a failure when it fails (retried
or not) or is cancelled, however many times at-least-once delivery runs it; each callback is enqueued exactly
once, as `callback(bid, *callback_args)`, by whichever step makes its condition true. A job of the batch may add
jobs to it with `with Batch.current(): ...`: its own run still counts as pending meanwhile, so the batch cannot
complete in between. A block that raises pushes nothing. A batch that gets no job completes at once. Nested
batches are not supported: a `with` block inside another raises RuntimeError.
"""

import time
from collections.abc import Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from . import config, wire
from . import payload as payload_mod
from .job import JobFunction

if TYPE_CHECKING:  # client.py imports redis: loaded when a block opens, never by `import jiggler_gevent`
    from .client import BatchPush

# The batch id of the job running in this greenlet, set by the worker around each job of a batch.
running_bid: ContextVar[str | None] = ContextVar("jiggler_gevent_running_bid", default=None)


def _check_callback(name: str, callback: object) -> JobFunction | None:
    if callback is None or isinstance(callback, JobFunction):
        return callback
    raise TypeError(f"{name} must be a @job function, not {callback!r:.80}")


class Batch:
    """A batch of jobs: enqueue them inside `with batch:`; `bid` is its id."""

    def __init__(
        self,
        description: str = "",
        on_success: JobFunction | None = None,
        on_complete: JobFunction | None = None,
        callback_args: Sequence[Any] = (),
    ) -> None:
        if not isinstance(description, str):
            raise TypeError(f"description must be a string, not {type(description).__name__}")
        self.on_success = _check_callback("on_success", on_success)
        self.on_complete = _check_callback("on_complete", on_complete)
        if not isinstance(callback_args, (tuple, list)):
            raise TypeError(f"callback_args must be a tuple or list, not {type(callback_args).__name__}")
        try:
            payload_mod.check_arguments(list(callback_args), {})
        except TypeError as exc:
            raise TypeError(f"callback_args: {exc}") from None
        self.description = description
        self.callback_args = list(callback_args)
        self.bid = payload_mod.new_jid()
        self._mode = "new"
        self._token: Token[BatchPush | None] | None = None
        self._pushed = False

    @classmethod
    def current(cls) -> "Batch":
        """Inside a job of a batch: that batch, to add jobs to it (`with Batch.current(): ...`)."""
        bid = running_bid.get()
        if bid is None:
            raise RuntimeError("Batch.current() is only available inside a job that belongs to a batch")
        batch = cls()
        batch.bid, batch._mode = bid, "add"
        return batch

    def __enter__(self) -> "Batch":
        from . import client as client_mod

        if client_mod.collecting.get() is not None:
            raise RuntimeError("batches cannot be nested: this block is inside another batch's block")
        if self._pushed and self._mode == "new":
            raise RuntimeError(f"batch {self.bid} was already pushed; use Batch.current() in one of its jobs to add")
        self._token = client_mod.collecting.set(client_mod.BatchPush(self.bid, self._mode, self._fields()))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        from . import client as client_mod

        assert self._token is not None
        pending = client_mod.collecting.get()
        client_mod.collecting.reset(self._token)
        self._token = None
        if exc_type is None and pending is not None:
            client_mod.Client().push_batch(pending)
            self._pushed = True

    def _fields(self) -> list[str]:
        """The batch hash's fields at creation: description, created_at and the callbacks' payloads."""
        if self._mode != "new":
            return []
        fields = ["description", self.description, "created_at", repr(time.time()), "total", "0", "pending", "0"]
        for which, callback in (("complete", self.on_complete), ("success", self.on_success)):
            if callback is not None:
                payload = callback.defaults._payload([self.bid, *self.callback_args], {})
                del payload["enqueued_at"]  # set by the script that enqueues it
                raw = wire.of(config.current().keys).encode(payload)
                fields += [f"cb_{which}", raw, f"cbq_{which}", payload["queue"]]
        return fields

    def __repr__(self) -> str:
        return f"<Batch {self.bid} {self.description!r}>"
