"""Limiters shared by every process on a namespace: `concurrent`, `window` and `bucket`, and `OverLimit`.

    stripe = limits.concurrent("stripe", 5, lock_timeout=60, wait_timeout=5)   # at most 5 holders at once
    github = limits.window("github", 5000, per=3600)                           # at most 5000 in any 3600 s
    sms = limits.bucket("sms", 10, per=1)                                       # at most 10 per whole second

    with stripe: ...        # waits up to wait_timeout, then raises OverLimit

Each check-and-take is one Lua script on Redis' clock (scripts/*_acquire.lua), so the limit holds across
processes and hosts whatever their clocks. Waiting is cooperative in a worker (its sockets and sleeps are
gevent's) and plain blocking elsewhere; this module imports neither gevent nor anything of the worker.

In a job, OverLimit is not a failure: the worker puts the job back in the scheduled set after
`reschedule_delay(k)` seconds for its k-th reschedule (no retry used), and fails it after MAX_RESCHEDULES. A job
rescheduled because a `concurrent` limiter was full is parked on it: the next release of a slot moves it to its
queue at once (scripts/lib_holds.lua).

In a worker process (`set_holder`), every `concurrent` slot taken is recorded under the process's identity in the
same script call, so the recovery that declares the process dead frees the slot at once; `lock_timeout` is what
frees the slots of any other process that dies.
"""

import json
import os
import random
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import config, scripts
from .connect import block_for

if TYPE_CHECKING:
    import redis

    from .keys import Keys

MAX_RESCHEDULES = 20
MAX_RESCHEDULE_DELAY = 300.0
MAX_NAME = 200
KINDS = ("concurrent", "window", "bucket")


def reschedule_delay(k: int, rand: random.Random | None = None) -> float:
    """Seconds before the k-th reschedule (0-based) of a job over a limit: min(300, 2 * 1.6**k + random(0..1)).

    2 to 3 s the first time, growing by 1.6 each time, at most 5 minutes.
    """
    return min(MAX_RESCHEDULE_DELAY, 2 * 1.6**k + (rand or random).random())


_holder = ""  # the identity of this worker process ("" outside a worker): the slots it takes are recorded under it


def set_holder(identity: str) -> None:
    """Record the `concurrent` slots this process takes from now on under worker identity `identity` (the worker
    calls it as it starts), so that the recovery that declares the process dead frees them at once."""
    global _holder
    _holder = identity


class OverLimit(Exception):
    """A limiter stayed full for its whole `wait_timeout`. In a job: rescheduled, not failed (up to 20 times)."""

    def __init__(self, name: str, kind: str, waited: float) -> None:
        super().__init__(f"{kind} limiter {name!r} is full (waited {waited:.3f}s)")
        self.name, self.kind, self.waited = name, kind, waited


