"""Pushing payloads to Redis: the client side of every enqueue verb.

Each push runs the client middleware chain, then writes with one atomic command: the push script (push.lua)
for jobs to run now, which also wakes a worker idle on several queues, or one ZADD for scheduled jobs. So a
push, a bulk push included, lands whole or not at all, in one round trip. Payloads of unique jobs go through
push_unique.lua instead, which takes each one's lock in the same atomic step as its push and skips those whose
lock is held: their places in the result are None. A Redis that cannot be reached raises EnqueueError naming
the job.
"""

import time
from collections.abc import Callable
from typing import Any

import redis

from . import config, middleware, scripts
from . import payload as payload_mod
from .errors import EnqueueError

# Set by jiggler_gevent.testing to divert pushes (inline or fake mode); None means push to Redis.
push_hook: Callable[[list[dict[str, Any]], float | None], None] | None = None


class Client:
    """Pushes jobs for one configuration (default: the configured one at creation)."""

    def __init__(self, cfg: config.Config | None = None) -> None:
        self.cfg = cfg or config.current()
        self.keys = self.cfg.keys

    @property
    def redis(self) -> redis.Redis:
        return config.redis_client(self.cfg.url)

    def push(self, payload: dict[str, Any]) -> str | None:
        """Push one payload to its queue now; returns its jid, or None for a unique job whose lock is held."""
        return self.push_bulk([payload])[0]

    def schedule(self, payload: dict[str, Any], at: float) -> str | None:
        """Put one payload in the scheduled set, due at unix time `at`; returns its jid (None as push())."""
        return self._write([payload], at)[0]

    def push_bulk(self, payloads: list[dict[str, Any]]) -> list[str | None]:
        """Push many payloads to their queues, all or nothing, in one script call (None: unique duplicates)."""
        return self._write(payloads, None)

    def _write(self, payloads: list[dict[str, Any]], at: float | None) -> list[str | None]:
        chain = middleware.client
        if chain.entries:
            for p in payloads:
                chain.before("before_push", p)
        if push_hook is not None:
            push_hook(payloads, at)
            pushed = [True] * len(payloads)
        else:
            pushed = self._send(payloads, at)
        if chain.entries:
            for p, ok in zip(payloads, pushed, strict=True):
                if ok:
                    chain.after("after_push", p)
        return [p["jid"] if ok else None for p, ok in zip(payloads, pushed, strict=True)]

    def _send(self, payloads: list[dict[str, Any]], at: float | None) -> list[bool]:
        """Write the payloads; which of them were pushed (all but unique duplicates)."""
        if not payloads:
            return []
        client = self.redis
        try:
            if any(payload_mod.unique_lock(p) for p in payloads):
                return self._send_unique(payloads, at)
            if at is not None:
                client.zadd(self.keys.schedule, {payload_mod.encode(p): at for p in payloads})
            else:
                keys = [self.keys.queues, self.keys.wake]
                scripts.register(client).push(keys=keys, args=self._push_args(payloads), client=client)
        except redis.RedisError as exc:
            what = payloads[0]["name"] if payloads else "?"
            raise EnqueueError(
                f"could not push {len(payloads)} job(s) ({what}) to Redis at {config.redacted(self.cfg.url)}: {exc}"
            ) from exc
        return [True] * len(payloads)

    def _send_unique(self, payloads: list[dict[str, Any]], at: float | None) -> list[bool]:
        """Push with push_unique.lua: each lock taken (SET NX PX) in the same step as its payload's push.

        A lock lasts `unique_for` seconds from when the job is due (now, or `at` for a scheduled job).
        """
        client, now = self.redis, time.time()
        args: list[str | int | float] = [self.keys.queue_prefix, self.keys.unique_prefix]
        for p in payloads:
            lock = payload_mod.unique_lock(p) or ""
            ttl_ms = int(((at or now) - now + float(p.get("unique_for") or 0)) * 1000) if lock else 0
            args += [p["queue"], payload_mod.encode(p), "" if at is None else at, lock, p["jid"], max(1, ttl_ms)]
        keys = [self.keys.queues, self.keys.wake, self.keys.schedule]
        flags = scripts.register(client).push_unique(keys=keys, args=args, client=client)
        return [bool(f) for f in flags]

    def _push_args(self, payloads: list[dict[str, Any]]) -> list[str | int]:
        """The push script's ARGV: the queue key prefix, then each queue's name, count and payloads."""
        if len(payloads) == 1:
            return [self.keys.queue_prefix, payloads[0]["queue"], 1, payload_mod.encode(payloads[0])]
        by_queue: dict[str, list[str]] = {}
        for p in payloads:
            by_queue.setdefault(p["queue"], []).append(payload_mod.encode(p))
        args: list[str | int] = [self.keys.queue_prefix]
        for queue, raws in by_queue.items():
            args += [queue, len(raws), *raws]
        return args
