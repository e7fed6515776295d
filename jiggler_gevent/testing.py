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

    def record(self, payloads: list[dict[str, Any]], at: float | None) -> None:
        for p in payloads:
            self.jobs.append(json.loads(json.dumps(dict(p, at=at) if at is not None else p)))

    def names(self) -> list[str]:
        """Wire names of the recorded jobs."""
        return [p["name"] for p in self.jobs]

    def for_job(self, job: JobFunction) -> list[dict[str, Any]]:
        """The recorded payloads of one job."""
        return [p for p in self.jobs if p["name"] == job.name]

    def clear(self) -> None:
        """Forget every recorded job."""
        self.jobs.clear()

    def drain(self) -> int:
        """Run recorded jobs until none is left (jobs they enqueue are run too); returns how many ran. A job with a
        priority runs before the jobs of lower priority recorded before it, as a worker starts them (equal
        priorities in the order they were recorded; groups are not taken in turn here)."""
        ran = 0
        while self.jobs:
            _run(self.jobs.pop(self._next()))
            ran += 1
        return ran

    def _next(self) -> int:
        """The position of the job to run next: the first of the highest priority."""
        if not any("priority" in p for p in self.jobs):
            return 0
        priorities = [p.get("priority", 0) for p in self.jobs]
        return priorities.index(max(priorities))

    def __len__(self) -> int:
        return len(self.jobs)


@contextlib.contextmanager
def fake() -> Iterator[FakeQueue]:
    """Record every enqueue instead of pushing it to Redis."""
    queue = FakeQueue()
    with _hook(queue.record):
        yield queue
