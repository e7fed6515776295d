"""Runs iterable jobs (@job(iterable=True)) checkpoint by checkpoint, and stores what running jobs report.

Where the cursor lives: NS:state:<jid> (keys.py), written only by the greenlet that runs the job (so writes of
one job's cursor never overtake each other), at least every CHECKPOINT_EVERY seconds and at every interruption
(a graceful stop, a timeout, a cancel, a failure, the kill at the shutdown deadline). The payload is never
changed: whatever runs the same jid next (the requeue at stop, a retry, the recovery after a SIGKILL, a retry
from the dead set) reads the cursor and calls the generator with it.

Guarantee: at least once per step. A graceful stop repeats nothing: the job stops at its next checkpoint, its
cursor is written, then (not acknowledged) it goes back to its queue with the other unfinished payloads. A
SIGKILL, or a stop whose cursor write failed (Redis away), repeats at most the steps after the last stored
checkpoint. Returning writes the last cursor with a short TTL, so a run repeated because the acknowledgement
was lost resumes at the end rather than from the start.

Progress (`jiggler_gevent.progress`) is only kept in memory (iterable.live) by the job; ProgressFlush, a part of
the heartbeat, writes what changed each beat, and the heartbeat's work hash shows it on the Busy page. A job
that neither iterates nor reports progress costs nothing here.
"""

import json
import logging
import time
from collections.abc import Callable, Generator
from typing import Any

import gevent
import redis

from .. import config
from ..errors import CancelJob
from ..iterable import JobState, advance, check_cursor, encode_cursor, live, state_of, with_cursor
from ..job import JobFunction
from ..keys import Keys
from ..middleware import JobContext
from .heartbeat import BeatPart
from .safepoints import deferrals

log = logging.getLogger("jiggler_gevent.iteration")


class Paused(BaseException):
    """An iterable job stopped at a checkpoint because its worker is stopping: not acknowledged, put back."""


class Iterations:
    """Drives iterable jobs for one Processor; `pause()` makes each stop at its next checkpoint."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys
        self.pausing = False

    def pause(self) -> None:
        """The worker is stopping: every iterable job stores its cursor at its next checkpoint and is put back."""
        self.pausing = True

    def runner(self, job: JobFunction, ctx: JobContext) -> Callable[..., Any]:
        """What the Processor calls in place of the iterable `job`'s generator function for the job `ctx`."""

        def run(*args: Any, **kwargs: Any) -> Any:
            return self._run(job, ctx, args, kwargs)

        return run

    def _run(self, job: JobFunction, ctx: JobContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        state = state_of(ctx.jid)
        state.iterable = True
        if self._resume(state):
            args, kwargs = with_cursor(args, kwargs, state.cursor, job.cursor_at)
        gen = job.func(*args, **kwargs)
        try:
            result = self._drive(gen, state, ctx.name)
        except BaseException as exc:
            # A cancelled job is over: its state is kept as long as a finished job's.
            ttl = config.PROGRESS_TTL if isinstance(exc, CancelJob) else config.ITERATION_TTL
            self._store_quietly(state, ctx.name, ttl)
            raise
        finally:
            gen.close()  # the generator's own `finally` and `with` blocks run at once, whatever ended it
            live.pop(ctx.jid, None)
        self._store(state, ctx.name, config.PROGRESS_TTL)
        return result

    def _resume(self, state: JobState) -> bool:
        """Read the stored cursor of this jid into `state`; False when there is none (the first run gets what the
        push gave, or the default)."""
        stored, iterations = self.redis.hmget(self.keys.job_state(state.jid), ["cursor", "iterations"])
        if stored is None:
            return False
        state.cursor = json.loads(stored)
        state.iterations = int(iterations or 0)
        log.info("resuming jid=%s after %d iteration(s) from cursor %.200s", state.jid, state.iterations, stored)
        return True

    def _drive(self, gen: Generator[Any, Any, Any], state: JobState, name: str) -> Any:
        """Run the generator to its end, one checkpoint per value it yields: its return value."""
        glet, waiting, clock = gevent.getcurrent(), deferrals.waiting, time.monotonic  # locals: read per step
        due = clock() + config.CHECKPOINT_EVERY
        going, cursor = advance(gen)
        if going:
            check_cursor(cursor, name)  # the first at once; the others as they are stored (JSON each time)
        while going:
            state.cursor = cursor
            state.iterations += 1
            if waiting:
                _raise_waiting(glet)
            if self.pausing:  # _run stores the cursor
                raise Paused(f"stopped at a checkpoint after {state.iterations} iteration(s): put back")
            if clock() >= due:
                self._store(state, name, config.ITERATION_TTL)
                due = clock() + config.CHECKPOINT_EVERY
            going, cursor = advance(gen)
        return cursor  # what the generator returned

    def _store(self, state: JobState, name: str, ttl: int) -> None:
        key = self.keys.job_state(state.jid)
        fields = {
            "cursor": encode_cursor(state.cursor, name),
            "iterations": state.iterations,
            "updated_at": time.time(),
        }
        if state.fraction is not None:
            fields.update(progress=state.fraction, message=state.message)
        pipe: Any
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            pipe.execute()

    def _store_quietly(self, state: JobState, name: str, ttl: int) -> None:
        """Store the cursor as the job ends by an exception; a failure is logged (a later run repeats steps)."""
        if state.iterations == 0:
            return  # no checkpoint passed: nothing newer than what is stored
        try:
            self._store(state, name, ttl)
        except (redis.RedisError, OSError, TypeError) as exc:
            log.warning("could not store the cursor of jid=%s (it resumes from an older one): %s", state.jid, exc)


def _raise_waiting(glet: Any) -> None:
    """A checkpoint is a safe point: raise here what waits for one in this greenlet (a timeout, a cancel, the
    kill at the shutdown deadline, thrown while a CPU-bound step held the hub)."""
    record = deferrals.get(glet)  # None too for a gevent.Timeout of the job's own whose block has ended
    if record is not None:
        deferrals.forget(glet)
        raise record.exc


class ProgressFlush(BeatPart):
    """A beat part: writes the progress reported since the last beat to NS:state:<jid> (iterable jobs' cursors
    are written by their own greenlets only), and forgets jobs no longer running."""

    def __init__(self, keys: Keys, running: Callable[[], set[str]]) -> None:
        self.keys, self.running = keys, running
        self.taken: list[tuple[str, dict[str, Any], int]] = []

    def take(self, client: redis.Redis) -> None:
        if not live:
            return
        running = self.running()
        for jid, state in list(live.items()):
            if state.dirty:
                state.dirty = False
                fields = {"progress": state.fraction, "message": state.message, "updated_at": time.time()}
                ttl = config.ITERATION_TTL if state.iterable else config.PROGRESS_TTL
                self.taken.append((jid, fields, ttl))
            if jid not in running:
                live.pop(jid, None)

    def queue(self, pipe: Any) -> None:
        for jid, fields, ttl in self.taken:
            key = self.keys.job_state(jid)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)

    def written(self, replies: list[Any]) -> None:
        self.taken = []

    def failed(self) -> None:
        for jid, _, _ in self.taken:
            state = live.get(jid)
            if state is not None:
                state.dirty = True  # written by the next beat, unless newer progress replaced it meanwhile
        self.taken = []
