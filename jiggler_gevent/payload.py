"""The job payload: how it is built, checked, encoded and decoded.

A payload is a JSON object. Fields: jid, name, args, kwargs, queue, retries, dead, timeout,
created_at, enqueued_at; `at` when it was scheduled; after a failure retry_count, error_class,
error_message, error_backtrace, failed_at; `recoveries` (deaths it was held at), `deaths_blamed` and `died_in`
(the identities of those deaths, the last 10) when it was recovered from a dead process (server/recovery.py);
`reschedules` when it was put back over a limit (limits.OverLimit). A unique job also has unique_for,
unique_until and unique_key (the digest naming its lock NS:unique:<unique_key>). A job whose status and
result are kept has `result_ttl` (seconds); a member of a batch has `bid`; a job with an expiry has `expires_at`
(unix seconds: it never starts after that). With contrib.opentelemetry
instrumented, `trace` carries the push's trace context (W3C traceparent). A job that runs another (a Django task,
contrib/django; a Ruby ActiveJob) names it in `wrapped`, as Sidekiq does: `display_name` and `display_arguments`
show that job rather than its wrapper.
"""

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .config import DEFAULT_QUEUE, DEFAULT_RETRIES

_JSON_SCALARS = (str, int, float, bool, type(None))


class PayloadError(ValueError):
    """A payload that cannot be run: not JSON, not an object, or missing what a job needs."""


def new_jid() -> str:
    """A random job id: 24 hex characters (96 random bits), like Sidekiq's."""
    return os.urandom(12).hex()


