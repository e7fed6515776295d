"""`@job`: turn a function into a job that can be enqueued, and the registry the worker runs from."""

import asyncio
import datetime as dt
import functools
import inspect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional, overload

from . import config, wire
from . import iterable as iterable_jobs
from . import payload as payload_mod

if TYPE_CHECKING:
    from .client import Client

_registry: dict[str, "JobFunction"] = {}
SHAPES_REMEMBERED = 64  # argument shapes whose fit is remembered per job (a bound, whatever producers send)

When = dt.datetime | float | int
Delay = dt.timedelta | float | int


def lookup(name: str) -> Optional["JobFunction"]:
    """The job registered under wire name `name`, or None."""
    return _registry.get(name)


def registered() -> list[str]:
    """Names of every registered job."""
    return sorted(_registry)


def _defaults(name: str) -> Optional["JobCall"]:
    """The options of the job registered under `name`: what a wire format reads when a payload leaves them out."""
    job = _registry.get(name)
    return job.defaults if job is not None else None


wire.use_registry(_defaults)


def _client() -> "Client":
    """The Client of the settings in force (client.current). client.py imports redis, so it is imported at the first
    push, not with this module (importing the package must touch no socket before gevent is patched); then kept."""
    global _current_client
    if _current_client is None:
        from .client import current

        _current_client = current
    return _current_client()


_current_client: Callable[[], "Client"] | None = None


def _timestamp(when: When) -> float:
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return float(when)
    raise TypeError(f"when must be a datetime or a unix timestamp, not {type(when).__name__}")


def _seconds(delay: Delay) -> float:
    if isinstance(delay, dt.timedelta):
        return delay.total_seconds()
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        return float(delay)
    raise TypeError(f"delay must be seconds or a timedelta, not {type(delay).__name__}")


def _check_debounce(debounce: object, key: object, unique_for: object) -> None:
    """ValueError unless `debounce` is None or a positive number of seconds, and `key` None or a non-empty string
    given with it; a job is debounced or unique, not both."""
    if debounce is not None and (
        not isinstance(debounce, (int, float)) or isinstance(debounce, bool) or not 0 < debounce < math.inf
    ):
        raise ValueError(f"debounce must be a positive number of seconds or None, not {debounce!r}")
    if key is not None and (not isinstance(key, str) or not key or debounce is None):
        raise ValueError(f"debounce_key must be a non-empty string given with debounce, not {key!r}")
    if debounce is not None and unique_for is not None:
        raise ValueError("a job is debounced or unique (unique_for), not both")


def _check_groupable(priority: int, debounce: float | None) -> None:
    """ValueError for a grouped job that also has a priority or a debounce: a job is ordered by one of them."""
    if priority:
        raise ValueError("a job has a priority or a group, not both: its group's turn decides when it starts")
    if debounce is not None:
        raise ValueError("a debounced job cannot have a group")


# the options `.set(...)` takes
OPTIONS = frozenset(
    ("queue", "retries", "timeout", "dead", "unique_for", "unique_until", "result_ttl", "expires_in", "expires_at")
    + ("debounce", "debounce_key", "priority", "group")
)

GROUP_MAX = 500  # characters in a group's name


def _check_group(group: object) -> None:
    """ValueError unless `group` is None or a non-empty string of at most GROUP_MAX characters."""
    if group is not None and (not isinstance(group, str) or not group or len(group) > GROUP_MAX):
        raise ValueError(f"a group must be a non-empty string of at most {GROUP_MAX} characters, not {group!r}")


def check_placement(priority: int, group: str | None, debounce: float | None = None) -> None:
    """ValueError unless `priority` and `group` are valid options of one call (a group has neither a priority nor a
    debounce)."""
    payload_mod.check_priority(priority)
    _check_group(group)
    if group is not None:
        _check_groupable(priority, debounce)


