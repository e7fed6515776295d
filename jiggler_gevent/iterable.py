"""Iterable jobs and progress, the app side: `progress()`, the checks of `@job(iterable=True)`, and what a running
job reports (JobState), kept in memory for the worker to store (server/iteration.py writes it to NS:state:<jid>).

Nothing here talks to Redis: a call of `progress()` only updates memory, and the worker's heartbeat writes what
changed, so reporting progress costs a job no round trip of its own.
"""

import inspect
import json
import math
import warnings
from collections.abc import Callable, Generator
from typing import Any

from .logs import current_job

MESSAGE_LIMIT = 500  # characters of a progress message kept: the heartbeat carries it
SCALARS = frozenset((int, float, str, bool, type(None)))  # cursors JSON takes as they are, checked by type alone


class JobState:
    """What a running job has reported: its progress and message, and for an iterable job its latest cursor and
    how many checkpoints it has passed. `dirty`: progress changed since the worker last wrote it."""

    __slots__ = ("jid", "fraction", "message", "cursor", "iterations", "iterable", "dirty")

    def __init__(self, jid: str) -> None:
        self.jid = jid
        self.fraction: float | None = None
        self.message = ""
        self.cursor: Any = None
        self.iterations = 0
        self.iterable = False
        self.dirty = False

    def shown(self) -> dict[str, Any]:
        """The fields a running job shows (Busy page, api): progress and message, and iterations when iterable."""
        out: dict[str, Any] = {"progress": self.fraction, "message": self.message}
        if self.iterable:
            out["iterations"] = self.iterations
        return out


live: dict[str, JobState] = {}  # by jid: the jobs of this process that reported something (worker only)


def state_of(jid: str) -> JobState:
    """The reported state of the running job `jid`, made on first use."""
    state = live.get(jid)
    if state is None:
        state = live[jid] = JobState(jid)
    return state


def progress(fraction: float, message: str = "") -> None:
    """Report how far the running job is: `fraction` from 0.0 to 1.0 and an optional short message. Shown by
    `api.Job(jid).info()` and the dashboard's Busy page. Outside a running job it warns and does nothing."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress must be a number from 0.0 to 1.0, not {fraction!r}")
    if not isinstance(message, str):
        raise TypeError(f"a progress message must be a string, not {type(message).__name__}")
    running = current_job.get()
    if running is None:
        warnings.warn("progress() called outside a running job: ignored", RuntimeWarning, stacklevel=2)
        return
    state = state_of(running[1])
    state.fraction, state.message, state.dirty = float(fraction), message[:MESSAGE_LIMIT], True


def check_iterable(func: Callable[..., Any]) -> int | None:
    """TypeError unless `func` can be an iterable job: a generator function with a `cursor` keyword parameter
    that has a default (the first run passes cursor=None; pushes are checked without it). Returns the cursor's
    position among the positional parameters (None when it is keyword-only)."""
    name = getattr(func, "__qualname__", repr(func))
    if not inspect.isgeneratorfunction(func):
        raise TypeError(
            f"@job(iterable=True) needs a generator function (one that yields a cursor at each checkpoint); "
            f"{name} is not one"
        )
    parameter = inspect.signature(func).parameters.get("cursor")
    if parameter is None or parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
        raise TypeError(f"@job(iterable=True) needs a `cursor` keyword parameter (cursor=None); {name} has none")
    if parameter.default is parameter.empty:
        raise TypeError(f"the cursor parameter of iterable job {name} needs a default: cursor=None")
    if parameter.kind is parameter.KEYWORD_ONLY:
        return None
    return list(inspect.signature(func).parameters).index("cursor")


def with_cursor(
    args: tuple[Any, ...], kwargs: dict[str, Any], cursor: Any, position: int | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of a resumed run: `cursor` in the cursor's place, whether the push gave one by position
    (`position`, see check_iterable), by keyword, or not at all."""
    if position is not None and len(args) > position:
        return (*args[:position], cursor, *args[position + 1 :]), kwargs
    return args, {**kwargs, "cursor": cursor}


def encode_cursor(cursor: Any, name: str) -> str:
    """`cursor` (a value job `name` yielded) as JSON; TypeError, saying so, when JSON cannot hold it."""
    try:
        return json.dumps(cursor, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"iterable job {name} yielded a cursor that is not JSON ({exc}): {cursor!r:.200}; yield where to resume "
            "as a number, string, list or dict"
        ) from None


def check_cursor(cursor: Any, name: str) -> None:
    """TypeError unless `cursor` (a value job `name` yielded) can be stored as JSON."""
    if type(cursor) not in SCALARS or (type(cursor) is float and not math.isfinite(cursor)):
        encode_cursor(cursor, name)


def advance(gen: Generator[Any, Any, Any]) -> tuple[bool, Any]:
    """Run an iterable job's generator `gen` to its next checkpoint: (True, the cursor it yielded), or (False, its
    return value) when it has ended."""
    try:
        return True, next(gen)
    except StopIteration as stop:
        return False, stop.value


def exhaust(gen: Generator[Any, Any, Any], name: str) -> Any:
    """Run an iterable job's generator to its end in the calling code (an inline call): its return value."""
    while True:
        going, value = advance(gen)
        if not going:
            return value
        check_cursor(value, name)