def survives_json(value: Any) -> bool:
    """True when `value` comes back from a JSON round trip unchanged, type for type."""
    if value is None or type(value) in (str, bool, int):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is list:
        return all(survives_json(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and survives_json(v) for k, v in value.items())
    return False


def check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raise TypeError naming the first argument that would not survive a JSON round trip."""
    for index, value in enumerate(args):
        if not survives_json(value):
            raise TypeError(
                f"argument {index} ({type(value).__name__} {value!r:.80}) does not survive a JSON round trip; "
                "job arguments must be str, int, float, bool, None, lists and dicts with string keys"
            )
    for name, value in kwargs.items():
        if not survives_json(value):
            raise TypeError(
                f"keyword argument {name!r} ({type(value).__name__} {value!r:.80}) does not survive a JSON "
                "round trip; job arguments must be str, int, float, bool, None, lists and dicts with string keys"
            )


def build(
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str = DEFAULT_QUEUE,
    retries: int = DEFAULT_RETRIES,
    dead: bool = True,
    timeout: float | None = None,
    at: float | None = None,
) -> dict[str, Any]:
    """A new payload for one call; checks the arguments first."""
    args = list(args)
    kwargs = dict(kwargs or {})
    check_arguments(args, kwargs)
    now = time.time()
    payload: dict[str, Any] = {
        "jid": new_jid(),
        "name": name,
        "args": args,
        "kwargs": kwargs,
        "queue": queue,
        "retries": retries,
        "dead": dead,
        "timeout": timeout,
        "created_at": now,
        "enqueued_at": now,
    }
    if at is not None:
        payload["at"] = at
    return payload


PRIORITY_RANGE = range(-100, 101)  # a job's priority within its queue (0: the default, on the plain list)


def check_priority(priority: object) -> None:
    """ValueError unless `priority` is an int from -100 to 100 (not a bool)."""
    if not isinstance(priority, int) or isinstance(priority, bool) or priority not in PRIORITY_RANGE:
        raise ValueError(f"priority must be an int from -100 to 100, not {priority!r}")


def check_result_ttl(result_ttl: object) -> None:
    """ValueError unless `result_ttl` is None or a positive number of seconds."""
    if result_ttl is not None and (
        not isinstance(result_ttl, (int, float)) or isinstance(result_ttl, bool) or not 0 < result_ttl < math.inf
    ):
        raise ValueError(f"result_ttl must be a positive number of seconds or None, not {result_ttl!r}")


def check_expires_in(expires_in: object) -> None:
    """ValueError unless `expires_in` is None or a positive number of seconds."""
    if expires_in is not None and (
        not isinstance(expires_in, (int, float)) or isinstance(expires_in, bool) or not 0 < expires_in < math.inf
    ):
        raise ValueError(f"expires_in must be a positive number of seconds or None, not {expires_in!r}")


def expired(payload: Mapping[str, Any], now: float) -> bool:
    """True when the payload carries a deadline (`expires_at`, unix seconds) that has passed at `now`."""
    deadline = payload.get("expires_at")
    return isinstance(deadline, (int, float)) and not isinstance(deadline, bool) and now > deadline


def result_ttl(payload: Mapping[str, Any]) -> int | None:
    """Whole seconds a payload's status and result are kept (at least 1), or None when it is not tracked."""
    ttl = payload.get("result_ttl")
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and 0 < ttl < math.inf:
        return max(1, math.ceil(ttl))
    return None


def batch_id(payload: Mapping[str, Any]) -> str | None:
    """The id of the batch a payload belongs to, or None."""
    bid = payload.get("bid")
    return bid if isinstance(bid, str) and bid else None


UNIQUE_UNTIL = ("success", "start")


def check_unique(unique_for: object, unique_until: object) -> None:
    """ValueError unless `unique_for` is None or a positive number and `unique_until` is "success" or "start"."""
    if unique_for is not None and (
        not isinstance(unique_for, (int, float)) or isinstance(unique_for, bool) or not 0 < unique_for < math.inf
    ):
        raise ValueError(f"unique_for must be a positive number of seconds or None, not {unique_for!r}")
    if unique_until not in UNIQUE_UNTIL:
        raise ValueError(f"unique_until must be 'success' or 'start', not {unique_until!r}")


def make_unique(payload: dict[str, Any], unique_for: float, unique_until: str) -> None:
    """Mark a built payload unique: the digest of its wire name, arguments, keyword arguments and queue."""
    identity = [payload["name"], payload["args"], payload["kwargs"], payload["queue"]]
    payload["unique_key"] = hashlib.sha256(_SORTED.encode(identity).encode()).hexdigest()[:32]
    payload["unique_for"] = unique_for
    payload["unique_until"] = unique_until


def unique_lock(payload: Mapping[str, Any]) -> str | None:
    """The digest of a payload's unique lock, or None when it has none."""
    key = payload.get("unique_key")
    return key if isinstance(key, str) and key else None


DJANGO_TASK = "jiggler_gevent.django_task"  # the job that runs a Django task (contrib/django/task_run.py)
# Ruby's ActiveJob wrappers (Rails' and Sidekiq 7.3's): the job's one argument is ActiveJob's hash, whose `arguments`
# are the wrapped job's.
ACTIVE_JOB = frozenset(("ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper", "Sidekiq::ActiveJob::Wrapper"))


def display_name(payload: Mapping[str, Any]) -> str:
    """The job a person thinks of: `wrapped` (the job a wrapper runs, as Sidekiq's display_class shows it) when it
    is a non-empty string, else `name` ('?' when it has none)."""
    wrapped = payload.get("wrapped")
    if isinstance(wrapped, str) and wrapped:
        return wrapped
    name = payload.get("name")
    return name if isinstance(name, str) else "?"


def display_arguments(payload: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The arguments and keyword arguments of the job `display_name` names: a Django task's own (not its wrapper's
    result id, spec and meta), an ActiveJob's `arguments`, else the payload's args and kwargs. A wrapper whose
    arguments have another shape (cut short in a heartbeat, written by hand) shows them as they are."""
    args, kwargs = payload.get("args"), payload.get("kwargs")
    args, kwargs = args if isinstance(args, list) else [], kwargs if isinstance(kwargs, dict) else {}
    if "wrapped" not in payload:
        return args, kwargs
    name = payload.get("name")
    if name == DJANGO_TASK and len(args) == 5 and isinstance(args[2], list) and isinstance(args[3], dict):
        return args[2], args[3]
    job = args[0] if name in ACTIVE_JOB and len(args) == 1 and isinstance(args[0], dict) else {}
    if isinstance(job.get("arguments"), list):
        return job["arguments"], {}
    return args, kwargs


class View:
    """What the server reads of a checked payload, one typed field each, read once per run (JobContext.view).
    The wire format stays the JSON object: this is a view of it, never written back. Each field is read by one
    accessor (result_ttl, batch_id, unique_lock above), which the client shares: "is this job tracked?" has one
    answer."""

    __slots__ = (
        "jid",
        "name",
        "shown",
        "queue",
        "result_ttl",
        "tracked",
        "bid",
        "unique_lock",
        "unique_until",
        "plain",
    )

    def __init__(self, payload: Mapping[str, Any]) -> None:
        get = payload.get
        jid, name, queue = get("jid"), get("name"), get("queue")
        self.jid: str = jid if isinstance(jid, str) else "?"
        self.name: str = name if isinstance(name, str) else "?"
        self.shown = self.name if "wrapped" not in payload else display_name(payload)  # what log lines name
        self.queue: str | None = queue if isinstance(queue, str) else None
        # Each accessor answers None for a missing field: asked only when the field is there.
        self.result_ttl: int | None = result_ttl(payload) if "result_ttl" in payload else None  # None: not tracked
        self.tracked = self.result_ttl is not None  # its status and result are kept
        self.bid: str | None = batch_id(payload) if "bid" in payload else None  # None: in no batch
        lock = unique_lock(payload) if "unique_key" in payload else None
        self.unique_lock: str | None = lock  # the lock's digest; None: not unique
        self.unique_until: str | None = get("unique_until") if lock is not None else None
        self.plain = lock is None and self.bid is None and not self.tracked  # none of these: nothing more to write


def encode(payload: object) -> str:
    """The wire form of a payload (or any JSON value): compact JSON, no NaN."""
    return _ENCODER.encode(payload)


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # one for all: json.dumps would make one a call
_SORTED = json.JSONEncoder(separators=(",", ":"), allow_nan=False, sort_keys=True)  # same job, same digest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
# The decoder's own scanner (C), without its Python wrapping; typeshed leaves the attribute out.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _loads(raw: str) -> Any:
    """json.loads that refuses NaN, Infinity and overflowing numbers, which encode() could not write back."""
    try:
        value, end = _SCAN(raw, 0)
    except StopIteration:
        end = -1
    if end != len(raw):  # leading or trailing whitespace, extra data, or not JSON: the decoder says which
        return _DECODER.decode(raw)
    return value


def decode(raw: str) -> dict[str, Any]:
    """Parse and check a payload off the wire; PayloadError says what is wrong with it."""
    return checked(parse(raw))


def parse(raw: str) -> dict[str, Any]:
    """A raw payload's JSON object, not checked further; PayloadError when it is not one."""
    try:
        if not raw.isascii():  # an ASCII text (most are) has no lone surrogate
            raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"payload is not valid UTF-8 (an undecodable byte at character {exc.start})") from None
    try:
        payload = _loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise PayloadError(f"payload is JSON but not an object (it is a {type(payload).__name__})")
    return payload