class JobCall:
    """A job with options fixed for the next pushes: what `.set(...)` returns."""

    def __init__(
        self,
        job: "JobFunction",
        queue: str,
        retries: int,
        timeout: float | None,
        dead: bool,
        unique_for: float | None = None,
        unique_until: str = "success",
        result_ttl: float | None = None,
        expires_in: float | None = None,
        expires_at: When | None = None,
        debounce: float | None = None,
        debounce_key: str | None = None,
        priority: int = 0,
        group: str | None = None,
    ) -> None:
        if not isinstance(queue, str) or not queue or ":" in queue:
            raise ValueError(f"queue must be a non-empty string without ':', not {queue!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, not {retries!r}")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
        payload_mod.check_unique(unique_for, unique_until)
        payload_mod.check_result_ttl(result_ttl)
        payload_mod.check_expires_in(expires_in)
        if expires_in is not None and expires_at is not None:
            raise ValueError("give expires_in or expires_at, not both")
        self.job, self.queue, self.retries, self.timeout, self.dead = job, queue, retries, timeout, bool(dead)
        self.unique_for, self.unique_until, self.result_ttl = unique_for, unique_until, result_ttl
        self.expires_in = expires_in
        self.expires_at = None if expires_at is None else _timestamp(expires_at)
        _check_debounce(debounce, debounce_key, unique_for)
        self.debounce, self.debounce_key = debounce, debounce_key
        check_placement(priority, group, debounce)
        self.priority, self.group = priority, group

    def set(self, **options: Any) -> "JobCall":
        """The same job with some options changed: queue, retries, timeout, dead, unique_for, unique_until,
        result_ttl, expires_in or expires_at (either replaces the other), debounce, debounce_key, priority, group."""
        unknown = set(options) - OPTIONS
        if unknown:
            raise TypeError(f"unknown job option(s): {', '.join(sorted(unknown))}")
        merged: dict[str, Any] = {
            "queue": self.queue,
            "retries": self.retries,
            "timeout": self.timeout,
            "dead": self.dead,
            "unique_for": self.unique_for,
            "unique_until": self.unique_until,
            "result_ttl": self.result_ttl,
            "expires_in": None if "expires_at" in options else self.expires_in,
            "expires_at": None if "expires_in" in options else self.expires_at,
            "debounce": self.debounce,
            "debounce_key": self.debounce_key,
            "priority": self.priority,
            "group": self.group,
        }
        merged.update(options)
        return JobCall(self.job, **merged)

    def _payload(self, args: Sequence[Any], kwargs: dict[str, Any], at: float | None = None) -> dict[str, Any]:
        """The payload of one call; TypeError when the arguments cannot bind to the function's signature (checked
        once per shape, JobFunction.arguments_error) or would not survive JSON: nothing is pushed then."""
        mismatch = self.job.arguments_error(args, kwargs)
        if mismatch:
            raise TypeError(f"cannot enqueue {self.job.name}: {mismatch}")
        payload = payload_mod.build(
            self.job.name,
            args,
            kwargs,
            queue=self.queue,
            retries=self.retries,
            dead=self.dead,
            timeout=self.timeout,
            at=at,
        )
        if self.unique_for is not None:
            payload_mod.make_unique(payload, self.unique_for, self.unique_until)
        if self.result_ttl is not None:
            payload["result_ttl"] = self.result_ttl
        if self.expires_in is not None or self.expires_at is not None:
            payload["expires_at"] = self._deadline(at)
        if self.priority:
            payload["priority"] = self.priority
        group = self.group if self.group is not None else self.job.group_of(args, kwargs)
        if group is not None:
            _check_groupable(self.priority, self.debounce)
            payload["group"] = group
            if self.job.group_concurrency is not None:
                payload["group_concurrency"] = self.job.group_concurrency
        return payload

    def _deadline(self, at: float | None) -> float:
        """The time after which the job must not start: counted from when it becomes due (now, or `at`)."""
        due = time.time() if at is None else at
        if self.expires_in is not None:
            return due + self.expires_in
        assert self.expires_at is not None
        if self.expires_at <= due:
            raise ValueError(f"expires_at ({self.expires_at}) is not after the time the job becomes due ({due})")
        return self.expires_at

    def enqueue(self, *args: Any, **kwargs: Any) -> str | None:
        """Push one job to run now; returns its jid (None: a unique job already held its lock, nothing pushed).
        A debounced job runs `debounce` seconds later, and an enqueue with the same key while it waits replaces
        its arguments and restarts the delay, returning the same jid."""
        if self.debounce is not None:
            at = time.time() + self.debounce
            key = self.debounce_key or f"{self.job.name}:{self.queue}"
            return _client().debounce(self._payload(args, kwargs, at=at), at, key)
        return _client().push(self._payload(args, kwargs))

    def _not_debounced(self, verb: str) -> None:
        if self.debounce is not None:
            raise ValueError(f"{verb} of a debounced job: its delay is `debounce`; use enqueue()")

    def enqueue_at(self, when: When, *args: Any, **kwargs: Any) -> str | None:
        """Push one job to run at `when` (datetime, naive means UTC, or unix time); a past time runs now."""
        self._not_debounced("enqueue_at")
        at = _timestamp(when)
        if at <= time.time():
            return self.enqueue(*args, **kwargs)
        return _client().schedule(self._payload(args, kwargs, at=at), at)

    def enqueue_in(self, delay: Delay, *args: Any, **kwargs: Any) -> str | None:
        """Push one job to run after `delay` seconds (or a timedelta)."""
        return self.enqueue_at(time.time() + _seconds(delay), *args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> str | None:
        """`enqueue`, under Celery's name."""
        return self.enqueue(*args, **kwargs)

    async def aenqueue(self, *args: Any, **kwargs: Any) -> str | None:
        """`enqueue` for async code in a process gevent did not patch (FastAPI, an asyncio service): the push runs
        in a thread of the event loop's default executor, so the loop goes on while Redis answers."""
        return await asyncio.to_thread(self.enqueue, *args, **kwargs)

    async def aenqueue_in(self, delay: Delay, *args: Any, **kwargs: Any) -> str | None:
        """`enqueue_in` for async code (as aenqueue)."""
        return await asyncio.to_thread(self.enqueue_in, delay, *args, **kwargs)

    async def aenqueue_at(self, when: When, *args: Any, **kwargs: Any) -> str | None:
        """`enqueue_at` for async code (as aenqueue)."""
        return await asyncio.to_thread(self.enqueue_at, when, *args, **kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: Delay | None = None,
        eta: When | None = None,
        expires: Delay | dt.datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> str | None:
        """Celery's call: `countdown` seconds or an `eta` (datetime or unix time) delay the job; `expires` (seconds
        or a datetime) is the `expires_in`/`expires_at` option, `queue` the queue, `priority` the priority within
        the queue (-100..100, higher first)."""
        if countdown is not None and eta is not None:
            raise ValueError("give countdown or eta, not both")
        options: dict[str, Any] = {}
        if queue is not None:
            options["queue"] = queue
        if priority is not None:
            options["priority"] = priority
        if expires is not None:
            options["expires_at" if isinstance(expires, dt.datetime) else "expires_in"] = expires
        call = self.set(**options) if options else self
        args, kwargs = tuple(args), dict(kwargs or {})
        if eta is not None:
            return call.enqueue_at(eta, *args, **kwargs)
        if countdown is not None:
            return call.enqueue_in(countdown, *args, **kwargs)
        return call.enqueue(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> "Signature":
        """A signature: this job with these arguments, not yet enqueued; in a workflow it receives the previous
        step's result as its first argument."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> "Signature":
        """An immutable signature: in a workflow it receives nothing but these arguments."""
        return Signature(self, args, kwargs, immutable=True)

    def enqueue_bulk(self, arg_tuples: Iterable[Sequence[Any]]) -> list[str | None]:
        """Push one job per argument tuple, all or nothing (one script call); None for a unique duplicate."""
        self._not_debounced("enqueue_bulk")
        payloads = []
        for index, args in enumerate(arg_tuples):
            if not isinstance(args, (tuple, list)):
                raise TypeError(f"enqueue_bulk item {index} must be a tuple of arguments, not {type(args).__name__}")
            try:
                payloads.append(self._payload(args, {}))
            except TypeError as exc:
                raise TypeError(f"enqueue_bulk item {index}: {exc}") from None
        return _client().push_bulk(payloads)


class Signature:
    """A job with its arguments, not yet enqueued (`job.s(...)`, `job.si(...)`): a step of a workflow (chain, group,
    chord), or enqueued alone with `enqueue()`. `immutable`: in a workflow, the previous result is not passed."""

    def __init__(
        self,
        call: "JobCall | JobFunction",
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        immutable: bool = False,
    ) -> None:
        if isinstance(call, JobFunction):
            call = call.defaults
        if not isinstance(call, JobCall):
            raise TypeError(f"a signature is made of a @job function (job.s(...)), not {call!r:.80}")
        kwargs = dict(kwargs or {})
        payload_mod.check_arguments(list(args), kwargs)
        self.call, self.args, self.kwargs, self.immutable = call, tuple(args), kwargs, bool(immutable)

    @property
    def name(self) -> str:
        """The job's wire name."""
        return self.call.job.name

    def set(self, **options: Any) -> "Signature":
        """The same signature with per-call options changed (those of `job.set(...)`)."""
        return Signature(self.call.set(**options), self.args, self.kwargs, self.immutable)

    def enqueue(self) -> str | None:
        """Push the job alone, now; returns its jid (None: a unique duplicate, nothing pushed)."""
        return self.call.enqueue(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        arguments = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.name}.{'si' if self.immutable else 's'}({arguments})"


def refuse_bodies_never_run(func: Callable[..., Any], iterable: bool) -> None:
    """TypeError for a function whose call would return without running its body: an async generator function,
    an `async def` with iterable=True, or a generator function without iterable=True. Run as a job, each would
    count as a success while doing nothing. A plain `async def` is a job: the worker awaits its coroutine."""
    what = getattr(func, "__qualname__", repr(func))
    if inspect.isasyncgenfunction(func):
        raise TypeError(
            f"{what} is an async generator function: a call would return an async generator without running its "
            "body; jobs are plain or async def functions (@job(iterable=True) takes a plain generator)"
        )
    if inspect.iscoroutinefunction(func) and iterable:
        raise TypeError(f"{what} is an async def function: @job(iterable=True) takes a plain generator function")
    if inspect.isgeneratorfunction(func) and not iterable:
        raise TypeError(
            f"{what} is a generator function: a call would return a generator without running its body; "
            "use @job(iterable=True) for a generator whose yields are checkpoints"
        )


class JobFunction:
    """A function registered as a job. Calling it runs it inline; the enqueue verbs push it to Redis."""

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None,
        queue: str,
        retries: int,
        timeout: float | None,
        dead: bool,
        concurrency: int | None = None,
        unique_for: float | None = None,
        unique_until: str = "success",
        result_ttl: float | None = None,
        iterable: bool = False,
        expires_in: float | None = None,
        debounce: float | None = None,
        priority: int = 0,
        group_by: Callable[..., str] | None = None,
        group_concurrency: int | None = None,
    ) -> None:
        refuse_bodies_never_run(func, iterable)
        # where a resumed run puts the cursor (iterable.with_cursor)
        self.cursor_at = iterable_jobs.check_iterable(func) if iterable else None
        if concurrency is not None and (
            not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
        ):
            raise ValueError(f"concurrency must be an int >= 1 or None, not {concurrency!r}")
        if group_by is not None and not callable(group_by):
            raise ValueError(f"group_by must be a callable taking the job's arguments, not {group_by!r}")
        if group_concurrency is not None and (
            not isinstance(group_concurrency, int) or isinstance(group_concurrency, bool) or group_concurrency < 1
        ):
            raise ValueError(f"group_concurrency must be an int >= 1 or None, not {group_concurrency!r}")
        if group_concurrency is not None and concurrency is not None:
            raise ValueError("give concurrency or group_concurrency, not both")
        self.func = func
        self.concurrency = concurrency
        self.group_by, self.group_concurrency = group_by, group_concurrency
        self.iterable = bool(iterable)  # a generator whose yields are checkpoints (server/iteration.py runs it)
        self._shape_errors: dict[tuple[int, tuple[str, ...]], str | None] = {}
        self.name = name or f"{func.__module__}.{func.__qualname__}"
        self.defaults = JobCall(
            self,
            queue,
            retries,
            timeout,
            dead,
            unique_for,
            unique_until,
            result_ttl,
            expires_in,
            debounce=debounce,
            priority=priority,
        )
        functools.update_wrapper(self, func)
        _registry[self.name] = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.iterable:
            return iterable_jobs.exhaust(self.func(*args, **kwargs), self.name)
        return self.func(*args, **kwargs)

    @functools.cached_property
    def signature(self) -> inspect.Signature | None:
        """The function's signature, to check a payload's arguments before the call (None if unknown)."""
        try:
            return inspect.signature(self.func)
        except (TypeError, ValueError):
            return None

    def arguments_error(self, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
        """Why `args` and `kwargs` cannot be passed to the function, or None when they fit.

        Binding depends only on how many positional arguments there are and which keywords are named, so
        the answer is remembered per shape (for the first SHAPES_REMEMBERED shapes).
        """
        shape = (len(args), tuple(kwargs))
        try:
            return self._shape_errors[shape]
        except KeyError:
            pass
        error = None
        if self.signature is not None:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                error = f"arguments do not match {getattr(self.func, '__name__', self.name)}{self.signature}: {exc}"
        if len(self._shape_errors) < SHAPES_REMEMBERED:
            self._shape_errors[shape] = error
        return error

    def group_of(self, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
        """The group `group_by` gives for these arguments (None without group_by); ValueError when it raises or
        returns anything but a non-empty string, so nothing is pushed."""
        if self.group_by is None:
            return None
        try:
            group = self.group_by(*args, **kwargs)
        except Exception as exc:
            raise ValueError(f"group_by of {self.name} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(group, str) or not group or len(group) > GROUP_MAX:
            raise ValueError(
                f"group_by of {self.name} must return a non-empty string of at most {GROUP_MAX} characters, "
                f"not {group!r}"
            )
        return group

    def __repr__(self) -> str:
        return f"<job {self.name}>"

    def set(self, **options: Any) -> JobCall:
        """Options for the next pushes only: `job.set(queue="low").enqueue(...)`."""
        return self.defaults.set(**options)

    def enqueue(self, *args: Any, **kwargs: Any) -> str | None:
        """Push one job to run now; returns its jid (None: a unique duplicate, nothing pushed)."""
        return self.defaults.enqueue(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> str | None:
        """`enqueue`, under Celery's name."""
        return self.defaults.enqueue(*args, **kwargs)

    async def aenqueue(self, *args: Any, **kwargs: Any) -> str | None:
        """`enqueue` for async code, without blocking the event loop (JobCall.aenqueue)."""
        return await self.defaults.aenqueue(*args, **kwargs)

    async def aenqueue_in(self, delay: Delay, *args: Any, **kwargs: Any) -> str | None:
        """`enqueue_in` for async code (JobCall.aenqueue)."""
        return await self.defaults.aenqueue_in(delay, *args, **kwargs)

    async def aenqueue_at(self, when: When, *args: Any, **kwargs: Any) -> str | None:
        """`enqueue_at` for async code (JobCall.aenqueue)."""
        return await self.defaults.aenqueue_at(when, *args, **kwargs)

    def apply_async(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> str | None:
        """Celery's call (JobCall.apply_async): countdown, eta, expires, queue, priority."""
        return self.defaults.apply_async(args, kwargs, **options)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this job (JobCall.s): a workflow step that receives the previous result first."""
        return Signature(self.defaults, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature of this job (JobCall.si): a workflow step that receives only these arguments."""
        return Signature(self.defaults, args, kwargs, immutable=True)

    def enqueue_at(self, when: When, *args: Any, **kwargs: Any) -> str | None:
        """Push one job to run at `when`."""
        return self.defaults.enqueue_at(when, *args, **kwargs)

    def enqueue_in(self, delay: Delay, *args: Any, **kwargs: Any) -> str | None:
        """Push one job to run after `delay`."""
        return self.defaults.enqueue_in(delay, *args, **kwargs)

    def enqueue_bulk(self, arg_tuples: Iterable[Sequence[Any]]) -> list[str | None]:
        """Push many jobs, all or nothing; None in the places of unique duplicates."""
        return self.defaults.enqueue_bulk(arg_tuples)

    @property
    def queue(self) -> str:
        return self.defaults.queue

    @property
    def retries(self) -> int:
        return self.defaults.retries

    @property
    def timeout(self) -> float | None:
        return self.defaults.timeout

    @property
    def dead(self) -> bool:
        return self.defaults.dead


@overload
def job(func: Callable[..., Any]) -> JobFunction: ...
@overload
def job(
    *,
    queue: str = ...,
    retries: int = ...,
    timeout: float | None = ...,
    dead: bool = ...,
    name: str | None = ...,
    concurrency: int | None = ...,
    unique_for: float | None = ...,
    unique_until: str = ...,
    result_ttl: float | None = ...,
    iterable: bool = ...,
    expires_in: float | None = ...,
    debounce: float | None = ...,
    priority: int = ...,
    group_by: Callable[..., str] | None = ...,
    group_concurrency: int | None = ...,
) -> Callable[[Callable[..., Any]], JobFunction]: ...


def job(
    func: Callable[..., Any] | None = None,
    *,
    queue: str = config.DEFAULT_QUEUE,
    retries: int = config.DEFAULT_RETRIES,
    timeout: float | None = None,
    dead: bool = True,
    name: str | None = None,
    concurrency: int | None = None,
    unique_for: float | None = None,
    unique_until: str = "success",
    result_ttl: float | None = None,
    iterable: bool = False,
    expires_in: float | None = None,
    debounce: float | None = None,
    priority: int = 0,
    group_by: Callable[..., str] | None = None,
    group_concurrency: int | None = None,
) -> Any:
    """Register a function as a job: `@job` or `@job(queue=..., retries=..., timeout=..., dead=..., name=...,
    concurrency=..., unique_for=..., unique_until=..., result_ttl=..., iterable=..., expires_in=...)`. With
    iterable=True the function is a generator with a `cursor` keyword: each value it yields is a checkpoint to
    resume from. With expires_in=SECONDS a job that has not started that long after it became due never runs. With
    debounce=SECONDS an enqueue runs the job that much later, and enqueueing again while it waits replaces it. With
    priority=N (-100..100, default 0) its waiting jobs start before those of lower priority in the same queue. With
    group_by=callable (given the job's arguments, returning a string) the waiting jobs of one queue start round-robin
    across groups, and with group_concurrency=N at most N of one group run at once. An `async def` function is a job
    too: the worker awaits it on its asyncio loop, beside the blocking jobs."""

    def wrap(f: Callable[..., Any]) -> JobFunction:
        return JobFunction(
            f,
            name,
            queue,
            retries,
            timeout,
            dead,
            concurrency,
            unique_for,
            unique_until,
            result_ttl,
            iterable,
            expires_in,
            debounce,
            priority,
            group_by,
            group_concurrency,
        )

    return wrap(func) if func is not None else wrap