def check_name(name: object) -> str:
    """`name` if it is a valid limiter name (non-empty, at most 200 characters, no ':'), else ValueError."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or ":" in name:
        raise ValueError(f"a limiter name must be a non-empty string of at most {MAX_NAME} characters without ':'")
    return name


def _positive_int(what: str, n: object) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{what} must be an int >= 1, not {n!r}")
    return n


def _seconds(what: str, value: object, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    if not ok or (positive and value <= 0):  # type: ignore[operator]
        raise ValueError(f"{what} must be a {'positive' if positive else 'non-negative'} number, not {value!r}")
    return float(value)  # type: ignore[arg-type]


class Limiter:
    """A named limiter. `with limiter:` takes it and gives it back; `acquire()` / `release(token)` do so by hand.

    One object may be used by many greenlets or threads at once: the tokens of the `with` blocks are kept per
    greenlet (threading.local, which gevent's patch makes greenlet-local).
    """

    kind = ""

    def __init__(self, name: str, size: int, per: float, wait_timeout: float) -> None:
        self.name = check_name(name)
        self.size = _positive_int("n", size)
        self.per = per
        self.wait_timeout = _seconds("wait_timeout", wait_timeout, positive=False)
        self._description = json.dumps({"kind": self.kind, "size": self.size, "per": per})
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<{self.kind} limiter {self.name!r} size={self.size}>"

    def _redis(self) -> "tuple[redis.Redis, Keys]":
        cfg = config.current()
        return config.redis_client(cfg.url), cfg.keys

    def acquire(self, wait_timeout: float | None = None) -> str:
        """Take the limiter, waiting up to `wait_timeout` (default: the limiter's); returns a token for release().

        Raises OverLimit when it stays full that long.
        """
        wait = self.wait_timeout if wait_timeout is None else _seconds("wait_timeout", wait_timeout, False)
        client, keys = self._redis()
        token = os.urandom(9).hex()
        started = time.monotonic()
        while True:
            taken, retry_ms = self._try(client, keys, token)
            if taken:
                return token
            left = started + wait - time.monotonic()
            if left <= 0:
                raise OverLimit(self.name, self.kind, time.monotonic() - started)
            self._wait(client, keys, min(left, retry_ms / 1000))

    def _try(self, client: "redis.Redis", keys: "Keys", token: str) -> tuple[bool, int]:
        raise NotImplementedError

    def _wait(self, client: "redis.Redis", keys: "Keys", seconds: float) -> None:
        """Sleep until the limiter may have room (a rate limiter: until its oldest acquisition leaves)."""
        time.sleep(seconds)

    def release(self, token: str) -> None:
        """Give back what acquire() took (a rate limiter's acquisitions are not given back: a no-op)."""

    def __enter__(self) -> "Limiter":
        tokens = self._local.__dict__.setdefault("tokens", [])
        tokens.append(self.acquire())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release(self._local.tokens.pop())


class Concurrent(Limiter):
    """At most `size` holders at once; a holder not released within `lock_timeout` seconds is dropped."""

    kind = "concurrent"

    def __init__(self, name: str, size: int, lock_timeout: float, wait_timeout: float) -> None:
        self.lock_timeout = _seconds("lock_timeout", lock_timeout, positive=True)
        super().__init__(name, size, 0, wait_timeout)

    def _try(self, client: "redis.Redis", keys: "Keys", token: str) -> tuple[bool, int]:
        script = scripts.register(client).concurrent_acquire
        ms = max(1, int(self.lock_timeout * 1000))
        taken, retry_ms = script(
            keys=[keys.limit(self.name), keys.limits, keys.holds(_holder)],
            args=[self.name, self.size, ms, token, self._description, "1" if _holder else ""],
        )
        return bool(taken), int(retry_ms)

    def renew(self, token: str) -> bool:
        """Push a held token's expiry `lock_timeout` on from now; False if it was no longer held and no slot is free."""
        client, keys = self._redis()
        return self._try(client, keys, token)[0]

    # Waiting: BLPOP on a per-limiter list that each release pushes one element to, rather than pub/sub: a
    # release that happens between a waiter's failed check and its BLPOP is not lost (it stays in the list),
    # and one release wakes one waiter, not all. The wait is also capped at the earliest holder's expiry, so a
    # slot freed by a dead holder's timeout is found without any release.
    def _wait(self, client: "redis.Redis", keys: "Keys", seconds: float) -> None:
        client.blpop([keys.limit_free(self.name)], timeout=block_for(seconds))  # acquire() loops until its deadline

    def release(self, token: str) -> None:
        client, keys = self._redis()
        ms = max(1000, int(self.lock_timeout * 1000))
        name = self.name
        k = [keys.limit(name), keys.limit_free(name), keys.limit_parked(name), keys.holds(_holder), keys.schedule]
        args: list[str | int] = [token, self.size, ms, name, keys.queue_prefix, config.DEFAULT_QUEUE]
        scripts.register(client).concurrent_release(keys=[*k, keys.queues, keys.wake, keys.limits], args=args)


class Window(Limiter):
    """At most `size` acquisitions in any `per` seconds (a sliding window)."""

    kind = "window"

    def _try(self, client: "redis.Redis", keys: "Keys", token: str) -> tuple[bool, int]:
        script = scripts.register(client).window_acquire
        us = max(1, int(self.per * 1_000_000))
        taken, retry_ms = script(
            keys=[keys.limit(self.name), keys.limits], args=[self.name, self.size, us, token, self._description]
        )
        return bool(taken), int(retry_ms)


class Bucket(Limiter):
    """At most `size` acquisitions per whole interval of `per` seconds (fixed intervals from the epoch)."""

    kind = "bucket"

    def _try(self, client: "redis.Redis", keys: "Keys", token: str) -> tuple[bool, int]:
        script = scripts.register(client).bucket_acquire
        ms = max(1, int(self.per * 1000))
        taken, retry_ms = script(
            keys=[keys.limit(self.name), keys.limits], args=[self.name, self.size, ms, self._description]
        )
        return bool(taken), int(retry_ms)


def concurrent(name: str, n: int, lock_timeout: float = 60, wait_timeout: float = 0) -> Concurrent:
    """A limiter with at most `n` holders at once across every process; one that died is released after
    `lock_timeout` seconds."""
    return Concurrent(name, n, lock_timeout, wait_timeout)


def window(name: str, n: int, per: float, wait_timeout: float = 0) -> Window:
    """A limiter allowing at most `n` acquisitions in any `per` seconds."""
    return Window(name, n, _seconds("per", per, positive=True), wait_timeout)


def bucket(name: str, n: int, per: float, wait_timeout: float = 0) -> Bucket:
    """A limiter allowing at most `n` acquisitions per whole interval of `per` seconds."""
    return Bucket(name, n, _seconds("per", per, positive=True), wait_timeout)


def is_group_limiter(name: str) -> bool:
    """Whether `name` is one fetch.lua gives a fair group's `group_concurrency` limiter: 'group.' and the sha1 of
    the queue's key, a newline and the group (scripts/lib_holds.lua's GROUP_LIMITER)."""
    return len(name) == 46 and name.startswith("group.") and all(c in "0123456789abcdef" for c in name[6:])


def describe(raw: str) -> dict[str, Any]:
    """A limiter's description as NS:limits stores it ({kind, size, per}); {} when unreadable."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