_MISSING: Any = object()  # a field the payload does not have (None is a value it may have)


def checked(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` checked for what a job run needs (name, args, kwargs, queue), with defaults filled in."""
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        raise PayloadError("payload has no job name (field 'name' must be a non-empty string)")
    args, kwargs = payload.get("args", _MISSING), payload.get("kwargs", _MISSING)
    if not isinstance(args, list) and args is not _MISSING:
        raise PayloadError("payload field 'args' must be a list")
    if not isinstance(kwargs, dict) and kwargs is not _MISSING:
        raise PayloadError("payload field 'kwargs' must be an object")
    if not isinstance(payload.get("queue", ""), str):
        raise PayloadError("payload field 'queue' must be a string")
    if args is _MISSING:
        payload["args"] = []
    if kwargs is _MISSING:
        payload["kwargs"] = {}
    if not isinstance(payload.get("jid"), str):
        payload["jid"] = new_jid()
    return payload


def wire(raw: str) -> bytes:
    """The exact bytes a raw payload was read as (the Redis client decodes with surrogateescape)."""
    return raw.encode("utf-8", "surrogateescape")


def queue_of(raw: str, default: str) -> str:
    """The queue a raw payload belongs to, or `default` when it cannot be read."""
    try:
        queue = json.loads(raw).get("queue")
    except (ValueError, AttributeError, RecursionError):
        return default
    return queue if isinstance(queue, str) and queue else default


def salvage(raw: str, error: str) -> dict[str, Any]:
    """A dead-set entry for a payload that cannot be run, keeping the original bytes."""
    try:
        parsed = _loads(raw)
    except (ValueError, RecursionError):
        parsed = None
    base = parsed if isinstance(parsed, dict) else {}
    entry = {k: v for k, v in base.items() if k in ("jid", "name", "queue", "args", "kwargs")}
    entry.update(
        {
            "jid": entry.get("jid") if isinstance(entry.get("jid"), str) else new_jid(),
            "error_class": "PayloadError",
            "error_message": error,
            "failed_at": time.time(),
            "raw": raw,
        }
    )
    return entry
