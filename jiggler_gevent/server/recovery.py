"""Recovery of the jobs held by a process that died without a clean stop (SIGKILL, OOM, power loss).

Guarantee: exactly one live process recovers each orphaned job. A live process finds identities in
NS:processes whose heartbeat key has expired and adopts each one's working list with one Lua script
(adopt.lua), so the jobs move into its own working list; in the same step the `concurrent` slots and the
scheduler lease the dead process held are given back (lib_holds.lua), so they are free from the moment the
process is declared dead, not when their timeouts pass. It then settles each adopted payload with one
settle.lua call: back to the front of its queue with its `recoveries` count raised by one, or, past
MAX_RECOVERIES, to the dead set (a job that keeps killing its workers must not loop forever). If it dies in
between, its own working list holds the jobs and they are adopted again: run twice at worst, never lost.
"""

import json
import logging
import time
from typing import Any, cast

import redis

from .. import config, middleware, wire
from .. import payload as payload_mod
from ..keys import Keys
from ..scripts import Scripts
from .acker import Outcome, settle

log = logging.getLogger("jiggler_gevent.recovery")


class Recovery:
    """Adopts and re-queues the jobs of dead processes."""

    def __init__(self, client: redis.Redis, keys: Keys, identity: str, scripts: Scripts) -> None:
        self.redis, self.keys, self.identity, self.scripts = client, keys, identity, scripts
        self.working = keys.working(identity)
        self.wire = wire.of(keys)

    def sweep(self) -> int:
        """Recover the jobs of every process whose heartbeat has expired; returns how many jobs."""
        total = 0
        for other in cast("set[str]", self.redis.smembers(self.keys.processes)):  # decoded replies: str
            if other != self.identity:
                total += self.adopt(other, force=False)
        return total

    def adopt(self, dead_identity: str, force: bool) -> int:
        """Take over `dead_identity`'s held jobs (if its heartbeat is gone, or `force`) and requeue them."""
        k = self.keys
        raws = self.scripts.adopt(
            keys=[k.process(dead_identity), k.working(dead_identity), self.working, k.processes, k.work(dead_identity)]
            + [k.holds(dead_identity), k.schedule, k.queues, k.wake],
            args=[dead_identity, "force" if force else "", *self._release_args()],
        )
        if not raws:
            return 0
        log.warning("process %s died holding %d job(s); putting them back", dead_identity, len(raws))
        self._release(raws, dead_identity)
        return len(raws)

    def release_own(self) -> int:
        """At a clean stop: give back the slots and lease this process still holds (those of jobs killed at the
        end of the shutdown wait); returns how many slots were freed."""
        k = self.keys
        keys = [k.holds(self.identity), k.schedule, k.queues, k.wake]
        return int(self.scripts.release_holds(keys=keys, args=[self.identity, *self._release_args()]))

    def _release_args(self) -> list[str]:
        k = self.keys
        return [k.limit_prefix, k.cron_leader_prefix, k.queue_prefix, config.DEFAULT_QUEUE]

    def _release(self, raws: list[str], dead_identity: str) -> None:
        outcomes = [self._recovered(raw, dead_identity) for raw in raws]
        settle(self.scripts.settle, self.keys, self.working, outcomes)
        for outcome in outcomes:
            if outcome.disposition == middleware.Disposition.DEAD:
                middleware.notify_death(self._entry(outcome.new_raw), None)

    def _entry(self, raw: str) -> dict[str, Any]:
        """A dead-set entry as death handlers get it: the internal payload, or the JSON when it has no job name."""
        try:
            return self.wire.decode(raw)
        except payload_mod.PayloadError:
            return dict(json.loads(raw))

    def _recovered(self, raw: str, dead_identity: str) -> Outcome:
        """What becomes of one adopted payload: back to its queue, or to the dead set."""
        now = time.time()
        try:
            p = self.wire.decode(raw)
        except payload_mod.PayloadError as exc:
            return Outcome.dead(raw, self.wire.encode(self.wire.salvage(raw, str(exc))), now)
        count = p.get("recoveries", 0)
        p["recoveries"] = (count if isinstance(count, int) else 0) + 1
        if p["recoveries"] <= config.MAX_RECOVERIES:
            return Outcome.requeue(raw, self.wire.encode(p), p.get("queue") or config.DEFAULT_QUEUE).ending(p)
        p.update(
            error_class="ProcessDied",
            failed_at=now,
            error_message=(
                f"the worker running this job died {p['recoveries']} times (last: {dead_identity}); "
                "it is presumed to kill its worker (memory, a crash in C code, os._exit) and was not run again"
            ),
        )
        error = {"error_class": "ProcessDied", "error_message": p["error_message"]}
        return Outcome.dead(raw, self.wire.encode(p), now).ending(p, payload_mod.encode(error))
