"""Helpers for users' own tests: run jobs at enqueue time, or record them instead of pushing.

    from jiggler_gevent import testing

    with testing.inline():            # every enqueue runs the job right away, in the caller
        send.enqueue("a@b.c", "hi")   # exceptions propagate to the test

    with testing.fake() as queue:     # every enqueue is recorded, nothing reaches Redis
        send.enqueue("a@b.c", "hi")
        assert queue.names() == ["app.jobs.send"]
        queue.drain()                 # run what was recorded (and what those jobs enqueue)

An `async def` job is awaited to its end in both modes: with `asyncio.run()`, or, when the caller is itself inside a
running event loop (an async test), with `asyncio.run()` in a thread of its own while the caller waits.

Payloads go through the client middleware and the JSON round trip as they would in production, so a job that
only works with unserialisable arguments fails here too. Modes nest; leaving a block restores the previous one.
"""

import asyncio
import concurrent.futures
import contextlib
import json
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from . import client
from .job import JobFunction, lookup


def _run(payload: dict[str, Any]) -> Any:
    func = lookup(payload["name"])
    if func is None:
        raise LookupError(f"no job named {payload['name']!r} is registered")
    wire = json.loads(json.dumps(payload))
    result = func(*wire["args"], **wire["kwargs"])
    return _await(result) if asyncio.iscoroutine(result) else result


def _await(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an async job's coroutine to its end, in a thread of its own when the caller's loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def _hook(hook: Callable[[list[dict[str, Any]], float | None], None]) -> Iterator[None]:
    previous = client.push_hook
    client.push_hook = hook
    try:
        yield
    finally:
        client.push_hook = previous


@contextlib.contextmanager
def inline() -> Iterator[None]:
    """Run each job when it is enqueued (scheduled ones too, at once)."""

    def run_all(payloads: list[dict[str, Any]], at: float | None) -> None:
        for p in payloads:
            _run(p)

    with _hook(run_all):
        yield


class FakeQueue:
    """The jobs recorded by `fake()`, oldest first."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        # Per queue, the groups with jobs waiting and their turns, as the rotation NS:groups:<queue> holds them
        # (lowest turn goes next; '' stands for the queue's ungrouped jobs); _seq plays NS:seq.
        self._turns: dict[str, dict[str, int]] = {}
        self._seq = 0

    def record(self, payloads: list[dict[str, Any]], at: float | None) -> None:
        for p in payloads:
            payload = json.loads(json.dumps(dict(p, at=at) if at is not None else p))
            self.jobs.append(payload)
            if payload.get("group"):
                self._rotate_in(payload["queue"], payload["group"])

    def names(self) -> list[str]:
        """Wire names of the recorded jobs."""
        return [p["name"] for p in self.jobs]

    def for_job(self, job: JobFunction) -> list[dict[str, Any]]:
        """The recorded payloads of one job."""
        return [p for p in self.jobs if p["name"] == job.name]

    def clear(self) -> None:
        """Forget every recorded job."""
        self.jobs.clear()
        self._turns.clear()

    def drain(self) -> int:
        """Run recorded jobs until none is left (jobs they enqueue are run too); returns how many ran. They start
        as a worker starts them: a higher priority first, then the groups of a queue in turn (round-robin, its
        ungrouped jobs as one more group), each priority and group in the order recorded."""
        ran = 0
        while self.jobs:
            _run(self.jobs.pop(self._next()))
            ran += 1
        return ran

    def _next(self) -> int:
        """The position of the job to run next: the first of the highest priority, or, at priority 0, the first of
        the member whose turn it is in the rotation of that job's queue."""
        priorities = [p.get("priority", 0) for p in self.jobs]
        first = priorities.index(max(priorities))
        if priorities[first] != 0 or not self._turns:
            return first
        return self._take_turn(self.jobs[first]["queue"], first)

    def _take_turn(self, queue: str, first: int) -> int:
        """The position of the next job of `queue`'s rotation, which then moves to the back of it or leaves it once
        empty, as fetch.lua's take_grouped does; `first` (its oldest job) when no group of it waits."""
        waiting: dict[str, list[int]] = {}
        for i, p in enumerate(self.jobs):
            if p["queue"] == queue and not p.get("priority"):
                waiting.setdefault(p.get("group") or "", []).append(i)
        turns = self._turns.get(queue, {})
        for member in [m for m in turns if m not in waiting]:  # taken out of `jobs` by hand
            del turns[member]
        if not turns:
            return first
        if "" in waiting:
            self._rotate_in(queue, "")
        member = min(turns, key=turns.__getitem__)
        del turns[member]
        if len(waiting[member]) > 1:
            self._rotate_in(queue, member)
        return waiting[member][0]

    def _rotate_in(self, queue: str, member: str) -> None:
        """Put `member` at the back of `queue`'s rotation unless it is in already (lib_ready.rotate_in)."""
        self._seq += 1
        self._turns.setdefault(queue, {}).setdefault(member, self._seq)

    def __len__(self) -> int:
        return len(self.jobs)


@contextlib.contextmanager
def fake() -> Iterator[FakeQueue]:
    """Record every enqueue instead of pushing it to Redis."""
    queue = FakeQueue()
    with _hook(queue.record):
        yield queue
