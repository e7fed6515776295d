"""Pushing payloads to Redis: the client side of every enqueue verb.

Each push runs the client middleware chain, then writes in one MULTI transaction, so a push, a bulk push
included, lands whole or not at all. A Redis that cannot be reached raises EnqueueError naming the job.
"""
from typing import Any, Callable, Dict, List, Optional

import redis

from . import config, middleware, payload as payload_mod
from .errors import EnqueueError

# Set by jiggler_gevent.testing to divert pushes (inline or fake mode); None means push to Redis.
push_hook: Optional[Callable[[List[Dict[str, Any]], Optional[float]], None]] = None


class Client:
    """Pushes jobs for one configuration (default: the configured one at creation)."""

    def __init__(self, cfg: Optional[config.Config] = None) -> None:
        self.cfg = cfg or config.current()
        self.keys = self.cfg.keys

    @property
    def redis(self) -> redis.Redis:
        return config.redis_client(self.cfg.url)

    def push(self, payload: Dict[str, Any]) -> str:
        """Push one payload to its queue now; returns its jid."""
        return self.push_bulk([payload])[0]

    def schedule(self, payload: Dict[str, Any], at: float) -> str:
        """Put one payload in the scheduled set, due at unix time `at`; returns its jid."""
        return self._write([payload], at)[0]

    def push_bulk(self, payloads: List[Dict[str, Any]]) -> List[str]:
        """Push many payloads to their queues in one MULTI transaction (one LPUSH per queue per 1000 payloads)."""
        return self._write(payloads, None)

    def _write(self, payloads: List[Dict[str, Any]], at: Optional[float]) -> List[str]:
        for p in payloads:
            middleware.client.before("before_push", p)
        if push_hook is not None:
            push_hook(payloads, at)
        else:
            self._send(payloads, at)
        for p in payloads:
            middleware.client.after("after_push", p)
        return [p["jid"] for p in payloads]

    def _send(self, payloads: List[Dict[str, Any]], at: Optional[float]) -> None:
        encoded = [(p["queue"], payload_mod.encode(p)) for p in payloads]
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                for start in range(0, max(len(encoded), 1), config.BULK_CHUNK):
                    self._queue_commands(pipe, encoded[start:start + config.BULK_CHUNK], at)
                pipe.execute()
        except redis.RedisError as exc:
            what = payloads[0]["name"] if payloads else "?"
            raise EnqueueError(
                f"could not push {len(payloads)} job(s) ({what}) to Redis at "
                f"{config.redacted(self.cfg.url)}: {exc}"
            ) from exc

    def _queue_commands(self, pipe: Any, chunk: List[Any], at: Optional[float]) -> None:
        if not chunk:
            return
        if at is not None:
            pipe.zadd(self.keys.schedule, {raw: at for _, raw in chunk})
            return
        by_queue: Dict[str, List[str]] = {}
        for queue, raw in chunk:
            by_queue.setdefault(queue, []).append(raw)
        pipe.sadd(self.keys.queues, *by_queue)
        for queue, raws in by_queue.items():
            pipe.lpush(self.keys.queue(queue), *raws)
