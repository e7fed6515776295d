"""Periodic jobs: `periodic(cron, job, ...)` registers an entry; the worker's scheduler enqueues it at each fire time.

    periodic("0 3 * * *", nightly)                                   # every day at 03:00 UTC
    periodic("*/5 * * * *", sync, args=("eu",), name="sync-eu", tz="Europe/Berlin")
    periodic("0 * * * * 30", probe)                                  # a 6th field: seconds (here :00:30)

Called at import time of a module the worker loads. Every worker process runs the scheduler for the entries it
loaded (server/cron.py), and each fire time is enqueued once per namespace. This module is the app side:
importing it, or calling periodic(), loads nothing of the worker or the admin side; croniter is imported only
where a fire time is computed.

Fire times come from croniter, in the entry's time zone (zoneinfo). Where a daylight-saving change moves the
clock, an entry fires as classic cron does:
- spring forward (a local hour that does not exist): an entry that names its hours ("30 2 * * *") fires once,
  at the first instant after the gap (03:00 local in Europe/Berlin); one that runs every hour (hour field `*`)
  has no fire time in the missing hour.
- fall back (a local hour that happens twice): an entry that names its hours fires once, in the first pass of
  that hour; one that runs every hour fires in both passes, which are an hour apart in real time.
"""

import datetime as dt
import functools
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import payload as payload_mod
from .job import JobCall, JobFunction

ALIASES = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")
NAME_LIMIT = 200
# croniter's Jenkins-style H (hashed) and R (random) items would give each process its own schedule.
_UNSTABLE_ITEM = re.compile(r"^[HR](?:$|[(/])", re.IGNORECASE)
_MAX_SKIPS = 10_000  # fall-back fire times an entry may skip in a row (a second-by-second entry: 3,600)


class PeriodicError(ValueError):
    """A periodic() call that cannot work: a bad expression, time zone, name or queue, or a second entry with
    the same name and other settings. The worker reports it as a usage error (exit code 2)."""


class PeriodicTypeError(PeriodicError, TypeError):
    """A periodic() call given something of the wrong kind: not a job, or arguments that are not JSON."""


@dataclass(frozen=True)
class Entry:
    """One periodic entry: which job, with which arguments and options, on which schedule."""

    name: str
    cron: str
    tz: str
    job: str
    queue: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    retries: int
    timeout: float | None
    dead: bool
    origin: str = field(default="", compare=False)  # where periodic() was called, for messages

    def next_after(self, ts: float) -> float:
        """The entry's first fire time strictly after unix time `ts`."""
        return next_fire(self.cron, self.tz, ts)

    @functools.cached_property
    def published(self) -> dict[str, Any]:
        """The entry as workers publish it (JSON): enough to show it and to enqueue it without the user's code."""
        return {
            "name": self.name,
            "cron": self.cron,
            "tz": self.tz,
            "job": self.job,
            "queue": self.queue,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "retries": self.retries,
            "timeout": self.timeout,
            "dead": self.dead,
        }

    def payload(self, fire_at: float) -> dict[str, Any]:
        """A new payload of this entry's job for fire time `fire_at`."""
        return build_payload(self.published, fire_at)

    def describe(self) -> str:
        """The entry as a periodic() call, with where it was made."""
        where = f" at {self.origin}" if self.origin else ""
        return (
            f"periodic({self.cron!r}, {self.job}, args={list(self.args)!r}, kwargs={self.kwargs!r}, "
            f"queue={self.queue!r}, tz={self.tz!r}){where}"
        )


def build_payload(item: Mapping[str, Any], fire_at: float) -> dict[str, Any]:
    """The payload of a published entry for fire time `fire_at`: an ordinary job payload with the job's options,
    plus `periodic` (the entry's name) and `fire_at` (unix seconds), which a job or a middleware may read."""
    payload = payload_mod.build(
        item["job"],
        item.get("args") or [],
        item.get("kwargs") or {},
        queue=item["queue"],
        retries=item.get("retries", 0),
        dead=item.get("dead", True),
        timeout=item.get("timeout"),
    )
    payload["periodic"] = item["name"]
    payload["fire_at"] = fire_at
    return payload


_entries: dict[str, Entry] = {}


def entries() -> list[Entry]:
    """Every registered entry, by name."""
    return [_entries[name] for name in sorted(_entries)]


def clear() -> None:
    """Forget every registered entry (tests use it)."""
    _entries.clear()


def periodic(
    cron: str,
    job: JobFunction | JobCall,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
    queue: str | None = None,
    tz: str = "UTC",
) -> Entry:
    """Enqueue `job(*args, **kwargs)` at each fire time of `cron` in time zone `tz`; returns the entry.

    `cron`: 5 fields (minute hour day month weekday), or 6 with seconds last, or @hourly, @daily, @weekly,
    @monthly (also @yearly, @annually, @midnight). `job`: made with @job, or `job.set(...)` for other options;
    `queue` overrides its queue. `name` (default: the job's wire name) identifies the entry. Raises ValueError
    (PeriodicError) for a bad expression, an unknown time zone, or a second entry of the same name with other
    settings (naming both), and TypeError (PeriodicTypeError) for a callable not made with @job or arguments
    that are not JSON or do not fit the function.
    """
    call = _job_call(job)
    if queue is not None:
        call = _with_queue(call, queue)
    entry = Entry(
        name=call.job.name if name is None else _check_name(name),
        cron=_check_cron(cron),
        tz=_check_tz(tz),
        job=call.job.name,
        queue=call.queue,
        args=tuple(_check_args(call, args, kwargs)),
        kwargs=dict(kwargs or {}),
        retries=call.retries,
        timeout=call.timeout,
        dead=call.dead,
        origin=_caller(),
    )
    _fires_at_all(entry)
    return _register(entry)


