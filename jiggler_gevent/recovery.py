"""Recovery of the jobs held by a process that died without a clean stop (SIGKILL, OOM, power loss).

A live process finds identities in NS:processes whose heartbeat key has expired and adopts each one's
working list with one Lua script, so exactly one process takes each orphaned job. It then puts every
adopted job back in its queue with its `recoveries` count raised by one, in a transaction that also
releases it from its own working list; if it dies in between, its own working list holds the jobs and
they are adopted again. A job recovered more than MAX_RECOVERIES times is assumed to be what kills its
workers and goes to the dead set instead of looping forever.
"""
import logging
import time
from typing import Any, Dict, List, Tuple

import redis

from . import config, middleware, payload as payload_mod
from .fetch import add_dead
from .keys import Keys

log = logging.getLogger("jiggler_gevent.recovery")


class Recovery:
    """Adopts and re-queues the jobs of dead processes."""

    def __init__(self, client: redis.Redis, keys: Keys, identity: str, scripts: Dict[str, Any]) -> None:
        self.redis, self.keys, self.identity, self.scripts = client, keys, identity, scripts
        self.working = keys.working(identity)

    def sweep(self) -> int:
        """Recover the jobs of every process whose heartbeat has expired; returns how many jobs."""
        total = 0
        for other in self.redis.smembers(self.keys.processes):
            if other != self.identity:
                total += self.adopt(other, force=False)
        return total

    def adopt(self, dead_identity: str, force: bool) -> int:
        """Take over `dead_identity`'s held jobs (if its heartbeat is gone, or `force`) and requeue them."""
        k = self.keys
        raws = self.scripts["adopt"](
            keys=[k.process(dead_identity), k.working(dead_identity), self.working, k.processes, k.work(dead_identity)],
            args=[dead_identity, "force" if force else ""],
        )
        if not raws:
            return 0
        log.warning("process %s died holding %d job(s); putting them back", dead_identity, len(raws))
        self._release(raws, dead_identity)
        return len(raws)

    def _release(self, raws: List[str], dead_identity: str) -> None:
        buried = []
        with self.redis.pipeline(transaction=True) as pipe:
            for raw in raws:
                pipe.lrem(self.working, 1, payload_mod.wire(raw))
                entry, bury = self._recovered(raw, dead_identity)
                if bury:
                    add_dead(pipe, self.keys, payload_mod.encode(entry), time.time())
                    buried.append(entry)
                else:
                    queue = entry.get("queue") or config.DEFAULT_QUEUE
                    pipe.rpush(self.keys.queue(queue), payload_mod.encode(entry))
                    pipe.sadd(self.keys.queues, queue)
            pipe.execute()
        for entry in buried:
            middleware.notify_death(entry, None)

    def _recovered(self, raw: str, dead_identity: str) -> Tuple[Dict[str, Any], bool]:
        """The payload to put back, and whether it goes to the dead set instead."""
        try:
            p = payload_mod.decode(raw)
        except payload_mod.PayloadError as exc:
            return payload_mod.salvage(raw, str(exc)), True
        count = p.get("recoveries", 0)
        p["recoveries"] = (count if isinstance(count, int) else 0) + 1
        if p["recoveries"] <= config.MAX_RECOVERIES:
            return p, False
        p["error_class"] = "ProcessDied"
        p["error_message"] = (
            f"the worker running this job died {p['recoveries']} times (last: {dead_identity}); "
            "it is presumed to kill its worker (memory, a crash in C code, os._exit) and was not run again"
        )
        p["failed_at"] = time.time()
        return p, True
