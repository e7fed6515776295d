"""Recovery of the jobs held by a process that died without a clean stop (SIGKILL, OOM, power loss).

Guarantee: exactly one live process recovers each orphaned job. A live process finds identities in
NS:processes whose heartbeat key has expired and adopts each one's working list with one Lua script
(adopt.lua), so the jobs move into its own working list; in the same step the `concurrent` slots and the
scheduler lease the dead process held are given back (lib_holds.lua), so they are free from the moment the
process is declared dead, not when their timeouts pass. It then settles each adopted payload with one
settle.lua call: to the back of its queue (behind what waited meanwhile), or to the dead set. If it dies in
between, its own working list holds the jobs and they are adopted again: run twice at worst, never lost.

Which deaths count against a job (the poison-pill rule; the numbers are in config.py):
- Every death is counted on each job the dead process held (`recoveries` + 1).
- A death is blamed on a job (`deaths_blamed` + 1) only when the process held that job alone, and no other process
  died within the blame window (BLAME_WINDOW_BEATS heartbeat intervals) before the death was recovered, leaving
  out the deaths this job was held at itself (`died_in`) and those of processes that held one suspect alone (each
  such death is that suspect's to answer for). Those other deaths are the evidence that something other than one
  job kills processes (a kill storm, a failing node): while there is such evidence, no death is blamed.
- A job held at SUSPECT_DEATHS deaths is a suspect and runs alone from then on (manager.py: the worker that takes
  it waits for its other jobs to end and takes no new one until it ends), so that a suspect that kills its
  process dies alone and is blamed.
- A job is buried (ProcessDied) once it was held at more than MAX_RECOVERIES deaths and BLAMED_DEATHS of them
  were blamed on it; until then it goes to the back of its queue.
A poison pill in a busy worker dies with others twice, then alone twice: buried at its 4th death, as a job of a
`-c 1` worker is. A job that stood beside it, or in the way of a kill storm, is not blamed for deaths it shared,
nor for deaths alone while processes die around it.
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

DIED_IN_KEPT = 10  # the deaths a payload remembers it was held at (more than a blame window holds for one job)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def suspect(payload: dict[str, Any]) -> bool:
    """Whether a job was held at SUSPECT_DEATHS deaths or more: it then runs alone (the rule above)."""
    return _count(payload.get("recoveries")) >= config.SUSPECT_DEATHS


def condemned(payload: dict[str, Any]) -> bool:
    """Whether a recovered job is presumed to kill its process (the rule above): it goes to the dead set."""
    deaths, blamed = _count(payload.get("recoveries")), _count(payload.get("deaths_blamed"))
    return deaths > config.MAX_RECOVERIES and blamed >= config.BLAMED_DEATHS


def count_death(payload: dict[str, Any], identity: str, alone: bool, recent: set[str]) -> None:
    """Count the death of process `identity` on a job it held (`alone` or not), `recent` being the processes that
    died holding several jobs within the blame window (the rule above)."""
    payload["recoveries"] = _count(payload.get("recoveries")) + 1
    died_in = payload.get("died_in")
    died_in = [x for x in died_in if isinstance(x, str)] if isinstance(died_in, list) else []
    if alone:
        blamed = not recent - set(died_in) - {identity}
        payload["deaths_blamed"] = _count(payload.get("deaths_blamed")) + blamed
    payload["died_in"] = (died_in + [identity])[-DIED_IN_KEPT:]


class Recovery:
    """Adopts and re-queues the jobs of dead processes."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        identity: str,
        scripts: Scripts,
        heartbeat_interval: float = config.DEFAULT_HEARTBEAT_INTERVAL,
    ) -> None:
        self.redis, self.keys, self.identity, self.scripts = client, keys, identity, scripts
        self.blame_window_ms = int(heartbeat_interval * config.BLAME_WINDOW_BEATS * 1000)
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
        reply = self.scripts.adopt(
            keys=[k.process(dead_identity), k.working(dead_identity), self.working, k.processes, k.work(dead_identity)]
            + [k.holds(dead_identity), k.schedule, k.queues, k.wake, k.deaths, k.limits],
            args=[dead_identity, "force" if force else "", *self._release_args(), self.blame_window_ms]
            + [config.SUSPECT_DEATHS],
        )
        if not reply:
            return 0
        raws, recent = cast("tuple[list[str], list[str]]", reply)
        if not raws:  # it held nothing: its death is recorded all the same (evidence of what kills processes)
            return 0
        log.warning("process %s died holding %d job(s); putting them back", dead_identity, len(raws))
        self._release(raws, dead_identity, len(raws) == 1, set(recent))
        return len(raws)

    def release_own(self) -> int:
        """At a clean stop: give back the slots and lease this process still holds (those of jobs killed at the
        end of the shutdown wait); returns how many slots were freed."""
        k = self.keys
        keys = [k.holds(self.identity), k.schedule, k.queues, k.wake, k.limits]
        return int(self.scripts.release_holds(keys=keys, args=[self.identity, *self._release_args()]))

    def _release_args(self) -> list[str]:
        k = self.keys
        return [k.limit_prefix, k.cron_leader_prefix, k.queue_prefix, config.DEFAULT_QUEUE]

    def _release(self, raws: list[str], dead_identity: str, alone: bool, recent: set[str]) -> None:
        outcomes = [self._recovered(raw, dead_identity, alone, recent) for raw in raws]
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

    def _recovered(self, raw: str, dead_identity: str, alone: bool, recent: set[str]) -> Outcome:
        """What becomes of one adopted payload (held `alone` or not): back to its queue, or to the dead set."""
        now = time.time()
        try:
            p = self.wire.decode(raw)
        except payload_mod.PayloadError as exc:
            return Outcome.dead(raw, self.wire.encode(self.wire.salvage(raw, str(exc))), now)
        count_death(p, dead_identity, alone, recent)
        if not condemned(p):
            return Outcome.recover(raw, self.wire.encode(p), p.get("queue") or config.DEFAULT_QUEUE).ending(p)
        p.update(
            error_class="ProcessDied",
            failed_at=now,
            error_message=(
                f"the worker running this job died {p['recoveries']} times, {p['deaths_blamed']} of them while it "
                f"ran this job alone and no other worker died (last: {dead_identity}); it is presumed to kill its "
                "worker (memory, a crash in C code, os._exit) and was not run again"
            ),
        )
        error = {"error_class": "ProcessDied", "error_message": p["error_message"]}
        return Outcome.dead(raw, self.wire.encode(p), now).ending(p, payload_mod.encode(error))