def _job_call(job: Any) -> JobCall:
    if isinstance(job, JobFunction):
        return job.defaults
    if isinstance(job, JobCall):
        return job
    raise PeriodicTypeError(f"periodic() needs a job made with @job (or job.set(...)), not {job!r:.80}")


def _with_queue(call: JobCall, queue: Any) -> JobCall:
    try:
        return call.set(queue=queue)
    except ValueError as exc:
        raise PeriodicError(f"periodic(): {exc}") from None


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > NAME_LIMIT:
        raise PeriodicError(f"periodic(): name must be a non-empty string of at most {NAME_LIMIT} characters")
    return name


def _check_cron(cron: Any) -> str:
    """The expression, normalised (single spaces, aliases in lower case); PeriodicError if croniter refuses it."""
    if not isinstance(cron, str):
        raise PeriodicTypeError(f"periodic(): the cron expression must be a string, not {type(cron).__name__}")
    text = " ".join(cron.split())
    fields = text.split(" ")
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise PeriodicError(f"unknown cron alias {cron!r}; use one of {', '.join(ALIASES)}")
        text = text.lower()
    elif len(fields) not in (5, 6):
        raise PeriodicError(
            f"bad cron expression {cron!r}: {len(fields)} field(s); give 5 (minute hour day month weekday) "
            "or 6 (the same, then seconds)"
        )
    elif any(_UNSTABLE_ITEM.match(item) for f in fields for item in f.split(",")):
        raise PeriodicError(f"bad cron expression {cron!r}: H (hashed) and R (random) items are not supported")
    from croniter import croniter

    try:
        croniter(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise PeriodicError(f"bad cron expression {cron!r}: {exc}") from None
    return text


def _check_tz(tz: Any) -> str:
    if not isinstance(tz, str):
        raise PeriodicTypeError(f"periodic(): tz must be a time zone name such as 'Europe/Berlin', not {tz!r:.80}")
    try:
        _zone(tz)
    except (ValueError, KeyError, OSError) as exc:
        raise PeriodicError(f"unknown time zone {tz!r} ({type(exc).__name__}: {exc})") from None
    return tz


def _check_args(call: JobCall, args: Any, kwargs: Any) -> Sequence[Any]:
    if not isinstance(args, (tuple, list)):
        raise PeriodicTypeError(f"periodic(): args must be a tuple or list, not {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise PeriodicTypeError(f"periodic(): kwargs must be a dict or None, not {type(kwargs).__name__}")
    try:
        payload_mod.check_arguments(args, kwargs or {})
    except TypeError as exc:
        raise PeriodicTypeError(f"periodic() for {call.job.name}: {exc}") from None
    mismatch = call.job.arguments_error(args, kwargs or {})
    if mismatch:
        raise PeriodicTypeError(f"periodic() for {call.job.name}: {mismatch}")
    return args


def _caller() -> str:
    """`file:line` of the code that called periodic()."""
    frame = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _fires_at_all(entry: Entry) -> None:
    """Refuse an expression that matches no date (30 February)."""
    try:
        entry.next_after(time.time())
    except ValueError as exc:
        raise PeriodicError(f"cron expression {entry.cron!r} never fires: {exc}") from None


def _register(entry: Entry) -> Entry:
    known = _entries.get(entry.name)
    if known is not None and known != entry:
        raise PeriodicError(
            f"two periodic entries are named {entry.name!r} with different settings: {known.describe()}; and "
            f"{entry.describe()}. Give one of them another name= (a worker refuses to start with both)"
        )
    _entries.setdefault(entry.name, entry)
    return _entries[entry.name]


# -- fire times ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _zone(tz: str) -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)


@functools.lru_cache(maxsize=4096)
def _every_hour(cron: str) -> bool:
    """True when the expression's hour field is `*`: it then fires in both passes of a repeated hour."""
    from croniter import croniter

    return bool(croniter(cron).expanded[1] == ["*"])


def next_fire(cron: str, tz: str, after: float) -> float:
    """The first fire time (unix seconds) of `cron` in time zone `tz` strictly after unix time `after`.

    croniter computes each candidate from the local time; in the second pass of a repeated (fall-back) hour,
    an entry that names its hours skips the candidates it already had in the first pass.
    """
    from croniter import croniter

    zone = _zone(tz)
    every_hour = _every_hour(cron)
    t = after
    for _ in range(_MAX_SKIPS):
        t = float(croniter(cron, dt.datetime.fromtimestamp(t, zone)).get_next(float))
        if every_hour or dt.datetime.fromtimestamp(t, zone).fold == 0:
            if t > after:
                return t
        else:
            t = _fold_end(t, zone) - 1  # the next search starts where the hour's second pass ends
    raise ValueError(f"no fire time of {cron!r} in {tz} after {after}")


def _fold_end(t: float, zone: dt.tzinfo) -> float:
    """The first whole second after `t` that is not in the second pass of a repeated local hour (t is in it)."""
    low, high = int(t), int(t) + 1
    while dt.datetime.fromtimestamp(high, zone).fold == 1:
        low, high = high, high + (high - low) * 2
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, zone).fold == 1:
            low = middle
        else:
            high = middle
    return float(high)


def fire_times(cron: str, tz: str, after: float, until: float) -> list[float]:
    """Every fire time of `cron` in `tz` in the interval (after, until], oldest first."""
    times = []
    t = next_fire(cron, tz, after)
    while t <= until:
        times.append(t)
        t = next_fire(cron, tz, t)
    return times
