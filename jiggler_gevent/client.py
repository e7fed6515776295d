"""Pushing payloads to Redis: the client side of every enqueue verb.

Each push runs the client middleware chain, then writes in one MULTI transaction, so a push, a bulk push
included, lands whole or not at all. A Redis that cannot be reached raises EnqueueError naming the job.
"""

from collections.abc import Callable
from typing import Any

import redis

from . import config, middleware
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

    def push(self, payload: dict[str, Any]) -> str:
        """Push one payload to its queue now; returns its jid."""
        return self.push_bulk([payload])[0]

    def schedule(self, payload: dict[str, Any], at: float) -> str:
        """Put one payload in the scheduled set, due at unix time `at`; returns its jid."""
        return self._write([payload], at)[0]

    def push_bulk(self, payloads: list[dict[str, Any]]) -> list[str]:
        """Push many payloads to their queues in one MULTI transaction (one LPUSH per queue per 1000 payloads)."""
        return self._write(payloads, None)

    def _write(self, payloads: list[dict[str, Any]], at: float | None) -> list[str]:
        for p in payloads:
            middleware.client.before("before_push", p)
        if push_hook is not None:
            push_hook(payloads, at)
        else:
            self._send(payloads, at)
        for p in payloads:
            middleware.client.after("after_push", p)
        return [p["jid"] for p in payloads]

    def _send(self, payloads: list[dict[str, Any]], at: float | None) -> None:
        encoded = [(p["queue"], payload_mod.encode(p)) for p in payloads]
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                for start in range(0, max(len(encoded), 1), config.BULK_CHUNK):
                    self._queue_commands(pipe, encoded[start : start + config.BULK_CHUNK], at)
                pipe.execute()
        except redis.RedisError as exc:
            what = payloads[0]["name"] if payloads else "?"
            raise EnqueueError(
                f"could not push {len(payloads)} job(s) ({what}) to Redis at {config.redacted(self.cfg.url)}: {exc}"
            ) from exc

    def _queue_commands(self, pipe: Any, chunk: list[Any], at: float | None) -> None:
        if not chunk:
            return
        if at is not None:
            pipe.zadd(self.keys.schedule, {raw: at for _, raw in chunk})
            return
        by_queue: dict[str, list[str]] = {}
        for queue, raw in chunk:
            by_queue.setdefault(queue, []).append(raw)
        pipe.sadd(self.keys.queues, *by_queue)
        for queue, raws in by_queue.items():
            pipe.lpush(self.keys.queue(queue), *raws)
